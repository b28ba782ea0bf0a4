//! The `agent-worker` role: claims runs with a lease in the database and runs them.
//!
//! **Claims.** A worker scans for runs that are queued, or running under a lapsed lease, and
//! claims each with a compare-and-set of its row (`store::claim`), so of any number of workers
//! on any replicas exactly one wins. It renews its lease every third of `lease_seconds`; a
//! worker that dies stops renewing and another takes the run over once the lease lapses. The
//! bus (`worktruck.agents.run.queued.v1`, JetStream or in-process) only wakes workers early;
//! a worker that misses a wake-up finds the run at its next poll.
//!
//! **The journal.** A run is a loop of LLM turns and tool calls, each a step with a `seq`. An
//! LLM turn is journaled with its output, tokens and cost once it has answered; a tool call is
//! journaled when it starts and again when it completes. Every journal write first checks, in
//! its transaction, that the run is still running under this worker's lease, and adds the
//! step's cost to the run in the same transaction, so cost is counted once. A resumed run
//! replays its journal to rebuild the conversation: a completed step is never run again; a
//! tool call that started but did not complete is called again with the same request id
//! (`<run>:<seq>`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use secrecy::SecretString;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use uuid::Uuid;
use worktruck_kit::bus::Bus;
use worktruck_kit::db::{Db, Scope, now};
use worktruck_kit::outbox::Relay;
use worktruck_kit::service::{Shutdown, Task, WorkerContext};
use worktruck_kit::{Error, Result};

use crate::anthropic::{self, Failure};
use crate::service::RunSpec;
use crate::settings::{Settings, Usage};
use crate::store::{self, NewStep, RunRow, StepRow};
use crate::tools::Tools;

/// Builds the worker's task from its context (the `agent-worker` role, or one in `dev`).
pub fn build(ctx: WorkerContext) -> anyhow::Result<Vec<Task>> {
    let settings: Settings = ctx.service.settings()?;
    settings.check()?;
    let client = anthropic::Client::new(&settings, &ctx.service.config.outbound)?;
    let envelope = ctx.service.envelope()?;
    let integrations = crate::integrations::Integrations::new(
        ctx.service.db.clone(),
        envelope.clone(),
        Arc::new(settings.clone()),
        &ctx.service.config.outbound,
    )?;
    let tools = Tools::new(&ctx.upstreams, ctx.signer.clone())?.with_integrations(integrations);
    let principals = crate::principal::Principals::new(&ctx.upstreams, ctx.signer.clone());
    let id = format!(
        "{}-{}-{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into()),
        std::process::id(),
        &Uuid::new_v4().simple().to_string()[..8]
    );
    let scheduler = crate::schedule::Scheduler {
        db: ctx.service.db.clone(),
        relay: ctx.service.relay.clone(),
        settings: Arc::new(settings.clone()),
        shutdown: ctx.service.shutdown.clone(),
        worker: id.clone(),
        principals: principals.clone(),
    };
    let worker = Arc::new(Worker {
        id,
        db: ctx.service.db,
        relay: ctx.service.relay,
        bus: ctx.service.bus,
        slots: Arc::new(Semaphore::new(settings.concurrency)),
        settings: Arc::new(settings),
        client,
        tools,
        principals,
        envelope,
        shutdown: ctx.service.shutdown,
    });
    Ok(vec![
        ("agent-worker".to_owned(), Box::pin(worker.run())),
        // Every worker also fires due schedule ticks; the claim in the database makes each
        // tick fire once however many run.
        ("agent-scheduler".to_owned(), Box::pin(scheduler.run())),
    ])
}

struct Worker {
    id: String,
    db: Db,
    relay: Relay,
    bus: Bus,
    slots: Arc<Semaphore>,
    settings: Arc<Settings>,
    client: anthropic::Client,
    tools: Tools,
    principals: crate::principal::Principals,
    envelope: worktruck_kit::envelope::Envelope,
    shutdown: Shutdown,
}

/// How a run's execution ended, for this worker.
enum End {
    /// The run ended (succeeded or failed) and is recorded so.
    Done,
    /// The worker no longer holds the run (cancelled, or taken over): it leaves it alone.
    Lost,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Worker {
    fn lease(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.settings.lease_seconds as i64)
    }

    async fn run(self: Arc<Self>) {
        tracing::info!(worker = %self.id, "agent worker started");
        let mut wake = self.bus.watch("worktruck.agents.run.queued.v1");
        let stop = self.shutdown.wait();
        tokio::pin!(stop);
        let mut running = tokio::task::JoinSet::new();
        let poll = Duration::from_millis(self.settings.poll_ms);
        loop {
            if let Err(e) = self.sweep(&mut running).await {
                tracing::warn!(worker = %self.id, error = %e, "cannot look for runs to claim");
            }
            tokio::select! {
                _ = &mut stop => break,
                w = wake.next() => if w.is_none() {
                    // The bus is gone (shutdown is near): poll only.
                    wake = Box::pin(futures::stream::pending());
                },
                _ = tokio::time::sleep(poll) => {}
                Some(_) = running.join_next() => {}
            }
        }
        // Stop running and hand the runs back at once rather than after their leases lapse.
        running.abort_all();
        while running.join_next().await.is_some() {}
        if let Err(e) = self.release().await {
            tracing::warn!(worker = %self.id, error = %e, "cannot release this worker's runs; their leases will lapse");
        }
        tracing::info!(worker = %self.id, "agent worker stopped");
    }

    /// Claims runs while this worker has free slots, and starts each.
    async fn sweep(self: &Arc<Self>, running: &mut tokio::task::JoinSet<()>) -> Result<()> {
        let free = self.slots.available_permits();
        if free == 0 {
            return Ok(());
        }
        let t = now();
        let mut tx = self.db.begin(Scope::System, false).await?;
        let candidates = store::claimable(&mut tx, t, (free * 2) as i64).await?;
        drop(tx);
        for (tenant, id) in candidates {
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                break;
            };
            if !self.claim(tenant, id).await? {
                continue;
            }
            let me = self.clone();
            running.spawn(async move {
                let _permit = permit;
                me.execute(tenant, id).await;
            });
        }
        Ok(())
    }

    /// Claims one run; `false` when another worker was first.
    async fn claim(&self, tenant: Uuid, id: Uuid) -> Result<bool> {
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(tenant), true).await?;
        let Some(before) = store::run(&mut tx, tenant, id, None).await? else {
            return Ok(false);
        };
        if !store::claim(&mut tx, tenant, id, &self.id, t + self.lease(), t).await? {
            return Ok(false);
        }
        if before.status == "running" {
            let detail = format!(
                "the lease of {} lapsed",
                before.worker_id.as_deref().unwrap_or("a worker")
            );
            tracing::warn!(run.id = %id, worker = %self.id, previous = before.worker_id.as_deref().unwrap_or(""), "lease lapsed; run taken over");
            store::event(
                &mut tx,
                tenant,
                &before,
                "lease_lapsed",
                "running",
                &detail,
                before.cost_micros,
                "",
                t,
            )
            .await?;
        }
        store::event(
            &mut tx,
            tenant,
            &before,
            "running",
            "running",
            &self.id,
            before.cost_micros,
            "",
            t,
        )
        .await?;
        tx.commit().await?;
        self.relay.notify();
        tracing::info!(run.id = %id, worker = %self.id, attempt = before.attempts + 1, "run claimed");
        Ok(true)
    }

    /// Hands every run this worker holds back to the queue (at shutdown).
    async fn release(&self) -> Result<()> {
        const SQL: &str = "UPDATE agent_runs SET status = 'queued', worker_id = NULL, lease_until = NULL \
            WHERE worker_id = $1 AND status = 'running'";
        let mut tx = self.db.begin(Scope::System, true).await?;
        worktruck_kit::exec!(&mut tx, sqlx::query(SQL).bind(&self.id))?;
        tx.commit().await?;
        Ok(())
    }

    /// Runs a claimed run until it ends or this worker loses it, renewing the lease meanwhile.
    async fn execute(self: Arc<Self>, tenant: Uuid, id: Uuid) {
        let lost = Arc::new(AtomicBool::new(false));
        let beat = {
            let me = self.clone();
            let lost = lost.clone();
            tokio::spawn(async move { me.heartbeat(tenant, id, lost).await })
        };
        let outcome = self.drive(tenant, id, &lost).await;
        beat.abort();
        match outcome {
            Ok(End::Done) => {}
            Ok(End::Lost) => {
                tracing::info!(run.id = %id, worker = %self.id, "run no longer held by this worker; left alone")
            }
            // A database failure: the lease lapses and a worker takes the run over from its
            // journal.
            Err(e) => {
                tracing::warn!(run.id = %id, worker = %self.id, error = %e, "run interrupted; its lease will lapse")
            }
        }
    }

    async fn heartbeat(&self, tenant: Uuid, id: Uuid, lost: Arc<AtomicBool>) {
        let every = Duration::from_millis((self.settings.lease_seconds * 1000 / 3).max(500));
        loop {
            tokio::time::sleep(every).await;
            let held = async {
                let t = now();
                let mut tx = self.db.begin(Scope::Tenant(tenant), true).await?;
                let held =
                    store::hold(&mut tx, tenant, id, &self.id, t + self.lease(), 0, t).await?;
                tx.commit().await?;
                Ok::<_, Error>(held)
            }
            .await;
            match held {
                Ok(true) => {}
                Ok(false) => {
                    lost.store(true, Ordering::Release);
                    return;
                }
                Err(e) => tracing::warn!(run.id = %id, error = %e, "heartbeat failed"),
            }
        }
    }

    /// Journals `step` (adding its cost to the run) if this worker still holds the run.
    async fn journal(&self, run: &RunRow, step: &NewStep<'_>) -> Result<bool> {
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(run.tenant_id), true).await?;
        if !store::hold(
            &mut tx,
            run.tenant_id,
            run.id,
            &self.id,
            t + self.lease(),
            step.cost_micros,
            t,
        )
        .await?
        {
            return Ok(false);
        }
        store::insert_step(&mut tx, run.tenant_id, run.id, step).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn complete(&self, run: &RunRow, seq: i32, output: &Value) -> Result<bool> {
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(run.tenant_id), true).await?;
        if !store::hold(
            &mut tx,
            run.tenant_id,
            run.id,
            &self.id,
            t + self.lease(),
            0,
            t,
        )
        .await?
        {
            return Ok(false);
        }
        store::complete_step(&mut tx, run.tenant_id, run.id, seq, output, t).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Journals a pending guardrail step for the tool call and pauses the run in `waiting`.
    async fn pause(
        &self,
        run: &RunRow,
        seq: i32,
        name: &str,
        input: &Value,
        tool_use_id: &str,
        rule: &str,
        why: &str,
    ) -> Result<End> {
        let t = now();
        let hash = sha256_hex(&crate::tools::canonical_bytes(&json!([name, input])));
        let output = json!({"decision": "pending", "tool_use_id": tool_use_id, "rule": rule, "why": why});
        let step = NewStep {
            seq,
            kind: "guardrail",
            name,
            input_hash: &hash,
            input: Some(input),
            output: Some(&output),
            model: None,
            usage: Usage::default(),
            cost_micros: 0,
            started_at: t,
            completed_at: None,
        };
        let mut tx = self.db.begin(Scope::Tenant(run.tenant_id), true).await?;
        if !store::hold(
            &mut tx,
            run.tenant_id,
            run.id,
            &self.id,
            t + self.lease(),
            0,
            t,
        )
        .await?
        {
            return Ok(End::Lost);
        }
        store::insert_step(&mut tx, run.tenant_id, run.id, &step).await?;
        store::wait(&mut tx, run.tenant_id, run.id, &self.id, t).await?;
        let detail = format!("{name} needs an approval: {why}");
        store::event(
            &mut tx,
            run.tenant_id,
            run,
            "waiting",
            "waiting",
            &detail,
            run.cost_micros,
            "",
            t,
        )
        .await?;
        tx.commit().await?;
        self.relay.notify();
        tracing::info!(run.id = %run.id, tool = name, "run waiting for an approval");
        Ok(End::Done)
    }

    /// Ends the run: `Ok` with its output, or `Err` with a failure.
    async fn end(&self, run: &RunRow, result: std::result::Result<Value, Failure>) -> Result<End> {
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(run.tenant_id), true).await?;
        let (status, output, failure) = match &result {
            Ok(v) => ("succeeded", Some(v), None),
            Err(f) => ("failed", None, Some((f.category, f.detail.as_str()))),
        };
        if !store::finish(
            &mut tx,
            run.tenant_id,
            run.id,
            &self.id,
            status,
            output,
            failure,
            t,
        )
        .await?
        {
            return Ok(End::Lost);
        }
        let current = store::run(&mut tx, run.tenant_id, run.id, None)
            .await?
            .ok_or_else(|| Error::internal("run gone"))?;
        let (category, detail) = failure.unwrap_or(("", ""));
        store::event(
            &mut tx,
            run.tenant_id,
            &current,
            status,
            status,
            detail,
            current.cost_micros,
            category,
            t,
        )
        .await?;
        tx.commit().await?;
        self.relay.notify();
        match failure {
            None => {
                tracing::info!(run.id = %run.id, cost_micros = current.cost_micros, "run succeeded")
            }
            Some((category, _)) => {
                tracing::info!(run.id = %run.id, category, cost_micros = current.cost_micros, "run failed")
            }
        }
        Ok(End::Done)
    }

    /// The loop of a run, resumed from its journal.
    async fn drive(&self, tenant: Uuid, id: Uuid, lost: &AtomicBool) -> Result<End> {
        let mut tx = self.db.begin(Scope::Tenant(tenant), false).await?;
        let run = store::run(&mut tx, tenant, id, None)
            .await?
            .ok_or_else(|| Error::not_found("run"))?;
        let journal: BTreeMap<i32, StepRow> = store::steps(&mut tx, tenant, id)
            .await?
            .into_iter()
            .map(|s| (s.seq, s))
            .collect();
        drop(tx);
        if run.attempts > self.settings.max_attempts {
            let detail = format!(
                "claimed {} times without ending (see the worker logs)",
                run.attempts - 1
            );
            return self
                .end(
                    &run,
                    Err(Failure {
                        category: "too_many_attempts",
                        detail,
                    }),
                )
                .await;
        }
        let spec: RunSpec = serde_json::from_value(run.spec.clone()).map_err(Error::internal)?;
        // Whoever enqueued it must still be able to act (an API key revoked since ends its runs);
        // when that cannot be told now, the attempt stops and its lease lapses.
        if let Some(detail) = self.principals.refusal(&spec.ctx, &format!("{}:principal", run.id)).await? {
            return self
                .end(
                    &run,
                    Err(Failure {
                        category: "principal_revoked",
                        detail,
                    }),
                )
                .await;
        }
        let Some(price) = self.settings.prices.get(&spec.model).cloned() else {
            let detail = format!(
                "model {} has no price in settings.agents.prices",
                spec.model
            );
            return self
                .end(
                    &run,
                    Err(Failure {
                        category: "provider_rejected",
                        detail,
                    }),
                )
                .await;
        };
        // The tenant's own key for this blueprint when it stored one (BYOK), else the operator's.
        let mut tx = self.db.begin(Scope::Tenant(tenant), false).await?;
        let sealed = store::byok_sealed(&mut tx, tenant, &run.blueprint).await?;
        let key = match &sealed {
            Some(sealed) => {
                let plain = self
                    .envelope
                    .open(
                        &mut tx,
                        tenant,
                        &crate::service::byok_purpose(&run.blueprint),
                        sealed,
                    )
                    .await?;
                SecretString::from(
                    String::from_utf8(plain.to_vec())
                        .map_err(|_| Error::internal("a stored key is not UTF-8"))?,
                )
            }
            None => self.settings.anthropic_api_key.clone(),
        };
        drop(tx);
        let budget_micros = run.budget_cents.map(|c| c.saturating_mul(10_000));
        // The app tools among them are those the tenant's apps offer at this attempt's start.
        let tools = self
            .tools
            .definitions(&spec.ctx, &spec.tools, &format!("{}:tools", run.id))
            .await;
        let mut messages = vec![json!({"role": "user", "content": prompt_of(&run.input)})];
        let mut cost = run.cost_micros;
        // For the guardrails: destructive calls made (or replayed) so far, and whether a spend
        // threshold's approval was given.
        let mut destructive_calls = 0i64;
        let mut spend_approved = false;
        let mut seq = 0i32;
        let over_deadline = |at: DateTime<Utc>| run.deadline_at.is_some_and(|d| at >= d);
        for _turn in 0..self.settings.max_turns {
            if lost.load(Ordering::Acquire) {
                return Ok(End::Lost);
            }
            seq += 1;
            let (content, stop_reason) = match journal
                .get(&seq)
                .filter(|s| s.kind == "llm" && s.completed_at.is_some())
            {
                Some(step) => replayed_turn(step)?,
                None => {
                    if over_deadline(now()) {
                        return self.end(&run, Err(deadline_failure())).await;
                    }
                    if budget_micros.is_some_and(|b| cost >= b) {
                        return self
                            .end(&run, Err(budget_failure(cost, budget_micros)))
                            .await;
                    }
                    let body = json!({
                        "model": spec.model,
                        "max_tokens": self.settings.max_tokens,
                        "system": spec.system,
                        "messages": messages,
                        "tools": tools.definitions,
                    });
                    let started = now();
                    let call = self.client.turn(&key, &body, run.deadline_at);
                    let turn = match run
                        .deadline_at
                        .map(|d| (d - started).to_std().unwrap_or_default())
                    {
                        None => call.await,
                        Some(left) => match tokio::time::timeout(left, call).await {
                            Ok(t) => t,
                            Err(_) => Err(deadline_failure()),
                        },
                    };
                    let turn = match turn {
                        Ok(t) => t,
                        Err(f) => {
                            if let Some(sealed) = &sealed
                                && [
                                    "invalid_key",
                                    "revoked_or_expired",
                                    "insufficient_permissions",
                                ]
                                .contains(&f.category)
                            {
                                let mut tx = self.db.begin(Scope::Tenant(tenant), true).await?;
                                store::byok_failed(
                                    &mut tx,
                                    tenant,
                                    &run.blueprint,
                                    sealed,
                                    f.category,
                                )
                                .await?;
                                tx.commit().await?;
                            }
                            return self.end(&run, Err(f)).await;
                        }
                    };
                    let step_cost = price.cost_micros(turn.usage);
                    let output = json!({"content": turn.content, "stop_reason": turn.stop_reason});
                    let hash = sha256_hex(&crate::tools::canonical_bytes(&body));
                    let step = NewStep {
                        seq,
                        kind: "llm",
                        name: &spec.model,
                        input_hash: &hash,
                        input: None,
                        output: Some(&output),
                        model: Some(&spec.model),
                        usage: turn.usage,
                        cost_micros: step_cost,
                        started_at: started,
                        completed_at: Some(now()),
                    };
                    if !self.journal(&run, &step).await? {
                        return Ok(End::Lost);
                    }
                    cost += step_cost;
                    (turn.content, turn.stop_reason)
                }
            };
            messages.push(json!({"role": "assistant", "content": content}));
            if budget_micros.is_some_and(|b| cost > b) {
                return self
                    .end(&run, Err(budget_failure(cost, budget_micros)))
                    .await;
            }
            match stop_reason.as_str() {
                "tool_use" => {}
                "end_turn" | "stop_sequence" => {
                    return self.end(&run, Ok(json!({"text": text_of(&content)}))).await;
                }
                // The server paused its own tool loop: send the content back as it is.
                "pause_turn" => continue,
                "refusal" => {
                    let detail = format!(
                        "the model declined: {}",
                        text_of(&content).chars().take(300).collect::<String>()
                    );
                    return self
                        .end(
                            &run,
                            Err(Failure {
                                category: "refusal",
                                detail,
                            }),
                        )
                        .await;
                }
                "max_tokens" | "model_context_window_exceeded" => {
                    let detail = format!("the model's answer was cut short ({stop_reason})");
                    return self
                        .end(
                            &run,
                            Err(Failure {
                                category: "truncated",
                                detail,
                            }),
                        )
                        .await;
                }
                other => {
                    let detail = format!("unknown stop_reason {other:?}");
                    return self
                        .end(
                            &run,
                            Err(Failure {
                                category: "provider_rejected",
                                detail,
                            }),
                        )
                        .await;
                }
            }
            let mut results = Vec::new();
            for block in content.iter().filter(|b| b["type"] == "tool_use") {
                let tool_use_id = block["id"].as_str().unwrap_or_default();
                let name = block["name"].as_str().unwrap_or_default();
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                let destructive = tools.destructive.contains(name);
                // A guardrail asks for approval first: a step of its own, completed by the
                // decision; the run waits, holding no worker, until there is one. What the
                // journal holds decides for a replayed call (the rules read the run's cost,
                // which a replay does not rebuild step by step).
                let rule = match journal.get(&(seq + 1)) {
                    Some(step) if step.kind == "guardrail" => Some(
                        step.output.as_ref().and_then(|o| o["rule"].as_str()).unwrap_or("tool").to_owned(),
                    ),
                    Some(_) => None,
                    None => spec
                        .guard(name, destructive, destructive_calls, cost, spend_approved)
                        .map(str::to_owned),
                };
                if let Some(rule) = rule {
                    seq += 1;
                    let decision = match journal.get(&seq).filter(|s| s.completed_at.is_some()) {
                        Some(step) => step.output.clone().unwrap_or(Value::Null),
                        None => {
                            let why = match rule.as_str() {
                                "destructive_cap" => format!(
                                    "{name} is destructive and the run made {destructive_calls} destructive calls, its guardrail's cap"
                                ),
                                "spend_threshold" => format!(
                                    "the run has cost {cost} millionths of a dollar, past its guardrail's spend threshold"
                                ),
                                _ => format!("{name} matches a guardrail that asks for approval"),
                            };
                            return self.pause(&run, seq, name, &input, tool_use_id, &rule, &why).await;
                        }
                    };
                    if rule == "spend_threshold" && decision["decision"] == "approved" {
                        spend_approved = true;
                    }
                    if decision["decision"] != "approved" {
                        let reason = decision["reason"]
                            .as_str()
                            .filter(|r| !r.is_empty())
                            .unwrap_or("no reason given");
                        let text = format!("A reviewer rejected this call: {reason}");
                        results.push(json!({"type": "tool_result", "tool_use_id": tool_use_id, "content": text, "is_error": true}));
                        continue;
                    }
                }
                if destructive {
                    destructive_calls += 1;
                }
                seq += 1;
                let output = match journal.get(&seq).filter(|s| s.completed_at.is_some()) {
                    Some(step) => step.output.clone().unwrap_or(Value::Null),
                    None => {
                        if lost.load(Ordering::Acquire) {
                            return Ok(End::Lost);
                        }
                        if over_deadline(now()) {
                            return self.end(&run, Err(deadline_failure())).await;
                        }
                        if !journal.contains_key(&seq) {
                            let hash =
                                sha256_hex(&crate::tools::canonical_bytes(&json!([name, input])));
                            let step = NewStep {
                                seq,
                                kind: "tool",
                                name,
                                input_hash: &hash,
                                input: Some(&input),
                                output: None,
                                model: None,
                                usage: Usage::default(),
                                cost_micros: 0,
                                started_at: now(),
                                completed_at: None,
                            };
                            if !self.journal(&run, &step).await? {
                                return Ok(End::Lost);
                            }
                        }
                        let request_id = format!("{}:{seq}", run.id);
                        let output = match self
                            .tools
                            .call(&spec.ctx, &spec.tools, name, input.clone(), &request_id)
                            .await
                        {
                            Ok(v) => json!({"result": v}),
                            Err(e) => e.to_json(),
                        };
                        tracing::info!(run.id = %run.id, seq, tool = name, ok = output.get("result").is_some(), "tool called");
                        if !self.complete(&run, seq, &output).await? {
                            return Ok(End::Lost);
                        }
                        output
                    }
                };
                // A failed call, or an app tool's answer that says it failed (MCP `isError`).
                let is_error = output.get("error").is_some() || output["result"]["is_error"] == true;
                let text = output.get("result").unwrap_or(&output).to_string();
                results.push(json!({"type": "tool_result", "tool_use_id": tool_use_id, "content": text, "is_error": is_error}));
            }
            messages.push(json!({"role": "user", "content": results}));
        }
        let detail = format!(
            "no final answer after {} LLM turns",
            self.settings.max_turns
        );
        self.end(
            &run,
            Err(Failure {
                category: "max_turns",
                detail,
            }),
        )
        .await
    }
}

fn deadline_failure() -> Failure {
    Failure {
        category: "deadline_exceeded",
        detail: "the run's deadline passed".into(),
    }
}

fn budget_failure(cost: i64, budget: Option<i64>) -> Failure {
    Failure {
        category: "budget_exceeded",
        detail: format!(
            "cost {cost} millionths of a dollar reached the budget of {}",
            budget.unwrap_or_default()
        ),
    }
}

/// The first user message of a run: its input's `prompt`, or the input as JSON.
fn prompt_of(input: &Value) -> String {
    match input.get("prompt").and_then(Value::as_str) {
        Some(p) if input.as_object().is_some_and(|o| o.len() == 1) => p.to_owned(),
        _ => input.to_string(),
    }
}

/// The text blocks of an assistant turn, joined.
fn text_of(content: &[Value]) -> String {
    content
        .iter()
        .filter(|b| b["type"] == "text")
        .filter_map(|b| b["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn replayed_turn(step: &StepRow) -> Result<(Vec<Value>, String)> {
    let output = step
        .output
        .as_ref()
        .ok_or_else(|| Error::internal(format!("journaled turn {} has no output", step.seq)))?;
    let content = output["content"].as_array().cloned().unwrap_or_default();
    let stop = output["stop_reason"]
        .as_str()
        .unwrap_or("end_turn")
        .to_owned();
    Ok((content, stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_alone_is_sent_as_text_anything_else_as_json() {
        assert_eq!(
            prompt_of(&json!({"prompt": "check example.com"})),
            "check example.com"
        );
        assert_eq!(
            prompt_of(&json!({"prompt": "p", "site": "x"})),
            r#"{"prompt":"p","site":"x"}"#
        );
        assert_eq!(
            text_of(&[
                json!({"type": "text", "text": "a"}),
                json!({"type": "tool_use"})
            ]),
            "a"
        );
    }
}
