-- Pipelines, stages and deals keep their versions in kit's bitemporal tables (entities
-- 'pipeline', 'stage', 'deal'). This migration adds the indexes their lookups need, the
-- stage-change log and the deal contacts.

-- Each index is partial on its entity, so no lookup of another entity's rows can take it.
CREATE INDEX crm_stages_by_pipeline ON entity_heads (tenant_id, (doc->>'pipeline_id'))
    WHERE entity = 'stage' AND deleted_at IS NULL;
CREATE INDEX crm_deals_by_pipeline ON entity_heads (tenant_id, (doc->>'pipeline_id'))
    WHERE entity = 'deal' AND deleted_at IS NULL;
CREATE INDEX crm_deals_by_stage ON entity_heads (tenant_id, (doc->>'stage_id'))
    WHERE entity = 'deal' AND deleted_at IS NULL;
CREATE INDEX crm_deals_by_contact ON entity_heads (tenant_id, (doc->>'contact_id'))
    WHERE entity = 'deal' AND deleted_at IS NULL;
CREATE INDEX crm_deals_by_organization ON entity_heads (tenant_id, (doc->>'organization_id'))
    WHERE entity = 'deal' AND deleted_at IS NULL;
-- Exactly one default pipeline per tenant: the second wall behind the service's lock.
CREATE UNIQUE INDEX crm_one_default_pipeline ON entity_heads (tenant_id)
    WHERE entity = 'pipeline' AND deleted_at IS NULL AND (doc->>'is_default') = 'true';

-- Every stage transition of a deal, append-only: the audit trail and what analytics read.
-- `changed_at` is when the move happened in the world (valid time), `recorded_at` when it was
-- written (system time), so analytics "as known then" keep the rows recorded by then.
CREATE TABLE stage_changes (
    seq           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     uuid        NOT NULL,
    id            uuid        NOT NULL,
    deal_id       uuid        NOT NULL,
    pipeline_id   uuid        NOT NULL,
    from_stage_id uuid,
    to_stage_id   uuid        NOT NULL,
    to_kind       text        NOT NULL CHECK (to_kind IN ('open', 'won', 'lost')),
    amount        text,
    currency      text,
    reason        text,
    actor         text        NOT NULL,
    changed_at    timestamptz NOT NULL,
    recorded_at   timestamptz NOT NULL
);
CREATE INDEX stage_changes_by_deal ON stage_changes (tenant_id, deal_id, changed_at, seq);
CREATE INDEX stage_changes_by_pipeline ON stage_changes (tenant_id, pipeline_id, changed_at);

-- The contacts of a deal (ids of the contacts service, checked there when added).
CREATE TABLE deal_contacts (
    tenant_id     uuid        NOT NULL,
    id            uuid        NOT NULL,
    deal_id       uuid        NOT NULL,
    contact_id    uuid        NOT NULL,
    is_primary    boolean     NOT NULL,
    introduced_by uuid,
    role          text,
    metadata      jsonb       NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, deal_id, contact_id)
);
CREATE INDEX deal_contacts_by_contact ON deal_contacts (tenant_id, contact_id);

ALTER TABLE stage_changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE stage_changes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON stage_changes
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
ALTER TABLE deal_contacts ENABLE ROW LEVEL SECURITY;
ALTER TABLE deal_contacts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON deal_contacts
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
