//! The REST gateway: an axum router whose routes, JSON mapping and OpenAPI document all come
//! from the proto descriptor [`Registry`], in front of the gRPC services.
//!
//! It authenticates callers, signs their tenant context for the services, transcodes JSON ⇄
//! protobuf generically (no handler per endpoint) and renders every failure as the
//! `{"error":{"code","message"}}` envelope. It is stateless: no database, no per-service code.
//! `/health`, `/ready` and `/metrics` belong to the binary, which merges them in.

pub mod auth;
pub mod cache;
pub mod config;
pub mod error;
pub mod gate;
pub mod idempotency;
pub mod limits;
pub mod oidc;
pub mod openapi;
pub mod telemetry;
pub mod x402;

/// The generic unary call to a service (moved to kit, which the agents worker shares).
pub use worktruck_kit::upstream;

mod conventions;
mod raw;
mod routes;
mod transcode;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, header};
use worktruck_kit::context::Signer;
use worktruck_proto::registry::Registry;

pub use auth::{ApiKeyAuthenticator, AuthChain, Authenticator, Principal};
pub use cache::PrincipalCache;
pub use config::GatewayConfig;
pub use error::{ApiError, GatewayError};
pub use gate::{Admitted, Gate};
pub use limits::Limiter;
pub use upstream::Upstreams;

/// The tenants service, which authenticates API keys.
pub const TENANTS_SERVICE: &str = "worktruck.tenants.v1.TenantsService";

/// The content type of every gateway response.
pub(crate) const JSON: &str = "application/json";

/// The REST router for every route of `registry`, authenticating callers with
/// [`auth_chain`]. Fails when a routed service has no upstream.
pub async fn router(
    registry: Arc<Registry>,
    upstreams: Upstreams,
    signer: Signer,
    cfg: GatewayConfig,
) -> Result<axum::Router, GatewayError> {
    let principals = PrincipalCache::new(std::time::Duration::from_secs(cfg.auth.principal_cache_seconds));
    let auth = auth_chain(&upstreams, &signer, &cfg.auth, &cfg.outbound, principals)?;
    router_with_auth(registry, upstreams, signer, auth, cfg)
}

/// The authenticators both gateways (REST and MCP) accept, from configuration: API keys
/// (checked by the tenants service on `upstreams`) always, more schemes as configured; calls to
/// an OIDC issuer trust what `outbound` says. Verified principals are kept in `principals`
/// (let [`PrincipalCache::follow`] feed it the tenants service's events).
pub fn auth_chain(
    upstreams: &Upstreams,
    signer: &Signer,
    auth: &worktruck_kit::config::AuthConfig,
    outbound: &worktruck_kit::config::OutboundConfig,
    principals: PrincipalCache,
) -> Result<AuthChain, GatewayError> {
    let tenants = upstreams
        .get(TENANTS_SERVICE)
        .ok_or_else(|| GatewayError::MissingUpstream(TENANTS_SERVICE.to_owned()))?
        .clone();
    let mut authenticators: Vec<Arc<dyn Authenticator>> =
        vec![Arc::new(ApiKeyAuthenticator::new(tenants.clone(), signer.clone()).with_cache(principals.clone()))];
    if !auth.oidc.issuer.is_empty() {
        authenticators.push(Arc::new(oidc::JwtAuthenticator::new(
            &auth.oidc,
            worktruck_kit::http::outbound(outbound, oidc::TIMEOUTS)?,
            tenants,
            signer.clone(),
        ).with_cache(principals.clone())));
    }
    Ok(AuthChain::with_cache(authenticators, principals))
}

/// [`router`] with a caller-chosen authentication chain (OIDC, x402, test doubles).
pub fn router_with_auth(
    registry: Arc<Registry>,
    upstreams: Upstreams,
    signer: Signer,
    auth: AuthChain,
    cfg: GatewayConfig,
) -> Result<axum::Router, GatewayError> {
    let x402 = x402::X402::from_config(&cfg.auth.x402, &cfg.outbound)?.map(Arc::new);
    let gate = Gate::new(auth, Arc::new(Limiter::new(cfg.auth.enterprise))).with_x402(x402);
    router_with_gate(registry, upstreams, signer, gate, cfg)
}

/// [`router`] behind a caller-built [`Gate`], so that one process's REST and MCP gateways share
/// one rate limiter and one x402 replay guard; x402 is on when the gate has it.
pub fn router_with_gate(
    registry: Arc<Registry>,
    upstreams: Upstreams,
    signer: Signer,
    gate: Gate,
    cfg: GatewayConfig,
) -> Result<axum::Router, GatewayError> {
    let tenants = upstreams
        .get(TENANTS_SERVICE)
        .ok_or_else(|| GatewayError::MissingUpstream(TENANTS_SERVICE.to_owned()))?
        .clone();
    let keeper = idempotency::Keeper::new(
        worktruck_proto::tenants::v1::tenants_service_client::TenantsServiceClient::new(tenants.clone()),
        signer.clone(),
        "gateway",
    );
    let x402 = gate.x402().cloned();
    let shared = Arc::new(routes::Shared {
        gate,
        signer,
        x402,
        tenants: worktruck_proto::tenants::v1::tenants_service_client::TenantsServiceClient::new(tenants.clone()),
        upload_limit: cfg.upload_limit_bytes,
        keeper,
    });
    let document = json_body(&openapi::document(&registry, &cfg));
    let openapi = move || {
        let document = document.clone();
        async move {
            let mut response = (http::StatusCode::OK, document).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
            response
                .extensions_mut()
                .insert(telemetry::RouteLabel(Arc::from(openapi::OPENAPI_PATH)));
            response
        }
    };
    let router = axum::Router::new().route(openapi::OPENAPI_PATH, get(openapi));
    let router = routes::add_routes(
        router,
        &registry,
        &upstreams,
        shared,
        &[openapi::OPENAPI_PATH],
    )?;
    let mut router = router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(cfg.body_limit_bytes));
    if cfg.compression {
        // Inside the telemetry layer, so that a compressed answer is still counted and logged.
        router = router.layer(tower_http::compression::CompressionLayer::new().gzip(true).br(true));
    }
    let mut router = router.layer(axum::middleware::from_fn(telemetry::observe));
    if let Some(cors) = cors(&cfg.cors_allowed_origins) {
        // Outermost: a preflight is answered before authentication, as browsers send it bare.
        router = router.layer(cors);
    }
    Ok(router)
}

/// The request headers callers send and the answer headers they may read, for CORS.
const CORS_REQUEST_HEADERS: [&str; 9] = [
    "authorization",
    "content-type",
    "idempotency-key",
    "if-match",
    "if-none-match",
    "x-request-id",
    "payment-signature",
    "x-payment",
    "accept-encoding",
];
const CORS_EXPOSED_HEADERS: [&str; 11] = [
    "etag",
    "location",
    "x-request-id",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "retry-after",
    "www-authenticate",
    "payment-required",
    "payment-response",
    "idempotent-replayed",
];

/// The CORS layer for `origins` (`["*"]` for any), or none when the list is empty. Credentials
/// are never allowed: callers authenticate with a header, not a cookie.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok()))
    };
    let names = |list: &[&'static str]| list.iter().map(|h| http::HeaderName::from_static(h)).collect::<Vec<_>>();
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                http::Method::GET,
                http::Method::HEAD,
                http::Method::POST,
                http::Method::PUT,
                http::Method::PATCH,
                http::Method::DELETE,
            ])
            .allow_headers(names(&CORS_REQUEST_HEADERS))
            .expose_headers(names(&CORS_EXPOSED_HEADERS))
            .max_age(std::time::Duration::from_secs(600)),
    )
}

async fn not_found(request: axum::extract::Request) -> Response {
    ApiError::not_found(format!(
        "no route for {} {}",
        request.method(),
        request.uri().path()
    ))
    .into_response()
}

/// Serialises JSON for a response body; a `Value` always serialises.
pub(crate) fn json_body(value: &serde_json::Value) -> bytes::Bytes {
    serde_json::to_vec(value)
        .expect("a JSON value serialises")
        .into()
}
