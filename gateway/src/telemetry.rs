//! The layer around every gateway response: request id, tracing span, metrics, and the promise
//! that every answer is JSON and every failure is the error envelope, whoever produced it.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use tracing::Instrument;
use tracing::field::Empty;

use crate::error::ApiError;

/// The request id header, read from callers and echoed on every response.
pub const REQUEST_ID: &str = "x-request-id";

/// The request's id (the caller's `x-request-id` when usable, else a fresh UUID), in request
/// extensions for handlers and authenticators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    /// The request id the telemetry layer put on a request ("" outside it, e.g. in unit tests).
    pub fn of(parts: &http::request::Parts) -> String {
        parts.extensions.get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default()
    }
}

/// The metadata of a gateway's call to a service: the signed context of `ctx` (one token per
/// principal, reused: see `Signer::token`), the current trace and the request id, which stay
/// outside the signature.
pub fn call_metadata(signer: &worktruck_kit::context::Signer, ctx: &worktruck_kit::context::Ctx, request_id: &str) -> tonic::metadata::MetadataMap {
    let mut metadata = tonic::metadata::MetadataMap::new();
    signer.attach(ctx, &mut metadata);
    worktruck_kit::telemetry::inject(&mut metadata);
    if let Ok(value) = tonic::metadata::MetadataValue::try_from(request_id) {
        metadata.insert(REQUEST_ID, value);
    }
    metadata
}

/// The proto path template that served a response, set by handlers as a response extension
/// so that metrics are labelled `/api/v1/contacts/{id}` rather than by concrete paths.
#[derive(Debug, Clone)]
pub(crate) struct RouteLabel(pub Arc<str>);

/// The plan of the tenant a request was admitted for: put into the request by the layer that
/// records its metrics, filled by [`crate::Gate::admit`], read back as the `plan` label (never
/// the tenant id).
#[derive(Debug, Clone, Default)]
pub struct PlanSlot(Arc<std::sync::OnceLock<&'static str>>);

impl PlanSlot {
    /// Records the admitted caller's plan (the first one wins).
    pub fn set(&self, plan: &str) {
        let _ = self.0.set(plan_label(plan));
    }

    /// The label: the plan, `none` before or without admission.
    pub fn label(&self) -> &'static str {
        self.0.get().copied().unwrap_or("none")
    }
}

/// A plan as a label: one of the plans, `other` for anything else (bounded cardinality).
pub fn plan_label(plan: &str) -> &'static str {
    match plan {
        "free" => "free",
        "pro" => "pro",
        "scale" => "scale",
        "enterprise" => "enterprise",
        "" => "none",
        _ => "other",
    }
}

/// Metric and span label for requests that matched no route (bounded cardinality).
const UNMATCHED: &str = "unmatched";

/// Wraps one request: see the module doc.
pub(crate) async fn observe(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| usable_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    request
        .extensions_mut()
        .insert(RequestId(request_id.clone()));
    let method = request.method().as_str().to_owned();
    let matched = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    // OpenTelemetry's HTTP server conventions: named `METHOD /route/{template}` once the route
    // is known (the method alone before, and for what matched none), kind SERVER, continuing
    // the caller's `traceparent`.
    let span = tracing::info_span!(
        "http_request",
        otel.name = %method,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        http.route = Empty,
        http.response.status_code = Empty,
        url.path = %request.uri().path(),
        request_id = %request_id,
        tenant_id = Empty,
        trace_id = Empty,
    );
    worktruck_kit::telemetry::continue_trace(&span, request.headers());
    let plan = PlanSlot::default();
    request.extensions_mut().insert(plan.clone());
    let mut response = next.run(request).instrument(span.clone()).await;

    if !is_json_response(&response) && (response.status().is_client_error() || response.status().is_server_error()) {
        response = envelope_for(response);
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let route: String = response
        .extensions()
        .get::<RouteLabel>()
        .map(|r| r.0.to_string())
        .or(matched)
        .unwrap_or_else(|| UNMATCHED.to_owned());
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    use worktruck_kit::telemetry::families::{HTTP_DURATION, HTTP_REQUESTS};
    let labels = [
        ("route", route.clone()),
        ("method", method),
        ("status", status.to_string()),
        ("plan", plan.label().to_owned()),
    ];
    metrics::counter!(HTTP_REQUESTS, &labels).increment(1);
    metrics::histogram!(HTTP_DURATION, &labels).record(elapsed.as_secs_f64());
    if route != UNMATCHED {
        span.record("http.route", route.as_str());
        worktruck_kit::telemetry::rename(&span, &format!("{} {route}", span_method(&labels)));
    }
    span.record("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
    span.in_scope(|| {
        tracing::info!(
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "request served"
        )
    });
    response
}

/// The method among a request's metric labels.
fn span_method(labels: &[(&str, String)]) -> String {
    labels.iter().find(|(k, _)| *k == "method").map(|(_, v)| v.clone()).unwrap_or_default()
}

/// Echoing a caller's id into logs and headers is only safe for short printable tokens.
fn usable_request_id(v: &str) -> bool {
    !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic())
}

fn is_json_response(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(crate::JSON))
}

/// Replaces a failure produced outside the gateway's handlers (an axum rejection, say) with the
/// envelope for its status, keeping headers such as `Allow`.
fn envelope_for(response: Response) -> Response {
    let (parts, _) = response.into_parts();
    let mut fresh = ApiError::from_status(parts.status).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fresh.headers_mut().insert(name.clone(), value.clone());
        }
    }
    let (mut new_parts, body): (_, Body) = fresh.into_parts();
    new_parts.extensions = parts.extensions;
    Response::from_parts(new_parts, body)
}
