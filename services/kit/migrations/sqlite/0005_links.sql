-- Cross-domain links (kit::links): the links this service's entities make (`links`, owned),
-- the links other entities make to this service's (`links_inbound`, a projection fed by the
-- bus), the events its consumers have handled (deduplication), and this database's identity
-- (which names its durable consumers).

CREATE TABLE kit_instance (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    instance    BLOB    NOT NULL,
    created_at  TEXT    NOT NULL
) STRICT;

CREATE TABLE links (
    tenant_id      BLOB    NOT NULL,
    id             BLOB    NOT NULL,
    source_entity  TEXT    NOT NULL,
    source_id      BLOB    NOT NULL,
    source_title   TEXT    NOT NULL,
    target         TEXT    NOT NULL,
    target_title   TEXT    NOT NULL,
    link_type      TEXT    NOT NULL,
    context        TEXT    NOT NULL,
    origin         TEXT    NOT NULL,
    dangling       INTEGER NOT NULL DEFAULT 0,
    target_version INTEGER NOT NULL DEFAULT 0,
    suspended      INTEGER NOT NULL DEFAULT 0,
    seq            INTEGER NOT NULL,
    created_at     TEXT    NOT NULL,
    updated_at     TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, id)
) STRICT;
CREATE INDEX links_source ON links (tenant_id, source_entity, source_id, created_at DESC, id DESC);
CREATE INDEX links_target ON links (tenant_id, target);

CREATE TABLE links_inbound (
    tenant_id     BLOB    NOT NULL,
    id            BLOB    NOT NULL,
    source        TEXT    NOT NULL,
    source_title  TEXT    NOT NULL,
    target_entity TEXT    NOT NULL,
    target_id     BLOB    NOT NULL,
    target_title  TEXT    NOT NULL,
    link_type     TEXT    NOT NULL,
    context       TEXT    NOT NULL,
    dangling      INTEGER NOT NULL DEFAULT 0,
    removed       INTEGER NOT NULL DEFAULT 0,
    seq           INTEGER NOT NULL,
    created_at    TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, id)
) STRICT;
CREATE INDEX links_inbound_target ON links_inbound (tenant_id, target_entity, target_id, created_at DESC, id DESC);

CREATE TABLE consumed_events (
    tenant_id   BLOB NOT NULL,
    event_id    BLOB NOT NULL,
    consumer    TEXT NOT NULL,
    consumed_at TEXT NOT NULL,
    PRIMARY KEY (consumer, event_id)
) STRICT;
CREATE INDEX consumed_events_age ON consumed_events (consumed_at);
