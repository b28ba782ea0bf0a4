-- Notes, notebooks and tag definitions keep their versions in kit's bitemporal tables (entities
-- 'note', 'notebook', 'tag'). This migration adds the indexes their lookups need and the table of
-- wikilinks, a projection of the current bodies rebuilt on every write of a note.

-- Each index is partial on its entity, so no lookup of another entity's rows can take it.
CREATE INDEX notes_by_title_key ON entity_heads (tenant_id, doc->>'title_key', created_at, id)
    WHERE entity = 'note' AND deleted_at IS NULL;
CREATE INDEX notes_by_notebook ON entity_heads (tenant_id, doc->>'notebook_id')
    WHERE entity = 'note' AND deleted_at IS NULL;
CREATE INDEX tags_by_key ON entity_heads (tenant_id, doc->>'key')
    WHERE entity = 'tag' AND deleted_at IS NULL;

-- One row per [[wikilink]] in the current body of a note (deleted notes keep theirs, so a
-- restore brings them back); `target_id` is kept by id once resolved.
CREATE TABLE note_links (
    tenant_id    BLOB    NOT NULL,
    source_id    BLOB    NOT NULL,
    position     INTEGER NOT NULL,
    target_title TEXT    NOT NULL,
    target_key   TEXT    NOT NULL,
    target_id    BLOB,
    heading      TEXT,
    block        TEXT,
    alias        TEXT,
    context      TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, source_id, position)
) STRICT;
CREATE INDEX note_links_target ON note_links (tenant_id, target_id);
CREATE INDEX note_links_unresolved ON note_links (tenant_id, target_key) WHERE target_id IS NULL;
