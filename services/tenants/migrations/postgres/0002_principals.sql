-- External principals (OIDC subjects, paying wallets) and the tenant each maps to.
CREATE TABLE principals (
    id         uuid        PRIMARY KEY,
    kind       text        NOT NULL CHECK (kind IN ('oidc', 'wallet')),
    issuer     text        NOT NULL,
    subject    text        NOT NULL,
    tenant_id  uuid        NOT NULL REFERENCES tenants (id),
    created_at timestamptz NOT NULL,
    UNIQUE (kind, issuer, subject)
);

ALTER TABLE principals ENABLE ROW LEVEL SECURITY;
ALTER TABLE principals FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON principals
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
