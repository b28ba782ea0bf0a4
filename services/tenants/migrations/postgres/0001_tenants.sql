-- Tenants and their API keys. Secrets are never stored: only a keyed hash (HMAC-SHA256 with a
-- server pepper) and a public lookup id taken from the key's first characters.

CREATE TABLE tenants (
    id             uuid        PRIMARY KEY,
    name           text        NOT NULL,
    slug           text        NOT NULL UNIQUE,
    plan           text        NOT NULL CHECK (plan IN ('free', 'pro', 'scale', 'enterprise')),
    retention_days bigint      NOT NULL CHECK (retention_days > 0),
    created_at     timestamptz NOT NULL
);

CREATE TABLE api_keys (
    id           uuid        PRIMARY KEY,
    tenant_id    uuid        NOT NULL REFERENCES tenants (id),
    name         text        NOT NULL,
    environment  text        NOT NULL CHECK (environment IN ('live', 'test')),
    lookup_id    text        NOT NULL UNIQUE,
    secret_hash  text        NOT NULL,
    key_hint     text        NOT NULL,
    scopes       jsonb       NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    rotated_at   timestamptz
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, created_at DESC, id DESC);

-- RLS through kit's tenant_visible() (defined in this schema by kit's migration).
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants USING (tenant_visible(id)) WITH CHECK (tenant_visible(id));

ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_keys
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
