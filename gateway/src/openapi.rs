//! The OpenAPI 3.1 document of exactly the routes the gateway serves, derived from the same
//! registry: paths, parameters, body and response schemas, comments, the error envelope.

use std::collections::HashSet;

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};
use worktruck_kit::ErrorCode;
use worktruck_proto::json::is_well_known;
use worktruck_proto::registry::{HttpMethod, Registry, RequestBody, Route};
use worktruck_proto::schema::{Mode, SchemaGenerator};

use crate::config::GatewayConfig;
use crate::routes::success_status;

/// Where the document is served (without authentication).
pub const OPENAPI_PATH: &str = "/docs/openapi.json";

const SCHEMAS: &str = "#/components/schemas/";
const ERROR_SCHEMA: &str = "Error";
/// How deep nested request messages are flattened into `a.b.c` query parameters.
const MAX_QUERY_DEPTH: usize = 3;

/// The documented refusals: status, component name, what it means. Each is the error envelope.
const REFUSALS: &[(u16, &str, &str)] = &[
    (400, "BadRequest", "The request is malformed or a value is invalid (`invalid_argument`, `validation_failed`)."),
    (401, "Unauthorized", "No valid credentials (`unauthenticated`); `WWW-Authenticate` names the ways in."),
    (402, "PaymentRequired", "An x402 payment is required or was refused (`payment_required`); `PAYMENT-REQUIRED` holds the options."),
    (403, "Forbidden", "The credentials may not do this (`permission_denied`, or `insufficient_scope` for a scope this operation needs)."),
    (404, "NotFound", "No such entity for this tenant (`not_found`)."),
    (409, "Conflict", "The change conflicts with the current state (`conflict`, `already_exists`)."),
    (410, "Gone", "What was asked for is past the tenant's retention window, or the cursor has expired (`gone`)."),
    (412, "PreconditionFailed", "`If-Match` names another version (`precondition_failed`)."),
    (413, "PayloadTooLarge", "The body is over the limit (`payload_too_large`)."),
    (415, "UnsupportedMediaType", "The body's media type is not one this route takes (`unsupported_media_type`)."),
    (422, "IdempotencyKeyReused", "The `Idempotency-Key` was used for another request (`idempotency_key_reused`)."),
    (429, "TooManyRequests", "Over the plan's rate limit (`rate_limited`); `Retry-After` says when to come back."),
    (500, "InternalError", "A server-side failure (`internal`)."),
    (503, "ServiceUnavailable", "A part of the system is down or overloaded (`unavailable`); retry after `Retry-After`."),
];

/// The response headers the gateway writes, as components (x402's only where it is on).
fn headers(cfg: &GatewayConfig) -> Value {
    let h = |description: &str, schema: Value| json!({"description": description, "schema": schema});
    let mut all = json!({
        "X-Request-Id": h("The request's id (the caller's, when it sent a valid one): in every log line and trace of it.", json!({"type": "string"})),
        "X-RateLimit-Limit": h("Requests the plan allows in the tighter of its two windows (a minute, a day).", json!({"type": "integer"})),
        "X-RateLimit-Remaining": h("Requests left in that window.", json!({"type": "integer"})),
        "X-RateLimit-Reset": h("Seconds until that window starts over.", json!({"type": "integer"})),
        "Retry-After": h("Seconds to wait before trying again.", json!({"type": "integer"})),
        "WWW-Authenticate": h("The authentication schemes accepted (`Bearer`), with the OAuth protected-resource metadata where OIDC is on.", json!({"type": "string"})),
        "PAYMENT-REQUIRED": h("The x402 payment requirements, base64 of their JSON.", json!({"type": "string"})),
    });
    if cfg.auth.x402.facilitator_url.is_empty() {
        all.as_object_mut().expect("an object").remove("PAYMENT-REQUIRED");
    }
    all
}

fn header_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/headers/{name}")})
}

/// The refusals as components: the error envelope, with the headers each carries (402 only
/// where x402 is on).
fn refusal_responses(cfg: &GatewayConfig) -> Map<String, Value> {
    REFUSALS
        .iter()
        .filter(|(status, _, _)| *status != 402 || !cfg.auth.x402.facilitator_url.is_empty())
        .map(|(status, name, description)| {
            let mut r = json!({
                "description": description,
                "headers": {"X-Request-Id": header_ref("X-Request-Id")},
                "content": {"application/json": {"schema": {"$ref": format!("{SCHEMAS}{ERROR_SCHEMA}")}}},
            });
            let extra: &[&str] = match status {
                401 => &["WWW-Authenticate"],
                402 => &["PAYMENT-REQUIRED"],
                429 => &["Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"],
                503 => &["Retry-After"],
                _ => &[],
            };
            for h in extra {
                r["headers"][*h] = header_ref(h);
            }
            ((*name).to_owned(), r)
        })
        .collect()
}

/// The ways in this deployment accepts: API keys always, OIDC and x402 when configured.
fn security_schemes(cfg: &GatewayConfig) -> (Value, Vec<Value>) {
    let mut schemes = json!({"bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (`bsk_live_…` or `bsk_test_…`) or, where OIDC is on, an access token of the issuer: `Authorization: Bearer …`.",
    }});
    let mut security = vec![json!({"bearerAuth": []})];
    let oidc = &cfg.auth.oidc;
    if !oidc.issuer.is_empty() {
        schemes["oidc"] = json!({
            "type": "openIdConnect",
            "openIdConnectUrl": format!("{}/.well-known/openid-configuration", oidc.issuer.trim_end_matches('/')),
            "description": format!("An access token of this issuer whose `aud` names `{}`, sent as `Authorization: Bearer …`.", oidc.audience),
        });
        security.push(json!({"oidc": []}));
    }
    if !cfg.auth.x402.facilitator_url.is_empty() {
        schemes["x402"] = json!({
            "type": "apiKey",
            "in": "header",
            "name": "PAYMENT-SIGNATURE",
            "description": "An x402 payment (base64 of its JSON) for this one request, without an account: a request without one is answered 402 with the requirements in `PAYMENT-REQUIRED`.",
        });
        security.push(json!({"x402": []}));
    }
    (schemes, security)
}

/// Builds the document.
pub fn document(registry: &Registry, cfg: &GatewayConfig) -> Value {
    let mut schemas = SchemaGenerator::components(registry, SCHEMAS);
    let mut paths = Map::new();
    let mut tags: Vec<String> = Vec::new();
    for route in registry.routes() {
        let service = route.rpc.parent_service().clone();
        if !tags.iter().any(|t| t == service.full_name()) {
            tags.push(service.full_name().to_owned());
        }
        let op = operation(registry, &mut schemas, route, cfg);
        let item = paths
            .entry(route.path.as_str().to_owned())
            .or_insert_with(|| json!({}));
        item[method_key(route.method)] = op;
    }
    paths.insert(OPENAPI_PATH.to_owned(), json!({"get": {
        "operationId": "Gateway.GetOpenApi",
        "summary": "This document.",
        "tags": ["Gateway"],
        "security": [],
        "responses": {
            "200": {"description": "The OpenAPI document.", "content": {"application/json": {"schema": {"type": "object"}}}},
            "429": {"$ref": "#/components/responses/TooManyRequests"},
        },
    }}));
    let tags: Vec<Value> = tags
        .iter()
        .filter_map(|name| registry.pool().get_service_by_name(name))
        .map(|s| {
            let mut tag = json!({"name": s.name()});
            if let Some(text) = registry.service_comment(&s) {
                tag["description"] = json!(text);
            }
            tag
        })
        .chain([json!({"name": "Gateway", "description": "Served by the gateway itself."})])
        .collect();
    let mut components = schemas.into_definitions();
    components.insert(ERROR_SCHEMA.to_owned(), error_schema());
    let (schemes, security) = security_schemes(cfg);
    let server = match cfg.public_url.trim_end_matches('/') {
        "" => json!({"url": "/", "description": "The server this document is read from."}),
        url => json!({"url": url}),
    };
    json!({
        "openapi": "3.1.0",
        "servers": [server],
        "info": {
            "title": "Worktruck API",
            "version": env!("CARGO_PKG_VERSION"),
            "license": {"name": "Apache-2.0", "identifier": env!("CARGO_PKG_LICENSE")},
            "description": "Machine-first personal information manager. Every operation is a gRPC method; \
                this document is derived from the same proto descriptors as the routes. \
                Fields use proto names; 64-bit integers are JSON numbers; unknown fields are refused.",
        },
        "tags": tags,
        "security": security,
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": refusal_responses(cfg),
            "headers": headers(cfg),
            "securitySchemes": schemes,
        },
    })
}

fn method_key(method: HttpMethod) -> &'static str {
    match method {
        HttpMethod::Get => "get",
        HttpMethod::Put => "put",
        HttpMethod::Post => "post",
        HttpMethod::Delete => "delete",
        HttpMethod::Patch => "patch",
    }
}

fn operation(registry: &Registry, schemas: &mut SchemaGenerator<'_>, route: &Route, cfg: &GatewayConfig) -> Value {
    let service = route.rpc.parent_service();
    let mut id = format!("{}.{}", service.name(), route.rpc.name());
    if route.binding > 0 {
        id.push_str(&format!("_{}", route.binding));
    }
    let mut op = json!({"operationId": id, "tags": [service.name()]});
    if let Some(text) = registry.method_comment(&route.rpc) {
        op["summary"] = json!(summary(text));
        op["description"] = json!(text);
    }
    let input = route.rpc.input();
    let path_vars: Vec<&str> = route.path.variables().collect();
    let mut parameters = Vec::new();
    for var in &path_vars {
        let schema = field_at(&input, var)
            .map(|f| schemas.field(&f, Mode::Input))
            .unwrap_or_else(|| json!({}));
        let mut p = json!({"name": var, "in": "path", "required": true, "schema": schema});
        if let Some(text) =
            field_at(&input, var).and_then(|f| registry.field_comment(&f).map(str::to_owned))
        {
            p["description"] = json!(text);
        }
        parameters.push(p);
    }
    let skip_top: Option<&str> = match &route.body {
        RequestBody::Field(name) => Some(name),
        _ => None,
    };
    if route.body != RequestBody::Whole {
        query_parameters(
            registry,
            schemas,
            &input,
            "",
            &path_vars,
            skip_top,
            0,
            &mut HashSet::new(),
            &mut parameters,
        );
    }
    if crate::transcode::mask_target(route).is_some() {
        parameters.push(json!({
            "name": "fields", "in": "query", "required": false, "schema": {"type": "string"},
            "description": "Only these fields of the answer (of each item, for a list): proto field names, \
                comma-separated, `.` for a nested field (`id,display_name,channels.value`). An unknown field is a 400.",
        }));
    }
    let output = route.rpc.output();
    let is_read = route.method == HttpMethod::Get;
    // One entity with a version: the answer carries it as `ETag` (`conventions`).
    let entity = route.response_body.is_none()
        && !route.raw_response()
        && output.get_field_by_name("id").is_some()
        && output.get_field_by_name("version").is_some();
    let if_match = !is_read && input.get_field_by_name("expected_version").is_some();
    let header = |name: &str, description: &str| {
        json!({"name": name, "in": "header", "required": false, "schema": {"type": "string"}, "description": description})
    };
    if !is_read {
        parameters.push(header(
            "Idempotency-Key",
            "Makes a retry safe: the first answer under this key (1 to 255 visible ASCII characters) is kept for 24 hours \
             and given again, with `Idempotent-Replayed: true`, without running the write twice; another request under \
             the key is a 422 `idempotency_key_reused`.",
        ));
    }
    if if_match {
        parameters.push(header(
            "If-Match",
            "Write only at this version: an `ETag` this API answered (`\"3\"`); another version is a 412.",
        ));
    }
    if is_read && entity {
        parameters.push(header("If-None-Match", "An `ETag` of this entity: a 304 while it is still at that version."));
    }
    if !parameters.is_empty() {
        op["parameters"] = Value::Array(parameters);
    }
    match &route.body {
        RequestBody::Whole => {
            let mut schema = schemas.message(&input, Mode::Input);
            // Path variables are not repeated in the body.
            if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
                props.retain(|k, _| !path_vars.contains(&k.as_str()));
            }
            if let Some(required) = schema.get_mut("required").and_then(Value::as_array_mut) {
                required.retain(|k| !path_vars.iter().any(|v| k == v));
                if required.is_empty() {
                    schema.as_object_mut().map(|o| o.remove("required"));
                }
            }
            op["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": schema}}});
        }
        RequestBody::Field(_) if route.raw_body_field().is_some() => {
            op["requestBody"] = json!({"required": true, "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}});
        }
        RequestBody::Field(name) => {
            let schema = input
                .get_field_by_name(name)
                .map(|f| schemas.field(&f, Mode::Input))
                .unwrap_or_default();
            op["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": schema}}});
        }
        RequestBody::None => {}
    }
    let status = success_status(route);
    let error = |what: &str| json!({"description": what, "content": {"application/json": {"schema": {"$ref": format!("{SCHEMAS}{ERROR_SCHEMA}")}}}});
    let content = if route.raw_response() {
        json!({"*/*": {"schema": {"type": "string", "format": "binary"}}})
    } else {
        let response_schema = match &route.response_body {
            Some(name) => output.get_field_by_name(name).map(|f| schemas.field(&f, Mode::Output)).unwrap_or_default(),
            None => schemas.message_ref(&output, Mode::Output),
        };
        json!({"application/json": {"schema": response_schema}})
    };
    let mut success = json!({
        "description": status.canonical_reason().unwrap_or("Success"),
        "content": content,
    });
    let mut headers = Map::new();
    for h in ["X-Request-Id", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"] {
        headers.insert(h.into(), header_ref(h));
    }
    if entity {
        headers.insert("ETag".into(), json!({"description": "The entity's version, quoted (`\"3\"`).", "schema": {"type": "string"}}));
    }
    if status == http::StatusCode::CREATED && crate::conventions::has_location(registry, route) {
        headers.insert("Location".into(), json!({"description": "Where the created entity is read.", "schema": {"type": "string"}}));
    }
    success["headers"] = Value::Object(headers);
    let mut responses = Map::new();
    responses.insert(status.as_str().to_owned(), success);
    if is_read && entity {
        responses.insert("304".into(), json!({"description": "Not modified: `If-None-Match` names the current version."}));
    }
    // One response per status this operation can answer, then the ranges for anything else.
    let has_body = route.body != RequestBody::None;
    let pages = input.get_field_by_name("cursor").is_some() || input.get_field_by_name("as_of").is_some();
    for (code, name, _) in REFUSALS {
        let applies = match code {
            402 => !cfg.auth.x402.facilitator_url.is_empty(),
            404 => !path_vars.is_empty(),
            409 => !is_read,
            410 => pages,
            412 => if_match,
            413 | 415 => has_body,
            422 => !is_read,
            _ => true,
        };
        if applies {
            responses.insert(code.to_string(), json!({"$ref": format!("#/components/responses/{name}")}));
        }
    }
    responses.insert("4XX".into(), error("The request was refused; `error.code` says why."));
    responses.insert("5XX".into(), error("A server-side failure; retry `unavailable`."));
    op["responses"] = Value::Object(responses);
    op
}

/// The non-path, non-body request fields as query parameters; singular messages are flattened
/// into dotted names.
#[allow(clippy::too_many_arguments)]
fn query_parameters(
    registry: &Registry,
    schemas: &mut SchemaGenerator<'_>,
    message: &MessageDescriptor,
    prefix: &str,
    path_vars: &[&str],
    skip_top: Option<&str>,
    depth: usize,
    seen: &mut HashSet<String>,
    out: &mut Vec<Value>,
) {
    if depth >= MAX_QUERY_DEPTH || !seen.insert(message.full_name().to_owned()) {
        return;
    }
    for field in message.fields() {
        let name = format!("{prefix}{}", field.name());
        if path_vars.contains(&name.as_str()) || (depth == 0 && skip_top == Some(field.name())) {
            continue;
        }
        let behaviors = registry.field_behaviors(&field);
        if behaviors.output_only || field.is_map() {
            continue;
        }
        match field.kind() {
            Kind::Message(m) if !is_well_known(&m) => {
                if !field.is_list() {
                    let nested = format!("{name}.");
                    query_parameters(
                        registry,
                        schemas,
                        &m,
                        &nested,
                        path_vars,
                        None,
                        depth + 1,
                        seen,
                        out,
                    );
                }
            }
            Kind::Message(m) if worktruck_proto::json::is_structured_well_known(&m) => {}
            _ => {
                let mut p = json!({
                    "name": name,
                    "in": "query",
                    "required": behaviors.required,
                    "schema": schemas.field(&field, Mode::Input),
                });
                if let Some(text) = registry.field_comment(&field) {
                    p["description"] = json!(text);
                }
                if field.is_list() {
                    p["explode"] = json!(true);
                }
                out.push(p);
            }
        }
    }
    seen.remove(message.full_name());
}

fn field_at(message: &MessageDescriptor, dotted: &str) -> Option<FieldDescriptor> {
    let mut message = message.clone();
    let mut parts = dotted.split('.').peekable();
    while let Some(part) = parts.next() {
        let field = message.get_field_by_name(part)?;
        if parts.peek().is_none() {
            return Some(field);
        }
        message = field.kind().as_message()?.clone();
    }
    None
}

/// The first sentence of a comment, its hard wraps undone.
fn summary(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.find(". ") {
        Some(end) => flat[..=end].to_owned(),
        None => flat,
    }
}

fn error_schema() -> Value {
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    json!({
        "type": "object",
        "description": "The envelope of every failure.",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "enum": codes, "description": "Machine-readable code; the HTTP status follows from it."},
                "message": {"type": "string", "description": "Human-readable detail, naming the offending field where there is one."},
            },
        }},
    })
}
