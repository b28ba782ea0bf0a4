-- Tenants and their API keys (see the PostgreSQL twin for the rules).

CREATE TABLE tenants (
    id             BLOB    PRIMARY KEY,
    name           TEXT    NOT NULL,
    slug           TEXT    NOT NULL UNIQUE,
    plan           TEXT    NOT NULL CHECK (plan IN ('free', 'pro', 'scale', 'enterprise')),
    retention_days INTEGER NOT NULL CHECK (retention_days > 0),
    created_at     TEXT    NOT NULL
) STRICT;

CREATE TABLE api_keys (
    id           BLOB    PRIMARY KEY,
    tenant_id    BLOB    NOT NULL REFERENCES tenants (id),
    name         TEXT    NOT NULL,
    environment  TEXT    NOT NULL CHECK (environment IN ('live', 'test')),
    lookup_id    TEXT    NOT NULL UNIQUE,
    secret_hash  TEXT    NOT NULL,
    key_hint     TEXT    NOT NULL,
    scopes       TEXT    NOT NULL CHECK (json_valid(scopes)),
    created_at   TEXT    NOT NULL,
    expires_at   TEXT,
    last_used_at TEXT,
    revoked_at   TEXT,
    rotated_at   TEXT
) STRICT;
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, created_at DESC, id DESC);
