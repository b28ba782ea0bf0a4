//! The gateway through its router, against real tonic fakes on 127.0.0.1:0.

mod support;

use axum::body::Body;
use serde_json::json;
use support::*;

fn assert_envelope(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.json);
    assert_eq!(answer.json["error"]["code"], code, "{}", answer.json);
    assert!(
        answer.json["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        answer.json
    );
    assert_eq!(answer.headers["content-type"], "application/json");
    assert!(answer.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn create_then_get_a_contact() {
    let stack = spawn().await;
    let body = r#"{"kind": "person", "display_name": "Ada Lovelace", "given_name": "Ada", "metadata": {"born": 1815}}"#;
    let created = stack.call("POST", "/api/v1/contacts", Some(body)).await;
    assert_eq!(created.status, 201, "{}", created.json);
    assert_eq!(created.headers["content-type"], "application/json");
    let c = &created.json;
    assert_eq!(c["kind"], "person");
    assert_eq!(c["display_name"], "Ada Lovelace");
    assert_eq!(c["given_name"], "Ada");
    assert_eq!(c["metadata"], json!({"born": 1815}));
    assert_eq!(
        c["metadata"].to_string(),
        r#"{"born":1815}"#,
        "Struct integers stay integers"
    );
    assert_eq!(c["version"], json!(1));
    assert_eq!(c["tenant_id"], stack.tenant_id.to_string());
    assert!(
        c.get("middle_name").is_none(),
        "unset optional fields are omitted"
    );
    assert!(!c.to_string().contains("UNSPECIFIED"));
    let keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        &keys[..4],
        ["id", "tenant_id", "kind", "display_name"],
        "proto field order"
    );

    let id = c["id"].as_str().unwrap();
    let got = stack
        .call("GET", &format!("/api/v1/contacts/{id}"), None)
        .await;
    assert_eq!(got.status, 200, "{}", got.json);
    assert_eq!(got.json, created.json);
    assert!(got.json.get("_temporal").is_none());

    let past = stack
        .call(
            "GET",
            &format!("/api/v1/contacts/{id}?as_of=2030-01-01T00:00:00Z"),
            None,
        )
        .await;
    assert_eq!(past.status, 200, "{}", past.json);
    assert_eq!(past.json["_temporal"]["as_of"], "2030-01-01T00:00:00Z");
    assert_eq!(past.json["_temporal"]["captured_by"], "key:test");

    let listed = stack
        .call("GET", "/api/v1/contacts?kind=person&limit=10", None)
        .await;
    assert_eq!(listed.status, 200, "{}", listed.json);
    assert_eq!(listed.json["data"][0]["id"], id);
    assert_eq!(listed.json["has_more"], false);
    let none = stack.call("GET", "/api/v1/contacts?kind=group", None).await;
    assert_eq!(none.json["data"], json!([]));

    let deleted = stack
        .call("DELETE", &format!("/api/v1/contacts/{id}"), None)
        .await;
    assert_eq!(
        (deleted.status, deleted.json.clone()),
        (200, json!({"id": id, "deleted": true}))
    );
    let gone = stack
        .call("GET", &format!("/api/v1/contacts/{id}"), None)
        .await;
    assert_envelope(&gone, 404, "not_found");
}

#[tokio::test]
async fn upstream_receives_a_signed_tenant_context() {
    let stack = spawn().await;
    let mut request = request(
        "POST",
        "/api/v1/contacts",
        Some(GOOD_KEY),
        Some(r#"{"kind":"group","display_name":"G"}"#),
    );
    request
        .headers_mut()
        .insert("x-request-id", "req-123".parse().unwrap());
    let answer = stack.send(request).await;
    assert_eq!(answer.status, 201, "{}", answer.json);
    assert_eq!(answer.headers["x-request-id"], "req-123");

    // The fake verified the token with the gateway's public key before recording it.
    let seen = stack.contacts.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let ctx = &seen[0];
    assert_eq!(ctx.tenant_id, Some(stack.tenant_id));
    assert_eq!(ctx.actor, format!("key:{KEY_ID}"));
    assert_eq!(ctx.scopes, ["contacts:read", "contacts:write"]);
    assert_eq!(ctx.retention_days, 30);
    assert_eq!(stack.contacts.request_ids.lock().unwrap()[0], "req-123", "the request id reaches the service");

    // The key itself was checked under the gateway's own system context.
    let auth = stack.tenants.seen.lock().unwrap().clone();
    assert_eq!(auth.len(), 1);
    assert_eq!(auth[0].actor, "system:gateway");
    assert_eq!(auth[0].tenant_id, None);

    // A generated request id is echoed when the caller sends none.
    let answer = stack.call("GET", "/api/v1/contacts", None).await;
    assert_eq!(answer.headers["x-request-id"].len(), 36);
}

#[tokio::test]
async fn callers_without_a_valid_key_get_401() {
    let stack = spawn().await;
    let cases = [
        request("GET", "/api/v1/contacts", None, None),
        request("GET", "/api/v1/contacts", Some("bsk_test_forged"), None),
        request("GET", "/api/v1/contacts", Some("bsk_live_forged"), None),
        request("GET", "/api/v1/contacts", Some("not-an-api-key"), None),
        http::Request::builder()
            .uri("/api/v1/contacts")
            .header("authorization", "Bearer")
            .body(Body::empty())
            .unwrap(),
        http::Request::builder()
            .uri("/api/v1/contacts")
            .header("authorization", "Basic YTpi")
            .body(Body::empty())
            .unwrap(),
    ];
    for request in cases {
        let answer = stack.send(request).await;
        assert_envelope(&answer, 401, "unauthenticated");
        assert_eq!(answer.headers["www-authenticate"], "Bearer");
        assert!(
            !answer.json.to_string().contains("forged"),
            "the key is never echoed"
        );
    }
    assert!(
        stack.contacts.seen.lock().unwrap().is_empty(),
        "nothing reached the service"
    );
}

#[tokio::test]
async fn malformed_requests_get_400_naming_the_problem() {
    let stack = spawn().await;
    let cases = [
        (
            r#"{"kind": "person", "display_name": "A""#,
            "malformed JSON",
        ),
        (
            r#"{"kind": "person", "display_name": "A", "bogus": 1}"#,
            "unknown field 'bogus'",
        ),
        (
            r#"{"kind": "person", "display_name": "A", "valid_from": "yesterday"}"#,
            "invalid value for field 'valid_from': invalid rfc3339 timestamp",
        ),
        (
            r#"{"kind": "robot", "display_name": "A"}"#,
            "invalid value for field 'kind'",
        ),
        (
            r#"{"kind": "person", "display_name": 5}"#,
            "invalid value for field 'display_name'",
        ),
        ("[1, 2]", "must be a JSON object"),
    ];
    for (body, expected) in cases {
        let answer = stack.call("POST", "/api/v1/contacts", Some(body)).await;
        assert_envelope(&answer, 400, "invalid_argument");
        let message = answer.json["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(expected),
            "{message} should contain {expected}"
        );
    }
    let answer = stack
        .call("GET", "/api/v1/contacts/x?as_of=yesterday", None)
        .await;
    assert_envelope(&answer, 400, "invalid_argument");
    assert!(
        answer.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'as_of'")
    );
    let answer = stack.call("GET", "/api/v1/contacts?bogus=1", None).await;
    assert_envelope(&answer, 400, "invalid_argument");
    let answer = stack
        .call(
            "POST",
            "/api/v1/contacts?kind=person",
            Some(r#"{"display_name":"A"}"#),
        )
        .await;
    assert_envelope(&answer, 400, "invalid_argument");

    let mut text = request(
        "POST",
        "/api/v1/contacts",
        Some(GOOD_KEY),
        Some("kind=person"),
    );
    text.headers_mut().insert(
        "content-type",
        "application/x-www-form-urlencoded".parse().unwrap(),
    );
    assert_envelope(&stack.send(text).await, 415, "unsupported_media_type");

    // Service-side validation comes back through the same envelope.
    let answer = stack.call("POST", "/api/v1/contacts", None).await;
    assert_envelope(&answer, 400, "validation_failed");
    assert!(
        stack.contacts.seen.lock().unwrap().len() == 1,
        "only the last request reached the service"
    );
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let stack = spawn().await;
    let big = format!(
        r#"{{"kind":"person","display_name":"{}"}}"#,
        "x".repeat(BODY_LIMIT + 1)
    );
    let answer = stack.call("POST", "/api/v1/contacts", Some(&big)).await;
    assert_envelope(&answer, 413, "payload_too_large");

    // Without a Content-Length the limit still holds while streaming.
    let chunks: Vec<Result<String, std::io::Error>> = vec![
        Ok(big[..BODY_LIMIT / 2].to_owned()),
        Ok(big[BODY_LIMIT / 2..].to_owned()),
    ];
    let streamed = http::Request::builder()
        .method("POST")
        .uri("/api/v1/contacts")
        .header("authorization", format!("Bearer {GOOD_KEY}"))
        .header("content-type", "application/json")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    assert_envelope(&stack.send(streamed).await, 413, "payload_too_large");
}

#[tokio::test]
async fn unknown_paths_and_methods_get_the_envelope() {
    let stack = spawn().await;
    let answer = stack.call("GET", "/api/v1/nope", None).await;
    assert_envelope(&answer, 404, "not_found");
    let answer = stack.send(request("GET", "/nope", None, None)).await;
    assert_envelope(&answer, 404, "not_found");

    let answer = stack.call("PUT", "/api/v1/contacts", Some("{}")).await;
    assert_envelope(&answer, 405, "method_not_allowed");
    let allow = answer.headers["allow"].to_str().unwrap();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");

    let answer = stack
        .call("GET", "/api/v1/contacts/some-id:frobnicate", None)
        .await;
    assert_eq!(
        answer.status, 404,
        "an unknown verb is just an unknown id here: {}",
        answer.json
    );
}

#[tokio::test]
async fn a_dead_upstream_is_503() {
    let dead = dead_channel().await;
    let stack = spawn_with(move |upstreams, _| upstreams.with(CONTACTS, dead)).await;
    let answer = stack.call("GET", "/api/v1/contacts", None).await;
    assert_envelope(&answer, 503, "unavailable");
    assert!(
        !answer.json.to_string().contains("127.0.0.1"),
        "transport detail is not leaked"
    );

    let dead = dead_channel().await;
    let stack = spawn_with(move |upstreams, _| upstreams.with(TENANTS, dead)).await;
    let answer = stack.call("GET", "/api/v1/contacts", None).await;
    assert_envelope(&answer, 503, "unavailable");
}

#[tokio::test]
async fn upstream_failures_without_detail_are_500_internal() {
    // The fake answers UNIMPLEMENTED with a message; the kit table maps it to `internal`,
    // whose message is never passed on.
    let stack = spawn().await;
    let answer = stack.call("GET", "/api/v1/contacts/x/history", None).await;
    assert_envelope(&answer, 500, "internal");
    assert!(
        !answer.json.to_string().contains("fixture"),
        "{}",
        answer.json
    );
}

#[tokio::test]
async fn a_router_refuses_to_start_without_an_upstream() {
    let signer = worktruck_kit::context::Signer::from_seed([1; 32]);
    let registry = std::sync::Arc::new(worktruck_proto::registry::Registry::embedded().unwrap());
    let only_tenants = worktruck_gateway::Upstreams::new().with(TENANTS, dead_channel().await);
    let err = worktruck_gateway::router(registry, only_tenants, signer, Default::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains(CONTACTS), "{err}");
}
