-- Idempotency keys (ClaimIdempotencyKey / CompleteIdempotencyKey): one row per tenant and key,
-- `running` while its first request runs (its lease bounds how long a dead gateway holds it),
-- then `done` with the answer to replay until `expires_at` (24 hours after the claim). Times
-- are unix milliseconds of the application clock. Expired rows are removed by later claims.
CREATE TABLE idempotency_keys (
    tenant_id   BLOB    NOT NULL,
    key         TEXT    NOT NULL,
    fingerprint BLOB    NOT NULL,
    claim_id    BLOB    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('running', 'done')),
    status      INTEGER,
    headers     TEXT,
    body        BLOB,
    lease_until INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key)
) STRICT;
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (tenant_id, expires_at);
