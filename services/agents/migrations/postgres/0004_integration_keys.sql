-- Integration keys: a tenant's keys of third-party services (cloudflare, github, netdata,
-- postmark, outstand) for its agents. The key is sealed by kit's envelope encryption (purpose
-- `agents.integration.<provider>`): only ciphertext is stored, with a masked hint, and the
-- ciphertext is wiped (NULL) when the key is revoked (replaced or deleted). Revoked rows stay,
-- so the tenant's list shows what it had.
CREATE TABLE integration_keys (
    tenant_id        uuid        NOT NULL,
    id               uuid        NOT NULL,
    provider         text        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('active', 'invalid', 'revoked')),
    sealed           bytea,
    key_hint         text        NOT NULL,
    label            text,
    metadata         jsonb       NOT NULL,
    last_verified_at timestamptz,
    revoked_at       timestamptz,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    -- A revoked key holds no ciphertext; a live one does.
    CHECK ((status = 'revoked') = (sealed IS NULL))
);
-- The second wall of "one live key per provider" (the replacing transaction is the first).
CREATE UNIQUE INDEX integration_keys_one_live ON integration_keys (tenant_id, provider)
    WHERE status IN ('active', 'invalid');
CREATE INDEX integration_keys_by_created ON integration_keys (tenant_id, created_at DESC, id DESC);

ALTER TABLE integration_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE integration_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON integration_keys
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
