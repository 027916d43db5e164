-- Model tokens (input plus output, as the providers report them), kept like fuel: per run,
-- per step and per tenant, charged in the transaction that commits each model_call event.
ALTER TABLE runs ADD COLUMN tokens_used BIGINT NOT NULL DEFAULT 0;
ALTER TABLE steps ADD COLUMN tokens_used BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN tokens_used BIGINT NOT NULL DEFAULT 0;
