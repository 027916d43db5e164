-- Tokens for the HTTP API (stored only as SHA-256 hashes) and the plugins each run uses
-- (so a plugin cannot be deleted while a live run needs it).

CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    role        TEXT NOT NULL,
    name        TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX tokens_by_tenant ON tokens (tenant_id);

CREATE TABLE run_plugins (
    run_id     TEXT NOT NULL REFERENCES runs(id),
    plugin_id  TEXT NOT NULL,
    PRIMARY KEY (run_id, plugin_id)
);
CREATE INDEX run_plugins_by_plugin ON run_plugins (plugin_id);
