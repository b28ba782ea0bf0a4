-- Current-state lookups of contacts and of the entities that point at them, maintained in the
-- same transaction as every write of their owner (the owner's rows are replaced as a whole):
--   kind = a channel type ('email', 'phone', …)  key = canonical value   owner = contact
--   kind = 'tag' / 'group' / 'org'               key = tag / group / organization id
--   kind = 'date'                                key = 'MM-DD'
--   kind = 'stay'                                key = ''  (has a stay-in-touch cadence)
--   kind = 'rel'                                 key = either contact  owner = relationship
--   kind = 'participant'                         key = contact         owner = interaction
-- The versioned documents stay the truth (as_of reads come from them); these rows only answer
-- "which live contacts have X" without scanning every document.
CREATE TABLE contacts_lookup (
    tenant_id uuid NOT NULL,
    kind      text NOT NULL,
    key       text NOT NULL,
    owner_id  uuid NOT NULL,
    PRIMARY KEY (tenant_id, kind, key, owner_id)
);
CREATE INDEX contacts_lookup_by_owner ON contacts_lookup (tenant_id, owner_id, kind, key);

ALTER TABLE contacts_lookup ENABLE ROW LEVEL SECURITY;
ALTER TABLE contacts_lookup FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON contacts_lookup
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));

-- Tags and relationship types by name key.
CREATE INDEX contact_tags_by_key ON entity_heads (tenant_id, (doc->>'key'))
    WHERE entity = 'contact_tag' AND deleted_at IS NULL;
CREATE INDEX relationship_types_by_key ON entity_heads (tenant_id, (doc->>'name'))
    WHERE entity = 'relationship_type' AND deleted_at IS NULL;
-- vCard import matches by UID and finds organizations by name.
CREATE INDEX contacts_by_vcard_uid ON entity_heads (tenant_id, (doc->>'vcard_uid'))
    WHERE entity = 'contact' AND deleted_at IS NULL;
CREATE INDEX contacts_by_display_name ON entity_heads (tenant_id, (doc->>'display_name'))
    WHERE entity = 'contact' AND deleted_at IS NULL;
