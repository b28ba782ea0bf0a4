//! HTTP request → request message, and response message → JSON, for any route (spike §7):
//! the body per the rule's `body`, query parameters by proto field name, path variables last
//! (they override both), and `response_body` honoured.

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value};
use worktruck_kit::ErrorCode;
use worktruck_proto::json::{self, JsonError};
use worktruck_proto::mask::FieldMask;
use worktruck_proto::registry::{HttpMethod, RequestBody, Route};

use crate::error::ApiError;

/// The pieces of an HTTP request that make up a request message.
pub(crate) struct HttpInput<'a> {
    /// `(dotted field path, decoded value)` per path variable.
    pub path_vars: Vec<(&'a str, String)>,
    /// Query parameters in order; a name may repeat.
    pub query: Vec<(String, String)>,
    /// The raw body.
    pub body: &'a [u8],
    /// The `Content-Type` header, if any.
    pub content_type: Option<&'a str>,
}

/// Builds the request message of `route` from an HTTP request.
pub(crate) fn request_message(
    route: &Route,
    input: HttpInput<'_>,
) -> Result<DynamicMessage, ApiError> {
    let desc = route.rpc.input();
    if let Some(name) = route.raw_body_field() {
        use base64::Engine as _;
        let mut object = Map::new();
        let content_type = input.content_type.unwrap_or("application/octet-stream");
        object.insert(
            name.to_owned(),
            serde_json::json!({
                "content_type": content_type,
                "data": base64::engine::general_purpose::STANDARD.encode(input.body),
            }),
        );
        apply_query(&desc, &mut object, &input.query, Some(name))?;
        for (path, value) in &input.path_vars {
            let fields = resolve(&desc, path)
                .ok_or_else(|| ApiError::internal(format!("path field {path} vanished")))?;
            let last = fields.last().expect("a path has at least one field");
            let value = scalar(last, value).map_err(|reason| {
                ApiError::invalid(format!("invalid value for path parameter '{path}': {reason}"))
            })?;
            set(&mut object, path, value, false);
        }
        return json::from_value(&desc, Value::Object(object)).map_err(|e| ApiError::invalid(e.to_string()));
    }
    let body_empty = input.body.iter().all(u8::is_ascii_whitespace);
    if !body_empty && !input.content_type.is_none_or(is_json) {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "Content-Type must be application/json",
        ));
    }
    let mut object = match &route.body {
        RequestBody::Whole => {
            if let Some((name, _)) = input.query.first() {
                return Err(ApiError::invalid(format!(
                    "unexpected query parameter '{name}': this endpoint takes every field in the JSON body"
                )));
            }
            if body_empty {
                Map::new()
            } else {
                json::parse_object(input.body).map_err(body_error)?
            }
        }
        RequestBody::Field(name) => {
            let mut object = Map::new();
            if !body_empty {
                let value = json::parse(input.body).map_err(body_error)?;
                object.insert(name.clone(), value);
            }
            object
        }
        RequestBody::None => {
            if !body_empty {
                return Err(ApiError::invalid("this endpoint takes no request body"));
            }
            Map::new()
        }
    };
    let body_field = match &route.body {
        RequestBody::Field(name) => Some(name.as_str()),
        _ => None,
    };
    apply_query(&desc, &mut object, &input.query, body_field)?;
    for (path, value) in &input.path_vars {
        let fields = resolve(&desc, path)
            .ok_or_else(|| ApiError::internal(format!("path field {path} vanished")))?;
        let last = fields.last().expect("a path has at least one field");
        let value = scalar(last, value).map_err(|reason| {
            ApiError::invalid(format!(
                "invalid value for path parameter '{path}': {reason}"
            ))
        })?;
        set(&mut object, path, value, false);
    }
    json::from_value(&desc, Value::Object(object)).map_err(|e| ApiError::invalid(e.to_string()))
}

/// What a route's field mask (`fields=id,display_name,channels.value`) is checked against, when
/// it takes one: GET routes answering JSON, except those whose request has a `fields` of its
/// own (a timeline's "only these fields").
pub(crate) fn mask_target(route: &Route) -> Option<MessageDescriptor> {
    if route.method != HttpMethod::Get || route.raw_response() || crate::raw::rule(route).is_some() || !FieldMask::applies(&route.rpc.input()) {
        return None;
    }
    match &route.response_body {
        None => Some(route.rpc.output()),
        Some(field) => match route.rpc.output().get_field_by_name(field).map(|f| f.kind()) {
            Some(Kind::Message(m)) => Some(m),
            _ => None,
        },
    }
}

/// Takes the field mask (`fields`, repeatable, comma-separated) out of a route's query,
/// checked against what it answers: an unknown field is a 400.
pub(crate) fn take_mask(route: &Route, query: &mut Vec<(String, String)>) -> Result<Option<FieldMask>, ApiError> {
    let Some(output) = mask_target(route) else { return Ok(None) };
    let (fields, rest): (Vec<_>, Vec<_>) = std::mem::take(query).into_iter().partition(|(k, _)| k == "fields");
    *query = rest;
    FieldMask::parse(&output, fields.iter().map(|(_, v)| v.as_str())).map_err(ApiError::invalid)
}

/// Renders a response message (or its `response_body` field) as JSON.
pub(crate) fn response_json(route: &Route, bytes: &[u8]) -> Result<Value, ApiError> {
    let message = DynamicMessage::decode(route.rpc.output(), bytes).map_err(|e| {
        ApiError::internal(format!(
            "undecodable response from {}: {e}",
            route.grpc_path
        ))
    })?;
    let value = json::to_value(&message).map_err(ApiError::internal)?;
    Ok(match &route.response_body {
        Some(field) => value.get(field).cloned().unwrap_or(Value::Null),
        None => value,
    })
}

/// A `google.api.HttpBody` answer as itself: its bytes, its content type, the headers of its
/// `BodyHeaders` extension, and `X-Content-Type-Options: nosniff` always (a browser must not
/// run an upload as something else).
pub(crate) fn raw_response(status: http::StatusCode, bytes: &[u8]) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse as _;
    use prost::Message as _;
    let body = worktruck_proto::google::api::HttpBody::decode(bytes)
        .map_err(|e| ApiError::internal(format!("undecodable raw body: {e}")))?;
    let content_type = http::HeaderValue::from_str(&body.content_type)
        .unwrap_or_else(|_| http::HeaderValue::from_static("application/octet-stream"));
    let mut response = (status, body.data).into_response();
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, content_type);
    headers.insert(http::header::X_CONTENT_TYPE_OPTIONS, http::HeaderValue::from_static("nosniff"));
    for ext in &body.extensions {
        if ext.type_url.ends_with("/worktruck.common.v1.BodyHeaders")
            && let Ok(h) = worktruck_proto::common::v1::BodyHeaders::decode(ext.value.as_slice())
            && let Ok(v) = http::HeaderValue::from_str(&h.content_disposition)
            && !h.content_disposition.is_empty()
        {
            headers.insert(http::header::CONTENT_DISPOSITION, v);
        }
    }
    Ok(response)
}

fn body_error(e: JsonError) -> ApiError {
    match e {
        JsonError::NotAnObject => ApiError::invalid("request body must be a JSON object"),
        other => ApiError::invalid(other.to_string()),
    }
}

fn is_json(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    media.eq_ignore_ascii_case("application/json")
        || media
            .to_ascii_lowercase()
            .strip_prefix("application/")
            .is_some_and(|s| s.ends_with("+json"))
}

fn apply_query(
    desc: &MessageDescriptor,
    object: &mut Map<String, Value>,
    query: &[(String, String)],
    body_field: Option<&str>,
) -> Result<(), ApiError> {
    for (name, raw) in query {
        let unknown = || ApiError::invalid(format!("unknown query parameter '{name}'"));
        let fields = resolve(desc, name).ok_or_else(unknown)?;
        if body_field.is_some_and(|b| fields[0].name() == b) {
            return Err(ApiError::invalid(format!(
                "query parameter '{name}' is part of the request body"
            )));
        }
        let last = fields.last().expect("a path has at least one field");
        if last.is_map() || !query_settable(last) {
            return Err(ApiError::invalid(format!(
                "field '{name}' cannot be set from a query parameter"
            )));
        }
        let value = scalar(last, raw).map_err(|reason| {
            ApiError::invalid(format!(
                "invalid value for query parameter '{name}': {reason}"
            ))
        })?;
        if !set(object, name, value, last.is_list()) {
            return Err(ApiError::invalid(format!(
                "query parameter '{name}' given more than once"
            )));
        }
    }
    Ok(())
}

/// Follows a dotted proto-name path through singular plain messages.
fn resolve(desc: &MessageDescriptor, dotted: &str) -> Option<Vec<FieldDescriptor>> {
    let mut message = desc.clone();
    let mut out = Vec::new();
    let parts: Vec<&str> = dotted.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let field = message.get_field_by_name(part)?;
        if i + 1 < parts.len() {
            match field.kind() {
                Kind::Message(m)
                    if !field.is_list() && !field.is_map() && !json::is_well_known(&m) =>
                {
                    message = m
                }
                _ => return None,
            }
        }
        out.push(field);
    }
    Some(out)
}

/// Scalars, enums and the well-known types whose JSON form is a string or a scalar.
fn query_settable(field: &FieldDescriptor) -> bool {
    match field.kind() {
        Kind::Message(m) => {
            json::is_well_known(&m) && !json::is_structured_well_known(&m)
        }
        _ => true,
    }
}

/// A path or query string as the JSON value prost-reflect accepts for the field: strings pass
/// as they are (quoted numbers, enum names and RFC 3339 are all accepted), booleans are parsed.
fn scalar(field: &FieldDescriptor, raw: &str) -> Result<Value, String> {
    let is_bool = match field.kind() {
        Kind::Bool => true,
        Kind::Message(m) => m.full_name() == "google.protobuf.BoolValue",
        _ => false,
    };
    if is_bool {
        return match raw {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err("expected true or false".to_owned()),
        };
    }
    Ok(Value::String(raw.to_owned()))
}

/// Sets `value` at a dotted path, creating objects on the way. A repeated leaf collects values;
/// a singular one is replaced when `override` paths set it, else refused (returns false) when
/// already set by an earlier query parameter.
fn set(object: &mut Map<String, Value>, dotted: &str, value: Value, repeated: bool) -> bool {
    let (head, rest) = match dotted.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (dotted, None),
    };
    match rest {
        Some(rest) => {
            let child = object
                .entry(head.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            set(
                child.as_object_mut().expect("made an object"),
                rest,
                value,
                repeated,
            )
        }
        None if repeated => {
            match object
                .entry(head.to_owned())
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                Value::Array(items) => items.push(value),
                other => *other = Value::Array(vec![value]),
            }
            true
        }
        None => object.insert(head.to_owned(), value).is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;
    use worktruck_proto::registry::Registry;

    fn registry() -> &'static Registry {
        static R: OnceLock<Registry> = OnceLock::new();
        R.get_or_init(|| Registry::embedded().unwrap())
    }

    fn route(rpc: &str) -> &'static Route {
        registry()
            .routes()
            .iter()
            .find(|r| r.rpc.name() == rpc)
            .unwrap()
    }

    fn input<'a>(
        path: Vec<(&'a str, String)>,
        query: &[(&str, &str)],
        body: &'a [u8],
    ) -> HttpInput<'a> {
        HttpInput {
            path_vars: path,
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body,
            content_type: Some("application/json"),
        }
    }

    #[test]
    fn query_parameters_fill_get_requests() {
        let msg = request_message(
            route("ListContacts"),
            input(
                vec![],
                &[
                    ("kind", "person"),
                    ("limit", "3"),
                    ("as_of", "2025-01-01T00:00:00Z"),
                ],
                b"",
            ),
        )
        .unwrap();
        assert_eq!(
            msg.get_field_by_name("kind").unwrap().as_enum_number(),
            Some(1)
        );
        assert_eq!(msg.get_field_by_name("limit").unwrap().as_i32(), Some(3));
        assert!(msg.has_field_by_name("as_of"));

        let timeline = request_message(
            route("GetContactTimeline"),
            input(
                vec![("id", "c1".into())],
                &[("fields", "a"), ("fields", "b"), ("id", "ignored")],
                b"",
            ),
        )
        .unwrap();
        assert_eq!(
            timeline
                .get_field_by_name("fields")
                .unwrap()
                .as_list()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            timeline.get_field_by_name("id").unwrap().as_str(),
            Some("c1"),
            "path overrides query"
        );
    }

    #[test]
    fn bad_query_parameters_are_400s_naming_them() {
        let list = route("ListContacts");
        let err = |q: &[(&str, &str)]| request_message(list, input(vec![], q, b"")).unwrap_err();
        assert_eq!(
            err(&[("bogus", "1")]).message(),
            "unknown query parameter 'bogus'"
        );
        assert!(err(&[("limit", "x")]).message().contains("'limit'"));
        assert!(
            err(&[("limit", "1"), ("limit", "2")])
                .message()
                .contains("more than once")
        );
        assert!(
            err(&[("as_of", "yesterday")])
                .message()
                .contains("invalid rfc3339 timestamp")
        );
        let create = route("CreateContact");
        let e = request_message(create, input(vec![], &[("kind", "person")], b"{}")).unwrap_err();
        assert!(e.message().contains("unexpected query parameter 'kind'"));
    }

    #[test]
    fn bodies_must_be_json_objects() {
        let create = route("CreateContact");
        let ok = request_message(create, input(vec![], &[], b"")).unwrap();
        assert!(
            !ok.has_field_by_name("display_name"),
            "an empty body is {{}}"
        );
        let dup = br#"{"display_name": "a", "display_name": "b"}"#;
        for bad in [&b"[1]"[..], b"\"x\"", b"{", b"null", dup, b"{\"display_name\": \"\xff\"}"] {
            let e = request_message(create, input(vec![], &[], bad)).unwrap_err();
            assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
        }
        let mut text = input(vec![], &[], b"{}");
        text.content_type = Some("text/plain");
        assert!(
            request_message(create, text)
                .unwrap_err()
                .message()
                .contains("Content-Type")
        );
        let mut merge = input(vec![], &[], b"{}");
        merge.content_type = Some("application/merge-patch+json; charset=utf-8");
        assert!(request_message(create, merge).is_ok());
        let get = route("GetContact");
        assert!(request_message(get, input(vec![("id", "x".into())], &[], b"{}")).is_err());
    }
}
