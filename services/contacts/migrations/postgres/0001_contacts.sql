-- Contacts keep their versions in kit's bitemporal tables (entity 'contact'); this migration adds
-- what only contacts need: an index for the kind filter on current reads.
CREATE INDEX contacts_by_kind ON entity_heads (tenant_id, entity, (doc->>'kind'), updated_at DESC, id DESC)
    WHERE deleted_at IS NULL;
