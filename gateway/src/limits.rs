//! Plan rate limits per tenant: a per-minute and a per-day fixed window, counted in this
//! gateway process (several gateway replicas each count their own share; see ARCHITECTURE.md).
//! Every admitted response carries `X-RateLimit-Limit`, `-Remaining` and `-Reset` for the
//! tighter window; a refused one is 429 `rate_limited` with `Retry-After`.

use std::collections::HashMap;
use std::sync::Mutex;

use http::{HeaderMap, HeaderValue};
use uuid::Uuid;
use worktruck_kit::config::PlanLimits;
use worktruck_kit::{Error, ErrorCode};

const SHARDS: usize = 16;

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

#[derive(Debug, Default, Clone, Copy)]
struct Windows {
    minute: i64,
    minute_count: u32,
    day: i64,
    day_count: u32,
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

    /// Counts one request of `tenant` at unix time `now`, or refuses it.
    pub fn admit(&self, tenant: Uuid, plan: &str, now: i64) -> Result<Quota, Limited> {
        let limits = plan_limits(plan, self.enterprise);
        let minute = now.div_euclid(60);
        let day = now.div_euclid(86_400);
        let shard = &self.shards[(tenant.as_u128() % SHARDS as u128) as usize];
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        let w = map.entry(tenant).or_default();
        if w.minute != minute {
            w.minute = minute;
            w.minute_count = 0;
        }
        if w.day != day {
            w.day = day;
            w.day_count = 0;
        }
        let minute_q = Quota {
            limit: limits.per_minute,
            remaining: limits.per_minute.saturating_sub(w.minute_count),
            reset: (minute + 1) * 60,
        };
        let day_q = Quota {
            limit: limits.per_day,
            remaining: limits.per_day.saturating_sub(w.day_count),
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
        w.minute_count += 1;
        w.day_count += 1;
        let after = |q: Quota| Quota { remaining: q.remaining - 1, ..q };
        let (m, d) = (after(minute_q), after(day_q));
        Ok(if d.remaining < m.remaining { d } else { m })
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
