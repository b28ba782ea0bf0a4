-- Schedules. `next_tick_at` is the next tick of a config's schedule (NULL: no schedule, or the
-- config is disabled), set when the config is written. The agent workers' schedulers claim a
-- tick with a compare-and-set of it (`WHERE next_tick_at = <the tick>`) in the transaction that
-- inserts the tick's run, so a tick is neither lost nor doubled.
ALTER TABLE agent_configs ADD COLUMN next_tick_at timestamptz;
-- Ticks that enqueued no run (the overlap policy, or an enqueue the config refuses), and why the
-- last one did not.
ALTER TABLE agent_configs ADD COLUMN ticks_skipped bigint NOT NULL DEFAULT 0;
ALTER TABLE agent_configs ADD COLUMN last_skip_reason text;
-- What the schedulers scan (across tenants): configs due.
CREATE INDEX agent_configs_due ON agent_configs (next_tick_at) WHERE next_tick_at IS NOT NULL;

-- What enqueued a run, and for which tick.
ALTER TABLE agent_runs ADD COLUMN trigger_kind text NOT NULL DEFAULT 'manual'
    CHECK (trigger_kind IN ('manual', 'schedule'));
ALTER TABLE agent_runs ADD COLUMN scheduled_for timestamptz;
-- The second wall of exactly-once: one run per tick of a config.
CREATE UNIQUE INDEX agent_runs_one_per_tick ON agent_runs (tenant_id, blueprint, scheduled_for)
    WHERE scheduled_for IS NOT NULL;
