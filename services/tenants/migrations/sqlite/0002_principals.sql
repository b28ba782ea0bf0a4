-- External principals (OIDC subjects, paying wallets) and the tenant each maps to.
CREATE TABLE principals (
    id         BLOB PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('oidc', 'wallet')),
    issuer     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    tenant_id  BLOB NOT NULL REFERENCES tenants (id),
    created_at TEXT NOT NULL,
    UNIQUE (kind, issuer, subject)
) STRICT;
