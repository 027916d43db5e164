-- Tenant secrets, sealed (ChaCha20-Poly1305, key outside the database; see host/src/secrets.rs).
CREATE TABLE secrets (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    sealed      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
