//! The HTTP conventions every route keeps (issue 15 item 7), end to end over REST: `Location`
//! on 201, `ETag` / `If-None-Match` / `If-Match`, `HEAD` and `OPTIONS`, `Allow` on 405,
//! compression, CORS off by default and on when configured, and `_temporal` naming all four
//! axes. On SQLite and on PostgreSQL + NATS.

mod common;

use common::{Stack, error_code, moment, ts};
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use worktruck_kit::testing::backends;

/// Sends `method path` with the stack's key, `headers` and an optional JSON body; returns the
/// status, the answer's headers and its body bytes.
async fn send(s: &Stack, method: Method, path: &str, headers: &[(&str, &str)], body: Option<Value>) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = s.http.request(method, format!("{}{path}", s.base)).bearer_auth(&s.key);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("send");
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, resp.bytes().await.unwrap().to_vec())
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

#[tokio::test]
async fn created_entities_have_a_location_and_versions_are_entity_tags() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let (st, h, body) = send(&s, Method::POST, "/api/v1/contacts", &[], Some(json!({"kind": "person", "display_name": "Ada"}))).await;
        assert_eq!(st, StatusCode::CREATED, "{backend:?}");
        let created = json_of(&body);
        let id = created["id"].as_str().unwrap();
        assert_eq!(h[header::LOCATION], format!("/api/v1/contacts/{id}").as_str());
        assert_eq!(h[header::ETAG], "\"1\"");

        // The Location reads back, with the same tag; a conditional read of it is a 304.
        let location = h[header::LOCATION].to_str().unwrap().to_owned();
        let (st, h, _) = send(&s, Method::GET, &location, &[], None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(h[header::ETAG], "\"1\"");
        let (st, h, body) = send(&s, Method::GET, &location, &[("if-none-match", "\"1\"")], None).await;
        assert_eq!(st, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty(), "a 304 has no body");
        assert_eq!(h[header::ETAG], "\"1\"");
        let (st, _, _) = send(&s, Method::GET, &location, &[("if-none-match", "\"7\", \"8\"")], None).await;
        assert_eq!(st, StatusCode::OK, "another tag reads the entity");

        // If-Match guards a write: the right tag writes and answers the next one.
        let patch = json!({"family_name": "Lovelace"});
        let (st, h, body) = send(&s, Method::PATCH, &location, &[("if-match", "\"1\"")], Some(patch.clone())).await;
        assert_eq!(st, StatusCode::OK, "{}", json_of(&body));
        assert_eq!(h[header::ETAG], "\"2\"");
        assert!(h.get(header::LOCATION).is_none(), "only a 201 has a Location");
        // A stale tag is a 412 and changes nothing.
        let (st, _, body) = send(&s, Method::PATCH, &location, &[("if-match", "\"1\"")], Some(json!({"family_name": "Byron"}))).await;
        assert_eq!(st, StatusCode::PRECONDITION_FAILED);
        assert_eq!(error_code(&json_of(&body)), "precondition_failed");
        let (_, now) = s.call(Method::GET, &location, None).await;
        assert_eq!((now["family_name"].as_str(), now["version"].as_i64()), (Some("Lovelace"), Some(2)));
        // The body's expected_version keeps its own answer, 409.
        let (st, _, body) = send(&s, Method::PATCH, &location, &[], Some(json!({"family_name": "Byron", "expected_version": 1}))).await;
        assert_eq!(st, StatusCode::CONFLICT);
        assert_eq!(error_code(&json_of(&body)), "conflict");
        // If-Match and a body that disagree, a tag not of ours, and a route without a version
        // to compare are 400s: a precondition is never ignored.
        for (headers, body, route_method) in [
            (vec![("if-match", "\"2\"")], json!({"family_name": "B", "expected_version": 1}), Method::PATCH),
            (vec![("if-match", "W/\"2\"")], json!({"family_name": "B"}), Method::PATCH),
            (vec![("if-match", "2")], json!({"family_name": "B"}), Method::PATCH),
            (vec![("if-match", "\"2\"")], json!(null), Method::DELETE),
        ] {
            let body = (!body.is_null()).then_some(body);
            let (st, _, answer) = send(&s, route_method.clone(), &location, &headers, body).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{route_method} {headers:?}: {}", json_of(&answer));
        }
        let (_, now) = s.call(Method::GET, &location, None).await;
        assert_eq!((now["family_name"].as_str(), now["version"].as_i64()), (Some("Lovelace"), Some(2)));
        // `*` asks only that the entity exists.
        let (st, h, _) = send(&s, Method::PATCH, &location, &[("if-match", "*")], Some(json!({"given_name": "Ada"}))).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(h[header::ETAG], "\"3\"");

        // A list carries no tag of an entity.
        let (st, h, _) = send(&s, Method::GET, "/api/v1/contacts", &[], None).await;
        assert_eq!(st, StatusCode::OK);
        assert!(h.get(header::ETAG).is_none());

        // _temporal names all four axes; an open end is null, not missing.
        let t = moment().await;
        let (st, old) = s.call(Method::GET, &format!("{location}?as_of={}", ts(t)), None).await;
        assert_eq!(st, StatusCode::OK, "{old}");
        let temporal = old["_temporal"].as_object().unwrap();
        for axis in ["sys_from", "sys_to", "valid_from", "valid_to"] {
            assert!(temporal.contains_key(axis), "_temporal.{axis} in {old}");
        }
        assert!(temporal["sys_to"].is_null() && temporal["valid_to"].is_null(), "{old}");
        assert!(temporal["sys_from"].is_string());
        s.stop().await;
    }
}

#[tokio::test]
async fn head_options_allow_and_compression() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let id = s.person("Ada").await["id"].as_str().unwrap().to_owned();

        let (st, h, body) = send(&s, Method::HEAD, &format!("/api/v1/contacts/{id}"), &[], None).await;
        assert_eq!(st, StatusCode::OK, "{backend:?}");
        assert!(body.is_empty());
        assert_eq!(h[header::ETAG], "\"1\"");

        let (st, h, _) = send(&s, Method::OPTIONS, "/api/v1/contacts", &[], None).await;
        assert_eq!(st, StatusCode::NO_CONTENT);
        assert_eq!(h[header::ALLOW], "GET, HEAD, POST, OPTIONS");
        let (st, h, body) = send(&s, Method::PUT, "/api/v1/contacts", &[], Some(json!({}))).await;
        assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(error_code(&json_of(&body)), "method_not_allowed");
        assert_eq!(h[header::ALLOW], "GET, HEAD, POST, OPTIONS");
        let (_, h, _) = send(&s, Method::OPTIONS, &format!("/api/v1/contacts/{id}"), &[], None).await;
        let allow = h[header::ALLOW].to_str().unwrap();
        for m in ["GET", "HEAD", "PATCH", "DELETE", "OPTIONS"] {
            assert!(allow.contains(m), "{m} in {allow}");
        }

        // Compressed when asked (gzip's magic bytes), plain otherwise.
        for _ in 0..20 {
            s.person("Someone with a long enough name to make the page worth compressing").await;
        }
        let (st, h, body) = send(&s, Method::GET, "/api/v1/contacts?limit=50", &[("accept-encoding", "gzip")], None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(h[header::CONTENT_ENCODING], "gzip");
        assert_eq!(&body[..2], &[0x1f, 0x8b]);
        let (_, h, body) = send(&s, Method::GET, "/api/v1/contacts?limit=50", &[("accept-encoding", "br")], None).await;
        assert_eq!(h[header::CONTENT_ENCODING], "br");
        assert!(serde_json::from_slice::<Value>(&body).is_err(), "brotli is not JSON");
        let (_, h, body) = send(&s, Method::GET, "/api/v1/contacts?limit=50", &[("accept-encoding", "identity")], None).await;
        assert!(h.get(header::CONTENT_ENCODING).is_none());
        assert_eq!(json_of(&body)["data"].as_array().unwrap().len(), 21);

        // CORS is off by default: no browser is told it may read the answer.
        let (_, h, _) = send(&s, Method::GET, "/api/v1/contacts", &[("origin", "https://app.example.com")], None).await;
        assert!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        s.stop().await;
    }
}

#[tokio::test]
async fn cors_answers_the_configured_origins_only() {
    let backend = backends()[0];
    let s = Stack::start_with(backend, |cfg| cfg.rest.cors_allowed_origins = vec!["https://app.example.com".into()]).await;
    // A preflight is answered before authentication (browsers send it without credentials).
    let preflight = s
        .http
        .request(Method::OPTIONS, format!("{}/api/v1/contacts", s.base))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "PATCH")
        .header("access-control-request-headers", "authorization, if-match")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let h = preflight.headers();
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
    assert!(h[header::ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap().contains("PATCH"));
    assert!(h[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap().contains("if-match"));
    assert!(h.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none(), "no cookies");

    let (st, h, _) = send(&s, Method::POST, "/api/v1/contacts", &[("origin", "https://app.example.com")], Some(json!({"kind": "person", "display_name": "Ada"}))).await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
    let exposed = h[header::ACCESS_CONTROL_EXPOSE_HEADERS].to_str().unwrap();
    assert!(exposed.contains("etag") && exposed.contains("location"), "{exposed}");

    let (_, h, _) = send(&s, Method::GET, "/api/v1/contacts", &[("origin", "https://evil.example.com")], None).await;
    assert!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(), "an origin not listed is not allowed");
    s.stop().await;
}
