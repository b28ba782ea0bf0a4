//! Plan rate limits per tenant: a per-minute and a per-day fixed window (UTC days).
//!
//! Counting is local and immediate; sharing is periodic. Each gateway counts the requests it
//! admits and, about once a second ([`Limiter::spawn_sync`]), adds what it counted since the last
//! sync to the tenants service's shared windows (`SyncUsage`), getting back the totals of every
//! replica. A request is admitted while `last shared total + counted here since` is under the
//! limit, so replicas together overshoot a limit by at most what they admit between two syncs,
//! and counts survive a gateway restart. When the tenants service cannot be reached, each replica
//! goes on with what it knows and catches up once it can.
//!
//! Every admitted response carries `X-RateLimit-Limit`, `-Remaining` and `-Reset` for the
//! tighter window; a refused one is 429 `rate_limited` with `Retry-After`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use tonic::transport::Channel;
use uuid::Uuid;
use worktruck_kit::config::PlanLimits;
use worktruck_kit::context::{Ctx, Signer};
use worktruck_kit::{Error, ErrorCode};
use worktruck_proto::tenants::v1::tenants_service_client::TenantsServiceClient;
use worktruck_proto::tenants::v1::{SyncUsageRequest, UsageDelta};

const SHARDS: usize = 16;
/// How often counts are shared.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);
/// How long one sync may take.
const SYNC_TIMEOUT: Duration = Duration::from_secs(3);
/// The most tenants one sync carries (the tenants service's limit).
const MAX_DELTAS: usize = 10_000;

/// Requests allowed per minute and per day for a plan.
pub fn plan_limits(plan: &str, enterprise: PlanLimits) -> PlanLimits {
    match plan {
        "pro" => PlanLimits { per_minute: 300, per_day: 50_000 },
        "scale" => PlanLimits { per_minute: 1_500, per_day: 500_000 },
        "enterprise" => enterprise,
        _ => PlanLimits { per_minute: 30, per_day: 1_000 },
    }
}

/// What a caller has left in the window that binds first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// The window's limit.
    pub limit: u32,
    /// Requests left in it.
    pub remaining: u32,
    /// When it resets (unix seconds).
    pub reset: i64,
}

impl Quota {
    /// Writes the `X-RateLimit-*` headers.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert("x-ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(self.reset));
    }
}

/// A refusal: the quota (remaining 0) and how long to wait.
#[derive(Debug, Clone)]
pub struct Limited {
    /// The exhausted window.
    pub quota: Quota,
    /// Seconds until it resets.
    pub retry_after: i64,
    /// The error to show.
    pub error: Error,
}

/// One tenant's two windows as this gateway knows them.
#[derive(Debug, Default, Clone, Copy)]
struct Windows {
    minute: i64,
    /// The shared total of `minute` at the last sync (this gateway's synced counts included).
    minute_shared: u32,
    /// Admitted here in `minute` since the last sync.
    minute_local: u32,
    day: i64,
    day_shared: u32,
    day_local: u32,
}

impl Windows {
    /// Moves to the windows of `now`, forgetting finished ones.
    fn roll(&mut self, minute: i64, day: i64) {
        if self.minute != minute {
            *self = Windows { minute, day: self.day, day_shared: self.day_shared, day_local: self.day_local, ..Windows::default() };
        }
        if self.day != day {
            self.day = day;
            self.day_shared = 0;
            self.day_local = 0;
        }
    }
}

/// Counts requests per tenant.
pub struct Limiter {
    enterprise: PlanLimits,
    shards: Vec<Mutex<HashMap<Uuid, Windows>>>,
}

impl Limiter {
    /// A limiter; the enterprise plan's limits come from configuration.
    pub fn new(enterprise: PlanLimits) -> Self {
        Self { enterprise, shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }

    fn shard(&self, tenant: Uuid) -> std::sync::MutexGuard<'_, HashMap<Uuid, Windows>> {
        self.shards[(tenant.as_u128() % SHARDS as u128) as usize].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one request of `tenant` at unix time `now`, or refuses it.
    pub fn admit(&self, tenant: Uuid, plan: &str, now: i64) -> Result<Quota, Limited> {
        let limits = plan_limits(plan, self.enterprise);
        let minute = now.div_euclid(60);
        let day = now.div_euclid(86_400);
        let mut map = self.shard(tenant);
        let w = map.entry(tenant).or_insert_with(|| Windows { minute, day, ..Windows::default() });
        w.roll(minute, day);
        let used = |shared: u32, local: u32| shared.saturating_add(local);
        let minute_q = Quota {
            limit: limits.per_minute,
            remaining: limits.per_minute.saturating_sub(used(w.minute_shared, w.minute_local)),
            reset: (minute + 1) * 60,
        };
        let day_q = Quota {
            limit: limits.per_day,
            remaining: limits.per_day.saturating_sub(used(w.day_shared, w.day_local)),
            reset: (day + 1) * 86_400,
        };
        for (q, what) in [(day_q, "day"), (minute_q, "minute")] {
            if q.remaining == 0 {
                return Err(Limited {
                    quota: q,
                    retry_after: (q.reset - now).max(1),
                    error: Error::new(
                        ErrorCode::RateLimited,
                        format!("rate limit of {} requests per {what} reached for this plan", q.limit),
                    ),
                });
            }
        }
        w.minute_local += 1;
        w.day_local += 1;
        let after = |q: Quota| Quota { remaining: q.remaining - 1, ..q };
        let (m, d) = (after(minute_q), after(day_q));
        Ok(if d.remaining < m.remaining { d } else { m })
    }

    /// What to send: the local counts of every tenant active in the current or the previous
    /// minute (a tenant with nothing new still asks for the totals, to learn what the other
    /// replicas admitted). Tenants idle since before today are forgotten.
    fn deltas(&self, now: i64) -> Vec<UsageDelta> {
        let (minute, day) = (now.div_euclid(60), now.div_euclid(86_400));
        let mut out = Vec::new();
        for shard in &self.shards {
            let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
            // Yesterday's unshared counts still go out; anything older is forgotten (the tenants
            // service refuses windows that far back).
            map.retain(|_, w| w.day >= day || (w.day == day - 1 && w.day_local > 0));
            for (tenant, w) in map.iter() {
                if out.len() == MAX_DELTAS {
                    break;
                }
                let recent = w.minute >= minute - 1;
                if recent || w.day_local > 0 || w.minute_local > 0 {
                    // A minute long past no longer limits anything; ask for the current one.
                    let (m, mc) = if w.minute >= minute - 30 { (w.minute, w.minute_local) } else { (minute, 0) };
                    out.push(UsageDelta {
                        tenant_id: tenant.to_string(),
                        minute: m,
                        minute_count: mc,
                        day: w.day,
                        day_count: w.day_local,
                    });
                }
            }
        }
        out
    }

    /// Takes the shared totals for what `sent` carried: the sent counts are now in the totals,
    /// so they leave the local counts (requests admitted meanwhile stay there).
    fn absorb(&self, sent: &[UsageDelta], totals: &[UsageDelta]) {
        for (s, t) in sent.iter().zip(totals) {
            let Ok(tenant) = Uuid::parse_str(&s.tenant_id) else { continue };
            if t.tenant_id != s.tenant_id {
                continue;
            }
            let mut map = self.shard(tenant);
            let Some(w) = map.get_mut(&tenant) else { continue };
            if w.minute == s.minute {
                w.minute_local = w.minute_local.saturating_sub(s.minute_count);
                w.minute_shared = t.minute_count;
            }
            if w.day == s.day {
                w.day_local = w.day_local.saturating_sub(s.day_count);
                w.day_shared = t.day_count;
            }
        }
    }

    /// One exchange with the tenants service: local counts out, shared totals in. On failure
    /// nothing changes, so the counts go with the next exchange.
    pub async fn sync(&self, tenants: &TenantsServiceClient<Channel>, signer: &Signer) -> Result<usize, Error> {
        let sent = self.deltas(chrono::Utc::now().timestamp());
        if sent.is_empty() {
            return Ok(0);
        }
        let mut request = tonic::Request::new(SyncUsageRequest { deltas: sent.clone() });
        // A hung tenants service must not hang the loop (or shutdown's last sync).
        request.set_timeout(SYNC_TIMEOUT);
        signer.attach(&Ctx::system("gateway"), request.metadata_mut());
        let totals = tenants
            .clone()
            .sync_usage(request)
            .await
            .map_err(|status| Error::from_status(&status))?
            .into_inner()
            .totals;
        self.absorb(&sent, &totals);
        Ok(sent.len())
    }

    /// Shares counts every [`SYNC_EVERY`] until `stop` resolves, then once more.
    pub fn spawn_sync(
        self: std::sync::Arc<Self>,
        tenants: Channel,
        signer: Signer,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let client = TenantsServiceClient::new(tenants);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SYNC_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tokio::pin!(stop);
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = &mut stop => {
                        let _ = self.sync(&client, &signer).await;
                        return;
                    }
                }
                match self.sync(&client, &signer).await {
                    Ok(_) if failing => {
                        tracing::info!("rate-limit counts are shared again");
                        failing = false;
                    }
                    Ok(_) => {}
                    Err(e) if !failing => {
                        tracing::warn!(error = %e, "rate-limit counts cannot be shared; counting locally");
                        failing = true;
                    }
                    Err(_) => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_tenant_gets_thirty_a_minute_and_others_are_unaffected() {
        let l = Limiter::new(PlanLimits::default());
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let t = 1_700_000_000 - 1_700_000_000 % 60;
        for i in 0..30 {
            let q = l.admit(a, "free", t + 1).unwrap();
            assert_eq!(q.remaining, 29 - i);
            assert_eq!(q.limit, 30);
        }
        let refused = l.admit(a, "free", t + 20).unwrap_err();
        assert_eq!(refused.retry_after, 40);
        assert_eq!(refused.error.code, ErrorCode::RateLimited);
        assert!(l.admit(b, "free", t + 20).is_ok(), "another tenant is not slowed");
        assert!(l.admit(a, "free", t + 60).is_ok(), "the next minute starts afresh");
    }

    #[test]
    fn the_day_window_binds_too() {
        let l = Limiter::new(PlanLimits { per_minute: 10, per_day: 15 });
        let a = Uuid::from_u128(7);
        let t = 86_400 * 20_000;
        for i in 0..15 {
            l.admit(a, "enterprise", t + (i / 10) * 60).unwrap();
        }
        let refused = l.admit(a, "enterprise", t + 180).unwrap_err();
        assert_eq!(refused.quota.limit, 15);
        assert_eq!(plan_limits("pro", PlanLimits::default()).per_minute, 300);
        assert_eq!(plan_limits("scale", PlanLimits::default()).per_day, 500_000);
    }
}
