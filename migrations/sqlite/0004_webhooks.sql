-- Webhooks: a connector receiving signed deliveries, optionally triggering a pipeline.
CREATE TABLE webhooks (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    name             TEXT NOT NULL,
    plugin           TEXT NOT NULL,
    signing_secrets  TEXT NOT NULL,
    pipeline_id      TEXT,
    debounce_ms      BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

-- Delivery ids seen (replay protection within the signature window, and then some).
CREATE TABLE webhook_deliveries (
    webhook_id   TEXT NOT NULL,
    delivery_id  TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    PRIMARY KEY (webhook_id, delivery_id)
);
-- Each delivery forgets ids older than the window: by index, not a scan.
CREATE INDEX webhook_deliveries_by_time ON webhook_deliveries (received_at);

-- Items of deliveries waiting out the debounce window, then one run.
CREATE TABLE webhook_batches (
    id          TEXT PRIMARY KEY,
    webhook_id  TEXT NOT NULL,
    tenant_id   TEXT NOT NULL,
    items       TEXT NOT NULL,
    deliveries  TEXT NOT NULL,
    due_at      BIGINT NOT NULL,
    claimed_at  BIGINT,
    run_id      TEXT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX webhook_batches_due ON webhook_batches (run_id, due_at);
