//! The one door both gateways use: authenticate the caller (API key, and the schemes the
//! [`AuthChain`] holds), then count the request against the tenant's plan. The gate also holds
//! the x402 facilitator client, so that one process's gateways share its replay guard (a payment
//! spent on REST is refused on MCP). Scope checks happen
//! per operation (`worktruck_kit::scopes::check`), since one MCP request may call any tool.

use std::sync::Arc;

use http::request::Parts;

use crate::auth::{AuthChain, Principal};
use crate::error::ApiError;
use crate::limits::{Limiter, Quota};

/// Authentication plus rate limiting.
#[derive(Clone)]
pub struct Gate {
    auth: AuthChain,
    limiter: Arc<Limiter>,
    x402: Option<Arc<crate::x402::X402>>,
}

/// A caller let in, with what is left of its quota.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// Who.
    pub principal: Principal,
    /// The binding rate-limit window after this request.
    pub quota: Quota,
}

impl Gate {
    /// A gate; share one `limiter` between the gateways of a process.
    pub fn new(auth: AuthChain, limiter: Arc<Limiter>) -> Self {
        Self { auth, limiter, x402: None }
    }

    /// The gate with x402 payments accepted through `x402` (`None`: x402 is off).
    pub fn with_x402(mut self, x402: Option<Arc<crate::x402::X402>>) -> Self {
        self.x402 = x402;
        self
    }

    /// The x402 facilitator client, when payments are accepted.
    pub fn x402(&self) -> Option<&Arc<crate::x402::X402>> {
        self.x402.as_ref()
    }

    /// The verified principals the gate's authenticators keep.
    pub fn principals(&self) -> &crate::cache::PrincipalCache {
        self.auth.principals()
    }

    /// Authenticates and counts one request. 401 without valid credentials, 429 (with
    /// `Retry-After` and the `X-RateLimit-*` headers) over the plan's limit.
    pub async fn admit(&self, parts: &Parts) -> Result<Admitted, ApiError> {
        use tracing::Instrument as _;
        use worktruck_kit::telemetry::families::AUTH;
        // A span of its own in the request's trace (a cache hit or the tenants service's call).
        let span = tracing::info_span!("authenticate", auth.outcome = tracing::field::Empty);
        let authenticated = self.auth.authenticate(parts).instrument(span.clone()).await;
        span.record("auth.outcome", if authenticated.is_ok() { "ok" } else { "refused" });
        let principal = match authenticated {
            Ok(p) => p,
            Err(e) => {
                let outcome = match e.status().as_u16() {
                    401 => "unauthenticated",
                    402 => "payment_required",
                    _ => "error",
                };
                metrics::counter!(AUTH, "outcome" => outcome).increment(1);
                return Err(e);
            }
        };
        metrics::counter!(AUTH, "outcome" => "ok").increment(1);
        if let Some(plan) = parts.extensions.get::<crate::telemetry::PlanSlot>() {
            plan.set(&principal.ctx.plan);
        }
        self.limit(principal)
    }

    /// Counts one request of an already authenticated principal (e.g. a paying wallet).
    pub fn limit(&self, principal: Principal) -> Result<Admitted, ApiError> {
        let Some(tenant) = principal.ctx.tenant_id else {
            return Ok(Admitted { principal, quota: Quota { limit: 0, remaining: 0, reset: 0 } });
        };
        let now = chrono::Utc::now().timestamp();
        match self.limiter.admit(tenant, &principal.ctx.plan, now) {
            Ok(quota) => Ok(Admitted { principal, quota }),
            Err(limited) => {
                let plan = crate::telemetry::plan_label(&principal.ctx.plan);
                metrics::counter!(worktruck_kit::telemetry::families::RATE_LIMITED, "plan" => plan).increment(1);
                let mut headers = http::HeaderMap::new();
                limited.quota.write_headers(&mut headers);
                headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from(limited.retry_after));
                Err(ApiError::from(limited.error).with_headers(headers))
            }
        }
    }
}
