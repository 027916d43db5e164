-- Corral's schema, SQLite flavour (kept in step with ../postgres/0001_init.sql).
-- Times are unix milliseconds; JSON is stored as text.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    fuel_used   BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL
);

CREATE TABLE plugins (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    digest      TEXT NOT NULL,
    world       TEXT NOT NULL,
    info        TEXT NOT NULL,
    size        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (tenant_id, name, version)
);

CREATE TABLE pipelines (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    spec        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    pipeline_id      TEXT,
    pipeline_name    TEXT NOT NULL,
    spec             TEXT NOT NULL,
    input            TEXT NOT NULL,
    output           TEXT,
    status           TEXT NOT NULL,
    error_code       TEXT,
    error_message    TEXT,
    fuel_used        BIGINT NOT NULL DEFAULT 0,
    next_seq         BIGINT NOT NULL DEFAULT 1,
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    owner            TEXT,
    lease_until      BIGINT,
    -- Scheduling order: strictly increasing stamps (unix microseconds, bumped past ties),
    -- so FIFO and round-robin hold for runs submitted or claimed within one millisecond.
    queue_seq        BIGINT NOT NULL DEFAULT 0,
    claim_seq        BIGINT,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX runs_by_status ON runs (status, queue_seq);
CREATE INDEX runs_by_tenant ON runs (tenant_id, created_at);

CREATE TABLE steps (
    run_id         TEXT NOT NULL REFERENCES runs(id),
    idx            BIGINT NOT NULL,
    name           TEXT NOT NULL,
    plugin         TEXT NOT NULL,
    status         TEXT NOT NULL,
    attempts       BIGINT NOT NULL DEFAULT 0,
    loops          BIGINT NOT NULL DEFAULT 0,
    output         TEXT,
    fuel_used      BIGINT NOT NULL DEFAULT 0,
    error_code     TEXT,
    error_message  TEXT,
    started_at     BIGINT,
    finished_at    BIGINT,
    PRIMARY KEY (run_id, idx)
);

CREATE TABLE attempts (
    run_id         TEXT NOT NULL REFERENCES runs(id),
    step_idx       BIGINT NOT NULL,
    generation     BIGINT NOT NULL,
    attempt        BIGINT NOT NULL,
    status         TEXT NOT NULL,
    fuel_used      BIGINT NOT NULL DEFAULT 0,
    error_code     TEXT,
    error_message  TEXT,
    started_at     BIGINT NOT NULL,
    finished_at    BIGINT,
    PRIMARY KEY (run_id, step_idx, generation, attempt)
);

CREATE TABLE events (
    run_id     TEXT NOT NULL REFERENCES runs(id),
    seq        BIGINT NOT NULL,
    tenant_id  TEXT NOT NULL,
    type       TEXT NOT NULL,
    ts         TEXT NOT NULL,
    payload    TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE blobs (
    digest   TEXT PRIMARY KEY,
    size     BIGINT NOT NULL,
    content  BLOB NOT NULL
);

CREATE TABLE artifacts (
    id          TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs(id),
    tenant_id   TEXT NOT NULL,
    step        TEXT NOT NULL,
    name        TEXT NOT NULL,
    media_type  TEXT NOT NULL,
    size        BIGINT NOT NULL,
    digest      TEXT NOT NULL REFERENCES blobs(digest),
    created_at  BIGINT NOT NULL
);
CREATE INDEX artifacts_by_run ON artifacts (run_id);

CREATE TABLE answers (
    run_id       TEXT NOT NULL REFERENCES runs(id),
    step_idx     BIGINT NOT NULL,
    generation   BIGINT NOT NULL,
    question_no  BIGINT NOT NULL,
    question     TEXT NOT NULL,
    schema       TEXT,
    answer       TEXT,
    asked_at     BIGINT NOT NULL,
    answered_at  BIGINT,
    PRIMARY KEY (run_id, step_idx, generation, question_no)
);

CREATE TABLE run_state (
    run_id  TEXT NOT NULL REFERENCES runs(id),
    key     TEXT NOT NULL,
    value   BLOB NOT NULL,
    PRIMARY KEY (run_id, key)
);
