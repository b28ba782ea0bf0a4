//! Registers every registry route on an axum router and serves it generically: resolve the
//! binding, authenticate, transcode, call the service, render the answer.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::RequestPartsExt;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Query, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use http::uri::PathAndQuery;
use http::{HeaderValue, StatusCode, header};
use prost::Message;
use tonic::transport::Channel;
use worktruck_kit::context::Signer;
use worktruck_kit::scopes;
use worktruck_kit::{Error, ErrorCode};
use worktruck_proto::registry::{HttpMethod, Registry, Route, Segment};

use crate::conventions::{self, IfMatch};
use crate::idempotency;
use crate::gate::{Admitted, Gate};
use crate::x402::{PAYMENT_RESPONSE, PriceClass, X402};
use worktruck_proto::tenants::v1::PrincipalKind;
use worktruck_proto::tenants::v1::tenants_service_client::TenantsServiceClient;
use crate::error::{ApiError, GatewayError};
use crate::telemetry::{RequestId, RouteLabel};
use crate::transcode::{self, HttpInput};
use crate::upstream::{self, Upstreams};

/// Everything a request handler needs, shared by all routes.
pub(crate) struct Shared {
    pub gate: Gate,
    pub signer: Signer,
    /// x402 payments, when a facilitator is configured.
    pub x402: Option<Arc<X402>>,
    /// For mapping paying wallets to tenants.
    pub tenants: TenantsServiceClient<Channel>,
    /// The body limit of routes that take a raw body (`google.api.HttpBody`).
    pub upload_limit: usize,
    /// Idempotency keys, kept by the tenants service.
    pub keeper: idempotency::Keeper,
}

/// One route, resolved against its upstream at start-up.
struct Binding {
    route: Route,
    grpc_path: PathAndQuery,
    channel: Channel,
    /// The proto field path bound to each axum parameter `p0`, `p1`, ….
    vars: Vec<String>,
    /// A verb after a trailing variable, dispatched here because axum cannot route it.
    verb: Option<String>,
    status: StatusCode,
    label: Arc<str>,
    /// The scope the RPC needs (kit's table, which the service checks again).
    scope: Arc<str>,
    /// A 201 whose entity can be read at the request path plus its id (`Location`).
    location: bool,
}

/// The bindings sharing one axum path and method (they differ by verb only).
type Group = Arc<[Arc<Binding>]>;

/// The success status of a route: 201 for `Create…` RPCs bound to POST, else 200.
pub(crate) fn success_status(route: &Route) -> StatusCode {
    if route.method == HttpMethod::Post && route.rpc.name().starts_with("Create") {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

/// The axum path of a template (`/api/v1/contacts/{p0}`) and the verb left for dispatch.
pub(crate) fn axum_path(route: &Route) -> (String, Option<String>) {
    let mut path = String::new();
    let mut index = 0;
    for segment in route.path.segments() {
        path.push('/');
        match segment {
            Segment::Literal(literal) => path.push_str(literal),
            Segment::Variable(_) => {
                // Positional names: matchit refuses two names at one position, so `/x/{id}` and
                // `/x/{name}/y` can only coexist under a shared name.
                path.push_str(&format!("{{p{index}}}"));
                index += 1;
            }
        }
    }
    if path.is_empty() {
        path.push('/');
    }
    let trailing_variable = matches!(route.path.segments().last(), Some(Segment::Variable(_)));
    match route.path.verb() {
        Some(verb) if trailing_variable => (path, Some(verb.to_owned())),
        Some(verb) => (format!("{path}:{verb}"), None),
        None => (path, None),
    }
}

/// Adds every route of the registry to `router`.
pub(crate) fn add_routes(
    mut router: axum::Router,
    registry: &Registry,
    upstreams: &Upstreams,
    shared: Arc<Shared>,
    reserved: &[&str],
) -> Result<axum::Router, GatewayError> {
    let mut groups: BTreeMap<String, BTreeMap<HttpMethod, Vec<Arc<Binding>>>> = BTreeMap::new();
    for route in registry.routes() {
        let (path, verb) = axum_path(route);
        if reserved.contains(&path.as_str()) {
            return Err(GatewayError::ReservedPath {
                method: route.method.to_string(),
                path: route.path.to_string(),
                rpc: route.rpc.full_name().to_owned(),
            });
        }
        let channel = upstreams
            .get(&route.service)
            .ok_or_else(|| GatewayError::MissingUpstream(route.service.clone()))?;
        let grpc_path = PathAndQuery::try_from(route.grpc_path.as_str())
            .map_err(|_| GatewayError::InvalidGrpcPath(route.grpc_path.clone()))?;
        let binding = Binding {
            vars: route.path.variables().map(str::to_owned).collect(),
            verb,
            status: success_status(route),
            label: Arc::from(route.path.as_str()),
            scope: Arc::from(scopes::scope(&route.rpc, scopes::is_read(registry, &route.rpc))),
            location: success_status(route) == StatusCode::CREATED && conventions::has_location(registry, route),
            grpc_path,
            channel: channel.clone(),
            route: route.clone(),
        };
        groups
            .entry(path)
            .or_default()
            .entry(route.method)
            .or_default()
            .push(Arc::new(binding));
    }
    for (path, methods) in groups {
        let raw = methods.values().flatten().any(|b| b.route.raw_body_field().is_some());
        let allow = conventions::allow(&methods.keys().copied().collect::<Vec<_>>());
        let mut method_router = MethodRouter::new();
        for (method, bindings) in methods {
            let group: Group = bindings.into();
            let shared = shared.clone();
            let handler = move |request: Request| {
                let (group, shared) = (group.clone(), shared.clone());
                async move {
                    serve(&shared, &group, request)
                        .await
                        .unwrap_or_else(IntoResponse::into_response)
                }
            };
            method_router = method_router.on(filter(method), handler);
        }
        let options = {
            let allow = allow.clone();
            move || {
                let allow = allow.clone();
                async move { (StatusCode::NO_CONTENT, [(header::ALLOW, allow)]).into_response() }
            }
        };
        let not_allowed = move |request: Request| {
            let allow = allow.clone();
            async move {
                let mut headers = http::HeaderMap::new();
                headers.insert(header::ALLOW, allow);
                ApiError::method_not_allowed(format!("method {} is not allowed here", request.method()))
                    .with_headers(headers)
            }
        };
        let mut method_router = method_router.options(options).fallback(not_allowed);
        if raw {
            // Uploads and imports: their own limit instead of the JSON body limit.
            method_router = method_router.layer(axum::extract::DefaultBodyLimit::max(shared.upload_limit));
        }
        router = router.route(&path, method_router);
    }
    Ok(router)
}

fn filter(method: HttpMethod) -> MethodFilter {
    match method {
        HttpMethod::Get => MethodFilter::GET,
        HttpMethod::Put => MethodFilter::PUT,
        HttpMethod::Post => MethodFilter::POST,
        HttpMethod::Delete => MethodFilter::DELETE,
        HttpMethod::Patch => MethodFilter::PATCH,
    }
}

async fn serve(shared: &Shared, group: &Group, request: Request) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let Path(mut params): Path<BTreeMap<String, String>> = parts
        .extract()
        .await
        .map_err(|e| ApiError::invalid(format!("invalid path: {e}")))?;
    let binding = pick(group, &mut params)
        .ok_or_else(|| ApiError::not_found(format!("no route for {}", parts.uri.path())))?;
    let label = RouteLabel(binding.label.clone());
    let result = call(shared, binding, params, parts, body).await;
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(label);
    Ok(response)
}

/// Chooses the binding whose verb ends the last parameter (stripping it), else the plain one.
fn pick<'g>(group: &'g Group, params: &mut BTreeMap<String, String>) -> Option<&'g Arc<Binding>> {
    for binding in group.iter() {
        let Some(verb) = &binding.verb else { continue };
        let last = format!("p{}", binding.vars.len().saturating_sub(1));
        if let Some(value) = params.get_mut(&last)
            && let Some(stripped) = value.strip_suffix(&format!(":{verb}"))
            && !stripped.is_empty()
        {
            *value = stripped.to_owned();
            return Some(binding);
        }
    }
    group.iter().find(|b| b.verb.is_none())
}

async fn call(
    shared: &Shared,
    binding: &Binding,
    params: BTreeMap<String, String>,
    parts: http::request::Parts,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    if let Some(x402) = &shared.x402 {
        if let Some(header) = crate::x402::payment_header(&parts.headers) {
            let header = header.to_owned();
            return call_paid(shared, x402, binding, params, parts, body, &header).await;
        }
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            return Err(x402.payment_required(parts.uri.path(), price_class(binding), "", false));
        }
    }
    let admitted = shared.gate.admit(&parts).await?;
    call_as(shared, binding, params, parts, body, admitted, None).await
}

/// The price class of a route ([`PriceClass::of`], a GET being a read).
fn price_class(binding: &Binding) -> PriceClass {
    PriceClass::of(binding.route.rpc.name(), binding.route.method == HttpMethod::Get)
}

/// Serves a request paid with x402: verify, act as the wallet's tenant, settle (before a write,
/// after a read), and answer with `PAYMENT-RESPONSE`.
async fn call_paid(
    shared: &Shared,
    x402: &X402,
    binding: &Binding,
    params: BTreeMap<String, String>,
    parts: http::request::Parts,
    body: axum::body::Body,
    header: &str,
) -> Result<Response, ApiError> {
    let class = price_class(binding);
    let resource = parts.uri.path().to_owned();
    let verified = x402.verify(header, &resource, class).await?;
    let request_id = RequestId::of(&parts);
    let principal = crate::auth::resolve_external(
        &shared.tenants,
        &shared.signer,
        PrincipalKind::Wallet,
        &verified.network,
        &verified.payer,
        format!("wallet:{}", verified.payer.to_ascii_lowercase()),
        request_id,
    )
    .await;
    let admitted = match principal.map_err(ApiError::from).and_then(|p| shared.gate.limit(p)) {
        Ok(a) => a,
        Err(e) => {
            x402.release_unused(&verified);
            return Err(e);
        }
    };
    if class.is_write() {
        // Settled inside, before the write runs (a write whose payment does not settle must not
        // happen) and after its idempotency key is claimed (a replay is not charged again).
        let settle = Settle { x402, verified: &verified, resource: &resource, class };
        return call_as(shared, binding, params, parts, body, admitted, Some(settle)).await;
    }
    let response = call_as(shared, binding, params, parts, body, admitted, None).await;
    match response {
        Ok(mut response) if response.status().is_success() => {
            // A read whose payment does not settle is withheld.
            let receipt = x402.settle(&verified, &resource, class).await?;
            response.headers_mut().insert(PAYMENT_RESPONSE, receipt);
            Ok(response)
        }
        other => {
            x402.release_unused(&verified);
            other
        }
    }
}

/// An x402 write's payment, settled by [`call_as`] just before the write runs.
struct Settle<'a> {
    x402: &'a X402,
    verified: &'a crate::x402::Verified,
    resource: &'a str,
    class: PriceClass,
}

/// Serves a request as an admitted caller: scope check, its idempotency key, the payment of an
/// x402 write, then the call, with rate-limit headers.
async fn call_as(
    shared: &Shared,
    binding: &Binding,
    params: BTreeMap<String, String>,
    parts: http::request::Parts,
    body: axum::body::Body,
    admitted: Admitted,
    settle: Option<Settle<'_>>,
) -> Result<Response, ApiError> {
    let quota = admitted.quota;
    let principal = admitted.principal;
    if let Some(tenant) = principal.ctx.tenant_id {
        tracing::Span::current().record("tenant_id", tracing::field::display(tenant));
    }
    let mut limit_headers = http::HeaderMap::new();
    quota.write_headers(&mut limit_headers);
    let unpaid = |e: ApiError| {
        if let Some(s) = &settle {
            s.x402.release_unused(s.verified);
        }
        e.with_headers(limit_headers.clone())
    };
    if let Err(e) = worktruck_kit::scopes::check(&principal.ctx, &binding.scope) {
        return Err(unpaid(ApiError::from(e)));
    }
    let tenant = principal.ctx.tenant_id;
    let request_id = RequestId::of(&parts);
    let body = read_body(&parts, body).await.map_err(&unpaid)?;
    let held = match claim(shared, binding, &parts, &body, tenant, &request_id).await.map_err(&unpaid)? {
        None => None,
        Some(idempotency::Claim::Run(held)) => Some(held),
        Some(idempotency::Claim::Replay(kept)) => {
            if let Some(s) = &settle {
                s.x402.release_unused(s.verified);
            }
            let mut response = replay(kept);
            response.headers_mut().extend(limit_headers);
            return Ok(response);
        }
    };
    let receipt = match &settle {
        Some(s) => match s.x402.settle(s.verified, s.resource, s.class).await {
            Ok(receipt) => Some(receipt),
            Err(e) => {
                if let Some(held) = held {
                    shared.keeper.complete(held, None, &request_id).await;
                }
                return Err(e.with_headers(limit_headers));
            }
        },
        None => None,
    };
    let result = call_admitted(shared, binding, params, parts, body, principal).await;
    let wrote = result.is_ok();
    // A tenant's own change to its keys or plan holds on this gateway at once, bus or not
    // (other replicas learn it from the tenants service's event).
    if wrote
        && binding.route.service == crate::TENANTS_SERVICE
        && binding.route.method != HttpMethod::Get
        && let Some(tenant) = tenant
    {
        shared.gate.principals().forget_tenant(tenant);
    }
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    if let Some(held) = held {
        response = keep(shared, held, response, &request_id).await;
    }
    response.headers_mut().extend(limit_headers);
    if let Some(receipt) = receipt {
        response.headers_mut().insert(PAYMENT_RESPONSE, receipt);
    }
    Ok(response)
}

/// Reads a request body through axum's `Bytes` extractor, so that the `DefaultBodyLimit` layer
/// applies.
async fn read_body(parts: &http::request::Parts, body: axum::body::Body) -> Result<Bytes, ApiError> {
    Bytes::from_request(Request::from_parts(parts.clone(), body), &()).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(ErrorCode::PayloadTooLarge, "request body too large")
        } else {
            ApiError::invalid(format!("cannot read request body: {rejection}"))
        }
    })
}

/// Claims the request's `Idempotency-Key`, when it is a write that has one.
async fn claim(
    shared: &Shared,
    binding: &Binding,
    parts: &http::request::Parts,
    body: &[u8],
    tenant: Option<uuid::Uuid>,
    request_id: &str,
) -> Result<Option<idempotency::Claim>, ApiError> {
    let Some(key) = parts.headers.get(idempotency::HEADER) else { return Ok(None) };
    if binding.route.method == HttpMethod::Get {
        return Ok(None);
    }
    let key = key.to_str().unwrap_or_default();
    idempotency::check_key(key)?;
    let Some(tenant) = tenant else { return Ok(None) };
    let header = |name| parts.headers.get(name).map(|v| v.as_bytes()).unwrap_or_default();
    let fingerprint = idempotency::fingerprint(&[
        parts.method.as_str().as_bytes(),
        parts.uri.path().as_bytes(),
        parts.uri.query().unwrap_or_default().as_bytes(),
        header(header::CONTENT_TYPE),
        header(header::IF_MATCH),
        body,
    ]);
    shared.keeper.claim(tenant, key, fingerprint, request_id).await.map(Some).map_err(ApiError::from)
}

/// Keeps `response` for its key (or releases the key when a retry may fare better) and gives
/// it back, its body read into memory (it already was: answers are built from bytes).
async fn keep(shared: &Shared, held: idempotency::Held, response: Response, request_id: &str) -> Response {
    let status = response.status().as_u16();
    if !idempotency::keeps(status) {
        shared.keeper.complete(held, None, request_id).await;
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        shared.keeper.complete(held, None, request_id).await;
        return ApiError::internal("an answer could not be read").into_response();
    };
    let headers = idempotency::KEPT_HEADERS
        .iter()
        .filter_map(|name| Some(((*name).to_owned(), parts.headers.get(*name)?.to_str().ok()?.to_owned())))
        .collect();
    let kept = worktruck_proto::tenants::v1::KeptAnswer { status: u32::from(status), headers, body: bytes.to_vec() };
    shared.keeper.complete(held, Some(kept), request_id).await;
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// A kept answer, given again.
fn replay(kept: worktruck_proto::tenants::v1::KeptAnswer) -> Response {
    let mut response = Response::new(axum::body::Body::from(kept.body));
    *response.status_mut() = StatusCode::from_u16(u16::try_from(kept.status).unwrap_or(200)).unwrap_or(StatusCode::OK);
    for (name, value) in &kept.headers {
        if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(name.as_str()), HeaderValue::from_str(value)) {
            response.headers_mut().insert(name, value);
        }
    }
    let (name, value) = idempotency::replayed();
    response.headers_mut().insert(name, value);
    response
}

async fn call_admitted(
    shared: &Shared,
    binding: &Binding,
    params: BTreeMap<String, String>,
    parts: http::request::Parts,
    body: Bytes,
    principal: crate::auth::Principal,
) -> Result<Response, ApiError> {
    let request_id = RequestId::of(&parts);
    let request_path = parts.uri.path().to_owned();
    let is_read = parts.method == http::Method::GET || parts.method == http::Method::HEAD;
    let wanted = if is_read { IfMatch::Absent } else { conventions::if_match(&parts.headers)? };
    let Query(mut query): Query<Vec<(String, String)>> = Query::try_from_uri(&parts.uri)
        .map_err(|e| ApiError::invalid(format!("invalid query string: {e}")))?;
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let headers = parts.headers;
    let path_vars = binding
        .vars
        .iter()
        .enumerate()
        .filter_map(|(i, var)| {
            params
                .get(&format!("p{i}"))
                .map(|v| (var.as_str(), v.clone()))
        })
        .collect();
    // A raw (non-JSON) body of an RPC that takes one stands for its JSON form (`raw`).
    let raw = crate::raw::rule(&binding.route);
    let mask = transcode::take_mask(&binding.route, &mut query)?;
    let (body, content_type) = match raw.map(|r| r.wrap(content_type.as_deref(), &body)).transpose()?.flatten() {
        Some(json) => (json, Some(crate::JSON.to_owned())),
        None => (body, content_type),
    };
    let input = HttpInput {
        path_vars,
        query,
        body: &body,
        content_type: content_type.as_deref(),
    };
    let mut message = transcode::request_message(&binding.route, input)?;
    conventions::apply_if_match(&binding.route, &mut message, wanted)?;

    let metadata = crate::telemetry::call_metadata(&shared.signer, &principal.ctx, &request_id);
    let reply = upstream::unary(
        binding.channel.clone(),
        binding.grpc_path.clone(),
        message.encode_to_vec().into(),
        metadata.clone(),
    )
    .await
    .map_err(|status| conventions::precondition(upstream_error(&binding.route, &status), wanted, &Error::from_status(&status)))?;
    if binding.route.raw_response() {
        return transcode::raw_response(binding.status, &reply);
    }
    let mut json = transcode::response_json(&binding.route, &reply)?;
    // Of the whole answer, before a mask may take `version` away.
    let tag = conventions::etag(&json);
    let location = binding.location.then(|| conventions::location(&request_path, &json)).flatten();
    if is_read
        && let Some(tag) = &tag
        && conventions::none_match(&headers, tag)
    {
        return Ok(conventions::not_modified(tag.clone()));
    }
    if let Some(mask) = &mask {
        mask.apply(&mut json);
    }
    if let Some(rule) = raw.filter(|r| r.raw_answer(&headers)) {
        let next = crate::raw::Next { channel: binding.channel.clone(), grpc_path: binding.grpc_path.clone(), metadata };
        return Ok(rule.answer(&binding.route, json, next));
    }
    let mut response = (binding.status, crate::json_body(&json)).into_response();
    let out = response.headers_mut();
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::JSON));
    if let Some(tag) = tag {
        out.insert(header::ETAG, tag);
    }
    if let Some(location) = location {
        out.insert(header::LOCATION, location);
    }
    Ok(response)
}

/// A gRPC failure as the envelope. Statuses without details come from the transport, not from
/// a service, and their text (addresses, OS errors) is not for callers.
fn upstream_error(route: &Route, status: &tonic::Status) -> ApiError {
    let mut error = Error::from_status(status);
    if status.details().is_empty() && error.code == ErrorCode::Unavailable {
        tracing::warn!(grpc = %route.grpc_path, error = %status.message(), "upstream unavailable");
        error.message = "a service is unavailable; retry later".to_owned();
    } else if error.code == ErrorCode::Internal {
        tracing::error!(grpc = %route.grpc_path, code = ?status.code(), error = %status.message(), "upstream failed");
    }
    error.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;
    use worktruck_proto::registry::Registry;

    fn binding(verb: Option<&str>) -> Arc<Binding> {
        let registry = Registry::embedded().unwrap();
        let route = registry
            .routes()
            .iter()
            .find(|r| r.rpc.name() == "GetContact")
            .unwrap()
            .clone();
        Arc::new(Binding {
            grpc_path: PathAndQuery::from_static("/x/Y"),
            channel: Channel::from_static("http://127.0.0.1:1").connect_lazy(),
            vars: vec!["id".into()],
            verb: verb.map(str::to_owned),
            status: StatusCode::OK,
            label: Arc::from("/api/v1/contacts/{id}"),
            scope: Arc::from("contacts:read"),
            location: false,
            route,
        })
    }

    #[tokio::test]
    async fn verbs_after_a_variable_are_dispatched_by_suffix() {
        let group: Group = vec![binding(Some("archive")), binding(None)].into();
        let mut params = BTreeMap::from([("p0".to_owned(), "c1:archive".to_owned())]);
        assert_eq!(
            pick(&group, &mut params).unwrap().verb.as_deref(),
            Some("archive")
        );
        assert_eq!(params["p0"], "c1");
        let mut params = BTreeMap::from([("p0".to_owned(), "c1".to_owned())]);
        assert_eq!(pick(&group, &mut params).unwrap().verb, None);
        let only_verb: Group = vec![binding(Some("archive"))].into();
        let mut params = BTreeMap::from([("p0".to_owned(), "c1:other".to_owned())]);
        assert!(pick(&only_verb, &mut params).is_none());
    }

    #[tokio::test]
    async fn a_verb_after_a_literal_is_a_literal_axum_path() {
        // What `axum_path` produces for `/things:batchGet`: matchit 0.8 treats ':' literally.
        let router = axum::Router::new()
            .route("/things:batchGet", axum::routing::get(|| async { "batch" }))
            .route("/things/{p0}", axum::routing::get(|| async { "one" }));
        let call = |uri: &'static str| {
            let router = router.clone();
            async move {
                let response = router
                    .oneshot(http::Request::get(uri).body(Body::empty()).unwrap())
                    .await
                    .unwrap();
                let bytes = axum::body::to_bytes(response.into_body(), 64)
                    .await
                    .unwrap();
                String::from_utf8(bytes.to_vec()).unwrap()
            }
        };
        assert_eq!(call("/things:batchGet").await, "batch");
        assert_eq!(call("/things/a:b").await, "one");
    }
}
