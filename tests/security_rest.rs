//! Who gets in and what a failure looks like, over REST on both backends.

mod common;

use common::{Stack, error_code};
use reqwest::{Method, StatusCode};
use serde_json::json;
use worktruck_kit::testing::backends;

#[tokio::test]
async fn another_tenants_contact_is_a_404_on_every_route() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let c = s.person("Mine").await;
        let id = c["id"].as_str().unwrap();
        let other = s.new_tenant("intruder").await;
        let routes = [
            (Method::GET, format!("/api/v1/contacts/{id}"), None),
            (Method::GET, format!("/api/v1/contacts/{id}?as_of=2026-01-01T00:00:00Z"), None),
            (Method::PATCH, format!("/api/v1/contacts/{id}"), Some(json!({"nickname": "pwned"}))),
            (Method::DELETE, format!("/api/v1/contacts/{id}"), None),
            (Method::GET, format!("/api/v1/contacts/{id}/history"), None),
            (Method::GET, format!("/api/v1/contacts/{id}/diff?from=2026-01-01T00:00:00Z"), None),
            (Method::GET, format!("/api/v1/contacts/{id}/timeline"), None),
        ];
        for (m, path, body) in routes {
            let (st, e) = s.call_as(&other, m.clone(), &path, body).await;
            assert_eq!(st, StatusCode::NOT_FOUND, "{backend:?} {m} {path}: {e}");
            assert_eq!(error_code(&e), "not_found");
        }
        let (_, list) = s.call_as(&other, Method::GET, "/api/v1/contacts", None).await;
        assert!(list["data"].as_array().unwrap().is_empty());
        let (_, mine) = s.call(Method::GET, &format!("/api/v1/contacts/{id}"), None).await;
        assert_eq!(mine["display_name"], "Mine", "the intruder changed nothing");
        s.stop().await;
    }
}

#[tokio::test]
async fn missing_forged_and_revoked_keys_are_401() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let mut forged = s.key.clone();
        forged.replace_range(40.., "AAAAAAAAAAAA");
        for key in ["", "bsk_live_short", forged.as_str(), "not-a-key"] {
            let (st, e) = s.call_as(key, Method::GET, "/api/v1/contacts", None).await;
            assert_eq!(st, StatusCode::UNAUTHORIZED, "{key:?}: {e}");
            assert_eq!(error_code(&e), "unauthenticated");
        }
        let resp = s.http.get(format!("{}/api/v1/contacts", s.base)).send().await.unwrap();
        assert!(resp.headers().get("www-authenticate").is_some());

        // A key made over REST works at once; revoked, it is a 401 at once.
        let (st, k) = s.call(Method::POST, "/api/v1/api-keys", Some(json!({"name": "temp"}))).await;
        assert_eq!(st, StatusCode::CREATED, "{k}");
        let temp = k["key"].as_str().unwrap().to_owned();
        let (st, _) = s.call_as(&temp, Method::GET, "/api/v1/contacts", None).await;
        assert_eq!(st, StatusCode::OK);
        let (st, del) = s.call(Method::DELETE, &format!("/api/v1/api-keys/{}", k["id"].as_str().unwrap()), None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(del["revoked"], true);
        let (st, e) = s.call_as(&temp, Method::GET, "/api/v1/contacts", None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{backend:?}: {e}");

        // Rotation kills the old secret at once.
        let (_, k2) = s.call(Method::POST, "/api/v1/api-keys", Some(json!({"name": "rotating", "scopes": ["contacts:read"]}))).await;
        let (st, rot) = s.call(Method::POST, &format!("/api/v1/api-keys/{}/rotate", k2["id"].as_str().unwrap()), None).await;
        assert_eq!(st, StatusCode::OK, "{rot}");
        let (st, _) = s.call_as(k2["key"].as_str().unwrap(), Method::GET, "/api/v1/contacts", None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        let (st, _) = s.call_as(rot["key"].as_str().unwrap(), Method::GET, "/api/v1/contacts", None).await;
        assert_eq!(st, StatusCode::OK);
        let (_, keys) = s.call(Method::GET, "/api/v1/api-keys", None).await;
        let listed = keys["data"].as_array().unwrap();
        assert_eq!(listed.len(), 3);
        assert!(listed.iter().all(|k| k.get("key").is_none()), "secrets are never listed");
        s.stop().await;
    }
}

#[tokio::test]
async fn every_error_uses_the_envelope() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let raw = |body: &'static str| {
            s.http
                .post(format!("{}/api/v1/contacts", s.base))
                .bearer_auth(&s.key)
                .header("content-type", "application/json")
                .body(body)
                .send()
        };
        for (body, want) in [
            ("{not json", 400),
            ("[1,2]", 400),
            (r#"{"kind":"person","display_name":"x","bogus":1}"#, 400),
            (r#"{"kind":"alien","display_name":"x"}"#, 400),
            (r#"{"kind":"person","display_name":"   "}"#, 400),
            (r#"{"kind":"person","display_name":"x","valid_from":"yesterday"}"#, 400),
            (r#"{"kind":"person","display_name":"x","metadata":[1]}"#, 400),
        ] {
            let resp = raw(body).await.unwrap();
            let st = resp.status().as_u16();
            let v: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(st, want, "{body}: {v}");
            let code = error_code(&v);
            assert!(code == "invalid_argument" || code == "validation_failed", "{body}: {v}");
        }
        let big = format!(r#"{{"kind":"person","display_name":"{}"}}"#, "x".repeat(2 * 1024 * 1024));
        let resp = s.http.post(format!("{}/api/v1/contacts", s.base)).bearer_auth(&s.key)
            .header("content-type", "application/json").body(big).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 413);
        let v: serde_json::Value = resp.json().await.unwrap();
        error_code(&v);

        for (path, want) in [
            ("/api/v1/contacts/not-a-uuid", 400),
            ("/api/v1/contacts?as_of=tuesday", 400),
            ("/api/v1/contacts?unknown_param=1", 400),
            ("/api/v1/nothing-here", 404),
        ] {
            let (st, v) = s.call(Method::GET, path, None).await;
            assert_eq!(st.as_u16(), want, "{path}: {v}");
            error_code(&v);
        }
        let (st, v) = s.call(Method::PUT, "/api/v1/contacts", Some(json!({}))).await;
        assert_eq!(st.as_u16(), 405, "{v}");
        error_code(&v);
        s.stop().await;
    }
}

#[tokio::test]
async fn tenant_and_api_keys_over_rest() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let (st, t) = s.call(Method::GET, "/api/v1/tenant", None).await;
        assert_eq!(st, StatusCode::OK, "{t}");
        assert_eq!(t["plan"], "enterprise", "the first tenant of a self-hosted Worktruck is the operator's");
        assert_eq!(t["retention_days"], 365);
        assert_eq!(t["name"], "default");
        let (st, k) = s
            .call(Method::POST, "/api/v1/api-keys", Some(json!({"name": "ci", "scopes": ["contacts:read"], "expires_at": "2999-01-01T00:00:00Z"})))
            .await;
        assert_eq!(st, StatusCode::CREATED, "{k}");
        assert!(k["key"].as_str().unwrap().starts_with("bsk_live_"));
        assert_eq!(k["environment"], "live");
        let (st, got) = s.call(Method::GET, &format!("/api/v1/api-keys/{}", k["id"].as_str().unwrap()), None).await;
        assert_eq!(st, StatusCode::OK);
        assert!(got.get("key").is_none());
        assert_eq!(got["scopes"], json!(["contacts:read"]));
        let (st, e) = s.call(Method::POST, "/api/v1/api-keys", Some(json!({"name": "x", "scopes": ["root"]}))).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
        s.stop().await;
    }
}

#[tokio::test]
async fn scopes_limit_what_a_key_may_do() {
    let s = Stack::start(worktruck_kit::testing::Backend::Sqlite).await;
    let c = s.person("Scoped").await;
    let (_, k) = s.call(Method::POST, "/api/v1/api-keys", Some(json!({"name": "reader", "scopes": ["contacts:read"]}))).await;
    let reader = k["key"].as_str().unwrap().to_owned();
    let (st, _) = s.call_as(&reader, Method::GET, &format!("/api/v1/contacts/{}", c["id"].as_str().unwrap()), None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, e) = s.call_as(&reader, Method::POST, "/api/v1/contacts", Some(json!({"kind": "person", "display_name": "x"}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{e}");
    assert_eq!(error_code(&e), "insufficient_scope");
    let (st, e) = s.call_as(&reader, Method::GET, "/api/v1/api-keys", None).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "key management needs admin: {e}");
    let (_, k) = s.call(Method::POST, "/api/v1/api-keys", Some(json!({"name": "writer", "scopes": ["contacts:write"]}))).await;
    let writer = k["key"].as_str().unwrap().to_owned();
    let (st, _) = s.call_as(&writer, Method::POST, "/api/v1/contacts", Some(json!({"kind": "person", "display_name": "y"}))).await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, _) = s.call_as(&writer, Method::GET, "/api/v1/contacts", None).await;
    assert_eq!(st, StatusCode::OK, "write includes read");
    s.stop().await;
}

#[tokio::test]
async fn plan_rate_limits_apply_per_tenant() {
    let s = Stack::start(worktruck_kit::testing::Backend::Sqlite).await;
    let free = s.new_tenant("free trial").await;
    worktruck_kit::testing::early_in_a_minute().await;
    let get = |key: String| {
        let req = s.http.get(format!("{}/api/v1/tenant", s.base)).bearer_auth(key);
        async move { req.send().await.unwrap() }
    };
    let mut last_remaining = u32::MAX;
    for _ in 0..30 {
        let r = get(free.clone()).await;
        assert_eq!(r.status(), 200);
        let h = r.headers();
        assert_eq!(h["x-ratelimit-limit"], "30");
        let remaining: u32 = h["x-ratelimit-remaining"].to_str().unwrap().parse().unwrap();
        assert!(remaining < last_remaining);
        last_remaining = remaining;
        assert!(h.contains_key("x-ratelimit-reset"));
    }
    let r = get(free.clone()).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() <= 60);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(error_code(&v), "rate_limited");
    // Another tenant is not slowed.
    let r = get(s.key.clone()).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["x-ratelimit-limit"].to_str().unwrap().parse::<u32>().unwrap() > 30, "the operator's tenant is enterprise");
    s.stop().await;
}
