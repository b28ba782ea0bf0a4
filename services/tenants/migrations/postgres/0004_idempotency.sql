-- Idempotency keys (ClaimIdempotencyKey / CompleteIdempotencyKey): one row per tenant and key,
-- `running` while its first request runs (its lease bounds how long a dead gateway holds it),
-- then `done` with the answer to replay until `expires_at` (24 hours after the claim). Times
-- are unix milliseconds of the application clock. Expired rows are removed by later claims.
CREATE TABLE idempotency_keys (
    tenant_id   uuid    NOT NULL,
    key         text    NOT NULL,
    fingerprint bytea   NOT NULL,
    claim_id    uuid    NOT NULL,
    state       text    NOT NULL CHECK (state IN ('running', 'done')),
    status      integer,
    headers     text,
    body        bytea,
    lease_until bigint  NOT NULL,
    expires_at  bigint  NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (tenant_id, expires_at);

ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON idempotency_keys
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
