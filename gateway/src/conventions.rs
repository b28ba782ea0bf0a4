//! The HTTP conventions every route keeps, whatever its domain: `ETag` (the entity's version)
//! on answers that carry one, `If-None-Match` → 304 on reads, `If-Match` → the request's
//! `expected_version` on writes (412 when it does not hold), `Location` on 201, and `Allow` on
//! `OPTIONS` and 405. All generic, from the descriptors and the answer's JSON.

use http::{HeaderMap, HeaderValue, StatusCode, header};
use prost_reflect::{DynamicMessage, ReflectMessage, Value as PValue};
use serde_json::Value;
use worktruck_kit::ErrorCode;
use worktruck_proto::registry::{HttpMethod, Registry, Route, Segment};

use crate::error::ApiError;

/// The request field `If-Match` stands for.
const EXPECTED_VERSION: &str = "expected_version";

/// The strong entity tag of an answer: `"<version>"` when it is one entity (an object with a
/// string `id` and an integer `version`), else none. Lists and other answers carry no tag.
pub(crate) fn etag(json: &Value) -> Option<HeaderValue> {
    let object = json.as_object()?;
    object.get("id")?.as_str()?;
    let version = object.get("version")?.as_i64()?;
    HeaderValue::from_str(&format!("\"{version}\"")).ok()
}

/// Whether `If-None-Match` names `tag` (or is `*`), so that a read answers 304.
pub(crate) fn none_match(headers: &HeaderMap, tag: &HeaderValue) -> bool {
    let Some(tag) = tag.to_str().ok() else { return false };
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        // If-None-Match compares weakly (RFC 9110 §13.1.2).
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == tag)
}

/// What a write's `If-Match` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IfMatch {
    /// No header, or `*` (any current version: the service answers 404 when there is none).
    Absent,
    /// This version, and no other.
    Version(i64),
}

/// Reads `If-Match`: one strong tag of ours (`"3"`) or `*`; anything else is a 400, since a
/// precondition the gateway cannot evaluate must not be ignored.
pub(crate) fn if_match(headers: &HeaderMap) -> Result<IfMatch, ApiError> {
    let values: Vec<&HeaderValue> = headers.get_all(header::IF_MATCH).iter().collect();
    let Some(first) = values.first() else { return Ok(IfMatch::Absent) };
    let text = first.to_str().unwrap_or_default().trim();
    if values.len() > 1 || text.contains(',') {
        return Err(ApiError::invalid("If-Match must name one entity tag: an entity has one version at a time"));
    }
    if text == "*" {
        return Ok(IfMatch::Absent);
    }
    if text.starts_with("W/") {
        return Err(ApiError::invalid("If-Match compares strongly: send the ETag as given (\"3\"), not a weak tag"));
    }
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .and_then(|t| t.parse::<i64>().ok())
        .filter(|v| *v > 0)
        .map(IfMatch::Version)
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "If-Match must be an ETag this API gave (a quoted version such as \"3\"), got {}",
                worktruck_proto::text::quote(text)
            ))
        })
}

/// Puts an `If-Match` version into the request's `expected_version`. A route whose request has
/// no such field cannot honour the header (400); a body that names another version is a 400.
pub(crate) fn apply_if_match(route: &Route, message: &mut DynamicMessage, wanted: IfMatch) -> Result<(), ApiError> {
    let IfMatch::Version(version) = wanted else { return Ok(()) };
    let Some(field) = message.descriptor().get_field_by_name(EXPECTED_VERSION) else {
        return Err(ApiError::invalid(format!(
            "If-Match is not supported on {} {}: it takes no expected version",
            route.method, route.path
        )));
    };
    if message.has_field(&field) {
        let given = message.get_field(&field).as_i64();
        if given != Some(version) {
            return Err(ApiError::invalid(format!(
                "If-Match says version {version} but expected_version says {}",
                given.unwrap_or_default()
            )));
        }
    }
    message.set_field(&field, PValue::I64(version));
    Ok(())
}

/// The answer to a write whose `If-Match` did not hold: the service's stale-version conflict
/// becomes 412; every other failure stays what it was.
pub(crate) fn precondition(error: ApiError, wanted: IfMatch, kit: &worktruck_kit::Error) -> ApiError {
    if wanted != IfMatch::Absent && kit.is_stale_version() {
        return ApiError::new(ErrorCode::PreconditionFailed, kit.message.clone());
    }
    error
}

/// The shape of a path for matching one template against another: literals, `*` for variables.
fn shape(route: &Route) -> Vec<String> {
    route
        .path
        .segments()
        .iter()
        .map(|s| match s {
            Segment::Literal(l) => l.to_string(),
            Segment::Variable(_) => "*".to_owned(),
        })
        .collect()
}

/// Whether `create` (a POST answering 201) has a readable child: a GET route at its path plus
/// one variable, which the created entity's `id` fills (`POST /contacts` → `GET /contacts/{id}`).
pub(crate) fn has_location(registry: &Registry, create: &Route) -> bool {
    if create.path.verb().is_some() {
        return false;
    }
    let mut wanted = shape(create);
    wanted.push("*".to_owned());
    registry
        .routes()
        .iter()
        .any(|r| r.method == HttpMethod::Get && r.path.verb().is_none() && shape(r) == wanted)
}

/// `Location` of a created entity: the request's path and the answer's `id`.
pub(crate) fn location(request_path: &str, json: &Value) -> Option<HeaderValue> {
    let id = json.get("id")?.as_str()?;
    // Ids are UUIDs or identifiers of ours; anything else is not put in a header.
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return None;
    }
    HeaderValue::from_str(&format!("{}/{id}", request_path.trim_end_matches('/'))).ok()
}

/// The `Allow` value of a path served for `methods`: `HEAD` beside `GET`, and `OPTIONS`.
pub(crate) fn allow(methods: &[HttpMethod]) -> HeaderValue {
    let mut names: Vec<&str> = Vec::new();
    for method in methods {
        names.push(match method {
            HttpMethod::Get => "GET",
            HttpMethod::Put => "PUT",
            HttpMethod::Post => "POST",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Patch => "PATCH",
        });
        if *method == HttpMethod::Get {
            names.push("HEAD");
        }
    }
    names.push("OPTIONS");
    HeaderValue::from_str(&names.join(", ")).expect("method names are header-safe")
}

/// A 304 for a read whose `If-None-Match` holds: no body, the tag and the other headers kept.
pub(crate) fn not_modified(tag: HeaderValue) -> axum::response::Response {
    let mut response = axum::response::Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    response.headers_mut().insert(header::ETAG, tag);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(name: header::HeaderName, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn an_entity_has_a_tag_and_a_list_has_none() {
        assert_eq!(etag(&json!({"id": "a", "version": 3})).unwrap(), "\"3\"");
        assert!(etag(&json!({"data": [], "version": 3})).is_none());
        assert!(etag(&json!({"id": "a"})).is_none());
    }

    #[test]
    fn if_match_takes_one_strong_tag_of_ours() {
        assert_eq!(if_match(&HeaderMap::new()).unwrap(), IfMatch::Absent);
        assert_eq!(if_match(&headers(header::IF_MATCH, &["*"])).unwrap(), IfMatch::Absent);
        assert_eq!(if_match(&headers(header::IF_MATCH, &["\"7\""])).unwrap(), IfMatch::Version(7));
        for bad in ["7", "W/\"7\"", "\"x\"", "\"0\"", "\"1\", \"2\""] {
            let e = if_match(&headers(header::IF_MATCH, &[bad])).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
        assert!(if_match(&headers(header::IF_MATCH, &["\"1\"", "\"2\""])).is_err());
    }

    #[test]
    fn if_none_match_compares_weakly_and_takes_lists() {
        let tag = HeaderValue::from_static("\"4\"");
        assert!(none_match(&headers(header::IF_NONE_MATCH, &["\"3\", W/\"4\""]), &tag));
        assert!(none_match(&headers(header::IF_NONE_MATCH, &["*"]), &tag));
        assert!(!none_match(&headers(header::IF_NONE_MATCH, &["\"3\""]), &tag));
        assert!(!none_match(&HeaderMap::new(), &tag));
    }

    #[test]
    fn location_is_the_path_and_the_id() {
        assert_eq!(location("/api/v1/contacts", &json!({"id": "ab-1"})).unwrap(), "/api/v1/contacts/ab-1");
        assert!(location("/api/v1/contacts", &json!({"id": "a/../b"})).is_none());
        assert!(location("/api/v1/contacts", &json!({"name": "x"})).is_none());
    }

    #[test]
    fn allow_lists_head_beside_get() {
        assert_eq!(allow(&[HttpMethod::Get, HttpMethod::Post]), "GET, HEAD, POST, OPTIONS");
    }
}
