-- Apps and their mirrored tools (see the PostgreSQL twin for the rules).

CREATE TABLE apps (
    tenant_id                  BLOB    NOT NULL,
    id                         BLOB    NOT NULL,
    slug                       TEXT    NOT NULL,
    display_name               TEXT    NOT NULL,
    description                TEXT,
    mcp_server_url             TEXT    NOT NULL,
    auth_type                  TEXT    NOT NULL CHECK (auth_type IN ('none', 'bearer', 'header')),
    auth_header_name           TEXT,
    auth_hint                  TEXT,
    auth_sealed                BLOB,
    status                     TEXT    NOT NULL CHECK (status IN ('active', 'disabled', 'unhealthy')),
    status_reason              TEXT,
    consecutive_probe_failures INTEGER NOT NULL CHECK (consecutive_probe_failures >= 0),
    last_probed_at             TEXT,
    last_healthy_at            TEXT,
    next_probe_at              TEXT    NOT NULL,
    protocol_version           TEXT,
    enabled_tools              TEXT    NOT NULL CHECK (json_valid(enabled_tools)),
    metadata                   TEXT    NOT NULL CHECK (json_valid(metadata)),
    version                    INTEGER NOT NULL,
    created_at                 TEXT    NOT NULL,
    updated_at                 TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, slug)
) STRICT;
CREATE INDEX apps_by_created ON apps (tenant_id, created_at DESC, id DESC);
CREATE INDEX apps_by_next_probe ON apps (next_probe_at) WHERE status <> 'disabled';

CREATE TABLE app_tools (
    tenant_id              BLOB    NOT NULL,
    app_id                 BLOB    NOT NULL,
    name                   TEXT    NOT NULL,
    title                  TEXT,
    description            TEXT,
    input_schema           TEXT    NOT NULL CHECK (json_valid(input_schema)),
    output_schema          TEXT,
    annotations            TEXT,
    first_seen_at          TEXT    NOT NULL,
    last_seen_at           TEXT    NOT NULL,
    stale                  INTEGER NOT NULL,
    approved               INTEGER NOT NULL,
    approved_description   TEXT,
    approved_input_schema  TEXT,
    approved_output_schema TEXT,
    changed_at             TEXT,
    PRIMARY KEY (tenant_id, app_id, name),
    FOREIGN KEY (tenant_id, app_id) REFERENCES apps (tenant_id, id) ON DELETE CASCADE
) STRICT;
