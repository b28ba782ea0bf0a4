-- Integration keys, sealed, wiped when revoked (see the PostgreSQL migration). UUIDs are 16-byte
-- BLOBs; timestamps RFC 3339 UTC text from the application clock.
CREATE TABLE integration_keys (
    tenant_id        BLOB NOT NULL,
    id               BLOB NOT NULL,
    provider         TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('active', 'invalid', 'revoked')),
    sealed           BLOB,
    key_hint         TEXT NOT NULL,
    label            TEXT,
    metadata         TEXT NOT NULL CHECK (json_valid(metadata)),
    last_verified_at TEXT,
    revoked_at       TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    CHECK ((status = 'revoked') = (sealed IS NULL))
) STRICT;
CREATE UNIQUE INDEX integration_keys_one_live ON integration_keys (tenant_id, provider)
    WHERE status IN ('active', 'invalid');
CREATE INDEX integration_keys_by_created ON integration_keys (tenant_id, created_at DESC, id DESC);
