-- Tables every service database gets from kit: the bitemporal store (heads + versions) and the
-- outbox. STRICT tables; UUIDs are 16-byte BLOBs; timestamps are RFC 3339 UTC text written by
-- the application clock only (text comparison then matches time order).

CREATE TABLE entity_heads (
    rid         INTEGER PRIMARY KEY,
    tenant_id   BLOB    NOT NULL,
    entity      TEXT    NOT NULL,
    id          BLOB    NOT NULL,
    version     INTEGER NOT NULL,
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    deleted_at  TEXT,
    doc         TEXT    NOT NULL CHECK (json_valid(doc)),
    search_text TEXT    NOT NULL DEFAULT '',
    UNIQUE (tenant_id, entity, id)
) STRICT;
CREATE INDEX entity_heads_keyset ON entity_heads (tenant_id, entity, updated_at DESC, id DESC)
    WHERE deleted_at IS NULL;

CREATE VIRTUAL TABLE entity_heads_fts USING fts5(
    search_text, content='entity_heads', content_rowid='rid'
);
CREATE TRIGGER entity_heads_ai AFTER INSERT ON entity_heads BEGIN
    INSERT INTO entity_heads_fts(rowid, search_text) VALUES (new.rid, new.search_text);
END;
CREATE TRIGGER entity_heads_ad AFTER DELETE ON entity_heads BEGIN
    INSERT INTO entity_heads_fts(entity_heads_fts, rowid, search_text)
        VALUES ('delete', old.rid, old.search_text);
END;
CREATE TRIGGER entity_heads_au AFTER UPDATE OF search_text ON entity_heads BEGIN
    INSERT INTO entity_heads_fts(entity_heads_fts, rowid, search_text)
        VALUES ('delete', old.rid, old.search_text);
    INSERT INTO entity_heads_fts(rowid, search_text) VALUES (new.rid, new.search_text);
END;

CREATE TABLE entity_versions (
    row_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    BLOB    NOT NULL,
    entity       TEXT    NOT NULL,
    id           BLOB    NOT NULL,
    version      INTEGER NOT NULL,
    fact_version INTEGER NOT NULL,
    op           TEXT    NOT NULL CHECK (op IN ('assert', 'remainder')),
    reason       TEXT    NOT NULL,
    deleted      INTEGER NOT NULL,
    sys_from     TEXT    NOT NULL,
    sys_to       TEXT,
    valid_from   TEXT    NOT NULL,
    valid_to     TEXT,
    doc          TEXT    NOT NULL CHECK (json_valid(doc)),
    captured_by  TEXT    NOT NULL,
    CHECK (sys_to IS NULL OR sys_to >= sys_from),
    CHECK (valid_to IS NULL OR valid_to > valid_from)
) STRICT;
CREATE INDEX entity_versions_entity ON entity_versions (tenant_id, entity, id, sys_from);
CREATE INDEX entity_versions_open ON entity_versions (tenant_id, entity, id) WHERE sys_to IS NULL;

CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   BLOB    NOT NULL UNIQUE,
    tenant_id  BLOB    NOT NULL,
    subject    TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    created_at TEXT    NOT NULL,
    sent_at    TEXT
) STRICT;
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
