-- Restart from a step: a finished or failed run goes on from one of its steps with a
-- person's feedback. That step and the ones after it start a new generation (answers and
-- recorded model calls of the earlier one are not replayed), their attempt numbers go on
-- from where they were, and the output each step had is kept on the attempt that made it.
--
-- steps.feedback:      the feedback the step's attempts get (JSON; set by a restart).
-- steps.restarts:      how many restarts ran this step again.
-- steps.attempt_base:  attempts made before the latest restart: retries count from here.
-- steps.loop_base:     the generation the latest restart began: feedback loops count from here.
-- attempts.output:     a succeeded attempt's output, kept when a restart replaced it.
-- attempts.feedback:   the feedback the attempt was given (a restart's or a feedback loop's).
-- runs.restarts:       how many times the run was restarted.
ALTER TABLE steps ADD COLUMN feedback TEXT;
ALTER TABLE steps ADD COLUMN restarts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE steps ADD COLUMN attempt_base BIGINT NOT NULL DEFAULT 0;
ALTER TABLE steps ADD COLUMN loop_base BIGINT NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN output TEXT;
ALTER TABLE attempts ADD COLUMN feedback TEXT;
ALTER TABLE runs ADD COLUMN restarts BIGINT NOT NULL DEFAULT 0;
