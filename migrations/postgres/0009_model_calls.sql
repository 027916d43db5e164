-- Model calls completed inside a step, in order, so a later attempt of the same step
-- (a retry, or a re-run after a host crash) that makes the same call gets the recorded
-- answer instead of paying for it again. The request is kept only as a hash.
CREATE TABLE model_calls (
    run_id        TEXT NOT NULL REFERENCES runs(id),
    step_idx      BIGINT NOT NULL,
    generation    BIGINT NOT NULL,
    call_no       BIGINT NOT NULL,
    request_hash  TEXT NOT NULL,
    response      TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (run_id, step_idx, generation, call_no)
);
