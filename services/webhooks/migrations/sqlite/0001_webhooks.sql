-- Webhooks and their deliveries (see the PostgreSQL twin for the rules).

CREATE TABLE webhooks (
    tenant_id            BLOB    NOT NULL,
    id                   BLOB    NOT NULL,
    url                  TEXT    NOT NULL,
    event_types          TEXT    NOT NULL CHECK (json_valid(event_types)),
    description          TEXT,
    metadata             TEXT    NOT NULL CHECK (json_valid(metadata)),
    status               TEXT    NOT NULL CHECK (status IN ('active', 'disabled')),
    disabled_reason      TEXT,
    secret_sealed        BLOB    NOT NULL,
    secret_hint          TEXT    NOT NULL,
    previous_sealed      BLOB,
    previous_expires_at  TEXT,
    consecutive_failures INTEGER NOT NULL CHECK (consecutive_failures >= 0),
    failing_since        TEXT,
    last_success_at      TEXT,
    version              INTEGER NOT NULL,
    created_at           TEXT    NOT NULL,
    updated_at           TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, id)
) STRICT;
CREATE INDEX webhooks_by_created ON webhooks (tenant_id, created_at DESC, id DESC);

CREATE TABLE deliveries (
    tenant_id        BLOB    NOT NULL,
    id               BLOB    NOT NULL,
    webhook_id       BLOB    NOT NULL,
    event_id         BLOB    NOT NULL,
    event_type       TEXT    NOT NULL,
    entity_key       TEXT    NOT NULL,
    payload          TEXT    NOT NULL CHECK (json_valid(payload)),
    status           TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL CHECK (attempts >= 0),
    next_attempt_at  TEXT    NOT NULL,
    retry_until      TEXT    NOT NULL,
    lease_until      TEXT,
    lease_token      BLOB,
    last_error       TEXT,
    last_status_code INTEGER,
    last_attempt_at  TEXT,
    created_at       TEXT    NOT NULL,
    delivered_at     TEXT,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, webhook_id, event_id),
    FOREIGN KEY (tenant_id, webhook_id) REFERENCES webhooks (tenant_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX deliveries_by_created ON deliveries (tenant_id, webhook_id, created_at DESC, id DESC);
CREATE INDEX deliveries_by_entity ON deliveries (tenant_id, webhook_id, entity_key, event_id) WHERE status = 'pending';
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
