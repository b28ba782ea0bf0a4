-- Cross-domain links (kit::links), in every service schema: the links this service's entities
-- make (`links`, owned), the links other entities make to this service's (`links_inbound`, a
-- projection fed by the bus), the events its consumers have handled (deduplication), and this
-- schema's identity (which names its durable consumers).

CREATE TABLE kit_instance (
    id          smallint    PRIMARY KEY CHECK (id = 1),
    instance    uuid        NOT NULL,
    created_at  timestamptz NOT NULL
);

CREATE TABLE links (
    tenant_id      uuid        NOT NULL,
    id             uuid        NOT NULL,
    source_entity  text        NOT NULL,
    source_id      uuid        NOT NULL,
    source_title   text        NOT NULL,
    target         text        NOT NULL,
    target_title   text        NOT NULL,
    link_type      text        NOT NULL,
    context        text        NOT NULL,
    origin         text        NOT NULL,
    dangling       boolean     NOT NULL DEFAULT false,
    target_version bigint      NOT NULL DEFAULT 0,
    suspended      boolean     NOT NULL DEFAULT false,
    seq            bigint      NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX links_source ON links (tenant_id, source_entity, source_id, created_at DESC, id DESC);
CREATE INDEX links_target ON links (tenant_id, target);

CREATE TABLE links_inbound (
    tenant_id     uuid        NOT NULL,
    id            uuid        NOT NULL,
    source        text        NOT NULL,
    source_title  text        NOT NULL,
    target_entity text        NOT NULL,
    target_id     uuid        NOT NULL,
    target_title  text        NOT NULL,
    link_type     text        NOT NULL,
    context       text        NOT NULL,
    dangling      boolean     NOT NULL DEFAULT false,
    removed       boolean     NOT NULL DEFAULT false,
    seq           bigint      NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX links_inbound_target ON links_inbound (tenant_id, target_entity, target_id, created_at DESC, id DESC);

CREATE TABLE consumed_events (
    tenant_id   uuid        NOT NULL,
    event_id    uuid        NOT NULL,
    consumer    text        NOT NULL,
    consumed_at timestamptz NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX consumed_events_age ON consumed_events (consumed_at);

ALTER TABLE links ENABLE ROW LEVEL SECURITY;
ALTER TABLE links FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON links
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
ALTER TABLE links_inbound ENABLE ROW LEVEL SECURITY;
ALTER TABLE links_inbound FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON links_inbound
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
ALTER TABLE consumed_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE consumed_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON consumed_events
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
