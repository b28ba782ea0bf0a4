//! The SQL of configs, runs, the journal and run events, for the service and the workers. Every
//! query names its tenant except the workers' scan for runs to claim (system scope, across
//! tenants); every write of a worker first re-checks, in its transaction, that the run is still
//! running under its own lease, so a worker that lost its run cannot journal into it.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::FromRow;
use uuid::Uuid;
use worktruck_kit::db::Tx;
use worktruck_kit::{Error, Result, exec, on_tx};
use worktruck_proto::agents::v1 as pb;

/// A stored config.
#[derive(Debug, Clone, FromRow)]
pub struct ConfigRow {
    pub blueprint: String,
    pub id: Uuid,
    pub doc: Value,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub byok_hint: Option<String>,
    pub byok_status: Option<String>,
    pub byok_status_reason: Option<String>,
    pub byok_probed_at: Option<DateTime<Utc>>,
    pub next_tick_at: Option<DateTime<Utc>>,
    pub ticks_skipped: i64,
    pub last_skip_reason: Option<String>,
}

/// A config's columns, the sealed key left out.
const CONFIG_COLUMNS: &str = "blueprint, id, doc, version, created_at, updated_at, byok_hint, byok_status, byok_status_reason, byok_probed_at, \
    next_tick_at, ticks_skipped, last_skip_reason";

/// The tenant's stored config of `blueprint`.
pub async fn config(tx: &mut Tx, tenant: Uuid, blueprint: &str) -> Result<Option<ConfigRow>> {
    let sql = format!(
        "SELECT {CONFIG_COLUMNS} FROM agent_configs WHERE tenant_id = $1 AND blueprint = $2"
    );
    Ok(
        on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(blueprint).fetch_optional(c).await)?,
    )
}

/// Every stored config of the tenant.
pub async fn configs(tx: &mut Tx, tenant: Uuid) -> Result<Vec<ConfigRow>> {
    let sql = format!(
        "SELECT {CONFIG_COLUMNS} FROM agent_configs WHERE tenant_id = $1 ORDER BY blueprint"
    );
    Ok(on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant).fetch_all(c).await)?)
}

/// Writes the config of `blueprint` (a new version of it when one exists) with its schedule's
/// next tick (`None`: no schedule, or disabled); its key stays.
pub async fn put_config(
    tx: &mut Tx,
    tenant: Uuid,
    blueprint: &str,
    doc: &Value,
    next_tick_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<ConfigRow> {
    let sql = format!(
        "INSERT INTO agent_configs (tenant_id, blueprint, id, doc, version, created_at, updated_at, next_tick_at) \
         VALUES ($1, $2, $3, $4, 1, $5, $5, $6) \
         ON CONFLICT (tenant_id, blueprint) DO UPDATE SET doc = excluded.doc, version = agent_configs.version + 1, \
         updated_at = excluded.updated_at, next_tick_at = excluded.next_tick_at RETURNING {CONFIG_COLUMNS}"
    );
    Ok(
        on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(blueprint).bind(Uuid::now_v7()).bind(doc)
        .bind(now).bind(next_tick_at).fetch_one(c).await)?,
    )
}

/// Configs whose schedule is due at `now`, across tenants (a system-scope transaction), the
/// longest due first: (tenant, blueprint, the due tick).
pub async fn due_configs(
    tx: &mut Tx,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(Uuid, String, DateTime<Utc>)>> {
    const SQL: &str = "SELECT tenant_id, blueprint, next_tick_at FROM agent_configs \
        WHERE next_tick_at IS NOT NULL AND next_tick_at <= $1 ORDER BY next_tick_at LIMIT $2";
    Ok(on_tx!(tx, c => sqlx::query_as(SQL).bind(now).bind(limit).fetch_all(c).await)?)
}

/// The config of `blueprint` if its next tick is still `due`, locked for this transaction
/// (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so a scheduler another one is ahead of moves on at
/// once; SQLite's write transaction is the lock). `None`: another scheduler took the tick.
pub async fn due_config(
    tx: &mut Tx,
    tenant: Uuid,
    blueprint: &str,
    due: DateTime<Utc>,
) -> Result<Option<ConfigRow>> {
    let sql = match tx.dialect() {
        worktruck_kit::db::Dialect::Postgres => format!(
            "SELECT {CONFIG_COLUMNS} FROM agent_configs WHERE tenant_id = $1 AND blueprint = $2 AND next_tick_at = $3 \
             FOR UPDATE SKIP LOCKED"
        ),
        worktruck_kit::db::Dialect::Sqlite => format!(
            "SELECT {CONFIG_COLUMNS} FROM agent_configs WHERE tenant_id = $1 AND blueprint = $2 AND next_tick_at = $3"
        ),
    };
    Ok(
        on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(blueprint).bind(due).fetch_optional(c).await)?,
    )
}

/// Claims tick `due` of `blueprint`'s schedule: moves `next_tick_at` from `due` to `next` (a
/// compare-and-set, so of any number of schedulers exactly one gets `true`). It commits with
/// the tick's run, or not at all.
pub async fn claim_tick(
    tx: &mut Tx,
    tenant: Uuid,
    blueprint: &str,
    due: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
) -> Result<bool> {
    const SQL: &str = "UPDATE agent_configs SET next_tick_at = $4 \
        WHERE tenant_id = $1 AND blueprint = $2 AND next_tick_at = $3";
    Ok(exec!(
        tx,
        sqlx::query(SQL)
            .bind(tenant)
            .bind(blueprint)
            .bind(due)
            .bind(next)
    )? == 1)
}

/// Counts a tick of `blueprint`'s schedule that enqueued no run, and why.
pub async fn skip_tick(tx: &mut Tx, tenant: Uuid, blueprint: &str, reason: &str) -> Result<()> {
    const SQL: &str = "UPDATE agent_configs SET ticks_skipped = ticks_skipped + 1, last_skip_reason = $3 \
        WHERE tenant_id = $1 AND blueprint = $2";
    exec!(
        tx,
        sqlx::query(SQL).bind(tenant).bind(blueprint).bind(reason)
    )?;
    Ok(())
}

/// The statuses of `blueprint`'s scheduled runs that have not ended (queued, running, waiting).
pub async fn unended_scheduled(tx: &mut Tx, tenant: Uuid, blueprint: &str) -> Result<Vec<String>> {
    const SQL: &str = "SELECT status FROM agent_runs WHERE tenant_id = $1 AND blueprint = $2 \
        AND trigger_kind = 'schedule' AND status IN ('queued', 'running', 'waiting')";
    Ok(on_tx!(tx, c => sqlx::query_scalar(SQL).bind(tenant).bind(blueprint).fetch_all(c).await)?)
}

/// Whether `blueprint` already has a run for tick `at`.
pub async fn tick_has_run(
    tx: &mut Tx,
    tenant: Uuid,
    blueprint: &str,
    at: DateTime<Utc>,
) -> Result<bool> {
    const SQL: &str = "SELECT count(*) FROM agent_runs WHERE tenant_id = $1 AND blueprint = $2 AND scheduled_for = $3";
    let n: i64 = on_tx!(tx, c => sqlx::query_scalar(SQL).bind(tenant).bind(blueprint).bind(at).fetch_one(c).await)?;
    Ok(n > 0)
}

/// Stores the sealed key of `blueprint` (making a config of the blueprint's defaults when there
/// is none), `active`, probed at `now`.
pub async fn put_byok(
    tx: &mut Tx,
    tenant: Uuid,
    blueprint: &str,
    sealed: &[u8],
    hint: &str,
    now: DateTime<Utc>,
) -> Result<ConfigRow> {
    let sql = format!(
        "INSERT INTO agent_configs (tenant_id, blueprint, id, doc, version, created_at, updated_at, byok_sealed, byok_hint, \
         byok_status, byok_status_reason, byok_probed_at) VALUES ($1, $2, $3, $4, 1, $5, $5, $6, $7, 'active', NULL, $5) \
         ON CONFLICT (tenant_id, blueprint) DO UPDATE SET byok_sealed = excluded.byok_sealed, byok_hint = excluded.byok_hint, \
         byok_status = 'active', byok_status_reason = NULL, byok_probed_at = excluded.byok_probed_at, \
         version = agent_configs.version + 1, updated_at = excluded.updated_at RETURNING {CONFIG_COLUMNS}"
    );
    let empty = Value::Object(Default::default());
    Ok(
        on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(blueprint).bind(Uuid::now_v7()).bind(&empty)
        .bind(now).bind(sealed).bind(hint).fetch_one(c).await)?,
    )
}

/// The sealed key of `blueprint`, if the tenant stored one.
pub async fn byok_sealed(tx: &mut Tx, tenant: Uuid, blueprint: &str) -> Result<Option<Vec<u8>>> {
    const SQL: &str = "SELECT byok_sealed FROM agent_configs WHERE tenant_id = $1 AND blueprint = $2 AND byok_sealed IS NOT NULL";
    let row: Option<Option<Vec<u8>>> = on_tx!(tx, c => sqlx::query_scalar(SQL).bind(tenant).bind(blueprint).fetch_optional(c).await)?;
    Ok(row.flatten())
}

/// Marks the stored key of `blueprint` refused (`auth_failed`, with why), unless it changed
/// since `sealed` was read.
pub async fn byok_failed(
    tx: &mut Tx,
    tenant: Uuid,
    blueprint: &str,
    sealed: &[u8],
    reason: &str,
) -> Result<()> {
    const SQL: &str = "UPDATE agent_configs SET byok_status = 'auth_failed', byok_status_reason = $4 \
        WHERE tenant_id = $1 AND blueprint = $2 AND byok_sealed = $3";
    exec!(
        tx,
        sqlx::query(SQL)
            .bind(tenant)
            .bind(blueprint)
            .bind(sealed)
            .bind(reason)
    )?;
    Ok(())
}

/// The configs that hold or held a tenant's own key (BYOK), for the unified integrations view:
/// (config id, blueprint, `byok_status`, the config's `created_at`). A config that never had a
/// key (`byok_status` NULL or `inactive`) is left out.
pub async fn byok_keys(
    tx: &mut Tx,
    tenant: Uuid,
) -> Result<Vec<(Uuid, String, String, DateTime<Utc>)>> {
    const SQL: &str = "SELECT id, blueprint, byok_status, created_at FROM agent_configs \
        WHERE tenant_id = $1 AND byok_status IS NOT NULL AND byok_status <> 'inactive'";
    Ok(on_tx!(tx, c => sqlx::query_as(SQL).bind(tenant).fetch_all(c).await)?)
}

/// Revokes the own key of the config `id`: the ciphertext is wiped and `byok_status` becomes
/// `revoked` (runs use the operator's key again). False when the config holds no key.
pub async fn byok_revoke(tx: &mut Tx, tenant: Uuid, id: Uuid, now: DateTime<Utc>) -> Result<bool> {
    const SQL: &str = "UPDATE agent_configs SET byok_sealed = NULL, byok_status = 'revoked', byok_status_reason = NULL, \
        version = version + 1, updated_at = $3 WHERE tenant_id = $1 AND id = $2 AND byok_sealed IS NOT NULL";
    Ok(exec!(tx, sqlx::query(SQL).bind(tenant).bind(id).bind(now))? == 1)
}

/// A run as stored.
#[derive(Debug, Clone, FromRow)]
pub struct RunRow {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub blueprint: String,
    pub status: String,
    pub input: Value,
    pub output: Option<Value>,
    pub spec: Value,
    pub budget_cents: Option<i64>,
    pub deadline_at: Option<DateTime<Utc>>,
    pub cost_micros: i64,
    pub failure_category: Option<String>,
    pub failure_detail: Option<String>,
    pub worker_id: Option<String>,
    pub attempts: i32,
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub trigger_kind: String,
    pub scheduled_for: Option<DateTime<Utc>>,
}

const RUN_COLUMNS: &str = "tenant_id, id, blueprint, status, input, output, spec, budget_cents, deadline_at, \
    cost_micros, failure_category, failure_detail, worker_id, attempts, run_at, created_at, updated_at, started_at, finished_at, \
    trigger_kind, scheduled_for";

/// What a new run is.
pub struct NewRun<'a> {
    pub id: Uuid,
    pub blueprint: &'a str,
    pub input: &'a Value,
    pub spec: &'a Value,
    pub budget_cents: Option<i64>,
    pub deadline_at: Option<DateTime<Utc>>,
    /// `manual` or `schedule`.
    pub trigger: &'a str,
    /// The tick a scheduled run is for.
    pub scheduled_for: Option<DateTime<Utc>>,
}

/// Inserts a queued run.
pub async fn insert_run(
    tx: &mut Tx,
    tenant: Uuid,
    r: &NewRun<'_>,
    now: DateTime<Utc>,
) -> Result<()> {
    const SQL: &str = "INSERT INTO agent_runs (tenant_id, id, blueprint, status, input, spec, budget_cents, deadline_at, \
        run_at, created_at, updated_at, trigger_kind, scheduled_for) VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $8, $8, $8, $9, $10)";
    exec!(
        tx,
        sqlx::query(SQL)
            .bind(tenant)
            .bind(r.id)
            .bind(r.blueprint)
            .bind(r.input)
            .bind(r.spec)
            .bind(r.budget_cents)
            .bind(r.deadline_at)
            .bind(now)
            .bind(r.trigger)
            .bind(r.scheduled_for)
    )?;
    Ok(())
}

/// The run `id` of the tenant (of `blueprint`, when given).
pub async fn run(
    tx: &mut Tx,
    tenant: Uuid,
    id: Uuid,
    blueprint: Option<&str>,
) -> Result<Option<RunRow>> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM agent_runs WHERE tenant_id = $1 AND id = $2");
    let row: Option<RunRow> = on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(id).fetch_optional(c).await)?;
    Ok(row.filter(|r| blueprint.is_none_or(|b| r.blueprint == b)))
}

/// A page of the tenant's runs of `blueprint`, newest first, after `(created_at, id)`.
pub async fn runs(
    tx: &mut Tx,
    tenant: Uuid,
    blueprint: &str,
    status: Option<&str>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<RunRow>> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM agent_runs WHERE tenant_id = $1 AND blueprint = $2 \
         AND ($3 = '' OR status = $3) AND ($4 = 0 OR created_at < $5 OR (created_at = $5 AND id < $6)) \
         ORDER BY created_at DESC, id DESC LIMIT $7"
    );
    let (has, at, id) = match after {
        Some((at, id)) => (1i64, at, id),
        None => (0, DateTime::<Utc>::UNIX_EPOCH, Uuid::nil()),
    };
    Ok(
        on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(blueprint).bind(status.unwrap_or(""))
        .bind(has).bind(at).bind(id).bind(limit).fetch_all(c).await)?,
    )
}

/// A journaled step.
#[derive(Debug, Clone, FromRow)]
pub struct StepRow {
    pub seq: i32,
    pub kind: String,
    pub name: String,
    pub input_hash: String,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub model: Option<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub cost_micros: i64,
    pub started_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// A run's journal in `seq` order.
pub async fn steps(tx: &mut Tx, tenant: Uuid, run: Uuid) -> Result<Vec<StepRow>> {
    const SQL: &str = "SELECT seq, kind, name, input_hash, input, output, model, input_tokens, output_tokens, \
        cache_read_tokens, cache_write_tokens, cost_micros, started_at, completed_at FROM agent_steps \
        WHERE tenant_id = $1 AND run_id = $2 ORDER BY seq";
    Ok(on_tx!(tx, c => sqlx::query_as(SQL).bind(tenant).bind(run).fetch_all(c).await)?)
}

/// One event of a run.
#[derive(Debug, Clone, FromRow)]
pub struct EventRow {
    pub seq: i64,
    pub kind: String,
    pub status: String,
    pub detail: String,
    pub at: DateTime<Utc>,
}

/// A run's events, oldest first.
pub async fn events(tx: &mut Tx, tenant: Uuid, run: Uuid) -> Result<Vec<EventRow>> {
    const SQL: &str = "SELECT seq, kind, status, detail, at FROM agent_run_events WHERE tenant_id = $1 AND run_id = $2 \
        ORDER BY seq";
    Ok(on_tx!(tx, c => sqlx::query_as(SQL).bind(tenant).bind(run).fetch_all(c).await)?)
}

/// Records an event of run `run` (now in `status`) and announces it on the bus as
/// `worktruck.agents.run.<status>.v1` (kind `lease_lapsed` is recorded only).
#[allow(clippy::too_many_arguments)]
pub async fn event(
    tx: &mut Tx,
    tenant: Uuid,
    run: &RunRow,
    kind: &str,
    status: &str,
    detail: &str,
    cost_micros: i64,
    failure_category: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    const NEXT: &str = "UPDATE agent_runs SET event_seq = event_seq + 1 WHERE tenant_id = $1 AND id = $2 RETURNING event_seq";
    const INSERT: &str = "INSERT INTO agent_run_events (tenant_id, run_id, seq, kind, status, detail, at) \
        VALUES ($1, $2, $3, $4, $5, $6, $7)";
    let seq: i64 =
        on_tx!(tx, c => sqlx::query_scalar(NEXT).bind(tenant).bind(run.id).fetch_one(c).await)?;
    exec!(
        tx,
        sqlx::query(INSERT)
            .bind(tenant)
            .bind(run.id)
            .bind(seq)
            .bind(kind)
            .bind(status)
            .bind(detail)
            .bind(now)
    )?;
    if kind == status {
        let msg = pb::RunChanged {
            run_id: run.id.to_string(),
            blueprint: run.blueprint.clone(),
            status: status_of(status) as i32,
            failure_category: failure_category.to_owned(),
            cost_usd_micros: cost_micros,
        };
        let actor = run
            .spec
            .get("ctx")
            .and_then(|c| c.get("actor"))
            .and_then(Value::as_str)
            .unwrap_or("agents");
        worktruck_kit::outbox::enqueue(
            tx,
            tenant,
            &format!("worktruck.agents.run.{status}.v1"),
            run.id,
            seq,
            actor,
            worktruck_kit::outbox::any("worktruck.agents.v1.RunChanged", &msg),
            now,
        )
        .await?;
    }
    Ok(())
}

/// The wire status of a stored one.
pub fn status_of(s: &str) -> pb::RunStatus {
    match s {
        "queued" => pb::RunStatus::Queued,
        "running" => pb::RunStatus::Running,
        "waiting" => pb::RunStatus::Waiting,
        "succeeded" => pb::RunStatus::Succeeded,
        "failed" => pb::RunStatus::Failed,
        "cancelled" => pb::RunStatus::Cancelled,
        _ => pb::RunStatus::Unspecified,
    }
}

/// The stored status of a wire one; `None` for unspecified.
pub fn status_name(s: pb::RunStatus) -> Option<&'static str> {
    match s {
        pb::RunStatus::Unspecified => None,
        pb::RunStatus::Queued => Some("queued"),
        pb::RunStatus::Running => Some("running"),
        pb::RunStatus::Waiting => Some("waiting"),
        pb::RunStatus::Succeeded => Some("succeeded"),
        pb::RunStatus::Failed => Some("failed"),
        pb::RunStatus::Cancelled => Some("cancelled"),
    }
}

/// Cancels a run that has not ended; `false` when it had (or does not exist).
pub async fn cancel(tx: &mut Tx, tenant: Uuid, id: Uuid, now: DateTime<Utc>) -> Result<bool> {
    const SQL: &str = "UPDATE agent_runs SET status = 'cancelled', worker_id = NULL, lease_until = NULL, \
        failure_category = NULL, finished_at = $3, updated_at = $3 \
        WHERE tenant_id = $1 AND id = $2 AND status IN ('queued', 'running', 'waiting')";
    Ok(exec!(tx, sqlx::query(SQL).bind(tenant).bind(id).bind(now))? == 1)
}

/// Runs a worker may claim now, across tenants (a system-scope transaction): queued, or running
/// under a lease that has lapsed. Oldest first.
pub async fn claimable(tx: &mut Tx, now: DateTime<Utc>, limit: i64) -> Result<Vec<(Uuid, Uuid)>> {
    const SQL: &str = "SELECT tenant_id, id FROM agent_runs WHERE status IN ('queued', 'running') AND run_at <= $1 \
        AND (status = 'queued' OR lease_until < $1) ORDER BY run_at LIMIT $2";
    Ok(on_tx!(tx, c => sqlx::query_as(SQL).bind(now).bind(limit).fetch_all(c).await)?)
}

/// Claims run `id` for `worker` with a lease until `lease_until`: a compare-and-set from queued
/// (or running under a lapsed lease), so of any number of workers trying at once exactly one
/// gets `true`.
pub async fn claim(
    tx: &mut Tx,
    tenant: Uuid,
    id: Uuid,
    worker: &str,
    lease_until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool> {
    const SQL: &str = "UPDATE agent_runs SET status = 'running', worker_id = $3, lease_until = $4, heartbeat_at = $5, \
        attempts = attempts + 1, started_at = COALESCE(started_at, $5), updated_at = $5 \
        WHERE tenant_id = $1 AND id = $2 AND (status = 'queued' OR (status = 'running' AND lease_until < $5))";
    Ok(exec!(
        tx,
        sqlx::query(SQL)
            .bind(tenant)
            .bind(id)
            .bind(worker)
            .bind(lease_until)
            .bind(now)
    )? == 1)
}

/// Renews `worker`'s lease on run `id` (and adds `cost` to the run's cost, for a journal
/// write); `false` when the run is no longer running under this worker (cancelled, or taken
/// over after the lease lapsed), and then the caller must stop.
pub async fn hold(
    tx: &mut Tx,
    tenant: Uuid,
    id: Uuid,
    worker: &str,
    lease_until: DateTime<Utc>,
    cost: i64,
    now: DateTime<Utc>,
) -> Result<bool> {
    const SQL: &str = "UPDATE agent_runs SET lease_until = $4, heartbeat_at = $5, cost_micros = cost_micros + $6, \
        updated_at = CASE WHEN $6 = 0 THEN updated_at ELSE $5 END \
        WHERE tenant_id = $1 AND id = $2 AND worker_id = $3 AND status = 'running'";
    Ok(exec!(
        tx,
        sqlx::query(SQL)
            .bind(tenant)
            .bind(id)
            .bind(worker)
            .bind(lease_until)
            .bind(now)
            .bind(cost)
    )? == 1)
}

/// A step to journal.
pub struct NewStep<'a> {
    pub seq: i32,
    pub kind: &'a str,
    pub name: &'a str,
    pub input_hash: &'a str,
    pub input: Option<&'a Value>,
    pub output: Option<&'a Value>,
    pub model: Option<&'a str>,
    pub usage: crate::settings::Usage,
    pub cost_micros: i64,
    pub started_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// Journals a step (a started tool call has no output nor `completed_at` yet). A step already
/// journaled at `seq` is left as it is.
pub async fn insert_step(tx: &mut Tx, tenant: Uuid, run: Uuid, s: &NewStep<'_>) -> Result<()> {
    const SQL: &str = "INSERT INTO agent_steps (tenant_id, run_id, seq, kind, name, input_hash, input, output, model, \
        input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_micros, started_at, completed_at) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
        ON CONFLICT (tenant_id, run_id, seq) DO NOTHING";
    exec!(
        tx,
        sqlx::query(SQL)
            .bind(tenant)
            .bind(run)
            .bind(s.seq)
            .bind(s.kind)
            .bind(s.name)
            .bind(s.input_hash)
            .bind(s.input)
            .bind(s.output)
            .bind(s.model)
            .bind(s.usage.input)
            .bind(s.usage.output)
            .bind(s.usage.cache_read)
            .bind(s.usage.cache_write)
            .bind(s.cost_micros)
            .bind(s.started_at)
            .bind(s.completed_at)
    )?;
    Ok(())
}

/// Completes a started step with its output.
pub async fn complete_step(
    tx: &mut Tx,
    tenant: Uuid,
    run: Uuid,
    seq: i32,
    output: &Value,
    now: DateTime<Utc>,
) -> Result<()> {
    const SQL: &str = "UPDATE agent_steps SET output = $4, completed_at = $5 \
        WHERE tenant_id = $1 AND run_id = $2 AND seq = $3 AND completed_at IS NULL";
    let n = exec!(
        tx,
        sqlx::query(SQL)
            .bind(tenant)
            .bind(run)
            .bind(seq)
            .bind(output)
            .bind(now)
    )?;
    if n != 1 {
        return Err(Error::internal(format!(
            "step {seq} of run {run} was not started or already completed"
        )));
    }
    Ok(())
}

/// Ends run `id` held by `worker` in `status` (`succeeded`, `failed`); `false` when the worker
/// no longer holds it.
#[allow(clippy::too_many_arguments)]
pub async fn finish(
    tx: &mut Tx,
    tenant: Uuid,
    id: Uuid,
    worker: &str,
    status: &str,
    output: Option<&Value>,
    failure: Option<(&str, &str)>,
    now: DateTime<Utc>,
) -> Result<bool> {
    const SQL: &str = "UPDATE agent_runs SET status = $4, output = $5, failure_category = $6, failure_detail = $7, \
        worker_id = NULL, lease_until = NULL, finished_at = $8, updated_at = $8 \
        WHERE tenant_id = $1 AND id = $2 AND worker_id = $3 AND status = 'running'";
    let (category, detail) = failure.unzip();
    Ok(exec!(
        tx,
        sqlx::query(SQL)
            .bind(tenant)
            .bind(id)
            .bind(worker)
            .bind(status)
            .bind(output)
            .bind(category)
            .bind(detail)
            .bind(now)
    )? == 1)
}

/// Pauses run `id` held by `worker` in `waiting` (no worker holds it then); `false` when the
/// worker no longer holds it.
pub async fn wait(
    tx: &mut Tx,
    tenant: Uuid,
    id: Uuid,
    worker: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    const SQL: &str = "UPDATE agent_runs SET status = 'waiting', worker_id = NULL, lease_until = NULL, updated_at = $4 \
        WHERE tenant_id = $1 AND id = $2 AND worker_id = $3 AND status = 'running'";
    Ok(exec!(
        tx,
        sqlx::query(SQL)
            .bind(tenant)
            .bind(id)
            .bind(worker)
            .bind(now)
    )? == 1)
}

/// Completes the pending guardrail step of waiting run `id` with `output` and queues the run
/// again; `false` when the run is not waiting.
pub async fn decide(
    tx: &mut Tx,
    tenant: Uuid,
    id: Uuid,
    output: &Value,
    now: DateTime<Utc>,
) -> Result<bool> {
    const QUEUE: &str = "UPDATE agent_runs SET status = 'queued', updated_at = $3 \
        WHERE tenant_id = $1 AND id = $2 AND status = 'waiting'";
    const STEP: &str = "UPDATE agent_steps SET output = $3, completed_at = $4 \
        WHERE tenant_id = $1 AND run_id = $2 AND kind = 'guardrail' AND completed_at IS NULL";
    if exec!(tx, sqlx::query(QUEUE).bind(tenant).bind(id).bind(now))? != 1 {
        return Ok(false);
    }
    exec!(
        tx,
        sqlx::query(STEP)
            .bind(tenant)
            .bind(id)
            .bind(output)
            .bind(now)
    )?;
    Ok(true)
}
