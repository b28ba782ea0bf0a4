//! The gRPC service: agent configs, enqueueing, reading and cancelling runs. Running them is
//! the workers' ([`crate::worker`]).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tonic::{Request, Response, Status};
use uuid::Uuid;
use worktruck_kit::config::OutboundConfig;
use worktruck_kit::context::{Ctx, Verifier};
use worktruck_kit::cursor::{self, Cursor};
use worktruck_kit::db::{Db, Scope, now};
use worktruck_kit::envelope::Envelope;
use worktruck_kit::outbox::Relay;
use worktruck_kit::pbjson::{from_struct, timestamp, to_struct, uuid};
use worktruck_kit::rpc::Caller;
use worktruck_kit::{Error, ErrorCode, Result};
use worktruck_proto::agents::v1 as pb;
use worktruck_proto::agents::v1::agents_service_server::AgentsService;

use crate::blueprints::{self, Blueprint};
use crate::integrations::Integrations;
use crate::settings::Settings;
use crate::store::{self, ConfigRow, RunRow, StepRow};

/// The agents gRPC service.
#[derive(Clone)]
pub struct Agents {
    db: Db,
    verifier: Verifier,
    relay: Relay,
    settings: Arc<Settings>,
    anthropic: crate::anthropic::Client,
    envelope: Envelope,
    integrations: Integrations,
}

impl Agents {
    /// The service on its database; `anthropic` probes keys, `envelope` seals them, and
    /// integration keys are verified through kit's outbound clients of `outbound`.
    pub fn new(
        db: Db,
        verifier: Verifier,
        relay: Relay,
        settings: Settings,
        anthropic: crate::anthropic::Client,
        envelope: Envelope,
        outbound: &OutboundConfig,
    ) -> anyhow::Result<Self> {
        let settings = Arc::new(settings);
        let integrations =
            Integrations::new(db.clone(), envelope.clone(), settings.clone(), outbound)?;
        Ok(Self {
            db,
            verifier,
            relay,
            settings,
            anthropic,
            envelope,
            integrations,
        })
    }
}

/// The envelope purpose of a blueprint's key: a sealed key copied to another blueprint's row
/// does not open.
pub(crate) fn byok_purpose(blueprint: &str) -> String {
    format!("agents.byok.{blueprint}")
}

/// The smallest and largest key accepted before probing.
const KEY_LEN: std::ops::RangeInclusive<usize> = 8..=512;

fn check_key(key: &str) -> Result<SecretString> {
    check_secret("api_key", key)
}

/// A key a tenant hands over (`field` names it in the error): 8 to 512 visible ASCII
/// characters. The error never quotes it.
pub(crate) fn check_secret(field: &str, key: &str) -> Result<SecretString> {
    if !KEY_LEN.contains(&key.len()) || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::validation(format!(
            "{field} must be 8 to 512 visible ASCII characters"
        )));
    }
    Ok(SecretString::from(key.to_owned()))
}

/// A config as stored (`agent_configs.doc`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ConfigDoc {
    pub system_prompt_override: Option<String>,
    pub allowed_tools: Vec<String>,
    pub model: Option<String>,
    pub budget_default_cents: Option<i64>,
    pub deadline_default_seconds: Option<i32>,
    pub guardrails: Vec<Value>,
    pub schedule: Option<ScheduleDoc>,
    pub disabled: bool,
}

/// A schedule as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ScheduleDoc {
    pub cron: String,
    pub timezone: String,
    pub overlap: String,
    /// Who wrote the schedule (their context, no expiry): its runs act as them, as a run
    /// enqueued by them would.
    #[serde(default)]
    pub ctx: Option<Ctx>,
}

/// What a run runs with, fixed when it is enqueued (`agent_runs.spec`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunSpec {
    /// The model.
    pub model: String,
    /// The system prompt.
    pub system: String,
    /// The tools it may call.
    pub tools: Vec<String>,
    /// The enqueuing principal's context (no expiry): its tool calls are signed with it, so a
    /// run can do no more than whoever started it.
    pub ctx: Ctx,
    /// Tool-name patterns whose calls wait for approval (from the config's guardrails).
    #[serde(default)]
    pub approvals: Vec<String>,
    /// Destructive tool calls a run makes before each further one waits for approval.
    #[serde(default)]
    pub max_destructive_calls: Option<i64>,
    /// The cost (millionths of a dollar) past which the run's next tool call waits for
    /// approval (once: an approval lets it go on to its budget).
    #[serde(default)]
    pub spend_threshold_micros: Option<i64>,
}

impl RunSpec {
    /// The guardrail rule that makes a call of `name` wait for approval, if one does:
    /// `tool` (a pattern), `destructive_cap`, or `spend_threshold`, given whether the tool is
    /// `destructive`, the destructive calls made so far, the run's cost so far, and whether a
    /// spend-threshold approval was given already.
    pub(crate) fn guard(
        &self,
        name: &str,
        destructive: bool,
        destructive_so_far: i64,
        cost_micros: i64,
        spend_approved: bool,
    ) -> Option<&'static str> {
        if self.approvals.iter().any(|p| matches(p, name)) {
            Some("tool")
        } else if destructive && self.max_destructive_calls.is_some_and(|m| destructive_so_far >= m) {
            Some("destructive_cap")
        } else if !spend_approved && self.spend_threshold_micros.is_some_and(|t| cost_micros >= t) {
            Some("spend_threshold")
        } else {
            None
        }
    }
}

/// Whether tool `name` matches `pattern`, where `*` matches any run of characters.
pub(crate) fn matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first)
        || !name[first.len()..].ends_with(last)
        || name.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// The patterns of the guardrails that ask for approval.
fn approvals(guardrails: &[Value]) -> Vec<String> {
    guardrails
        .iter()
        .filter(|g| g["require_approval"] == Value::Bool(true))
        .filter_map(|g| g["tool"].as_str().map(str::to_owned))
        .collect()
}

/// The first value of the guardrails' `key` (a whole number), if one has it.
fn guardrail_number(guardrails: &[Value], key: &str) -> Option<i64> {
    guardrails.iter().find_map(|g| g[key].as_i64())
}

fn check_guardrail(g: &Value) -> Result<()> {
    let number = |key: &str, min: i64| {
        g.as_object().is_some_and(|o| {
            o.len() == 1 && o.get(key).and_then(Value::as_i64).is_some_and(|n| (min..=1_000_000).contains(&n))
        })
    };
    let ok = g.as_object().is_some_and(|o| {
        o.keys().all(|k| k == "tool" || k == "require_approval")
            && o.get("tool")
                .and_then(Value::as_str)
                .is_some_and(|t| !t.is_empty() && t.len() <= 64)
            && o.get("require_approval").is_none_or(Value::is_boolean)
    }) || number("max_destructive_calls", 0)
        || number("spend_threshold_cents", 1);
    if ok {
        Ok(())
    } else {
        Err(Error::validation(
            "a guardrail is {\"tool\": \"<tool name, * for any characters>\", \"require_approval\": true|false}, \
             {\"max_destructive_calls\": <0 or more>} or {\"spend_threshold_cents\": <1 or more>}",
        ))
    }
}

fn blueprint(name: &str) -> Result<&'static Blueprint> {
    blueprints::find(name).ok_or_else(|| {
        let names: Vec<_> = blueprints::BLUEPRINTS.iter().map(|b| b.name).collect();
        Error::not_found(format!(
            "no blueprint {}; the blueprints are {}",
            worktruck_proto::text::quote(name),
            names.join(", ")
        ))
    })
}

impl ConfigDoc {
    pub(crate) fn of(row: Option<&ConfigRow>) -> Result<ConfigDoc> {
        match row {
            None => Ok(ConfigDoc::default()),
            Some(r) => serde_json::from_value(r.doc.clone()).map_err(Error::internal),
        }
    }

    fn model<'a>(&'a self, b: &'a Blueprint) -> &'a str {
        self.model.as_deref().unwrap_or(b.model)
    }

    fn tools(&self, b: &Blueprint) -> Vec<String> {
        if self.allowed_tools.is_empty() {
            b.tools.iter().map(|t| (*t).to_owned()).collect()
        } else {
            self.allowed_tools.clone()
        }
    }
}

fn check_model(settings: &Settings, model: &str) -> Result<()> {
    if settings.prices.contains_key(model) {
        return Ok(());
    }
    let known: Vec<_> = settings.prices.keys().map(String::as_str).collect();
    Err(Error::validation(format!(
        "model {} has no price in settings.agents.prices (its cost could not be counted); the priced models are {}",
        worktruck_proto::text::quote(model),
        known.join(", ")
    )))
}

fn check_schedule(s: &pb::Schedule, ctx: &Ctx) -> Result<ScheduleDoc> {
    let fields = s.cron.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(Error::validation(
            "schedule.cron must have 5 fields (or 6, seconds first)",
        ));
    }
    let cron = s.cron.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Err(e) = crate::schedule::parse_cron(&cron) {
        return Err(Error::validation(format!(
            "schedule.cron {} is not a cron expression: {e}",
            worktruck_proto::text::quote(&cron)
        )));
    }
    let timezone = if s.timezone.is_empty() {
        "UTC".to_owned()
    } else {
        s.timezone.clone()
    };
    if timezone.parse::<chrono_tz::Tz>().is_err() {
        return Err(Error::validation(format!(
            "schedule.timezone {} is not an IANA time zone",
            worktruck_proto::text::quote(&timezone)
        )));
    }
    let overlap = match pb::OverlapPolicy::try_from(s.overlap).unwrap_or_default() {
        pb::OverlapPolicy::Unspecified | pb::OverlapPolicy::Skip => "skip",
        pb::OverlapPolicy::BufferOne => "buffer_one",
        pb::OverlapPolicy::Allow => "allow",
    };
    let mut ctx = ctx.clone();
    ctx.exp = 0;
    Ok(ScheduleDoc {
        cron,
        timezone,
        overlap: overlap.to_owned(),
        ctx: Some(ctx),
    })
}

/// Whether `t` names tools of an app: `<slug>__<tool>`, where the slug is an app's
/// (`^[a-z][a-z0-9-]{1,30}$`) and the tool part a tool name (`[a-zA-Z0-9_-]`) in which `*`
/// stands for any run of characters, 64 characters in all.
fn is_app_pattern(t: &str) -> bool {
    let Some((slug, tool)) = t.split_once(worktruck_proto::app_tools::SEPARATOR) else {
        return false;
    };
    let mut s = slug.chars();
    t.len() <= 64
        && (2..=31).contains(&slug.len())
        && s.next().is_some_and(|c| c.is_ascii_lowercase())
        && s.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !tool.is_empty()
        && tool.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '*'))
}

fn check_config(
    settings: &Settings,
    b: &Blueprint,
    r: &pb::PutAgentConfigRequest,
    ctx: &Ctx,
) -> Result<ConfigDoc> {
    if r.allowed_tools.len() > 200 {
        return Err(Error::validation("allowed_tools: at most 200"));
    }
    for t in &r.allowed_tools {
        if !b.tools.contains(&t.as_str()) && !is_app_pattern(t) {
            return Err(Error::validation(format!(
                "allowed_tools: {} is neither a tool of {} (its tools are {}) nor an app's tool \
                 (<slug>__<tool>, or <slug>__* for all of an app's enabled tools)",
                worktruck_proto::text::quote(t),
                b.name,
                b.tools.join(", ")
            )));
        }
    }
    if let Some(m) = &r.model {
        check_model(settings, m)?;
    }
    if r.budget_default_cents.is_some_and(|c| c < 1) {
        return Err(Error::validation("budget_default_cents must be at least 1"));
    }
    if r.deadline_default_seconds
        .is_some_and(|s| !(1..=86_400).contains(&s))
    {
        return Err(Error::validation(
            "deadline_default_seconds must be 1 to 86400",
        ));
    }
    if r.system_prompt_override
        .as_ref()
        .is_some_and(|p| p.len() > 100_000)
    {
        return Err(Error::validation(
            "system_prompt_override is longer than 100,000 bytes",
        ));
    }
    if r.guardrails.len() > 100 {
        return Err(Error::validation("at most 100 guardrails"));
    }
    for g in &r.guardrails {
        check_guardrail(&from_struct(g))?;
    }
    let mut allowed = r.allowed_tools.clone();
    allowed.dedup();
    Ok(ConfigDoc {
        system_prompt_override: r.system_prompt_override.clone().filter(|p| !p.is_empty()),
        allowed_tools: allowed,
        model: r.model.clone().filter(|m| !m.is_empty()),
        budget_default_cents: r.budget_default_cents,
        deadline_default_seconds: r.deadline_default_seconds,
        guardrails: r.guardrails.iter().map(from_struct).collect(),
        schedule: r
            .schedule
            .as_ref()
            .map(|s| check_schedule(s, ctx))
            .transpose()?,
        disabled: r.disabled,
    })
}

fn render_config(b: &Blueprint, row: Option<&ConfigRow>) -> Result<pb::AgentConfig> {
    let doc = ConfigDoc::of(row)?;
    Ok(pb::AgentConfig {
        id: row.map(|r| r.id.to_string()).unwrap_or_default(),
        blueprint: b.name.to_owned(),
        system_prompt_override: doc.system_prompt_override.clone(),
        allowed_tools: doc.tools(b),
        model: doc.model(b).to_owned(),
        budget_default_cents: Some(doc.budget_default_cents.unwrap_or(b.budget_default_cents)),
        deadline_default_seconds: Some(
            doc.deadline_default_seconds
                .unwrap_or(b.deadline_default_seconds),
        ),
        guardrails: doc.guardrails.iter().map(to_struct).collect(),
        schedule: doc.schedule.as_ref().map(|s| pb::Schedule {
            cron: s.cron.clone(),
            timezone: s.timezone.clone(),
            overlap: match s.overlap.as_str() {
                "buffer_one" => pb::OverlapPolicy::BufferOne,
                "allow" => pb::OverlapPolicy::Allow,
                _ => pb::OverlapPolicy::Skip,
            } as i32,
        }),
        disabled: doc.disabled,
        byok_status: row
            .and_then(|r| r.byok_status.clone())
            .unwrap_or_else(|| "inactive".to_owned()),
        byok_key_hint: row.and_then(|r| r.byok_hint.clone()).unwrap_or_default(),
        byok_last_probed_at: row.and_then(|r| r.byok_probed_at).map(timestamp),
        byok_status_reason: row
            .and_then(|r| r.byok_status_reason.clone())
            .unwrap_or_default(),
        next_tick_at: row.and_then(|r| r.next_tick_at).map(timestamp),
        ticks_skipped: row.map_or(0, |r| r.ticks_skipped),
        last_skip_reason: row
            .and_then(|r| r.last_skip_reason.clone())
            .unwrap_or_default(),
        version: row.map_or(0, |r| r.version),
        created_at: row.map(|r| timestamp(r.created_at)),
        updated_at: row.map(|r| timestamp(r.updated_at)),
        blueprint_tools: b.tools.iter().map(|t| (*t).to_owned()).collect(),
    })
}

/// A run to enqueue.
pub(crate) struct Enqueue<'a> {
    pub b: &'static Blueprint,
    pub doc: &'a ConfigDoc,
    /// Whose run it is: its tool calls are signed with this context.
    pub ctx: Ctx,
    pub input: Value,
    /// The budget and deadline asked (default the config's, then the blueprint's).
    pub budget_cents: Option<i64>,
    pub deadline_seconds: Option<i32>,
    /// `manual` or `schedule`.
    pub trigger: &'static str,
    pub scheduled_for: Option<DateTime<Utc>>,
}

/// Inserts a queued run and its `queued` event (announced through the outbox) in `tx`: the one
/// enqueue path of API calls and schedule ticks. A disabled config is a conflict, a model
/// without a price a validation failure; both before anything is written.
pub(crate) async fn enqueue(
    tx: &mut worktruck_kit::db::Tx,
    settings: &Settings,
    tenant: Uuid,
    e: Enqueue<'_>,
    t: DateTime<Utc>,
) -> Result<RunRow> {
    let (b, doc) = (e.b, e.doc);
    if doc.disabled {
        return Err(Error::conflict(format!(
            "the {} agent is disabled in its config",
            b.name
        )));
    }
    let model = doc.model(b).to_owned();
    check_model(settings, &model)?;
    let mut ctx = e.ctx;
    ctx.exp = 0;
    let spec = RunSpec {
        model,
        system: doc
            .system_prompt_override
            .clone()
            .unwrap_or_else(|| b.system_prompt.to_owned()),
        tools: doc.tools(b),
        ctx,
        approvals: approvals(&doc.guardrails),
        max_destructive_calls: guardrail_number(&doc.guardrails, "max_destructive_calls"),
        spend_threshold_micros: guardrail_number(&doc.guardrails, "spend_threshold_cents")
            .map(|c| c.saturating_mul(10_000)),
    };
    let spec = serde_json::to_value(&spec).map_err(Error::internal)?;
    let budget = e
        .budget_cents
        .or(doc.budget_default_cents)
        .unwrap_or(b.budget_default_cents);
    let deadline = e
        .deadline_seconds
        .or(doc.deadline_default_seconds)
        .unwrap_or(b.deadline_default_seconds);
    let id = Uuid::now_v7();
    let new = store::NewRun {
        id,
        blueprint: b.name,
        input: &e.input,
        spec: &spec,
        budget_cents: Some(budget),
        deadline_at: Some(t + chrono::Duration::seconds(i64::from(deadline))),
        trigger: e.trigger,
        scheduled_for: e.scheduled_for,
    };
    store::insert_run(tx, tenant, &new, t).await?;
    let run = store::run(tx, tenant, id, None)
        .await?
        .ok_or_else(|| Error::internal("the new run is gone"))?;
    store::event(tx, tenant, &run, "queued", "queued", "", 0, "", t).await?;
    Ok(run)
}

/// Cents, rounded up, of millionths of a dollar.
fn cents(micros: i64) -> i64 {
    (micros + 9_999).div_euclid(10_000)
}

fn opt_ts(t: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    t.map(timestamp)
}

fn struct_of(v: &Value) -> Option<prost_types::Struct> {
    v.is_object().then(|| to_struct(v))
}

fn render_step(s: &StepRow) -> pb::AgentStep {
    pb::AgentStep {
        seq: s.seq,
        kind: match s.kind.as_str() {
            "llm" => pb::StepKind::Llm,
            "tool" => pb::StepKind::Tool,
            "guardrail" => pb::StepKind::Guardrail,
            _ => pb::StepKind::Unspecified,
        } as i32,
        name: s.name.clone(),
        input_hash: s.input_hash.clone(),
        input: s.input.as_ref().and_then(struct_of),
        output: s.output.as_ref().and_then(struct_of),
        model: s.model.clone().unwrap_or_default(),
        input_tokens: s.input_tokens,
        output_tokens: s.output_tokens,
        cache_read_tokens: s.cache_read_tokens,
        cache_write_tokens: s.cache_write_tokens,
        cost_usd_micros: s.cost_micros,
        started_at: Some(timestamp(s.started_at)),
        completed_at: opt_ts(s.completed_at),
    }
}

pub(crate) fn render_run(r: &RunRow, steps: &[StepRow]) -> pb::AgentRun {
    let model = r
        .spec
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    pb::AgentRun {
        id: r.id.to_string(),
        blueprint: r.blueprint.clone(),
        status: store::status_of(&r.status) as i32,
        input: struct_of(&r.input),
        output: r.output.as_ref().and_then(struct_of),
        run_at: Some(timestamp(r.run_at)),
        cost_usd_cents: cents(r.cost_micros),
        cost_usd_micros: r.cost_micros,
        platform_fee_cents: 0,
        budget_usd_cents: r.budget_cents,
        deadline_at: opt_ts(r.deadline_at),
        failure_category: r.failure_category.clone().unwrap_or_default(),
        failure_detail: r.failure_detail.clone().unwrap_or_default(),
        attempts: r.attempts,
        model,
        steps: steps.iter().map(render_step).collect(),
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
        started_at: opt_ts(r.started_at),
        finished_at: opt_ts(r.finished_at),
        trigger: match r.trigger_kind.as_str() {
            "schedule" => pb::RunTrigger::Schedule,
            _ => pb::RunTrigger::Manual,
        } as i32,
        scheduled_for: opt_ts(r.scheduled_for),
    }
}

fn list_scope(blueprint: &str, status: Option<&str>) -> String {
    format!("agents:runs:{blueprint}:{}", status.unwrap_or(""))
}

fn limit_of(limit: i32) -> Result<i64> {
    match i64::from(limit) {
        0 => Ok(cursor::DEFAULT_LIMIT),
        n if (1..=cursor::MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(Error::invalid(format!(
            "limit must be 1 to {}",
            cursor::MAX_LIMIT
        ))),
    }
}

impl Agents {
    /// Approves or rejects the pending tool call of a waiting run, and queues it again.
    async fn decide(
        &self,
        req: Request<pb::DecideRunRequest>,
        approve: bool,
    ) -> Result<pb::AgentRun> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let b = blueprint(&r.blueprint)?;
        let id = uuid(&r.id, "id")?;
        let reason = r.reason.unwrap_or_default();
        if reason.len() > 2000 {
            return Err(Error::validation("reason is longer than 2,000 bytes"));
        }
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let run = store::run(&mut tx, c.tenant, id, Some(b.name))
            .await?
            .ok_or_else(|| Error::not_found("run"))?;
        let decision = if approve { "approved" } else { "rejected" };
        // The pending step's rule and call stay in the decided step (a resumed run reads them).
        let pending = store::steps(&mut tx, c.tenant, id)
            .await?
            .into_iter()
            .find(|s| s.kind == "guardrail" && s.completed_at.is_none())
            .and_then(|s| s.output)
            .unwrap_or(Value::Null);
        let mut output = serde_json::json!({"decision": decision, "reason": reason, "by": c.actor()});
        for key in ["rule", "why", "tool_use_id"] {
            if let Some(v) = pending.get(key) {
                output[key] = v.clone();
            }
        }
        if !store::decide(&mut tx, c.tenant, id, &output, t).await? {
            return Err(Error::conflict(format!(
                "the run is not waiting for an approval ({})",
                run.status
            )));
        }
        let detail = format!("{decision} by {}", c.actor());
        store::event(
            &mut tx,
            c.tenant,
            &run,
            "queued",
            "queued",
            &detail,
            run.cost_micros,
            "",
            t,
        )
        .await?;
        let run = store::run(&mut tx, c.tenant, id, None)
            .await?
            .ok_or_else(|| Error::internal("the run is gone"))?;
        let steps = store::steps(&mut tx, c.tenant, id).await?;
        tx.commit().await?;
        self.relay.notify();
        Ok(render_run(&run, &steps))
    }

    fn caller<T>(&self, req: &Request<T>) -> Result<Caller> {
        Caller::verify(&self.verifier, req)
    }

    async fn run_of(
        &self,
        c: &Caller,
        blueprint: &str,
        id: &str,
    ) -> Result<(RunRow, Vec<StepRow>)> {
        let b = self::blueprint(blueprint)?;
        let id = uuid(id, "id")?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let run = store::run(&mut tx, c.tenant, id, Some(b.name))
            .await?
            .ok_or_else(|| Error::not_found("run"))?;
        let steps = store::steps(&mut tx, c.tenant, id).await?;
        Ok((run, steps))
    }
}

#[tonic::async_trait]
impl AgentsService for Agents {
    async fn list_agent_configs(
        &self,
        req: Request<pb::ListAgentConfigsRequest>,
    ) -> Result<Response<pb::ListAgentConfigsResponse>, Status> {
        let c = self.caller(&req)?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let rows = store::configs(&mut tx, c.tenant).await?;
        let data = blueprints::BLUEPRINTS
            .iter()
            .map(|b| render_config(b, rows.iter().find(|r| r.blueprint == b.name)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Response::new(pb::ListAgentConfigsResponse {
            data,
            next_cursor: String::new(),
            has_more: false,
        }))
    }

    async fn put_agent_config(
        &self,
        req: Request<pb::PutAgentConfigRequest>,
    ) -> Result<Response<pb::AgentConfig>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let b = blueprint(&r.blueprint)?;
        let doc = check_config(&self.settings, b, &r, &c.ctx)?;
        let t = now();
        // The next tick from now: a tick already fired is never in the future, so a write
        // cannot fire it again (and the unique tick index would refuse it).
        let next_tick_at = match &doc.schedule {
            Some(s) if !doc.disabled => {
                let cadence = crate::schedule::Cadence::of(s).map_err(Error::validation)?;
                Some(cadence.next_after(t).ok_or_else(|| {
                    Error::validation(format!(
                        "schedule.cron {} never fires",
                        worktruck_proto::text::quote(&s.cron)
                    ))
                })?)
            }
            _ => None,
        };
        let doc = serde_json::to_value(&doc).map_err(Error::internal)?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let row = store::put_config(&mut tx, c.tenant, b.name, &doc, next_tick_at, t).await?;
        tx.commit().await?;
        Ok(Response::new(render_config(b, Some(&row))?))
    }

    async fn put_byok_key(
        &self,
        req: Request<pb::PutByokKeyRequest>,
    ) -> Result<Response<pb::AgentConfig>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let b = blueprint(&r.blueprint)?;
        let key = check_key(&r.api_key)?;
        drop(r);
        if let Err(f) = self.anthropic.probe(&key).await {
            let code = match f.category {
                "rate_limited" => ErrorCode::RateLimited,
                "provider_unavailable" => ErrorCode::Unavailable,
                _ => ErrorCode::ValidationFailed,
            };
            tracing::info!(
                blueprint = b.name,
                category = f.category,
                "a key was refused by its probe; nothing stored"
            );
            return Err(Error::new(code, format!("{}: {}", f.category, f.detail)).into());
        }
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let sealed = self
            .envelope
            .seal(
                &mut tx,
                c.tenant,
                &byok_purpose(b.name),
                key.expose_secret().as_bytes(),
            )
            .await?;
        let hint = worktruck_kit::envelope::hint(key.expose_secret());
        let row = store::put_byok(&mut tx, c.tenant, b.name, &sealed, &hint, t).await?;
        tx.commit().await?;
        tracing::info!(
            blueprint = b.name,
            "a tenant's Anthropic key was probed and stored"
        );
        Ok(Response::new(render_config(b, Some(&row))?))
    }

    async fn validate_key(
        &self,
        req: Request<pb::ValidateKeyRequest>,
    ) -> Result<Response<pb::KeyProbeResult>, Status> {
        let _ = self.caller(&req)?;
        let key = match check_key(&req.into_inner().api_key) {
            Ok(k) => k,
            Err(e) => {
                return Ok(Response::new(pb::KeyProbeResult {
                    status: "invalid".into(),
                    category: "invalid_key".into(),
                    message: e.message,
                }));
            }
        };
        let result = match self.anthropic.probe(&key).await {
            Ok(()) => pb::KeyProbeResult {
                status: "valid".into(),
                category: String::new(),
                message: String::new(),
            },
            Err(f) => pb::KeyProbeResult {
                status: "invalid".into(),
                category: f.category.to_owned(),
                message: f.detail,
            },
        };
        Ok(Response::new(result))
    }

    async fn enqueue_run(
        &self,
        req: Request<pb::EnqueueRunRequest>,
    ) -> Result<Response<pb::AgentRun>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let b = blueprint(&r.blueprint)?;
        if r.budget_cents.is_some_and(|c| c < 1) {
            return Err(Error::validation("budget_cents must be at least 1").into());
        }
        if r.deadline_seconds
            .is_some_and(|s| !(1..=86_400).contains(&s))
        {
            return Err(Error::validation("deadline_seconds must be 1 to 86400").into());
        }
        let input = r
            .input
            .as_ref()
            .map(from_struct)
            .unwrap_or_else(|| Value::Object(Default::default()));
        if serde_json::to_vec(&input).map_err(Error::internal)?.len() > 256 * 1024 {
            return Err(Error::validation("input is larger than 256 KiB").into());
        }
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let config = store::config(&mut tx, c.tenant, b.name).await?;
        let doc = ConfigDoc::of(config.as_ref())?;
        let e = Enqueue {
            b,
            doc: &doc,
            ctx: c.ctx.clone(),
            input,
            budget_cents: r.budget_cents,
            deadline_seconds: r.deadline_seconds,
            trigger: "manual",
            scheduled_for: None,
        };
        let run = enqueue(&mut tx, &self.settings, c.tenant, e, t).await?;
        tx.commit().await?;
        self.relay.notify();
        tracing::info!(run.id = %run.id, blueprint = b.name, "run queued");
        Ok(Response::new(render_run(&run, &[])))
    }

    async fn list_runs(
        &self,
        req: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let b = blueprint(&r.blueprint)?;
        let status = store::status_name(pb::RunStatus::try_from(r.status).unwrap_or_default());
        let limit = limit_of(r.limit)?;
        let scope = list_scope(b.name, status);
        let after = match r.cursor.as_str() {
            "" => None,
            token => match Cursor::decode(token, &scope)? {
                Cursor::TimeId(t, id) => Some((t, id)),
                _ => return Err(Error::invalid("invalid cursor").into()),
            },
        };
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let mut rows = store::runs(&mut tx, c.tenant, b.name, status, after, limit + 1).await?;
        let has_more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = match rows.last() {
            Some(last) if has_more => Cursor::TimeId(last.created_at, last.id).encode(&scope),
            _ => String::new(),
        };
        let data = rows.iter().map(|r| render_run(r, &[])).collect();
        Ok(Response::new(pb::ListRunsResponse {
            data,
            next_cursor,
            has_more,
        }))
    }

    async fn get_run(
        &self,
        req: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::AgentRun>, Status> {
        let c = self.caller(&req)?;
        let (run, steps) = self
            .run_of(&c, &req.get_ref().blueprint, &req.get_ref().id)
            .await?;
        Ok(Response::new(render_run(&run, &steps)))
    }

    async fn cancel_run(
        &self,
        req: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::AgentRun>, Status> {
        let c = self.caller(&req)?;
        let b = blueprint(&req.get_ref().blueprint)?;
        let id = uuid(&req.get_ref().id, "id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let run = store::run(&mut tx, c.tenant, id, Some(b.name))
            .await?
            .ok_or_else(|| Error::not_found("run"))?;
        if !store::cancel(&mut tx, c.tenant, id, t).await? {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!("the run has already ended ({})", run.status),
            )
            .into());
        }
        store::event(
            &mut tx,
            c.tenant,
            &run,
            "cancelled",
            "cancelled",
            c.actor(),
            run.cost_micros,
            "",
            t,
        )
        .await?;
        let run = store::run(&mut tx, c.tenant, id, None)
            .await?
            .ok_or_else(|| Error::internal("the run is gone"))?;
        let steps = store::steps(&mut tx, c.tenant, id).await?;
        tx.commit().await?;
        self.relay.notify();
        Ok(Response::new(render_run(&run, &steps)))
    }

    async fn approve_run(
        &self,
        req: Request<pb::DecideRunRequest>,
    ) -> Result<Response<pb::AgentRun>, Status> {
        self.decide(req, true)
            .await
            .map(Response::new)
            .map_err(Into::into)
    }

    async fn reject_run(
        &self,
        req: Request<pb::DecideRunRequest>,
    ) -> Result<Response<pb::AgentRun>, Status> {
        self.decide(req, false)
            .await
            .map(Response::new)
            .map_err(Into::into)
    }

    async fn list_run_events(
        &self,
        req: Request<pb::ListRunEventsRequest>,
    ) -> Result<Response<pb::ListRunEventsResponse>, Status> {
        let c = self.caller(&req)?;
        let (run, _) = self
            .run_of(&c, &req.get_ref().blueprint, &req.get_ref().id)
            .await?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let data = store::events(&mut tx, c.tenant, run.id)
            .await?
            .into_iter()
            .map(|e| pb::RunEvent {
                seq: e.seq,
                kind: e.kind,
                status: store::status_of(&e.status) as i32,
                detail: e.detail,
                at: Some(timestamp(e.at)),
            })
            .collect();
        Ok(Response::new(pb::ListRunEventsResponse {
            data,
            next_cursor: String::new(),
            has_more: false,
        }))
    }

    async fn store_integration_key(
        &self,
        req: Request<pb::StoreIntegrationKeyRequest>,
    ) -> Result<Response<pb::IntegrationKey>, Status> {
        let c = self.caller(&req)?;
        let key = self.integrations.store(c.tenant, req.into_inner()).await?;
        Ok(Response::new(key))
    }

    async fn list_integration_keys(
        &self,
        req: Request<pb::ListIntegrationKeysRequest>,
    ) -> Result<Response<pb::ListIntegrationKeysResponse>, Status> {
        let c = self.caller(&req)?;
        Ok(Response::new(self.integrations.list(c.tenant).await?))
    }

    async fn get_integration_key(
        &self,
        req: Request<pb::GetIntegrationKeyRequest>,
    ) -> Result<Response<pb::IntegrationKey>, Status> {
        let c = self.caller(&req)?;
        let key = self
            .integrations
            .get(c.tenant, &req.get_ref().provider)
            .await?;
        Ok(Response::new(key))
    }

    async fn verify_integration_key(
        &self,
        req: Request<pb::VerifyIntegrationKeyRequest>,
    ) -> Result<Response<pb::VerifyIntegrationKeyResponse>, Status> {
        let c = self.caller(&req)?;
        let v = self
            .integrations
            .verify(c.tenant, &req.get_ref().provider)
            .await?;
        Ok(Response::new(v))
    }

    async fn revoke_integration_key(
        &self,
        req: Request<pb::RevokeIntegrationKeyRequest>,
    ) -> Result<Response<pb::RevokeIntegrationKeyResponse>, Status> {
        let c = self.caller(&req)?;
        let r = self
            .integrations
            .revoke(c.tenant, &req.get_ref().provider)
            .await?;
        Ok(Response::new(r))
    }

    async fn list_my_integrations(
        &self,
        req: Request<pb::ListMyIntegrationsRequest>,
    ) -> Result<Response<pb::ListMyIntegrationsResponse>, Status> {
        let c = self.caller(&req)?;
        Ok(Response::new(self.integrations.list_mine(c.tenant).await?))
    }

    async fn revoke_my_integration(
        &self,
        req: Request<pb::RevokeMyIntegrationRequest>,
    ) -> Result<Response<pb::RevokeMyIntegrationResponse>, Status> {
        let c = self.caller(&req)?;
        let r = self
            .integrations
            .revoke_mine(c.tenant, req.get_ref())
            .await?;
        Ok(Response::new(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cents_round_up() {
        assert_eq!(cents(0), 0);
        assert_eq!(cents(1), 1);
        assert_eq!(cents(10_000), 1);
        assert_eq!(cents(10_001), 2);
    }

    #[test]
    fn guardrail_rules_pick_the_calls_that_wait() {
        let spec = RunSpec {
            model: String::new(),
            system: String::new(),
            tools: Vec::new(),
            ctx: Ctx::system("test"),
            approvals: vec!["notes_*".into()],
            max_destructive_calls: Some(1),
            spend_threshold_micros: Some(30_000),
        };
        assert_eq!(spec.guard("notes_create", false, 0, 0, false), Some("tool"));
        assert_eq!(spec.guard("kb__wipe", true, 0, 0, false), None, "the first destructive call is free");
        assert_eq!(spec.guard("kb__wipe", true, 1, 0, false), Some("destructive_cap"));
        assert_eq!(spec.guard("kb__lookup", false, 5, 0, false), None);
        assert_eq!(spec.guard("kb__lookup", false, 0, 30_000, false), Some("spend_threshold"));
        assert_eq!(spec.guard("kb__lookup", false, 0, 90_000, true), None, "approved once, it goes on");
        for ok in [json!({"max_destructive_calls": 0}), json!({"spend_threshold_cents": 5}), json!({"tool": "x", "require_approval": true})] {
            assert!(check_guardrail(&ok).is_ok(), "{ok}");
        }
        for bad in [json!({"max_destructive_calls": -1}), json!({"spend_threshold_cents": 0}), json!({"spend_threshold_cents": 5, "tool": "x"}), json!({"max_destructive_calls": "2"})] {
            assert!(check_guardrail(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn app_patterns_name_an_apps_tools_and_nothing_else() {
        for ok in ["kb__lookup", "kb__*", "my-app__files_read", "kb__get-*"] {
            assert!(is_app_pattern(ok), "{ok}");
        }
        for bad in ["kb", "kb__", "__x", "Kb__x", "k__x", "kb__a b", "kb__x.y", "*__*", "kb_x__y"] {
            assert!(!is_app_pattern(bad), "{bad}");
        }
        assert!(!is_app_pattern(&format!("kb__{}", "x".repeat(61))));
        let allowed = vec!["contacts_get".to_owned(), "kb__*".to_owned(), "gh__create_issue".to_owned()];
        assert!(crate::tools::allows(&allowed, "contacts_get"));
        assert!(crate::tools::allows(&allowed, "kb__lookup"));
        assert!(crate::tools::allows(&allowed, "gh__create_issue"));
        assert!(!crate::tools::allows(&allowed, "gh__delete_repo"));
        assert!(!crate::tools::allows(&allowed, "contacts_merge"));
        assert!(!crate::tools::allows(&["contacts_*".to_owned()], "contacts_merge"), "a registry name is exact");
    }
}

#[cfg(test)]
mod glob_tests {
    use super::matches;

    #[test]
    fn stars_match_any_run_of_characters() {
        assert!(matches("notes_create", "notes_create"));
        assert!(!matches("notes_create", "notes_created"));
        assert!(matches("notes_*", "notes_create"));
        assert!(matches("*_delete", "contacts_delete"));
        assert!(matches("*", "anything"));
        assert!(matches("c*_m*e", "contacts_merge"));
        assert!(!matches("c*_m*e", "contacts_merge_preview"));
        assert!(!matches("ab*ba", "aba"));
    }
}
