//! Schedules: a config's cron expression in its IANA zone enqueues runs, each tick exactly once
//! across every worker.
//!
//! **Ticks.** A config with a schedule (and not disabled) keeps its next tick in
//! `agent_configs.next_tick_at`, set when the config is written. Every `agent-worker` runs a
//! [`Scheduler`]: it polls for due configs and claims a tick with a compare-and-set of
//! `next_tick_at` (from the due tick to the next one) **in the transaction that inserts the
//! tick's run** and its `queued` event (the outbox), so a crash before the commit leaves the
//! tick due and one after it leaves the run: a tick is neither lost nor doubled, on any number
//! of workers. A unique index on (tenant, blueprint, `scheduled_for`) is the second wall.
//!
//! **Missed ticks** (no worker ran): the scheduler fires one run, for the latest tick missed,
//! and moves `next_tick_at` to the first tick after now; never a burst.
//!
//! **Overlap** against the config's scheduled runs that have not ended: `skip` drops the tick,
//! `buffer_one` drops it only while a scheduled run is still queued, `allow` always enqueues.
//! A tick that enqueues nothing (overlap, or an enqueue the config refuses: a model without a
//! price) is logged and counted on the config (`ticks_skipped`, `last_skip_reason`).
//!
//! **Cron** is `croner`'s: 5 fields, or 6 with seconds first. In a spring-forward gap a fixed
//! time fires at the first instant after the gap, wildcard and stepped ticks inside the gap are
//! skipped; in the fall-back hour a fixed time fires once (croner's documented behaviour, which
//! the tests below pin).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use uuid::Uuid;
use worktruck_kit::db::{Db, Scope, now};
use worktruck_kit::outbox::Relay;
use worktruck_kit::service::Shutdown;
use worktruck_kit::{Error, ErrorCode, Result};

use crate::service::{ConfigDoc, Enqueue, ScheduleDoc};
use crate::settings::Settings;
use crate::store;

/// A parsed schedule: when it ticks.
#[derive(Debug, Clone)]
pub(crate) struct Cadence {
    cron: Cron,
    tz: Tz,
}

/// Reads a cron expression as schedules take it (5 fields, or 6 with seconds first; no year
/// field); the error is croner's, for the caller's message.
pub(crate) fn parse_cron(cron: &str) -> std::result::Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(cron)
        .map_err(|e| e.to_string())
}

impl Cadence {
    /// The cadence of a cron expression in an IANA zone.
    pub(crate) fn new(cron: &str, timezone: &str) -> std::result::Result<Cadence, String> {
        let tz = timezone
            .parse::<Tz>()
            .map_err(|_| format!("{timezone} is not an IANA time zone"))?;
        Ok(Cadence {
            cron: parse_cron(cron)?,
            tz,
        })
    }

    /// The cadence of a stored schedule.
    pub(crate) fn of(s: &ScheduleDoc) -> std::result::Result<Cadence, String> {
        Cadence::new(&s.cron, &s.timezone)
    }

    /// The first tick strictly after `t`, or `None` when the expression never fires again.
    pub(crate) fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The latest tick at or before `t`.
    pub(crate) fn latest_until(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.tz), true)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }
}

/// What a scheduler does with a due tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tick {
    /// The tick the run is for: the due one, or the latest of several missed.
    pub fire_for: DateTime<Utc>,
    /// The next tick after `now`, where `next_tick_at` moves.
    pub next: Option<DateTime<Utc>>,
    /// Whether ticks between `due` and `fire_for` were missed (and dropped).
    pub caught_up: bool,
}

/// The tick to fire for `due` (the stored `next_tick_at`, at or before `now`): at most one run,
/// for the latest tick at or before `now`, then the first tick after `now`.
pub(crate) fn due_tick(c: &Cadence, due: DateTime<Utc>, now: DateTime<Utc>) -> Tick {
    let fire_for = c
        .latest_until(now)
        .filter(|l| *l > due)
        .unwrap_or(due);
    Tick {
        fire_for,
        next: c.next_after(now.max(fire_for)),
        caught_up: fire_for > due,
    }
}

/// Whether a tick under `overlap` enqueues, given the statuses of the config's scheduled runs
/// that have not ended; `Err` says why not.
pub(crate) fn admit(overlap: &str, unended: &[String]) -> std::result::Result<(), String> {
    match overlap {
        "allow" => Ok(()),
        "buffer_one" if unended.iter().any(|s| s == "queued") => Err(
            "overlap buffer_one: a scheduled run is already queued".to_owned(),
        ),
        "buffer_one" => Ok(()),
        _ if unended.is_empty() => Ok(()),
        _ => Err(format!(
            "overlap skip: an earlier scheduled run has not ended ({})",
            unended[0]
        )),
    }
}

/// The scheduler every worker runs.
pub(crate) struct Scheduler {
    pub db: Db,
    pub relay: Relay,
    pub settings: Arc<Settings>,
    pub shutdown: Shutdown,
    pub worker: String,
    pub principals: crate::principal::Principals,
}

impl Scheduler {
    /// Polls for due ticks until shutdown.
    pub(crate) async fn run(self) {
        let stop = self.shutdown.wait();
        tokio::pin!(stop);
        let poll = Duration::from_millis(self.settings.schedule_poll_ms);
        loop {
            if let Err(e) = self.sweep().await {
                tracing::warn!(worker = %self.worker, error = %e, "cannot look for due schedules");
            }
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Fires every tick due now.
    async fn sweep(&self) -> Result<()> {
        let t = now();
        let mut tx = self.db.begin(Scope::System, false).await?;
        let due = store::due_configs(&mut tx, t, 100).await?;
        drop(tx);
        for (tenant, blueprint, at) in due {
            if let Err(e) = self.tick(tenant, &blueprint, at).await {
                tracing::warn!(tenant = %tenant, blueprint, tick = %at, error = %e, "cannot fire a schedule's tick; it stays due");
            }
        }
        Ok(())
    }

    /// Claims tick `due` of the config and enqueues its run, in one transaction; nothing when
    /// another scheduler took it first.
    async fn tick(&self, tenant: Uuid, blueprint: &str, due: DateTime<Utc>) -> Result<()> {
        // Whether the schedule's writer may still act, told before the claim's transaction
        // (which holds no remote call); a failure to tell leaves the tick due.
        let mut tx = self.db.begin(Scope::Tenant(tenant), false).await?;
        let row = store::due_config(&mut tx, tenant, blueprint, due).await?;
        drop(tx);
        let writer = row
            .as_ref()
            .and_then(|r| ConfigDoc::of(Some(r)).ok())
            .and_then(|d| d.schedule)
            .and_then(|s| s.ctx);
        let refused = match &writer {
            Some(ctx) => self.principals.refusal(ctx, &format!("schedule:{tenant}:{blueprint}")).await?,
            None => None,
        };
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(tenant), true).await?;
        let Some(row) = store::due_config(&mut tx, tenant, blueprint, due).await? else {
            return Ok(());
        };
        let doc = ConfigDoc::of(Some(&row))?;
        let cadence = match (&doc.schedule, doc.disabled) {
            (Some(s), false) => Cadence::of(s),
            _ => Err("no schedule, or the config is disabled".to_owned()),
        };
        let b = crate::blueprints::find(blueprint);
        let (cadence, schedule, b) = match (cadence, &doc.schedule, b) {
            (Ok(c), Some(s), Some(b)) => (c, s.clone(), b),
            (c, _, _) => {
                // Nothing to fire from: stop ticking (a later write sets a new tick).
                let why = c.err().unwrap_or_else(|| "unknown blueprint".to_owned());
                store::claim_tick(&mut tx, tenant, blueprint, due, None).await?;
                tx.commit().await?;
                tracing::warn!(tenant = %tenant, blueprint, reason = why, "schedule stopped");
                return Ok(());
            }
        };
        let tick = due_tick(&cadence, due, t);
        if !store::claim_tick(&mut tx, tenant, blueprint, due, tick.next).await? {
            return Ok(());
        }
        let admitted = if store::tick_has_run(&mut tx, tenant, blueprint, tick.fire_for).await? {
            Err("the tick already has its run".to_owned())
        } else if let Some(why) = refused.filter(|_| schedule.ctx.as_ref() == writer.as_ref()) {
            // Counted per tick until someone who may act puts the schedule again.
            Err(format!("{why}; put the schedule again with a live credential"))
        } else if schedule.ctx.is_none() {
            // Not written by this version's PUT (which keeps the writer's context): no one to
            // act as. Counted, not stuck; the next PUT of the config sets it.
            Err("the schedule has no principal to run as; put the config again".to_owned())
        } else {
            let unended = store::unended_scheduled(&mut tx, tenant, blueprint).await?;
            admit(&schedule.overlap, &unended)
        };
        let outcome = match admitted {
            Ok(()) => {
                let input = serde_json::json!({
                    "trigger": "schedule",
                    "scheduled_for": tick.fire_for.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                });
                let ctx = schedule
                    .ctx
                    .clone()
                    .ok_or_else(|| Error::internal("a schedule without its principal"))?;
                let e = Enqueue {
                    b,
                    doc: &doc,
                    ctx,
                    input,
                    budget_cents: None,
                    deadline_seconds: None,
                    trigger: "schedule",
                    scheduled_for: Some(tick.fire_for),
                };
                match crate::service::enqueue(&mut tx, &self.settings, tenant, e, t).await {
                    Ok(run) => Ok(run.id),
                    // What the normal enqueue refuses (disabled, a model without a price).
                    Err(e)
                        if matches!(
                            e.code,
                            ErrorCode::Conflict | ErrorCode::ValidationFailed
                        ) =>
                    {
                        Err(e.message)
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(why) => Err(why),
        };
        if let Err(why) = &outcome {
            store::skip_tick(&mut tx, tenant, blueprint, why).await?;
        }
        tx.commit().await?;
        match outcome {
            Ok(run) => {
                self.relay.notify();
                tracing::info!(run.id = %run, tenant = %tenant, blueprint, tick = %tick.fire_for, caught_up = tick.caught_up, worker = %self.worker, "scheduled run queued");
            }
            Err(why) => {
                tracing::info!(tenant = %tenant, blueprint, tick = %tick.fire_for, reason = why, "schedule tick skipped")
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_and_six_fields_parse_anything_else_is_refused() {
        assert!(parse_cron("*/5 * * * *").is_ok());
        assert!(parse_cron("*/2 * * * * *").is_ok());
        assert!(parse_cron("0 30 9 * * MON-FRI").is_ok());
        assert!(parse_cron("* * * *").is_err());
        assert!(parse_cron("0 0 0 1 1 * 2030").is_err(), "no year field");
        assert!(parse_cron("61 * * * *").is_err());
        assert!(parse_cron("every minute").is_err());
    }

    #[test]
    fn six_fields_tick_on_seconds() {
        let c = Cadence::new("*/2 * * * * *", "UTC").unwrap();
        let t = utc("2026-01-01T00:00:01.500Z");
        assert_eq!(c.next_after(t), Some(utc("2026-01-01T00:00:02Z")));
        assert_eq!(
            c.next_after(utc("2026-01-01T00:00:02Z")),
            Some(utc("2026-01-01T00:00:04Z")),
            "strictly after"
        );
        assert_eq!(c.latest_until(t), Some(utc("2026-01-01T00:00:00Z")));
    }

    #[test]
    fn five_fields_tick_on_minutes_in_the_zone() {
        // 09:00 in New York is 14:00 UTC in winter, 13:00 in summer.
        let c = Cadence::new("0 9 * * *", "America/New_York").unwrap();
        assert_eq!(
            c.next_after(utc("2026-01-10T12:00:00Z")),
            Some(utc("2026-01-10T14:00:00Z"))
        );
        assert_eq!(
            c.next_after(utc("2026-07-10T12:00:00Z")),
            Some(utc("2026-07-10T13:00:00Z"))
        );
        let tokyo = Cadence::new("30 8 * * *", "Asia/Tokyo").unwrap();
        assert_eq!(
            tokyo.next_after(utc("2026-03-01T00:00:00Z")),
            Some(utc("2026-03-01T23:30:00Z"))
        );
        assert!(Cadence::new("0 9 * * *", "Mars/Olympus").is_err());
    }

    #[test]
    fn a_fixed_time_in_the_spring_gap_fires_after_it_and_gap_ticks_are_skipped() {
        // Europe/Berlin, 2026-03-29: 02:00 local jumps to 03:00 (01:00 UTC).
        let fixed = Cadence::new("30 2 * * *", "Europe/Berlin").unwrap();
        let berlin = chrono_tz::Europe::Berlin;
        assert_eq!(
            fixed.next_after(utc("2026-03-28T12:00:00Z")),
            Some(
                berlin
                    .with_ymd_and_hms(2026, 3, 29, 3, 0, 0)
                    .unwrap()
                    .with_timezone(&Utc)
            ),
            "shifted to the first instant after the gap"
        );
        let every = Cadence::new("*/30 * * * *", "Europe/Berlin").unwrap();
        // 01:30 local (00:30 UTC), then the gap: 02:00 and 02:30 do not exist, next is 03:00.
        assert_eq!(
            every.next_after(utc("2026-03-29T00:30:00Z")),
            Some(utc("2026-03-29T01:00:00Z"))
        );
        assert_eq!(
            every.next_after(utc("2026-03-29T01:00:00Z")),
            Some(utc("2026-03-29T01:30:00Z"))
        );
    }

    #[test]
    fn a_fixed_time_in_the_fall_back_hour_fires_once() {
        // Europe/Berlin, 2026-10-25: 03:00 local falls back to 02:00; 02:30 happens twice
        // (00:30 and 01:30 UTC).
        let fixed = Cadence::new("30 2 * * *", "Europe/Berlin").unwrap();
        let first = fixed.next_after(utc("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(first, utc("2026-10-25T00:30:00Z"));
        assert_eq!(
            fixed.next_after(first),
            Some(utc("2026-10-26T01:30:00Z")),
            "not again at 01:30 UTC"
        );
    }

    #[test]
    fn a_tick_on_time_fires_for_itself() {
        let c = Cadence::new("*/2 * * * * *", "UTC").unwrap();
        let due = utc("2026-01-01T00:00:10Z");
        let tick = due_tick(&c, due, utc("2026-01-01T00:00:10.300Z"));
        assert_eq!(
            tick,
            Tick {
                fire_for: due,
                next: Some(utc("2026-01-01T00:00:12Z")),
                caught_up: false
            }
        );
    }

    #[test]
    fn missed_ticks_give_one_catch_up_for_the_latest_then_the_first_future_tick() {
        let c = Cadence::new("0 * * * *", "UTC").unwrap();
        // Due at 10:00; no worker ran until 13:25: 10:00 to 13:00 were missed.
        let tick = due_tick(&c, utc("2026-01-01T10:00:00Z"), utc("2026-01-01T13:25:00Z"));
        assert_eq!(
            tick,
            Tick {
                fire_for: utc("2026-01-01T13:00:00Z"),
                next: Some(utc("2026-01-01T14:00:00Z")),
                caught_up: true
            }
        );
        // A month down on a two-second cadence: still one run.
        let fast = Cadence::new("*/2 * * * * *", "UTC").unwrap();
        let tick = due_tick(
            &fast,
            utc("2026-01-01T00:00:00Z"),
            utc("2026-02-01T00:00:01Z"),
        );
        assert_eq!(tick.fire_for, utc("2026-02-01T00:00:00Z"));
        assert_eq!(tick.next, Some(utc("2026-02-01T00:00:02Z")));
    }

    #[test]
    fn overlap_policies_decide_against_unended_scheduled_runs() {
        let none: Vec<String> = vec![];
        let queued = vec!["queued".to_owned()];
        let running = vec!["running".to_owned()];
        let waiting = vec!["waiting".to_owned()];
        let both = vec!["running".to_owned(), "queued".to_owned()];
        for p in ["skip", "buffer_one", "allow"] {
            assert!(admit(p, &none).is_ok(), "{p}");
        }
        assert!(admit("skip", &running).is_err());
        assert!(admit("skip", &waiting).is_err());
        assert!(admit("skip", &queued).is_err());
        assert!(admit("buffer_one", &running).is_ok(), "one may wait");
        assert!(admit("buffer_one", &waiting).is_ok());
        assert!(admit("buffer_one", &queued).is_err(), "at most one waits");
        assert!(admit("buffer_one", &both).is_err());
        assert!(admit("allow", &both).is_ok());
    }
}

/// The claim against a real database: schedulers racing for one due tick make one run.
#[cfg(test)]
mod claim_tests {
    use super::*;
    use worktruck_kit::context::Ctx;
    use worktruck_kit::testing::{TestData, backends};

    async fn runs_of(db: &Db, tenant: Uuid) -> Vec<(String, Option<DateTime<Utc>>)> {
        let mut tx = db.begin(Scope::Tenant(tenant), false).await.unwrap();
        let rows = store::runs(&mut tx, tenant, "site_health", None, None, 100)
            .await
            .unwrap();
        rows.into_iter()
            .map(|r| (r.trigger_kind, r.scheduled_for))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn schedulers_racing_for_a_due_tick_enqueue_one_run() {
        for backend in backends() {
            let data = TestData::new(backend).await;
            let (pg, sqlite) = crate::migrators();
            let db = Db::connect_and_migrate(&data.db_options(crate::SERVICE), pg, sqlite)
                .await
                .unwrap();
            let tenant = Uuid::now_v7();
            let doc = ConfigDoc {
                schedule: Some(ScheduleDoc {
                    cron: "*/2 * * * * *".into(),
                    timezone: "UTC".into(),
                    overlap: "allow".into(),
                    ctx: Some(Ctx::tenant(tenant, "key:test", 365)),
                }),
                ..Default::default()
            };
            let cadence = Cadence::of(doc.schedule.as_ref().unwrap()).unwrap();
            // Due six seconds ago: three ticks missed, one catch-up.
            let due = cadence.latest_until(now() - chrono::Duration::seconds(6)).unwrap();
            let mut tx = db.begin(Scope::Tenant(tenant), true).await.unwrap();
            store::put_config(
                &mut tx,
                tenant,
                "site_health",
                &serde_json::to_value(&doc).unwrap(),
                Some(due),
                now(),
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
            let (_stop, shutdown) = Shutdown::new();
            let scheduler = |i: usize| {
                Arc::new(Scheduler {
                    db: db.clone(),
                    relay: Relay::new(db.clone(), worktruck_kit::bus::Bus::memory()),
                    settings: Arc::new(Settings::default()),
                    shutdown: shutdown.clone(),
                    worker: format!("w{i}"),
                    // No tenants service here: the writer (`key:test`) is not looked up.
                    principals: crate::principal::Principals::new(
                        &worktruck_kit::upstream::Upstreams::new(),
                        worktruck_kit::context::Signer::from_seed([7; 32]),
                    ),
                })
            };
            let mut racing = tokio::task::JoinSet::new();
            for i in 0..8 {
                let s = scheduler(i);
                racing.spawn(async move { s.tick(tenant, "site_health", due).await });
            }
            while let Some(r) = racing.join_next().await {
                r.unwrap().unwrap();
            }
            let runs = runs_of(&db, tenant).await;
            assert_eq!(runs.len(), 1, "{backend:?}: {runs:?}");
            let (trigger, fired) = &runs[0];
            assert_eq!(trigger, "schedule");
            let fired = fired.unwrap();
            assert!(
                fired > due + chrono::Duration::seconds(4),
                "{backend:?}: the catch-up is for the latest missed tick: {fired} (due {due})"
            );
            let mut tx = db.begin(Scope::Tenant(tenant), false).await.unwrap();
            let row = store::config(&mut tx, tenant, "site_health")
                .await
                .unwrap()
                .unwrap();
            drop(tx);
            let next = row.next_tick_at.unwrap();
            assert_eq!(next, cadence.next_after(fired).unwrap(), "{backend:?}");
            assert_eq!(row.ticks_skipped, 0, "{backend:?}");
            // The stale due tick is taken: racing for it again makes nothing.
            scheduler(9).tick(tenant, "site_health", due).await.unwrap();
            assert_eq!(runs_of(&db, tenant).await.len(), 1, "{backend:?}");
        }
    }
}
