//! What every HTTP request to `/mcp/v1` passes before rmcp sees it: authentication (401 with the
//! RFC 9728 `resource_metadata` pointer), the `MCP-Protocol-Version` allow-list, the binding of
//! each `Mcp-Session-Id` to the caller that opened the session, and the body limit and JSON check;
//! and what every answer passes on the way out. With x402 on, a caller without credentials may
//! be a paying wallet instead: its `PAYMENT-SIGNATURE` opens a session (verified, not charged) and
//! each of the session's tool calls is paid for ([`crate::tools`]); and
//! what every answer passes on the way out: rmcp's own plain-text HTTP errors (406, 415, 405,
//! …) become the `{"error": {"code", "message"}}` envelope, and a session's `DELETE` answers
//! 204 (rmcp says 202). Also the metadata document.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use rmcp::transport::streamable_http_server::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use serde_json::{Value, json};
use uuid::Uuid;
use tracing::Instrument as _;
use worktruck_gateway::telemetry::{PlanSlot, REQUEST_ID, RequestId};
use worktruck_gateway::x402::{self, PriceClass, Refusal, X402};
use worktruck_gateway::{Admitted, ApiError, Gate};
use worktruck_kit::ErrorCode;
use worktruck_kit::context::Signer;
use worktruck_proto::registry::Registry;
use worktruck_proto::tenants::v1::PrincipalKind;
use worktruck_proto::tenants::v1::tenants_service_client::TenantsServiceClient;

use crate::tools::SUPPORTED;
use crate::{McpConfig, Payer};

const SESSION_ID: &str = "mcp-session-id";
const PROTOCOL_VERSION: &str = "mcp-protocol-version";
/// How many session bindings accumulate before ended sessions are swept.
const SWEEP_AT: usize = 1024;
/// Open sessions one caller may hold at once (each is a task and buffers in this process).
pub const MAX_SESSIONS_PER_CALLER: usize = 64;

/// Who opened a session: the tenant and the credential (`key:<id>`, `jwt:<sub>`, …).
type Owner = (Option<Uuid>, String);

/// The state of the guard layer.
pub(crate) struct Guard {
    gate: Gate,
    challenge: HeaderValue,
    invalid_token_challenge: HeaderValue,
    sessions: Arc<LocalSessionManager>,
    owners: Mutex<HashMap<String, Owner>>,
    /// The sessions paying wallets opened, and who they are.
    payers: Mutex<HashMap<String, Payer>>,
    /// Payments, when x402 is on.
    x402: Option<Arc<X402>>,
    /// Resolves a paying wallet to its tenant.
    tenants: TenantsServiceClient<tonic::transport::Channel>,
    signer: Signer,
    /// The MCP endpoint's URL, the resource a session's payment names.
    resource: String,
    body_limit: usize,
    /// The tools' names: a `tools/call` of any other is labelled `unknown` in metrics.
    tools: std::collections::HashSet<String>,
}

impl Guard {
    pub(crate) fn new(
        gate: Gate,
        cfg: McpConfig,
        sessions: Arc<LocalSessionManager>,
        tools: std::collections::HashSet<String>,
        tenants: tonic::transport::Channel,
        signer: Signer,
    ) -> Self {
        let url = cfg.metadata_url();
        let header = |s: String| {
            HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
        };
        Self {
            x402: gate.x402().cloned(),
            gate,
            tenants: TenantsServiceClient::new(tenants),
            signer,
            resource: cfg.resource(),
            payers: Mutex::new(HashMap::new()),
            challenge: header(format!("Bearer resource_metadata=\"{url}\"")),
            invalid_token_challenge: header(format!(
                "Bearer error=\"invalid_token\", resource_metadata=\"{url}\""
            )),
            sessions,
            owners: Mutex::new(HashMap::new()),
            body_limit: cfg.body_limit_bytes,
            tools,
        }
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, HashMap<String, Owner>> {
        self.owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn payers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Payer>> {
        self.payers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sessions bound to `owner` (ended ones included until swept).
    fn sessions_of(&self, owner: &Owner) -> Vec<String> {
        self.owners().iter().filter(|(_, o)| *o == owner).map(|(id, _)| id.clone()).collect()
    }

    /// Whether `owner` may open one more session; ended sessions are swept before saying no.
    async fn may_open(&self, owner: &Owner) -> bool {
        if self.sessions_of(owner).len() < MAX_SESSIONS_PER_CALLER {
            return true;
        }
        self.forget_ended(self.sessions_of(owner)).await;
        self.sessions_of(owner).len() < MAX_SESSIONS_PER_CALLER
    }

    /// Forgets bindings of sessions rmcp has ended (idle timeout, DELETE, shutdown).
    async fn sweep(&self) {
        let ids: Vec<String> = self.owners().keys().cloned().collect();
        self.forget_ended(ids).await;
    }

    async fn forget_ended(&self, ids: Vec<String>) {
        for id in ids {
            if !self
                .sessions
                .has_session(&id.clone().into())
                .await
                .unwrap_or(false)
            {
                self.owners().remove(&id);
                self.payers().remove(&id);
            }
        }
    }
}

/// What one MCP request was, for its access log line and metrics.
#[derive(Default)]
struct Seen {
    /// The JSON-RPC method (bounded to the ones MCP defines; `other` else).
    method: Option<&'static str>,
    /// The tool of a `tools/call`, when it is one of ours (`app` for an app's, `unknown` else).
    tool: Option<String>,
    /// The session it was sent in, or the one it opened.
    session: Option<String>,
}

/// JSON-RPC methods that may become labels.
const METHODS: &[&str] = &[
    "initialize", "ping", "tools/list", "tools/call", "resources/list", "resources/read",
    "resources/templates/list", "prompts/list", "prompts/get", "completion/complete",
    "logging/setLevel", "notifications/initialized", "notifications/cancelled",
    "notifications/progress", "notifications/roots/list_changed",
];

/// The middleware: see the module doc. Around it: the request id (the caller's when usable,
/// echoed as `X-Request-Id` on every answer), one access log line per request (method, tool,
/// session, status, duration, like REST's) and the MCP request metrics.
/// The MCP endpoint's route, as spans name it.
const MCP_ROUTE: &str = "/mcp/v1";

pub(crate) async fn guard(
    State(guard): State<Arc<Guard>>,
    mut request: Request,
    next: Next,
) -> Response {
    use worktruck_kit::telemetry::families::{MCP_DURATION, MCP_REQUESTS};
    let started = std::time::Instant::now();
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| Uuid::new_v4().to_string());
    request.extensions_mut().insert(RequestId(request_id.clone()));
    let plan = PlanSlot::default();
    request.extensions_mut().insert(plan.clone());
    let http_method = request.method().clone();
    let mut seen = Seen {
        session: request.headers().get(SESSION_ID).and_then(|v| v.to_str().ok()).map(|s| s.chars().take(128).collect()),
        ..Seen::default()
    };
    // OpenTelemetry's conventions: an HTTP server span, named for the MCP method and tool once
    // they are read (`tools/call contacts_get`), continuing the caller's `traceparent`; its
    // context rides in the request's extensions to the session's task, where the tool call's
    // own span joins it (`tools.rs`).
    let span = tracing::info_span!(
        "mcp_request",
        otel.name = %format!("{http_method} {MCP_ROUTE}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %http_method,
        http.route = MCP_ROUTE,
        http.response.status_code = tracing::field::Empty,
        mcp.method.name = tracing::field::Empty,
        gen_ai.tool.name = tracing::field::Empty,
        mcp.session.id = tracing::field::Empty,
        request_id = %request_id,
        trace_id = tracing::field::Empty,
    );
    worktruck_kit::telemetry::continue_trace(&span, request.headers());
    request.extensions_mut().insert(worktruck_kit::telemetry::TraceContext::of(&span));
    let mut response = admit_and_serve(&guard, request, next, &mut seen).instrument(span.clone()).await;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    if seen.session.is_none() {
        seen.session = response.headers().get(SESSION_ID).and_then(|v| v.to_str().ok()).map(str::to_owned);
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    if let Some(m) = seen.method {
        span.record("mcp.method.name", m);
        match &seen.tool {
            Some(t) => {
                span.record("gen_ai.tool.name", t.as_str());
                worktruck_kit::telemetry::rename(&span, &format!("{m} {t}"));
            }
            None => worktruck_kit::telemetry::rename(&span, m),
        }
    }
    if let Some(session) = &seen.session {
        span.record("mcp.session.id", session.as_str());
    }
    span.record("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
    let method = seen.method.unwrap_or(http_method.as_str()).to_owned();
    let tool = seen.tool.clone().unwrap_or_default();
    let labels = [
        ("method", method.clone()),
        ("tool", tool.clone()),
        ("status", status.to_string()),
        ("plan", plan.label().to_owned()),
    ];
    metrics::counter!(MCP_REQUESTS, &labels).increment(1);
    metrics::histogram!(MCP_DURATION, &labels).record(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            method = %method,
            tool = %tool,
            session = seen.session.as_deref().unwrap_or(""),
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "mcp request served"
        )
    });
    response
}

async fn admit_and_serve(guard: &Guard, request: Request, next: Next, seen: &mut Seen) -> Response {
    let (parts, body) = request.into_parts();
    let mut parts = parts;

    let session_id = parts.headers.get(SESSION_ID).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (admitted, payer) = match admit(guard, &parts, session_id.as_deref()).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };

    let quota = admitted.quota;
    let principal = admitted.principal;
    // Every answer to an admitted request carries the rate-limit headers, refusals included.
    let finish = |mut response: Response| {
        quota.write_headers(response.headers_mut());
        response
    };

    let version = parts
        .headers
        .get(PROTOCOL_VERSION)
        .map(|v| v.to_str().unwrap_or("\u{fffd}").to_owned());
    let session = session_id;
    // rmcp accepts every version it knows in the header; only the negotiable ones are valid here.
    if let Some(v) = &version
        && !SUPPORTED.iter().any(|s| s.as_str() == v)
    {
        return finish(
            ApiError::invalid(format!(
                "unsupported MCP-Protocol-Version {}: use 2025-06-18",
                worktruck_kit::error::quote(v)
            ))
                .into_response(),
        );
    }
    // OAuth clients are new enough to speak 2025-06-18, and must say so after initialize (the
    // initialize request itself, which has no session yet, may omit the header).
    if principal.ctx.actor.starts_with("jwt:")
        && (version.as_deref().is_some_and(|v| v != "2025-06-18")
            || (version.is_none() && session.is_some()))
    {
        return finish(
            ApiError::invalid("OAuth clients must send MCP-Protocol-Version: 2025-06-18")
                .into_response(),
        );
    }

    let owner: Owner = (principal.ctx.tenant_id, principal.ctx.actor.clone());
    if let Some(id) = &session {
        // A session is served only to the caller that opened it; to anyone else it does not exist.
        if guard.owners().get(id) != Some(&owner) {
            return finish(
                ApiError::not_found("MCP session not found; initialize a new one").into_response(),
            );
        }
    }
    let is_delete = parts.method == http::Method::DELETE;
    // A POST without a session opens one (rmcp refuses anything but `initialize` there).
    if session.is_none() && parts.method == http::Method::POST && !guard.may_open(&owner).await {
        let mut response = finish(
            ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "too many open MCP sessions (at most {MAX_SESSIONS_PER_CALLER}); end one with DELETE or let it expire"
                ),
            )
            .into_response(),
        );
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(60));
        return response;
    }
    let body = if parts.method == http::Method::POST && is_json(&parts.headers) {
        match read_json(body, guard.body_limit).await {
            Ok((body, message)) => {
                let method = message.get("method").and_then(Value::as_str);
                seen.method = method.map(|m| METHODS.iter().copied().find(|k| *k == m).unwrap_or("other"));
                if method == Some("tools/call") {
                    let tool = message.pointer("/params/name").and_then(Value::as_str).unwrap_or_default();
                    seen.tool = Some(if guard.tools.contains(tool) {
                        tool.to_owned()
                    } else if worktruck_proto::app_tools::slug_of(tool).is_some() {
                        // App tools are the tenant's: one label for all of them.
                        "app".to_owned()
                    } else {
                        "unknown".to_owned()
                    });
                }
                body
            }
            Err(e) => return finish(e.into_response()),
        }
    } else {
        body
    };
    parts.extensions.insert(principal);
    if let Some(payer) = &payer {
        parts.extensions.insert(payer.clone());
    }
    let mut response = envelope_plain_errors(next.run(Request::from_parts(parts, body)).await).await;
    // rmcp ends a session with 202 Accepted, which clients (the Python SDK) take for a failed
    // termination: the session is gone once it answers, so say so with 204 No Content.
    if is_delete && response.status() == StatusCode::ACCEPTED {
        let (mut head, _) = response.into_parts();
        head.status = StatusCode::NO_CONTENT;
        head.headers.remove(header::CONTENT_TYPE);
        head.headers.remove(header::CONTENT_LENGTH);
        response = Response::from_parts(head, Body::empty());
    }

    match &session {
        None => {
            let opened = response
                .headers()
                .get(SESSION_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if let Some(id) = opened {
                if let Some(payer) = payer {
                    guard.payers().insert(id.clone(), payer);
                }
                let len = {
                    let mut owners = guard.owners();
                    owners.insert(id, owner);
                    owners.len()
                };
                if len >= SWEEP_AT && len.is_power_of_two() {
                    guard.sweep().await;
                }
            }
        }
        Some(id) if is_delete && response.status().is_success() => {
            guard.owners().remove(id);
            guard.payers().remove(id);
        }
        Some(_) => {}
    }
    finish(response)
}

/// What the `PAYMENT-REQUIRED` of a 401 says: how a wallet gets in.
const OPEN_WITH_PAYMENT: &str = "send PAYMENT-SIGNATURE with initialize to open a session as the paying wallet \
    (verified, not charged); each tools/call is then paid for in _meta[\"x402/payment\"]";

/// Authentication and the plan's rate limit, exactly as on REST; with x402 on, a request
/// without `Authorization` may come from a paying wallet instead ([`Guard::payer`]). A 401
/// carries the OAuth challenge and, with x402 on, `PAYMENT-REQUIRED` too, so that both kinds of
/// client find their way in.
async fn admit(guard: &Guard, parts: &http::request::Parts, session: Option<&str>) -> Result<(Admitted, Option<Payer>), Response> {
    let uncredentialed = !parts.headers.contains_key(header::AUTHORIZATION);
    if let Some(x402) = guard.x402.as_deref().filter(|_| uncredentialed)
        && let Some(payer) = guard.payer(x402, parts, session).await?
    {
        if let Some(plan) = parts.extensions.get::<PlanSlot>() {
            plan.set(&payer.principal.ctx.plan);
        }
        let admitted = guard.gate.limit(payer.principal.clone()).map_err(IntoResponse::into_response)?;
        return Ok((admitted, Some(payer)));
    }
    match guard.gate.admit(parts).await {
        Ok(admitted) => Ok((admitted, None)),
        Err(e) => {
            let unauthenticated = e.status() == StatusCode::UNAUTHORIZED;
            let mut response = e.into_response();
            if unauthenticated {
                let challenge = if uncredentialed {
                    guard.challenge.clone()
                } else {
                    guard.invalid_token_challenge.clone()
                };
                response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
                if let Some(x402) = guard.x402.as_deref().filter(|_| uncredentialed) {
                    response.headers_mut().extend(x402.payment_required_headers(&guard.resource, &PriceClass::ALL, OPEN_WITH_PAYMENT));
                }
            }
            Err(response)
        }
    }
}

impl Guard {
    /// The paying wallet a request without credentials comes from: the one that opened its
    /// session or, for a `POST` opening one, the wallet whose `PAYMENT-SIGNATURE` the facilitator
    /// verifies. That payment only proves the wallet: it is not settled (tools are paid per
    /// call), so it stays the payer's to spend. `Ok(None)`: not a payer, so credentials are due.
    async fn payer(&self, x402: &X402, parts: &http::request::Parts, session: Option<&str>) -> Result<Option<Payer>, Response> {
        if let Some(id) = session {
            return Ok(self.payers().get(id).cloned());
        }
        let Some(header) = x402::payment_header(&parts.headers) else { return Ok(None) };
        if parts.method != http::Method::POST {
            return Ok(None);
        }
        let verified = match X402::decode(header) {
            Ok(payload) => x402.verify_payload(payload, &PriceClass::ALL).await,
            Err(refusal) => Err(refusal),
        };
        let verified = verified.map_err(|refusal| match refusal {
            Refusal::Payment { reason, malformed } => {
                let (code, message) = if malformed {
                    (ErrorCode::InvalidArgument, format!("invalid payment: {reason}"))
                } else {
                    (ErrorCode::PaymentRequired, format!("the payment was not accepted: {reason}"))
                };
                ApiError::new(code, message)
                    .with_headers(x402.payment_required_headers(&self.resource, &PriceClass::ALL, &reason))
                    .into_response()
            }
            Refusal::Failed(e) => ApiError::from(e).into_response(),
        })?;
        x402.release_unused(&verified);
        let wallet = verified.payer.to_ascii_lowercase();
        let principal = worktruck_gateway::auth::resolve_external(
            &self.tenants,
            &self.signer,
            PrincipalKind::Wallet,
            &verified.network,
            &verified.payer,
            format!("wallet:{wallet}"),
            RequestId::of(parts),
        )
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
        Ok(Some(Payer { principal, wallet }))
    }
}

fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"))
}

/// The request body, at most `limit` bytes and well-formed JSON, buffered for rmcp (which reads
/// it whole anyway). A body over the limit is 413 however it is sent; malformed JSON (invalid
/// UTF-8, nesting past the parser's limit, a key given twice) and JSON-RPC batches are 400s in
/// the envelope (rmcp would answer them with a plain-text 415).
async fn read_json(body: Body, limit: usize) -> Result<(Body, Value), ApiError> {
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(e) => {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(c) = cause {
                if c.is::<http_body_util::LengthLimitError>() {
                    return Err(ApiError::new(
                        ErrorCode::PayloadTooLarge,
                        format!("request body larger than {limit} bytes"),
                    ));
                }
                cause = c.source();
            }
            return Err(ApiError::invalid("the request body could not be read"));
        }
    };
    // The transcoder's own parser: UTF-8 only, no key twice, nesting bounded (tool arguments
    // meet the document depth limit when they are transcoded).
    match worktruck_proto::json::parse(&bytes) {
        Ok(message @ Value::Object(_)) => Ok((Body::from(bytes), message)),
        // MCP 2025-06-18 removed JSON-RPC batching; rmcp would answer a batch with a 415.
        Ok(Value::Array(_)) => Err(ApiError::invalid(
            "JSON-RPC batches are not supported: send one message per request",
        )),
        Ok(_) => Err(ApiError::invalid("the request body must be a JSON-RPC message object")),
        Err(e) => Err(ApiError::invalid(e.to_string())),
    }
}

/// rmcp answers transport-level refusals (406 without the right `Accept`, 415 for a non-JSON
/// body, 405, 400 for a bad session header, …) in plain text; this renders them as the envelope
/// with the same status, keeping headers such as `Allow`. JSON answers and successes pass as
/// they are. A 5xx says nothing of its cause.
async fn envelope_plain_errors(response: Response) -> Response {
    let status = response.status();
    let json = is_json(response.headers());
    if !(status.is_client_error() || status.is_server_error()) || json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let mut envelope = ApiError::from_status(status);
    if !status.is_server_error() && !text.is_empty() {
        envelope = envelope.with_message(text.chars().take(300).collect::<String>());
    }
    let mut envelope = envelope.into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            envelope.headers_mut().insert(name.clone(), value.clone());
        }
    }
    envelope
}

/// The RFC 9728 protected-resource metadata of the MCP endpoint.
pub(crate) fn protected_resource_metadata(registry: &Registry, cfg: &McpConfig) -> Value {
    let scopes: BTreeSet<String> = registry
        .tools()
        .iter()
        .flat_map(|t| {
            // A write scope includes the read one, so both are worth asking for.
            [
                worktruck_kit::scopes::scope(&t.rpc, true),
                worktruck_kit::scopes::scope(&t.rpc, false),
            ]
        })
        .collect();
    let mut doc = json!({
        "resource": cfg.resource(),
        "bearer_methods_supported": ["header"],
        "scopes_supported": scopes,
        "resource_name": "Worktruck MCP",
    });
    if let Some(issuer) = cfg.oidc_issuer.as_ref().filter(|i| !i.is_empty()) {
        doc["authorization_servers"] = json!([issuer]);
    }
    doc
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use tower::ServiceExt;
    use worktruck_gateway::auth::{AuthFuture, Authenticator};
    use worktruck_gateway::{Principal, Upstreams};
    use worktruck_kit::context::{Ctx, Signer};
    use worktruck_proto::registry::Registry;

    use super::*;

    /// Accepts `Authorization: Bearer <actor>` as that actor of the nil tenant, the way the OIDC
    /// authenticator yields `jwt:<sub>` actors.
    struct ActorIsToken;

    impl Authenticator for ActorIsToken {
        fn authenticate<'a>(&'a self, parts: &'a http::request::Parts) -> AuthFuture<'a> {
            Box::pin(async move {
                let token = worktruck_gateway::auth::bearer_token(parts)?;
                Ok(token.map(|t| Principal {
                    ctx: Ctx::tenant(Uuid::nil(), t, 30),
                }))
            })
        }
    }

    fn app() -> axum::Router {
        let registry = Arc::new(Registry::embedded().unwrap());
        let lazy = tonic::transport::Channel::from_static("http://127.0.0.1:1").connect_lazy();
        let upstreams = registry
            .tools()
            .iter()
            .map(|t| t.service.clone())
            // The tenants service keeps idempotency keys for the tools.
            .chain([worktruck_gateway::TENANTS_SERVICE.to_owned()])
            .map(|service| (service, lazy.clone()))
            .collect::<Upstreams>();
        let auth = worktruck_gateway::AuthChain::new(vec![Arc::new(ActorIsToken)]);
        let auth = Gate::new(auth, Arc::new(worktruck_gateway::Limiter::new(Default::default())));
        let mut cfg = McpConfig::new("https://mcp.example.com");
        cfg.oidc_issuer = Some("https://kc.example.com/realms/w".into());
        crate::router(registry, upstreams, Signer::from_seed([7; 32]), auth, cfg, crate::ToolListChanges::new()).unwrap()
    }

    async fn status(actor: &str, headers: &[(&str, &str)]) -> StatusCode {
        let mut request = http::Request::post("/mcp/v1")
            .header(header::AUTHORIZATION, format!("Bearer {actor}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let body = Body::from(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#);
        app()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap()
            .status()
    }

    #[tokio::test]
    async fn jwt_callers_must_name_2025_06_18_after_initialize() {
        assert_eq!(
            status("jwt:alice", &[("mcp-session-id", "s1")]).await,
            StatusCode::BAD_REQUEST
        );
        let old = [
            ("mcp-session-id", "s1"),
            ("mcp-protocol-version", "2025-03-26"),
        ];
        assert_eq!(status("jwt:alice", &old).await, StatusCode::BAD_REQUEST);
        // API keys may rely on the spec's default; an unknown session is then simply not found.
        assert_eq!(
            status("key:1", &[("mcp-session-id", "s1")]).await,
            StatusCode::NOT_FOUND
        );
        let current = [
            ("mcp-session-id", "s1"),
            ("mcp-protocol-version", "2025-06-18"),
        ];
        assert_eq!(status("jwt:alice", &current).await, StatusCode::NOT_FOUND);
    }

    #[test]
    fn metadata_names_the_issuer_and_the_scopes() {
        let registry = Registry::embedded().unwrap();
        let mut cfg = McpConfig::new("https://mcp.example.com");
        cfg.oidc_issuer = Some("https://kc.example.com/realms/w".into());
        let doc = protected_resource_metadata(&registry, &cfg);
        assert_eq!(doc["resource"], "https://mcp.example.com/mcp/v1");
        assert_eq!(
            doc["authorization_servers"],
            json!(["https://kc.example.com/realms/w"])
        );
        assert_eq!(
            doc["scopes_supported"],
            json!(["agents:read", "agents:write", "apps:read", "apps:write", "calendar:read", "calendar:write", "contacts:read", "contacts:write", "crm:read", "crm:write", "notes:read", "notes:write", "tasks:read", "tasks:write"])
        );
    }
}
