-- Schedules (see the PostgreSQL migration).
ALTER TABLE agent_configs ADD COLUMN next_tick_at TEXT;
ALTER TABLE agent_configs ADD COLUMN ticks_skipped INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agent_configs ADD COLUMN last_skip_reason TEXT;
CREATE INDEX agent_configs_due ON agent_configs (next_tick_at) WHERE next_tick_at IS NOT NULL;

ALTER TABLE agent_runs ADD COLUMN trigger_kind TEXT NOT NULL DEFAULT 'manual';
ALTER TABLE agent_runs ADD COLUMN scheduled_for TEXT;
CREATE UNIQUE INDEX agent_runs_one_per_tick ON agent_runs (tenant_id, blueprint, scheduled_for)
    WHERE scheduled_for IS NOT NULL;
