-- Reads of the past seek instead of scanning an entity's versions, so they cost the same on an
-- entity with 10,000 versions as on one with 10:
--   * a read at (as_of, valid_at) walks back from as_of in (sys_from, row_id) order and stops
--     at the first row that was open then and holds valid_at;
--   * a history page and "when was this fact recorded" seek an assert by its fact version.
-- The first index replaces entity_versions_entity, whose columns it starts with.
DROP INDEX IF EXISTS entity_versions_entity;
CREATE INDEX entity_versions_at ON entity_versions (tenant_id, entity, id, sys_from, row_id);
CREATE INDEX entity_versions_asserts ON entity_versions (tenant_id, entity, id, fact_version) WHERE op = 'assert';
-- The open row of an entity is found by `sys_to IS NULL` as an index condition. The partial
-- index on `WHERE sys_to IS NULL` kept, for every row a write later closed, an entry leading
-- (through the update's heap-only tuple chain) to the closed row, so closing the open row
-- walked every earlier version: an update cost grew with the entity's history.
DROP INDEX IF EXISTS entity_versions_open;
CREATE INDEX entity_versions_open ON entity_versions (tenant_id, entity, id, sys_to);
