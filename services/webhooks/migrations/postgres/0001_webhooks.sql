-- Webhooks: the URLs a tenant registers for its events, and one delivery row per event and
-- webhook. Plain tables (a webhook's history is its events). `secret_sealed` and
-- `previous_sealed` hold signing secrets sealed by kit's envelope encryption, never a secret.

CREATE TABLE webhooks (
    tenant_id            uuid        NOT NULL,
    id                   uuid        NOT NULL,
    url                  text        NOT NULL,
    event_types          jsonb       NOT NULL,
    description          text,
    metadata             jsonb       NOT NULL,
    status               text        NOT NULL CHECK (status IN ('active', 'disabled')),
    disabled_reason      text,
    secret_sealed        bytea       NOT NULL,
    secret_hint          text        NOT NULL,
    previous_sealed      bytea,
    previous_expires_at  timestamptz,
    consecutive_failures integer     NOT NULL CHECK (consecutive_failures >= 0),
    failing_since        timestamptz,
    last_success_at      timestamptz,
    version              bigint      NOT NULL,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX webhooks_by_created ON webhooks (tenant_id, created_at DESC, id DESC);

-- One event for one webhook. (webhook_id, event_id) is unique, so an event the bus delivers
-- again makes no second delivery. Deliveries of one (webhook, entity_key) go out in event_id
-- order (UUIDv7, the outbox's order): one is attempted only when no earlier one is pending.
-- `lease_until` / `lease_token` are a delivery loop's claim, so replicas never send one
-- delivery at once.
CREATE TABLE deliveries (
    tenant_id        uuid        NOT NULL,
    id               uuid        NOT NULL,
    webhook_id       uuid        NOT NULL,
    event_id         uuid        NOT NULL,
    event_type       text        NOT NULL,
    entity_key       text        NOT NULL,
    payload          jsonb       NOT NULL,
    status           text        NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer     NOT NULL CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL,
    retry_until      timestamptz NOT NULL,
    lease_until      timestamptz,
    lease_token      uuid,
    last_error       text,
    last_status_code integer,
    last_attempt_at  timestamptz,
    created_at       timestamptz NOT NULL,
    delivered_at     timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, webhook_id, event_id),
    FOREIGN KEY (tenant_id, webhook_id) REFERENCES webhooks (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX deliveries_by_created ON deliveries (tenant_id, webhook_id, created_at DESC, id DESC);
CREATE INDEX deliveries_by_entity ON deliveries (tenant_id, webhook_id, entity_key, event_id) WHERE status = 'pending';
-- The delivery loop's queue (every tenant's due deliveries).
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';

-- RLS through kit's tenant_visible() (defined in this schema by kit's migration).
ALTER TABLE webhooks ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhooks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhooks
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));

ALTER TABLE deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON deliveries
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
