-- Notes, notebooks and tag definitions keep their versions in kit's bitemporal tables (entities
-- 'note', 'notebook', 'tag'). This migration adds the indexes their lookups need and the table of
-- wikilinks, a projection of the current bodies rebuilt on every write of a note.

-- Each index is partial on its entity, so the planner cannot take one for a lookup of another
-- entity's rows (with stale statistics it took a (tenant_id, entity, …) one over the primary key
-- and a page of 1,000 backlinks took a second). Links resolve by title key, oldest first.
CREATE INDEX notes_by_title_key ON entity_heads (tenant_id, (doc->>'title_key'), created_at, id)
    WHERE entity = 'note' AND deleted_at IS NULL;
-- Notebook filters and note counts.
CREATE INDEX notes_by_notebook ON entity_heads (tenant_id, (doc->>'notebook_id'))
    WHERE entity = 'note' AND deleted_at IS NULL;
-- Tags by name key.
CREATE INDEX tags_by_key ON entity_heads (tenant_id, (doc->>'key'))
    WHERE entity = 'tag' AND deleted_at IS NULL;

-- One row per [[wikilink]] in the current body of a note (deleted notes keep theirs, so a
-- restore brings them back). `target_id` is set once the link resolves and then kept by id, so
-- a rename of the target does not break it.
CREATE TABLE note_links (
    tenant_id    uuid    NOT NULL,
    source_id    uuid    NOT NULL,
    position     integer NOT NULL,
    target_title text    NOT NULL,
    target_key   text    NOT NULL,
    target_id    uuid,
    heading      text,
    block        text,
    alias        text,
    context      text    NOT NULL,
    PRIMARY KEY (tenant_id, source_id, position)
);
CREATE INDEX note_links_target ON note_links (tenant_id, target_id);
CREATE INDEX note_links_unresolved ON note_links (tenant_id, target_key) WHERE target_id IS NULL;

ALTER TABLE note_links ENABLE ROW LEVEL SECURITY;
ALTER TABLE note_links FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON note_links
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
