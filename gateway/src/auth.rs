//! Who is calling. Each credential scheme is an [`Authenticator`]; an [`AuthChain`] asks them in
//! turn. Transcoding only ever sees the resulting [`Principal`], so OIDC JWT and x402 can be
//! added as further authenticators without touching it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The tenants service's key check, as spans and metrics name it.
const AUTHENTICATE: &str = "/worktruck.tenants.v1.TenantsService/AuthenticateApiKey";

use http::header::AUTHORIZATION;
use http::request::Parts;
use tonic::transport::Channel;
use uuid::Uuid;
use worktruck_kit::context::{Ctx, Signer};
use worktruck_kit::{Error, ErrorCode};
use worktruck_proto::tenants::v1::{AuthenticateApiKeyRequest, Plan, PrincipalKind, ResolvePrincipalRequest};
use worktruck_proto::tenants::v1::tenants_service_client::TenantsServiceClient;

use crate::cache::PrincipalCache;
use crate::error::ApiError;
use crate::telemetry::RequestId;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The tenant context that is signed and attached to every upstream call.
    pub ctx: Ctx,
}

/// What an [`Authenticator`] returns: `Ok(None)` when the request carries no credential of its
/// scheme (the next one is asked), `Ok(Some)` when it accepted one, `Err` when it rejected one
/// or could not check it (e.g. 503 when its backend is down).
pub type AuthFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Principal>, Error>> + Send + 'a>>;

/// One credential scheme.
pub trait Authenticator: Send + Sync + 'static {
    /// Looks at the request head (headers, method, URI, extensions) for this scheme's credential.
    fn authenticate<'a>(&'a self, parts: &'a Parts) -> AuthFuture<'a>;
}

/// The authenticators a gateway accepts, asked in order, and the cache of principals they
/// share.
#[derive(Clone)]
pub struct AuthChain {
    authenticators: Arc<[Arc<dyn Authenticator>]>,
    principals: PrincipalCache,
}

impl AuthChain {
    /// A chain of authenticators that keep nothing between requests.
    pub fn new(authenticators: Vec<Arc<dyn Authenticator>>) -> Self {
        Self::with_cache(authenticators, PrincipalCache::new(std::time::Duration::ZERO))
    }

    /// A chain of authenticators whose verified principals live in `principals`.
    pub fn with_cache(authenticators: Vec<Arc<dyn Authenticator>>, principals: PrincipalCache) -> Self {
        Self { authenticators: authenticators.into(), principals }
    }

    /// The principals the chain's authenticators keep.
    pub fn principals(&self) -> &PrincipalCache {
        &self.principals
    }

    /// The first authenticator's verdict, or 401 when none recognises a credential.
    pub async fn authenticate(&self, parts: &Parts) -> Result<Principal, ApiError> {
        // Two credentials are refused rather than one picked: a proxy, a log or a WAF in front
        // may have read the other one.
        single_authorization(parts)?;
        for authenticator in self.authenticators.iter() {
            if let Some(principal) = authenticator.authenticate(parts).await? {
                return Ok(principal);
            }
        }
        Err(ApiError::new(
            ErrorCode::Unauthenticated,
            "missing credentials: send 'Authorization: Bearer <API key or OIDC access token>'",
        ))
    }
}

/// `Authorization: Bearer bsk_live_…|bsk_test_…`, checked by the tenants service, and kept in
/// a [`PrincipalCache`] (by a hash of the key) when given one.
pub struct ApiKeyAuthenticator {
    tenants: TenantsServiceClient<Channel>,
    signer: Signer,
    cache: PrincipalCache,
}

impl ApiKeyAuthenticator {
    /// Checks keys through `TenantsService.AuthenticateApiKey` on `tenants`, signing the call
    /// as the gateway itself.
    pub fn new(tenants: Channel, signer: Signer) -> Self {
        Self {
            tenants: TenantsServiceClient::new(tenants),
            signer,
            cache: PrincipalCache::new(std::time::Duration::ZERO),
        }
    }

    /// Keeps verified keys in `cache` (share the chain's, so bus events reach it).
    pub fn with_cache(mut self, cache: PrincipalCache) -> Self {
        self.cache = cache;
        self
    }

    async fn check(&self, key: &str, request_id: String) -> Result<Principal, Error> {
        let cache_key = PrincipalCache::key(&["api_key", key]);
        if let Some(principal) = self.cache.get(&cache_key) {
            return Ok(principal);
        }
        let (principal, expires_at) = self.authenticate(key, request_id).await?;
        self.cache.insert(cache_key, &principal, expires_at);
        Ok(principal)
    }

    async fn authenticate(
        &self,
        key: &str,
        request_id: String,
    ) -> Result<(Principal, Option<chrono::DateTime<chrono::Utc>>), Error> {
        use tracing::Instrument as _;
        let span = worktruck_kit::telemetry::client_span(AUTHENTICATE);
        let request = span.in_scope(|| {
            tonic::Request::from_parts(
                crate::telemetry::call_metadata(&self.signer, &Ctx::system("gateway"), &request_id),
                Default::default(),
                AuthenticateApiKeyRequest { key: key.to_owned() },
            )
        });
        let started = std::time::Instant::now();
        let response = self.tenants.clone().authenticate_api_key(request).instrument(span.clone()).await;
        let code = response.as_ref().map_or_else(tonic::Status::code, |_| tonic::Code::Ok);
        worktruck_kit::telemetry::record_grpc_code(&span, code, false);
        worktruck_kit::telemetry::record_client_call(AUTHENTICATE, code, started.elapsed());
        let response = response
            .map_err(|status| {
                let e = Error::from_status(&status);
                match e.code {
                    // However the tenants service phrases a refusal, the caller learns only this.
                    ErrorCode::Unauthenticated
                    | ErrorCode::NotFound
                    | ErrorCode::PermissionDenied
                    | ErrorCode::InvalidArgument
                    | ErrorCode::ValidationFailed => Error::unauthenticated("invalid API key"),
                    _ => e,
                }
            })?;
        let response = response.into_inner();
        let tenant = response
            .tenant
            .ok_or_else(|| Error::internal("AuthenticateApiKey returned no tenant"))?;
        let tenant_id = Uuid::parse_str(&tenant.id).map_err(|e| {
            Error::internal(format!("AuthenticateApiKey returned a bad tenant id: {e}"))
        })?;
        let mut ctx = Ctx::tenant(
            tenant_id,
            format!("key:{}", response.key_id),
            tenant.retention_days,
        );
        ctx.plan = plan_name(tenant.plan);
        ctx.scopes = response.scopes;
        let expires_at = response.expires_at.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32));
        Ok((Principal { ctx }, expires_at))
    }
}

/// The short name of a plan number (`free`, `pro`, `scale`, `enterprise`).
pub fn plan_name(plan: i32) -> String {
    Plan::try_from(plan)
        .unwrap_or(Plan::Free)
        .as_str_name()
        .trim_start_matches("PLAN_")
        .to_ascii_lowercase()
}

/// Resolves an external principal (an OIDC subject or a paying wallet) to its tenant through
/// `TenantsService.ResolvePrincipal`, which provisions a free tenant on first sight. Every
/// authenticator of an external identity ends here, so they map identities alike.
pub async fn resolve_external(
    tenants: &TenantsServiceClient<Channel>,
    signer: &Signer,
    kind: PrincipalKind,
    issuer: &str,
    subject: &str,
    actor: String,
    request_id: String,
) -> Result<Principal, Error> {
    let request = tonic::Request::from_parts(
        crate::telemetry::call_metadata(signer, &Ctx::system("gateway"), &request_id),
        Default::default(),
        ResolvePrincipalRequest { kind: kind as i32, subject: subject.to_owned(), issuer: issuer.to_owned() },
    );
    let response = tenants
        .clone()
        .resolve_principal(request)
        .await
        .map_err(|status| Error::from_status(&status))?
        .into_inner();
    let tenant = response
        .tenant
        .ok_or_else(|| Error::internal("ResolvePrincipal returned no tenant"))?;
    let tenant_id = Uuid::parse_str(&tenant.id)
        .map_err(|e| Error::internal(format!("ResolvePrincipal returned a bad tenant id: {e}")))?;
    let mut ctx = Ctx::tenant(tenant_id, actor, tenant.retention_days);
    ctx.plan = plan_name(tenant.plan);
    Ok(Principal { ctx })
}

impl Authenticator for ApiKeyAuthenticator {
    fn authenticate<'a>(&'a self, parts: &'a Parts) -> AuthFuture<'a> {
        Box::pin(async move {
            let Some(token) = bearer_token(parts)? else {
                return Ok(None);
            };
            if !(token.starts_with("bsk_live_") || token.starts_with("bsk_test_")) {
                return Ok(None);
            }
            let request_id = RequestId::of(parts);
            self.check(token, request_id).await.map(Some)
        })
    }
}

/// The token of an `Authorization: Bearer <token>` header; `None` without one or for another
/// scheme, an error when the header is malformed.
pub fn bearer_token(parts: &Parts) -> Result<Option<&str>, Error> {
    single_authorization(parts)?;
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || Error::unauthenticated("malformed Authorization header");
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = token.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(malformed());
    }
    Ok(Some(token))
}

/// 400 when a request carries more than one `Authorization` header.
fn single_authorization(parts: &Parts) -> Result<(), Error> {
    if parts.headers.get_all(AUTHORIZATION).iter().nth(1).is_some() {
        return Err(Error::invalid("send one Authorization header, not several"));
    }
    Ok(())
}
