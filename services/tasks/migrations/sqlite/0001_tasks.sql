-- Projects, tasks, labels and comments keep their versions in kit's bitemporal tables (entities
-- 'project', 'task', 'label', 'comment'). This migration adds the indexes their lookups need,
-- the identifier counters, the identifiers ever given, the dependency edges and the tenant's
-- task settings (see the PostgreSQL migration for the reasons).

CREATE INDEX tasks_by_project ON entity_heads (tenant_id, doc->>'project_id')
    WHERE entity = 'task' AND deleted_at IS NULL;
CREATE INDEX tasks_by_parent ON entity_heads (tenant_id, doc->>'parent_id')
    WHERE entity = 'task' AND deleted_at IS NULL;
CREATE INDEX tasks_by_assignee ON entity_heads (tenant_id, doc->>'assignee_id')
    WHERE entity = 'task' AND deleted_at IS NULL;
CREATE INDEX tasks_open_by_due_at ON entity_heads (tenant_id, doc->>'due_at')
    WHERE entity = 'task' AND deleted_at IS NULL AND doc->>'status_category' NOT IN ('completed', 'canceled');
CREATE INDEX tasks_open_by_due_date ON entity_heads (tenant_id, doc->>'due_date')
    WHERE entity = 'task' AND deleted_at IS NULL AND doc->>'status_category' NOT IN ('completed', 'canceled');
CREATE INDEX tasks_by_next_occurrence ON entity_heads (tenant_id, doc->>'next_occurrence')
    WHERE entity = 'task' AND deleted_at IS NULL AND doc->>'next_occurrence' IS NOT NULL;
CREATE INDEX comments_by_task ON entity_heads (tenant_id, doc->>'task_id', created_at)
    WHERE entity = 'comment' AND deleted_at IS NULL;
CREATE UNIQUE INDEX labels_by_key ON entity_heads (tenant_id, doc->>'key')
    WHERE entity = 'label' AND deleted_at IS NULL;

CREATE TABLE project_prefixes (
    tenant_id   BLOB    NOT NULL,
    prefix      TEXT    NOT NULL,
    project_id  BLOB    NOT NULL,
    next_number INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, prefix)
) STRICT;
CREATE UNIQUE INDEX project_prefixes_project ON project_prefixes (tenant_id, project_id);

CREATE TABLE task_identifiers (
    tenant_id  BLOB NOT NULL,
    identifier TEXT NOT NULL,
    task_id    BLOB NOT NULL,
    PRIMARY KEY (tenant_id, identifier)
) STRICT;
CREATE INDEX task_identifiers_task ON task_identifiers (tenant_id, task_id);

CREATE TABLE task_dependencies (
    tenant_id  BLOB NOT NULL,
    task_id    BLOB NOT NULL,
    other_id   BLOB NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('blocks', 'related', 'duplicate')),
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, task_id, other_id, kind)
) STRICT;
CREATE INDEX task_dependencies_other ON task_dependencies (tenant_id, other_id);

CREATE TABLE task_settings (
    tenant_id BLOB PRIMARY KEY,
    time_zone TEXT NOT NULL
) STRICT;
