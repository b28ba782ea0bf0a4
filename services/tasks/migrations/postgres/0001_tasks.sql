-- Projects, tasks, labels and comments keep their versions in kit's bitemporal tables (entities
-- 'project', 'task', 'label', 'comment'). This migration adds the indexes their lookups need
-- (each partial on its entity, as the notes service's are), the identifier counters, the
-- identifiers ever given, the dependency edges and the tenant's task settings.

CREATE INDEX tasks_by_project ON entity_heads (tenant_id, (doc->>'project_id'))
    WHERE entity = 'task' AND deleted_at IS NULL;
CREATE INDEX tasks_by_parent ON entity_heads (tenant_id, (doc->>'parent_id'))
    WHERE entity = 'task' AND deleted_at IS NULL;
CREATE INDEX tasks_by_assignee ON entity_heads (tenant_id, (doc->>'assignee_id'))
    WHERE entity = 'task' AND deleted_at IS NULL;
-- The overdue list: open tasks by due time or due date.
CREATE INDEX tasks_open_by_due_at ON entity_heads (tenant_id, (doc->>'due_at'))
    WHERE entity = 'task' AND deleted_at IS NULL AND doc->>'status_category' NOT IN ('completed', 'canceled');
CREATE INDEX tasks_open_by_due_date ON entity_heads (tenant_id, (doc->>'due_date'))
    WHERE entity = 'task' AND deleted_at IS NULL AND doc->>'status_category' NOT IN ('completed', 'canceled');
-- Recurring tasks by their next occurrence.
CREATE INDEX tasks_by_next_occurrence ON entity_heads (tenant_id, (doc->>'next_occurrence'))
    WHERE entity = 'task' AND deleted_at IS NULL AND doc->>'next_occurrence' IS NOT NULL;
CREATE INDEX comments_by_task ON entity_heads (tenant_id, (doc->>'task_id'), created_at)
    WHERE entity = 'comment' AND deleted_at IS NULL;
-- Unique, so two creates naming one new label at once cannot define it twice.
CREATE UNIQUE INDEX labels_by_key ON entity_heads (tenant_id, (doc->>'key'))
    WHERE entity = 'label' AND deleted_at IS NULL;

-- One row per identifier prefix ever taken, with the number its next task gets. Creating a task
-- increments it in the task's own transaction (the row lock orders concurrent creates), so
-- numbers have no gaps and no duplicates. Rows outlive their project: a prefix is never reused.
CREATE TABLE project_prefixes (
    tenant_id   uuid    NOT NULL,
    prefix      text    NOT NULL,
    project_id  uuid    NOT NULL,
    next_number bigint  NOT NULL,
    PRIMARY KEY (tenant_id, prefix)
);
CREATE UNIQUE INDEX project_prefixes_project ON project_prefixes (tenant_id, project_id);

-- Every identifier a task ever had (a move to another project adds one), for by-identifier.
CREATE TABLE task_identifiers (
    tenant_id  uuid NOT NULL,
    identifier text NOT NULL,
    task_id    uuid NOT NULL,
    PRIMARY KEY (tenant_id, identifier)
);
CREATE INDEX task_identifiers_task ON task_identifiers (tenant_id, task_id);

-- Dependency edges. A blocking edge is stored once as (blocker, blocked, 'blocks').
CREATE TABLE task_dependencies (
    tenant_id  uuid        NOT NULL,
    task_id    uuid        NOT NULL,
    other_id   uuid        NOT NULL,
    kind       text        NOT NULL CHECK (kind IN ('blocks', 'related', 'duplicate')),
    created_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, task_id, other_id, kind)
);
CREATE INDEX task_dependencies_other ON task_dependencies (tenant_id, other_id);

CREATE TABLE task_settings (
    tenant_id uuid PRIMARY KEY,
    time_zone text NOT NULL
);

ALTER TABLE project_prefixes ENABLE ROW LEVEL SECURITY;
ALTER TABLE project_prefixes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON project_prefixes
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
ALTER TABLE task_identifiers ENABLE ROW LEVEL SECURITY;
ALTER TABLE task_identifiers FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON task_identifiers
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
ALTER TABLE task_dependencies ENABLE ROW LEVEL SECURITY;
ALTER TABLE task_dependencies FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON task_dependencies
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
ALTER TABLE task_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE task_settings FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON task_settings
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
