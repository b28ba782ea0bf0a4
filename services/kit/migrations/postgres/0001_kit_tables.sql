-- Tables every service schema gets from kit: the bitemporal store (heads + versions) and the outbox.
-- Timestamps are written by the application clock (UTC, microseconds), never by now().

CREATE TABLE entity_heads (
    tenant_id   uuid        NOT NULL,
    entity      text        NOT NULL,
    id          uuid        NOT NULL,
    version     bigint      NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    deleted_at  timestamptz,
    doc         jsonb       NOT NULL,
    search_text text        NOT NULL DEFAULT '',
    search      tsvector GENERATED ALWAYS AS (to_tsvector('simple', search_text)) STORED,
    PRIMARY KEY (tenant_id, entity, id)
);
CREATE INDEX entity_heads_keyset ON entity_heads (tenant_id, entity, updated_at DESC, id DESC)
    WHERE deleted_at IS NULL;
CREATE INDEX entity_heads_search ON entity_heads USING GIN (search);

CREATE TABLE entity_versions (
    row_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    uuid        NOT NULL,
    entity       text        NOT NULL,
    id           uuid        NOT NULL,
    version      bigint      NOT NULL,
    fact_version bigint      NOT NULL,
    op           text        NOT NULL CHECK (op IN ('assert', 'remainder')),
    reason       text        NOT NULL,
    deleted      boolean     NOT NULL,
    sys_from     timestamptz NOT NULL,
    sys_to       timestamptz,
    valid_from   timestamptz NOT NULL,
    valid_to     timestamptz,
    doc          jsonb       NOT NULL,
    captured_by  text        NOT NULL,
    CHECK (sys_to IS NULL OR sys_to >= sys_from),
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);
CREATE INDEX entity_versions_entity ON entity_versions (tenant_id, entity, id, sys_from);
CREATE INDEX entity_versions_open ON entity_versions (tenant_id, entity, id) WHERE sys_to IS NULL;

CREATE TABLE outbox (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id   uuid        NOT NULL UNIQUE,
    tenant_id  uuid        NOT NULL,
    subject    text        NOT NULL,
    payload    bytea       NOT NULL,
    created_at timestamptz NOT NULL,
    sent_at    timestamptz
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

-- Row-level security: the second wall behind `tenant_id = $1` in every query. The app role sees
-- a tenant's rows only inside a transaction that set worktruck.tenant_id, or every row inside
-- a system transaction (key lookup, outbox relay). Every service schema gets this function from
-- kit, and every tenant-owned table's policy calls it, so the rule is written once.
CREATE FUNCTION tenant_visible(t uuid) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$ SELECT t = NULLIF(current_setting('worktruck.tenant_id', true), '')::uuid
              OR coalesce(current_setting('worktruck.system', true) = 'on', false) $$;

ALTER TABLE entity_heads ENABLE ROW LEVEL SECURITY;
ALTER TABLE entity_heads FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON entity_heads
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));

ALTER TABLE entity_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE entity_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON entity_versions
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));

ALTER TABLE outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON outbox
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
