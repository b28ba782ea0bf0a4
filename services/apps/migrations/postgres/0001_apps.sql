-- Apps: the MCP servers a tenant registers, and the mirror of their tools. Plain tables (an
-- app's probes change it often and its history is its events, not versions). `auth_sealed`
-- holds the secret sealed by kit's envelope encryption, never the secret itself.

CREATE TABLE apps (
    tenant_id                  uuid        NOT NULL,
    id                         uuid        NOT NULL,
    slug                       text        NOT NULL,
    display_name               text        NOT NULL,
    description                text,
    mcp_server_url             text        NOT NULL,
    auth_type                  text        NOT NULL CHECK (auth_type IN ('none', 'bearer', 'header')),
    auth_header_name           text,
    auth_hint                  text,
    auth_sealed                bytea,
    status                     text        NOT NULL CHECK (status IN ('active', 'disabled', 'unhealthy')),
    status_reason              text,
    consecutive_probe_failures integer     NOT NULL CHECK (consecutive_probe_failures >= 0),
    last_probed_at             timestamptz,
    last_healthy_at            timestamptz,
    next_probe_at              timestamptz NOT NULL,
    protocol_version           text,
    enabled_tools              jsonb       NOT NULL,
    metadata                   jsonb       NOT NULL,
    version                    bigint      NOT NULL,
    created_at                 timestamptz NOT NULL,
    updated_at                 timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, slug)
);
CREATE INDEX apps_by_created ON apps (tenant_id, created_at DESC, id DESC);
-- The periodic re-probe's queue (every tenant's due apps).
CREATE INDEX apps_by_next_probe ON apps (next_probe_at) WHERE status <> 'disabled';

-- One row per tool a probe has listed. `approved_*` is the text the tenant approved by enabling
-- the tool; `changed_at` is set when a probe finds other text for an approved tool.
CREATE TABLE app_tools (
    tenant_id              uuid        NOT NULL,
    app_id                 uuid        NOT NULL,
    name                   text        NOT NULL,
    title                  text,
    description            text,
    input_schema           jsonb       NOT NULL,
    output_schema          jsonb,
    annotations            jsonb,
    first_seen_at          timestamptz NOT NULL,
    last_seen_at           timestamptz NOT NULL,
    stale                  boolean     NOT NULL,
    approved               boolean     NOT NULL,
    approved_description   text,
    approved_input_schema  jsonb,
    approved_output_schema jsonb,
    changed_at             timestamptz,
    PRIMARY KEY (tenant_id, app_id, name),
    FOREIGN KEY (tenant_id, app_id) REFERENCES apps (tenant_id, id) ON DELETE CASCADE
);

-- RLS through kit's tenant_visible() (defined in this schema by kit's migration).
ALTER TABLE apps ENABLE ROW LEVEL SECURITY;
ALTER TABLE apps FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON apps
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));

ALTER TABLE app_tools ENABLE ROW LEVEL SECURITY;
ALTER TABLE app_tools FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON app_tools
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
