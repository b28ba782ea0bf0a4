//! OIDC access tokens end to end: a fake issuer (real HTTP), the whole system, REST and MCP.

mod common;

use common::{Stack, error_code};
use jsonwebtoken::Algorithm;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use worktruck_kit::testing::backends;
use worktruck_kit::testing::issuer::{rsa1, sign, spawn_issuer};

fn token(iss: &str, sub: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"iss": iss, "aud": "mcp", "sub": sub, "exp": now + 300, "iat": now, "typ": "Bearer"});
    sign("rsa1", Algorithm::RS256, &rsa1(), &claims)
}

async fn mcp(s: &Stack, token: &str, headers: &[(&str, &str)], body: Value) -> (StatusCode, reqwest::header::HeaderMap) {
    let mut req = s
        .http
        .post(format!("{}/mcp/v1", s.mcp))
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    (resp.status(), resp.headers().clone())
}

#[tokio::test]
async fn a_valid_token_works_on_rest_and_mcp_and_subjects_stay_apart() {
    for backend in backends() {
        let issuer = spawn_issuer().await;
        issuer.publish(&[("rsa1", &rsa1(), Algorithm::RS256)]);
        let iss = issuer.issuer();
        let s = Stack::start_with(backend, |cfg| cfg.auth.oidc.issuer = iss.clone()).await;
        let alice = token(&iss, "alice");
        let bob = token(&iss, "bob");

        // REST.
        let (st, c) = s.call_as(&alice, Method::POST, "/api/v1/contacts", Some(json!({"kind": "person", "display_name": "Alice's"}))).await;
        assert_eq!(st, StatusCode::CREATED, "{backend:?}: {c}");
        let path = format!("/api/v1/contacts/{}", c["id"].as_str().unwrap());
        let (st, _) = s.call_as(&alice, Method::GET, &path, None).await;
        assert_eq!(st, StatusCode::OK);
        let (st, e) = s.call_as(&bob, Method::GET, &path, None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "another subject is another tenant: {e}");
        let (st, t) = s.call_as(&alice, Method::GET, "/api/v1/tenant", None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(t["plan"], "free", "a new subject gets a free tenant");
        let (st, e) = s.call_as(&token("http://127.0.0.1:1/other", "alice"), Method::GET, &path, None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        assert_eq!(error_code(&e), "unauthenticated");

        // MCP: initialize, then the protocol version header is required of JWT callers.
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
        let (st, h) = mcp(&s, &alice, &[("mcp-protocol-version", "2025-06-18")], init).await;
        assert_eq!(st, StatusCode::OK);
        let session = h["mcp-session-id"].to_str().unwrap().to_owned();
        let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
        let (st, _) = mcp(&s, &alice, &[("mcp-session-id", &session)], list.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{backend:?}: JWT callers must send MCP-Protocol-Version");
        let (st, _) = mcp(&s, &alice, &[("mcp-session-id", &session), ("mcp-protocol-version", "2025-06-18")], list.clone()).await;
        assert!(st.is_success(), "{st}");
        let (st, _) = mcp(&s, &bob, &[("mcp-session-id", &session), ("mcp-protocol-version", "2025-06-18")], list).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "a session belongs to the subject that opened it");
        s.stop().await;
    }
}
