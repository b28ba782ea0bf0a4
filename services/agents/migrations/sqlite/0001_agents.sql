-- Agent configs, runs, their journaled steps and their events (see the PostgreSQL migration for
-- the reasons). UUIDs are 16-byte BLOBs; timestamps RFC 3339 UTC text from the application clock.

CREATE TABLE agent_configs (
    tenant_id  BLOB    NOT NULL,
    blueprint  TEXT    NOT NULL,
    id         BLOB    NOT NULL,
    doc        TEXT    NOT NULL CHECK (json_valid(doc)),
    version    INTEGER NOT NULL,
    created_at TEXT    NOT NULL,
    updated_at TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, blueprint)
) STRICT;

CREATE TABLE agent_runs (
    tenant_id        BLOB    NOT NULL,
    id               BLOB    NOT NULL,
    blueprint        TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('queued', 'running', 'waiting', 'succeeded', 'failed', 'cancelled')),
    input            TEXT    NOT NULL CHECK (json_valid(input)),
    output           TEXT,
    spec             TEXT    NOT NULL CHECK (json_valid(spec)),
    budget_cents     INTEGER,
    deadline_at      TEXT,
    cost_micros      INTEGER NOT NULL DEFAULT 0,
    failure_category TEXT,
    failure_detail   TEXT,
    worker_id        TEXT,
    lease_until      TEXT,
    heartbeat_at     TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    event_seq        INTEGER NOT NULL DEFAULT 0,
    run_at           TEXT    NOT NULL,
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL,
    started_at       TEXT,
    finished_at      TEXT,
    PRIMARY KEY (tenant_id, id)
) STRICT;
CREATE INDEX agent_runs_by_blueprint ON agent_runs (tenant_id, blueprint, created_at DESC, id DESC);
CREATE INDEX agent_runs_claimable ON agent_runs (run_at) WHERE status IN ('queued', 'running');

CREATE TABLE agent_steps (
    tenant_id          BLOB    NOT NULL,
    run_id             BLOB    NOT NULL,
    seq                INTEGER NOT NULL,
    kind               TEXT    NOT NULL CHECK (kind IN ('llm', 'tool', 'guardrail')),
    name               TEXT    NOT NULL,
    input_hash         TEXT    NOT NULL,
    input              TEXT,
    output             TEXT,
    model              TEXT,
    input_tokens       INTEGER NOT NULL DEFAULT 0,
    output_tokens      INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens  INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    cost_micros        INTEGER NOT NULL DEFAULT 0,
    started_at         TEXT    NOT NULL,
    completed_at       TEXT,
    PRIMARY KEY (tenant_id, run_id, seq)
) STRICT;

CREATE TABLE agent_run_events (
    tenant_id BLOB    NOT NULL,
    run_id    BLOB    NOT NULL,
    seq       INTEGER NOT NULL,
    kind      TEXT    NOT NULL,
    status    TEXT    NOT NULL,
    detail    TEXT    NOT NULL DEFAULT '',
    at        TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, run_id, seq)
) STRICT;
