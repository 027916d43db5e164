-- Model tokens (input plus output, as the providers report them) and their cost (in
-- millionths of the currency of the operator's configured prices), kept like fuel: per
-- run, per step and per tenant, charged in the transaction that commits each model_call
-- event.
ALTER TABLE runs ADD COLUMN tokens_used BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN cost_micros BIGINT NOT NULL DEFAULT 0;
ALTER TABLE steps ADD COLUMN tokens_used BIGINT NOT NULL DEFAULT 0;
ALTER TABLE steps ADD COLUMN cost_micros BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN tokens_used BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN cost_micros BIGINT NOT NULL DEFAULT 0;
