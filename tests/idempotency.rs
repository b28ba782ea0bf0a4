//! Idempotency keys (issue 15 item 1) end to end: a retried REST create makes one contact and
//! answers the same body each time, another body under the key is a 422, a kept failure is
//! replayed too, MCP's `_meta.idempotency_key` shares the store, and two gateway replicas see
//! the same keys. On SQLite and on PostgreSQL + NATS.

mod common;

use common::{Stack, error_code};
use reqwest::{Method, StatusCode};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation, MetaObject, ProtocolVersion,
    RequestMetaObject,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::ServiceExt;
use serde_json::{Value, json};
use worktruck::{Role, Running};
use worktruck_kit::config::Config;
use worktruck_kit::testing::nats::OwnNats;
use worktruck_kit::testing::{Backend, TestData, backends};

/// POST `body` to `path` at `base` with `key` and an `Idempotency-Key`; (status, replayed, body).
async fn post(http: &reqwest::Client, base: &str, api_key: &str, path: &str, idem: &str, body: Value) -> (StatusCode, bool, Value, Option<String>) {
    let r = http
        .post(format!("{base}{path}"))
        .bearer_auth(api_key)
        .header("idempotency-key", idem)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let replayed = r.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
    let location = r.headers().get("location").map(|v| v.to_str().unwrap().to_owned());
    (status, replayed, r.json().await.unwrap_or(Value::Null), location)
}

async fn count(s: &Stack, name: &str) -> usize {
    let (st, list) = s.call(Method::GET, &format!("/api/v1/contacts?q={name}&limit=100"), None).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    list["data"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_retried_create_makes_one_contact_and_answers_the_same_body() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let ada = json!({"kind": "person", "display_name": "Ada Idempotent"});
        let mut answers = Vec::new();
        for _ in 0..3 {
            answers.push(post(&s.http, &s.base, &s.key, "/api/v1/contacts", "create-ada-1", ada.clone()).await);
        }
        let (st, replayed, first, location) = &answers[0];
        assert_eq!(*st, StatusCode::CREATED, "{backend:?} {first}");
        assert!(!replayed, "the first answer ran the write");
        for (st2, replayed2, body, location2) in &answers[1..] {
            assert_eq!(st2, st);
            assert!(replayed2, "a retry is a replay");
            assert_eq!(body, first, "the same body, byte for byte as JSON");
            assert_eq!(location2, location, "with the same Location");
        }
        assert_eq!(count(&s, "Idempotent").await, 1, "one contact");

        // The same key with another body is refused and writes nothing.
        let (st, _, body, _) = post(&s.http, &s.base, &s.key, "/api/v1/contacts", "create-ada-1", json!({"kind": "person", "display_name": "Ada Idempotent II"})).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(error_code(&body), "idempotency_key_reused");
        // So is the same body on another path.
        let (st, _, _, _) = post(&s.http, &s.base, &s.key, "/api/v1/notes", "create-ada-1", ada.clone()).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(count(&s, "Idempotent").await, 1);

        // A write the service refused is kept too: the retry gets the same 400 without a call.
        let bad = json!({"kind": "person"});
        let (st, replayed, refused, _) = post(&s.http, &s.base, &s.key, "/api/v1/contacts", "bad-1", bad.clone()).await;
        assert_eq!((st, replayed), (StatusCode::BAD_REQUEST, false), "{refused}");
        let (st, replayed, again, _) = post(&s.http, &s.base, &s.key, "/api/v1/contacts", "bad-1", bad).await;
        assert_eq!((st, replayed), (StatusCode::BAD_REQUEST, true));
        assert_eq!(again, refused);

        // Keys are the tenant's: another tenant's same key runs its own write.
        let other = s.new_tenant("other").await;
        let (st, replayed, theirs, _) = post(&s.http, &s.base, &other, "/api/v1/contacts", "create-ada-1", ada.clone()).await;
        assert_eq!((st, replayed), (StatusCode::CREATED, false));
        assert_ne!(theirs["id"], first["id"]);

        // A malformed key is a 400; a key on a read is ignored.
        let (st, _, _, _) = post(&s.http, &s.base, &s.key, "/api/v1/contacts", "with space", ada.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        let r = s.http.get(format!("{}/api/v1/contacts", s.base)).bearer_auth(&s.key).header("idempotency-key", "read-1").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().get("idempotent-replayed").is_none());

        // MCP: `_meta.idempotency_key` on a writing tool keeps and replays the same way.
        let transport = StreamableHttpClientTransport::with_client(
            worktruck_kit::http::client(),
            StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp/v1", s.mcp)).auth_header(s.key.clone()),
        );
        let client = ClientConfig::new(ClientCapabilities::default(), Implementation::new("worktruck-test", "1.0"))
            .with_protocol_version(ProtocolVersion::V_2025_06_18)
            .serve(transport)
            .await
            .expect("initialize");
        let call = |name: &str, key: &str| {
            let mut params = CallToolRequestParams::new(name.to_owned())
                .with_arguments(json!({"kind": "person", "display_name": name_of(key)}).as_object().cloned().unwrap());
            let mut meta = serde_json::Map::new();
            meta.insert("idempotency_key".into(), json!(key));
            params.meta = Some(RequestMetaObject(MetaObject(meta)));
            let client = &client;
            async move { client.call_tool(params).await.unwrap() }
        };
        let first: CallToolResult = call("contacts_create", "mcp-1").await;
        assert_ne!(first.is_error, Some(true), "{first:?}");
        let again = call("contacts_create", "mcp-1").await;
        assert_eq!(again.structured_content, first.structured_content, "{again:?}");
        assert_eq!(again.meta.as_ref().and_then(|m| m.0.get("idempotent_replayed")), Some(&json!(true)));
        assert!(first.meta.as_ref().and_then(|m| m.0.get("idempotent_replayed")).is_none());
        assert_eq!(count(&s, "Grace").await, 1, "one contact from two MCP calls");
        // The REST and MCP doors share keys: REST's key with a tool call is another request.
        let crossed = call("contacts_create", "create-ada-1").await;
        assert_eq!(crossed.is_error, Some(true));
        let text = &crossed.content[0].as_text().unwrap().text;
        assert_eq!(error_code(&serde_json::from_str(text).unwrap()), "idempotency_key_reused");
        client.cancel().await.unwrap();
        s.stop().await;
    }
}

fn name_of(key: &str) -> String {
    if key == "mcp-1" { "Grace Idem".to_owned() } else { format!("Key {key}") }
}

const SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMyYnk=";

#[tokio::test]
async fn two_gateway_replicas_see_the_same_keys() {
    let data = TestData::new(Backend::Sqlite).await;
    let nats = OwnNats::start(&data.path().join("nats")).await;
    let mut cfg = Config { data_dir: data.path(), ..Config::default() };
    cfg.secret_key = Some(SECRET.to_owned().into());
    cfg.nats.url = nats.url();
    cfg.grpc.addr = "127.0.0.1:0".parse().unwrap();
    cfg.admin.addr = "127.0.0.1:0".parse().unwrap();
    cfg.rest.addr = "127.0.0.1:0".parse().unwrap();
    let mut roles: Vec<Running> = Vec::new();
    for def in worktruck::services::TABLE {
        let running = worktruck::start_role(cfg.clone(), Role::Service(def)).await.unwrap();
        cfg.services.insert(def.name.to_owned(), format!("http://{}", running.grpc_addr.unwrap()));
        roles.push(running);
    }
    let out = worktruck::admin::create_tenant(&cfg, "replicas", "enterprise").await.unwrap();
    let key = out["api_key"].as_str().unwrap().to_owned();
    let mut bases = Vec::new();
    for _ in 0..2 {
        let running = worktruck::start_role(cfg.clone(), Role::Gateway).await.unwrap();
        bases.push(format!("http://{}", running.rest_addr.unwrap()));
        roles.push(running);
    }
    let http = worktruck_kit::http::client();
    let body = json!({"kind": "person", "display_name": "Replica Ada"});
    let (st, replayed, first, _) = post(&http, &bases[0], &key, "/api/v1/contacts", "replica-1", body.clone()).await;
    assert_eq!((st, replayed), (StatusCode::CREATED, false), "{first}");
    let (st, replayed, second, _) = post(&http, &bases[1], &key, "/api/v1/contacts", "replica-1", body.clone()).await;
    assert_eq!((st, replayed), (StatusCode::CREATED, true), "the other replica replays: {second}");
    assert_eq!(second, first);
    let (st, _, _, _) = post(&http, &bases[1], &key, "/api/v1/contacts", "replica-1", json!({"kind": "person", "display_name": "Other"})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    let list: Value = http.get(format!("{}/api/v1/contacts?q=Replica", bases[1])).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    for r in roles {
        r.stop().await;
    }
}
