-- Pipelines, stages and deals keep their versions in kit's bitemporal tables (entities
-- 'pipeline', 'stage', 'deal'). This migration adds the indexes their lookups need, the
-- stage-change log and the deal contacts.

CREATE INDEX crm_stages_by_pipeline ON entity_heads (tenant_id, doc->>'pipeline_id')
    WHERE entity = 'stage' AND deleted_at IS NULL;
CREATE INDEX crm_deals_by_pipeline ON entity_heads (tenant_id, doc->>'pipeline_id')
    WHERE entity = 'deal' AND deleted_at IS NULL;
CREATE INDEX crm_deals_by_stage ON entity_heads (tenant_id, doc->>'stage_id')
    WHERE entity = 'deal' AND deleted_at IS NULL;
CREATE INDEX crm_deals_by_contact ON entity_heads (tenant_id, doc->>'contact_id')
    WHERE entity = 'deal' AND deleted_at IS NULL;
CREATE INDEX crm_deals_by_organization ON entity_heads (tenant_id, doc->>'organization_id')
    WHERE entity = 'deal' AND deleted_at IS NULL;
-- Exactly one default pipeline per tenant (SQLite's ->> reads a JSON true as 1).
CREATE UNIQUE INDEX crm_one_default_pipeline ON entity_heads (tenant_id)
    WHERE entity = 'pipeline' AND deleted_at IS NULL AND json_type(doc, '$.is_default') = 'true';

-- Every stage transition of a deal, append-only (`changed_at` valid time, `recorded_at`
-- system time).
CREATE TABLE stage_changes (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id     BLOB    NOT NULL,
    id            BLOB    NOT NULL,
    deal_id       BLOB    NOT NULL,
    pipeline_id   BLOB    NOT NULL,
    from_stage_id BLOB,
    to_stage_id   BLOB    NOT NULL,
    to_kind       TEXT    NOT NULL CHECK (to_kind IN ('open', 'won', 'lost')),
    amount        TEXT,
    currency      TEXT,
    reason        TEXT,
    actor         TEXT    NOT NULL,
    changed_at    TEXT    NOT NULL,
    recorded_at   TEXT    NOT NULL
) STRICT;
CREATE INDEX stage_changes_by_deal ON stage_changes (tenant_id, deal_id, changed_at, seq);
CREATE INDEX stage_changes_by_pipeline ON stage_changes (tenant_id, pipeline_id, changed_at);

CREATE TABLE deal_contacts (
    tenant_id     BLOB    NOT NULL,
    id            BLOB    NOT NULL,
    deal_id       BLOB    NOT NULL,
    contact_id    BLOB    NOT NULL,
    is_primary    INTEGER NOT NULL,
    introduced_by BLOB,
    role          TEXT,
    metadata      TEXT    NOT NULL CHECK (json_valid(metadata)),
    created_at    TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, deal_id, contact_id)
) STRICT;
CREATE INDEX deal_contacts_by_contact ON deal_contacts (tenant_id, contact_id);
