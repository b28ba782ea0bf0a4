-- Agent configs (one per tenant and blueprint), runs, their journaled steps and their events.
-- Plain tables: a config's history is not kept, a run's journal is its history. Timestamps are
-- written by the application clock (UTC, microseconds), never by now().

CREATE TABLE agent_configs (
    tenant_id  uuid        NOT NULL,
    blueprint  text        NOT NULL,
    id         uuid        NOT NULL,
    -- system_prompt_override, allowed_tools, model, budget_default_cents,
    -- deadline_default_seconds, guardrails, schedule, disabled.
    doc        jsonb       NOT NULL,
    version    bigint      NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, blueprint)
);

-- A run. `status` is the truth workers claim on: a claim is a compare-and-set of the row from
-- queued (or running with a lapsed lease) to running with this worker's lease, so exactly one
-- worker wins, on any replica.
CREATE TABLE agent_runs (
    tenant_id        uuid        NOT NULL,
    id               uuid        NOT NULL,
    blueprint        text        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('queued', 'running', 'waiting', 'succeeded', 'failed', 'cancelled')),
    input            jsonb       NOT NULL,
    output           jsonb,
    -- What the run runs with, fixed at enqueue: model, system prompt, tools, and the enqueuing
    -- principal's context (actor, scopes, retention, plan) its tool calls are signed with.
    spec             jsonb       NOT NULL,
    budget_cents     bigint,
    deadline_at      timestamptz,
    cost_micros      bigint      NOT NULL DEFAULT 0,
    failure_category text,
    failure_detail   text,
    worker_id        text,
    lease_until      timestamptz,
    heartbeat_at     timestamptz,
    attempts         integer     NOT NULL DEFAULT 0,
    event_seq        bigint      NOT NULL DEFAULT 0,
    run_at           timestamptz NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX agent_runs_by_blueprint ON agent_runs (tenant_id, blueprint, created_at DESC, id DESC);
-- What workers scan (across tenants): runs to claim.
CREATE INDEX agent_runs_claimable ON agent_runs (run_at) WHERE status IN ('queued', 'running');

-- The journal: one row per step, written before the run moves on.
CREATE TABLE agent_steps (
    tenant_id          uuid        NOT NULL,
    run_id             uuid        NOT NULL,
    seq                integer     NOT NULL,
    kind               text        NOT NULL CHECK (kind IN ('llm', 'tool', 'guardrail')),
    name               text        NOT NULL,
    input_hash         text        NOT NULL,
    input              jsonb,
    output             jsonb,
    model              text,
    input_tokens       bigint      NOT NULL DEFAULT 0,
    output_tokens      bigint      NOT NULL DEFAULT 0,
    cache_read_tokens  bigint      NOT NULL DEFAULT 0,
    cache_write_tokens bigint      NOT NULL DEFAULT 0,
    cost_micros        bigint      NOT NULL DEFAULT 0,
    started_at         timestamptz NOT NULL,
    completed_at       timestamptz,
    PRIMARY KEY (tenant_id, run_id, seq)
);

CREATE TABLE agent_run_events (
    tenant_id uuid        NOT NULL,
    run_id    uuid        NOT NULL,
    seq       bigint      NOT NULL,
    kind      text        NOT NULL,
    status    text        NOT NULL,
    detail    text        NOT NULL DEFAULT '',
    at        timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, run_id, seq)
);

ALTER TABLE agent_configs ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_configs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agent_configs
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
ALTER TABLE agent_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_runs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agent_runs
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
ALTER TABLE agent_steps ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_steps FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agent_steps
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
ALTER TABLE agent_run_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_run_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agent_run_events
    USING (tenant_visible(tenant_id)) WITH CHECK (tenant_visible(tenant_id));
