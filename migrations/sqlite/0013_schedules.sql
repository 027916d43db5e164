-- Schedules: a stored pipeline (a snapshot, like a run's spec) started by a cron
-- expression in a time zone. `last_fire_at` is the schedule's cursor, the latest slot
-- (unix ms) it has handled (fired, skipped or missed); it only moves forward, and every
-- fire advances it in the transaction that queues the run, guarded on it being older, so
-- of several hosts on one database exactly one handles each slot. `next_fire_at` is the
-- first slot after the cursor (NULL: the expression never fires again): what the
-- scheduler's tick looks up, by index.
CREATE TABLE schedules (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    pipeline_id    TEXT,
    pipeline_name  TEXT NOT NULL,
    spec           TEXT NOT NULL,
    input          TEXT NOT NULL,
    cron           TEXT NOT NULL,
    timezone       TEXT NOT NULL,
    overlap        TEXT NOT NULL,
    catch_up       TEXT NOT NULL,
    last_fire_at   BIGINT NOT NULL,
    next_fire_at   BIGINT,
    last_run_id    TEXT,
    created_at     BIGINT NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_fire_at);
CREATE INDEX schedules_by_tenant ON schedules (tenant_id, created_at);

-- One row per handled slot: the unique key is the claim (a second host's insert of the
-- same slot does nothing), and the row says what became of it.
CREATE TABLE schedule_fires (
    schedule_id  TEXT NOT NULL,
    fire_at      BIGINT NOT NULL,
    tenant_id    TEXT NOT NULL,
    status       TEXT NOT NULL,
    run_id       TEXT,
    reason       TEXT,
    handled_at   BIGINT NOT NULL,
    PRIMARY KEY (schedule_id, fire_at)
);

-- A run a schedule started, and the slot it was started for.
ALTER TABLE runs ADD COLUMN schedule_id TEXT;
ALTER TABLE runs ADD COLUMN scheduled_for BIGINT;
CREATE INDEX runs_by_schedule ON runs (schedule_id, status);
