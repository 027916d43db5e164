-- Pause and resume. `pause_requested`: 0 none, 1 pause once the current step attempt
-- ends, 2 pause now (the attempt is interrupted and re-run on resume). `active_ms`: the
-- wall-clock time the run spent executing before its latest pause, so its `[budget]
-- timeout` does not tick while it is paused. `paused_at`: when it paused (unix ms).
ALTER TABLE runs ADD COLUMN pause_requested BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN active_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN paused_at BIGINT;
