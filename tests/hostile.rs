//! The hostile-input suite: what a hostile caller sends (NUL and control characters, documents
//! nested 33, 34, 50 and 100,000 deep, 6,812-character ids, huge headers, duplicate keys,
//! invalid UTF-8, JSON-RPC batches, two `Authorization` headers, a timezone on Mars) over REST,
//! MCP and gRPC. Each probe must be a 4xx with the `{"error":{"code","message"}}` envelope (or,
//! on gRPC, an `INVALID_ARGUMENT`), never a 500, nothing it refused may be stored, and no
//! handler may panic.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Stack, error_code};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use worktruck_kit::testing::{Backend, backends};

/// The deepest document any surface accepts (`worktruck_proto::text::MAX_DEPTH`): the body's
/// object is one level, `metadata` the next.
const MAX_DEPTH: usize = 32;
/// The id length the review found to break error headers.
const HUGE: usize = 6812;

/// `{"k": {"k": … "leaf" …}}`, `depth` objects deep.
fn nested(depth: usize) -> Value {
    let mut v = json!("leaf");
    for _ in 0..depth {
        v = json!({ "k": v });
    }
    v
}

/// Counts panics anywhere in the process (handlers run on tokio's threads), so a test can
/// assert that none of its probes made one.
fn panics() -> &'static AtomicUsize {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // A failing assertion of a test is not a handler's panic.
            if !info.location().is_some_and(|l| l.file().starts_with("tests/")) {
                COUNT.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
    &COUNT
}

/// Asserts a refusal: the given 4xx and the envelope (code and a non-empty, bounded message).
#[track_caller]
fn refused(what: &str, status: StatusCode, body: &Value, want: u16) -> String {
    assert!(!status.is_server_error(), "{what}: a server error {status}: {body}");
    assert_eq!(status.as_u16(), want, "{what}: {body}");
    let code = error_code(body);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.len() <= 1024, "{what}: the message echoes too much ({} bytes)", message.len());
    code
}

/// A REST request with a raw body (sent as JSON).
async fn send_raw(s: &Stack, method: Method, path: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
    let resp = s
        .http
        .request(method, format!("{}{path}", s.base))
        .bearer_auth(&s.key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("send");
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn count_contacts(s: &Stack) -> usize {
    let (st, list) = s.call(Method::GET, "/api/v1/contacts?limit=200", None).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    list["data"].as_array().unwrap().len()
}

#[tokio::test]
async fn rest_refuses_nul_everywhere_and_controls_in_single_line_fields() {
    let before = panics().load(Ordering::SeqCst);
    for backend in backends() {
        let s = Stack::start(backend).await;
        let c = s.person("Target").await;
        let id = c["id"].as_str().unwrap();
        let creates = [
            json!({"kind": "person", "display_name": "a\u{0}b"}),
            json!({"kind": "person", "display_name": "Ada", "metadata": {"k": "a\u{0}b"}}),
            json!({"kind": "person", "display_name": "Ada", "metadata": {"a\u{0}b": 1}}),
            json!({"kind": "person", "display_name": "Ada", "metadata": {"list": [{"deep": "\u{0}"}]}}),
            json!({"kind": "person", "display_name": "Ada", "bio": "free text\u{0}"}),
            json!({"kind": "person", "display_name": "Ada", "nickname": "\u{0}"}),
            // Other C0 controls in single-line fields, and the ones free text refuses too.
            json!({"kind": "person", "display_name": "a\u{7}b"}),
            json!({"kind": "person", "display_name": "two\nlines"}),
            json!({"kind": "person", "display_name": "tab\tbed"}),
            json!({"kind": "person", "display_name": "Ada", "family_name": "\u{1b}[31mred"}),
            json!({"kind": "person", "display_name": "Ada", "metadata": {"line\nkey": 1}}),
            json!({"kind": "person", "display_name": "Ada", "bio": "escape \u{1b} sequence"}),
            json!({"kind": "person", "display_name": "Ada", "bio": "delete \u{7f}"}),
        ];
        for body in creates {
            let (st, e) = s.call(Method::POST, "/api/v1/contacts", Some(body.clone())).await;
            assert_eq!(refused(&format!("{backend:?} POST {body}"), st, &e, 400), "invalid_argument");
        }
        let patches = [
            json!({"display_name": "a\u{0}b"}),
            json!({"metadata": {"k": "\u{0}"}}),
            json!({"metadata": {"\u{0}": null}}),
            json!({"nickname": "a\u{1}b"}),
        ];
        for body in patches {
            let (st, e) = s.call(Method::PATCH, &format!("/api/v1/contacts/{id}"), Some(body.clone())).await;
            assert_eq!(refused(&format!("{backend:?} PATCH {body}"), st, &e, 400), "invalid_argument");
        }
        // NUL in a query parameter or a path.
        let (st, e) = s.call(Method::GET, "/api/v1/contacts?q=a%00b", None).await;
        refused(&format!("{backend:?} q with NUL"), st, &e, 400);
        let (st, e) = s.call(Method::GET, "/api/v1/contacts/a%00b", None).await;
        refused(&format!("{backend:?} id with NUL"), st, &e, 400);

        // Nothing refused was stored, and the one contact is unchanged.
        assert_eq!(count_contacts(&s).await, 1, "{backend:?}");
        let (_, now) = s.call(Method::GET, &format!("/api/v1/contacts/{id}"), None).await;
        assert_eq!(now["version"], 1, "{backend:?}: {now}");

        // Free text keeps its line feeds and tabs; metadata values are free text too.
        let bio = "line one\nline two\n\tindented";
        let (st, ok) = s
            .call(
                Method::POST,
                "/api/v1/contacts",
                Some(json!({"kind": "person", "display_name": "Ada", "bio": bio, "metadata": {"note": "a\nb"}})),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{backend:?}: {ok}");
        assert_eq!(ok["bio"], bio);
        let (_, read) = s.call(Method::GET, &format!("/api/v1/contacts/{}", ok["id"].as_str().unwrap()), None).await;
        assert_eq!(read["bio"], bio);
        assert_eq!(read["metadata"]["note"], "a\nb");
        s.stop().await;
    }
    assert_eq!(panics().load(Ordering::SeqCst), before, "a probe made a handler panic");
}

#[tokio::test]
async fn the_deepest_accepted_document_reads_back_on_every_path() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let t0 = common::moment().await;
        let deepest = nested(MAX_DEPTH - 1);
        let (st, c) = s
            .call(Method::POST, "/api/v1/contacts", Some(json!({"kind": "person", "display_name": "Deep", "metadata": deepest})))
            .await;
        assert_eq!(st, StatusCode::CREATED, "{backend:?}: {c}");
        let id = c["id"].as_str().unwrap().to_owned();
        let (st, u) = s
            .call(Method::PATCH, &format!("/api/v1/contacts/{id}"), Some(json!({"metadata": {"k2": nested(MAX_DEPTH - 2)}})))
            .await;
        assert_eq!(st, StatusCode::OK, "{backend:?}: {u}");
        assert_eq!(u["version"], 2, "{backend:?}: {u}");
        assert_eq!(u["metadata"]["k2"], nested(MAX_DEPTH - 2));

        for path in [
            format!("/api/v1/contacts/{id}"),
            format!("/api/v1/contacts/{id}?as_of={}", common::ts(chrono::Utc::now())),
            format!("/api/v1/contacts/{id}/history"),
            format!("/api/v1/contacts/{id}/timeline"),
            format!("/api/v1/contacts/{id}/diff?from={}", common::ts(t0)),
            "/api/v1/contacts".to_owned(),
        ] {
            let (st, v) = s.call(Method::GET, &path, None).await;
            assert_eq!(st, StatusCode::OK, "{backend:?} {path}: {v}");
        }
        let (_, history) = s.call(Method::GET, &format!("/api/v1/contacts/{id}/history"), None).await;
        assert_eq!(history["data"][1]["data"]["metadata"], deepest, "{backend:?}");

        // One level deeper, and the depths the review sent, are refused; nothing is written.
        for depth in [MAX_DEPTH, 33, 34, 50] {
            let (st, e) = s
                .call(Method::POST, "/api/v1/contacts", Some(json!({"kind": "person", "display_name": "Deeper", "metadata": nested(depth)})))
                .await;
            assert_eq!(refused(&format!("{backend:?} metadata {depth} deep"), st, &e, 400), "invalid_argument");
            assert!(e["error"]["message"].as_str().unwrap().contains("at most 32"), "{e}");
            let (st, e) = s
                .call(Method::PATCH, &format!("/api/v1/contacts/{id}"), Some(json!({"metadata": {"k": nested(depth)}})))
                .await;
            refused(&format!("{backend:?} PATCH metadata {depth} deep"), st, &e, 400);
        }
        let deep_array = format!("{{\"kind\":\"person\",\"display_name\":\"A\",\"metadata\":{{\"a\":{}{}}}}}", "[".repeat(100), "]".repeat(100));
        let (st, e) = send_raw(&s, Method::POST, "/api/v1/contacts", deep_array).await;
        refused(&format!("{backend:?} arrays 100 deep"), st, &e, 400);
        let bomb = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let (st, e) = send_raw(&s, Method::POST, "/api/v1/contacts", bomb.clone()).await;
        refused(&format!("{backend:?} 100k deep"), st, &e, 400);
        let (st, e) = send_raw(&s, Method::PATCH, &format!("/api/v1/contacts/{id}"), bomb).await;
        refused(&format!("{backend:?} PATCH 100k deep"), st, &e, 400);
        assert_eq!(count_contacts(&s).await, 1, "{backend:?}");
        s.stop().await;
    }
}

#[tokio::test]
async fn huge_ids_are_400s_that_quote_a_bounded_prefix() {
    let before = panics().load(Ordering::SeqCst);
    for backend in backends() {
        let s = Stack::start(backend).await;
        let huge = "x".repeat(HUGE);
        let t = common::ts(chrono::Utc::now());
        let probes = [
            (Method::GET, format!("/api/v1/contacts/{huge}")),
            (Method::GET, format!("/api/v1/contacts/{huge}?as_of={t}")),
            (Method::GET, format!("/api/v1/contacts/{huge}/history")),
            (Method::GET, format!("/api/v1/contacts/{huge}/diff?from={t}")),
            (Method::GET, format!("/api/v1/contacts/{huge}/timeline")),
            (Method::DELETE, format!("/api/v1/contacts/{huge}")),
            (Method::GET, format!("/api/v1/api-keys/{huge}")),
            (Method::DELETE, format!("/api/v1/api-keys/{huge}")),
            (Method::POST, format!("/api/v1/api-keys/{huge}/rotate")),
        ];
        for (m, path) in probes {
            let (st, e) = s.call(m.clone(), &path, None).await;
            assert_eq!(refused(&format!("{backend:?} {m} {}", &path[..40]), st, &e, 400), "invalid_argument");
            assert!(e["error"]["message"].as_str().unwrap().contains("6812 characters"), "{e}");
        }
        let (st, e) = s.call(Method::PATCH, &format!("/api/v1/contacts/{huge}"), Some(json!({"nickname": "n"}))).await;
        refused(&format!("{backend:?} PATCH huge id"), st, &e, 400);
        // A huge cursor, and a huge unknown field name, are refused as briefly.
        let (st, e) = s.call(Method::GET, &format!("/api/v1/contacts?cursor={huge}"), None).await;
        refused(&format!("{backend:?} huge cursor"), st, &e, 400);
        let (st, e) = s.call(Method::POST, "/api/v1/contacts", Some(json!({ huge.clone(): 1 }))).await;
        refused(&format!("{backend:?} huge field name"), st, &e, 400);
        let (st, e) = s.call(Method::GET, &format!("/api/v1/contacts?{huge}=1"), None).await;
        refused(&format!("{backend:?} huge query name"), st, &e, 400);
        s.stop().await;
    }
    assert_eq!(panics().load(Ordering::SeqCst), before, "a probe made a handler panic");
}

#[tokio::test]
async fn duplicate_keys_bad_bytes_and_two_credentials_are_400s() {
    let s = Stack::start(backends()[0]).await;
    let c = s.person("Once").await;
    let id = c["id"].as_str().unwrap();
    let bodies: [(&str, Method, String, Vec<u8>); 6] = [
        ("duplicate top-level key", Method::POST, "/api/v1/contacts".into(), br#"{"kind":"person","display_name":"a","display_name":"b"}"#.to_vec()),
        ("duplicate metadata key", Method::POST, "/api/v1/contacts".into(), br#"{"kind":"person","display_name":"a","metadata":{"k":1,"k":2}}"#.to_vec()),
        ("duplicate key on PATCH", Method::PATCH, format!("/api/v1/contacts/{id}"), br#"{"nickname":"a","nickname":"b"}"#.to_vec()),
        ("duplicate key on api-keys", Method::POST, "/api/v1/api-keys".into(), br#"{"name":"a","name":"b"}"#.to_vec()),
        ("invalid UTF-8", Method::POST, "/api/v1/contacts".into(), b"{\"kind\":\"person\",\"display_name\":\"\xff\xfe\"}".to_vec()),
        ("invalid UTF-8 on PATCH", Method::PATCH, format!("/api/v1/contacts/{id}"), b"{\"nickname\":\"\xc3\x28\"}".to_vec()),
    ];
    for (what, m, path, body) in bodies {
        let (st, e) = send_raw(&s, m, &path, body).await;
        assert_eq!(refused(what, st, &e, 400), "invalid_argument");
    }
    let (_, after) = s.call(Method::GET, &format!("/api/v1/contacts/{id}"), None).await;
    assert_eq!(after["version"], 1, "{after}");
    assert_eq!(count_contacts(&s).await, 1);

    // Two Authorization headers, whether they agree or not.
    for second in [s.key.clone(), "bsk_live_notthesamekeyatall000000000000000000000".to_owned()] {
        let resp = s
            .http
            .get(format!("{}/api/v1/contacts", s.base))
            .header("authorization", format!("Bearer {}", s.key))
            .header("authorization", format!("Bearer {second}"))
            .send()
            .await
            .unwrap();
        let st = resp.status();
        let e: Value = resp.json().await.unwrap();
        assert_eq!(refused("two Authorization headers", st, &e, 400), "invalid_argument");
    }

    // Huge headers: an oversized credential is a 401, a header past the server's limit is
    // refused or the connection closed, never a 500.
    let (st, e) = s.call_as(&format!("bsk_live_{}", "x".repeat(60_000)), Method::GET, "/api/v1/contacts", None).await;
    refused("a 60 kB API key", st, &e, 401);
    let resp = s
        .http
        .get(format!("{}/api/v1/contacts", s.base))
        .bearer_auth(&s.key)
        .header("x-padding", "x".repeat(1024 * 1024))
        .send()
        .await;
    // hyper answers this one itself, before any handler, with an empty 431 (or closes the
    // connection while the header is still being sent).
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "a 1 MiB header");
    }
    // The server is still there.
    assert_eq!(count_contacts(&s).await, 1);
    s.stop().await;
}

#[tokio::test]
async fn a_timezone_must_be_in_the_iana_database() {
    let s = Stack::start(backends()[0]).await;
    for tz in ["Mars/Olympus", "Europe/Atlantis", "UTC/", "europe/oslo"] {
        let (st, e) = s
            .call(Method::POST, "/api/v1/contacts", Some(json!({"kind": "person", "display_name": "Tz", "timezone": tz})))
            .await;
        assert_eq!(refused(tz, st, &e, 400), "validation_failed");
    }
    let c = s.person("Tz").await;
    let (st, e) = s
        .call(Method::PATCH, &format!("/api/v1/contacts/{}", c["id"].as_str().unwrap()), Some(json!({"timezone": "Mars/Olympus"})))
        .await;
    refused("PATCH Mars/Olympus", st, &e, 400);
    for tz in ["Europe/Oslo", "UTC", "America/Argentina/Buenos_Aires", "Etc/GMT+5"] {
        let (st, v) = s
            .call(Method::POST, "/api/v1/contacts", Some(json!({"kind": "person", "display_name": "Tz", "timezone": tz})))
            .await;
        assert_eq!(st, StatusCode::CREATED, "{tz}: {v}");
    }
    s.stop().await;
}

/// An MCP session over raw HTTP, so that exact bodies and statuses can be sent and seen.
struct Mcp<'a> {
    s: &'a Stack,
    session: String,
}

impl<'a> Mcp<'a> {
    async fn open(s: &'a Stack) -> Mcp<'a> {
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "hostile", "version": "1"}}});
        let resp = Self::request(s, None, init.to_string()).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let session = resp.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        let mcp = Mcp { s, session };
        let (st, _) = mcp.post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string()).await;
        assert!(st.is_success(), "{st}");
        mcp
    }

    fn request(s: &Stack, session: Option<&str>, body: impl Into<reqwest::Body>) -> reqwest::RequestBuilder {
        let mut req = s
            .http
            .post(format!("{}/mcp/v1", s.mcp))
            .bearer_auth(&s.key)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", "2025-06-18")
            .body(body);
        if let Some(id) = session {
            req = req.header("mcp-session-id", id);
        }
        req
    }

    /// Posts a raw body in the session; the status and the JSON (the last SSE `data:` line).
    async fn post(&self, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        let resp = Self::request(self.s, Some(&self.session), body).send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .unwrap_or_else(|| serde_json::from_str(&text).unwrap_or(Value::String(text)));
        (status, value)
    }

    /// Calls a tool; the tool error's envelope (the call must fail).
    async fn tool_error(&self, name: &str, arguments: Value) -> Value {
        let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": name, "arguments": arguments}});
        let (st, v) = self.post(call.to_string()).await;
        assert_eq!(st, StatusCode::OK, "{name}: {v}");
        let result = &v["result"];
        assert_eq!(result["isError"], true, "{name} succeeded: {v}");
        serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap()
    }
}

#[tokio::test]
async fn mcp_refuses_the_same_probes() {
    let before = panics().load(Ordering::SeqCst);
    for backend in backends() {
        let s = Stack::start(backend).await;
        let mcp = Mcp::open(&s).await;
        let probes = [
            ("contacts_create", json!({"kind": "person", "display_name": "a\u{0}b"})),
            ("contacts_create", json!({"kind": "person", "display_name": "a\u{7}b"})),
            ("contacts_create", json!({"kind": "person", "display_name": "Ada", "metadata": {"\u{0}": 1}})),
            ("contacts_create", json!({"kind": "person", "display_name": "Ada", "metadata": nested(MAX_DEPTH)})),
            ("contacts_create", json!({"kind": "person", "display_name": "Ada", "metadata": nested(50)})),
            ("contacts_create", json!({"kind": "person", "display_name": "Ada", "timezone": "Mars/Olympus"})),
            ("contacts_get", json!({"id": "x".repeat(HUGE)})),
            ("contacts_update", json!({"id": "x".repeat(HUGE), "nickname": "n"})),
            ("contacts_delete", json!({"id": "x".repeat(HUGE)})),
        ];
        for (tool, args) in probes {
            let e = mcp.tool_error(tool, args).await;
            let code = error_code(&e);
            assert!(code == "invalid_argument" || code == "validation_failed", "{backend:?} {tool}: {e}");
            assert!(e["error"]["message"].as_str().unwrap().len() <= 1024, "{backend:?} {tool}: message too long");
        }
        // The deepest accepted document is accepted over MCP too.
        let call = json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call",
            "params": {"name": "contacts_create", "arguments": {"kind": "person", "display_name": "Deep", "metadata": nested(MAX_DEPTH - 1)}}});
        let (st, v) = mcp.post(call.to_string()).await;
        assert_eq!(st, StatusCode::OK);
        assert_ne!(v["result"]["isError"], true, "{backend:?}: {v}");

        // Transport-level probes are 400s in the envelope, not rmcp's 415.
        let tools_list = r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#;
        let bodies: [(&str, Vec<u8>); 5] = [
            ("100k deep", format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes()),
            ("100k deep object", format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000)).into_bytes()),
            ("invalid UTF-8", b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/list\",\"x\":\"\xff\"}".to_vec()),
            ("a JSON-RPC batch", format!("[{tools_list},{tools_list}]").into_bytes()),
            ("a duplicate key", br#"{"jsonrpc":"2.0","id":3,"id":4,"method":"tools/list"}"#.to_vec()),
        ];
        for (what, body) in bodies {
            let (st, e) = mcp.post(body).await;
            assert_eq!(refused(&format!("{backend:?} MCP {what}"), st, &e, 400), "invalid_argument");
        }
        let resp = Mcp::request(&s, Some(&mcp.session), tools_list)
            .header("authorization", format!("Bearer {}", s.key))
            .send()
            .await
            .unwrap();
        let st = resp.status();
        let e: Value = resp.json().await.unwrap();
        refused("MCP two Authorization headers", st, &e, 400);
        let resp = s
            .http
            .post(format!("{}/mcp/v1", s.mcp))
            .bearer_auth(format!("bsk_live_{}", "x".repeat(60_000)))
            .header("content-type", "application/json")
            .body(tools_list)
            .send()
            .await
            .unwrap();
        let st = resp.status();
        let e: Value = resp.json().await.unwrap();
        refused("MCP a 60 kB API key", st, &e, 401);
        // Only the deep contact was written.
        assert_eq!(count_contacts(&s).await, 1, "{backend:?}");
        s.stop().await;
    }
    assert_eq!(panics().load(Ordering::SeqCst), before, "a probe made a handler panic");
}

mod grpc {
    //! The same probes sent straight to the contacts service, as an internal caller would:
    //! the service refuses them itself.

    use super::*;
    use base64::Engine;
    use tonic::Code;
    use worktruck_kit::context::{Ctx, Signer};
    use worktruck_kit::pbjson::to_struct;
    use worktruck_proto::contacts::v1 as pb;
    use worktruck_proto::contacts::v1::contacts_service_client::ContactsServiceClient;

    struct Service {
        running: worktruck::Running,
        client: ContactsServiceClient<tonic::transport::Channel>,
        signer: Signer,
        tenant: uuid::Uuid,
        _data: worktruck_kit::testing::TestData,
    }

    async fn start(backend: Backend) -> Service {
        let data = worktruck_kit::testing::TestData::new(backend).await;
        let mut cfg = common::config(&data);
        cfg.grpc.addr = "127.0.0.1:0".parse().unwrap();
        cfg.admin.addr = "127.0.0.1:0".parse().unwrap();
        let signer = Signer::from_seed([9; 32]);
        cfg.context.public_key = Some(base64::engine::general_purpose::STANDARD.encode(signer.verifier().public_key()));
        let running = worktruck::start_role(cfg, "contacts".parse().unwrap()).await.expect("contacts role");
        let url = format!("http://{}", running.grpc_addr.unwrap());
        let client = ContactsServiceClient::connect(url).await.unwrap();
        Service { running, client, signer, tenant: uuid::Uuid::new_v4(), _data: data }
    }

    impl Service {
        fn request<T>(&self, message: T) -> tonic::Request<T> {
            let mut request = tonic::Request::new(message);
            let mut ctx = Ctx::tenant(self.tenant, "key:hostile", 30);
            ctx.scopes = vec!["contacts:read".into(), "contacts:write".into()];
            self.signer.attach(&ctx, request.metadata_mut());
            request
        }

        /// Sends raw bytes as the request of `method`.
        async fn raw(&self, method: &str, bytes: &[u8]) -> Result<Vec<u8>, tonic::Status> {
            let url = format!("http://{}", self.running.grpc_addr.unwrap());
            let channel = tonic::transport::Endpoint::from_shared(url).unwrap().connect().await.unwrap();
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.unwrap();
            let path = format!("/worktruck.contacts.v1.ContactsService/{method}").parse().unwrap();
            grpc.unary(self.request(bytes.to_vec()), path, Bytes).await.map(tonic::Response::into_inner)
        }

        async fn create(&self, r: pb::CreateContactRequest) -> Result<pb::Contact, tonic::Status> {
            self.client.clone().create_contact(self.request(r)).await.map(tonic::Response::into_inner)
        }
    }

    /// A pass-through codec, to send bytes no generated client would.
    #[derive(Clone, Copy, Default)]
    struct Bytes;

    impl tonic::codec::Codec for Bytes {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Bytes;
        type Decoder = Bytes;
        fn encoder(&mut self) -> Bytes {
            Bytes
        }
        fn decoder(&mut self) -> Bytes {
            Bytes
        }
    }

    impl tonic::codec::Encoder for Bytes {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
            bytes::BufMut::put_slice(dst, &item);
            Ok(())
        }
    }

    impl tonic::codec::Decoder for Bytes {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
            let n = bytes::Buf::remaining(src);
            Ok(Some(bytes::Buf::copy_to_bytes(src, n).to_vec()))
        }
    }

    fn person(name: &str) -> pb::CreateContactRequest {
        pb::CreateContactRequest { kind: pb::ContactKind::Person as i32, display_name: name.into(), ..Default::default() }
    }

    #[track_caller]
    fn invalid(what: &str, r: Result<impl std::fmt::Debug, tonic::Status>) {
        let status = r.expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(status.message().len() <= 1024, "{what}: message of {} bytes", status.message().len());
    }

    #[tokio::test]
    async fn the_contacts_service_refuses_them_itself() {
        for backend in backends() {
            let svc = start(backend).await;
            invalid("NUL in display_name", svc.create(person("a\0b")).await);
            invalid("a bell in display_name", svc.create(person("a\u{7}b")).await);
            let mut r = person("Ada");
            r.metadata = Some(to_struct(&json!({"k": "a\u{0}b"})));
            invalid("NUL in metadata", svc.create(r).await);
            let mut r = person("Ada");
            r.bio = Some("NUL\0".into());
            invalid("NUL in bio", svc.create(r).await);
            // 32 deep decodes (prost allows 33) but could not be read back from history.
            for depth in [MAX_DEPTH, 33, 50] {
                let mut r = person("Ada");
                r.metadata = Some(to_struct(&nested(depth)));
                invalid(&format!("metadata {depth} deep"), svc.create(r).await);
            }
            let huge = "x".repeat(HUGE);
            let get = svc.client.clone().get_contact(svc.request(pb::GetContactRequest { id: huge.clone(), ..Default::default() })).await;
            invalid("a huge id", get);
            let history = svc
                .client
                .clone()
                .get_contact_history(svc.request(worktruck_proto::common::v1::HistoryRequest { id: huge, ..Default::default() }))
                .await;
            invalid("a huge id on history", history);

            // Bytes prost cannot decode (a string that is not UTF-8, a message cut short) are
            // the caller's error, not tonic's `INTERNAL`.
            let not_utf8 = [0x08, 0x01, 0x12, 0x02, 0xff, 0xfe];
            invalid("invalid UTF-8", svc.raw("CreateContact", &not_utf8).await);
            invalid("a truncated message", svc.raw("CreateContact", &[0x12, 0x09, b'A']).await);

            // What is allowed still is.
            let mut r = person("Ada");
            r.bio = Some("two\nlines\tand a tab".into());
            r.metadata = Some(to_struct(&nested(MAX_DEPTH - 1)));
            let c = svc.create(r).await.expect("the deepest accepted document");
            let history = svc
                .client
                .clone()
                .get_contact_history(svc.request(worktruck_proto::common::v1::HistoryRequest { id: c.id.clone(), ..Default::default() }))
                .await
                .expect("history of the deepest document");
            assert_eq!(history.into_inner().data.len(), 1);
            let list = svc.client.clone().list_contacts(svc.request(pb::ListContactsRequest::default())).await.unwrap();
            assert_eq!(list.into_inner().data.len(), 1, "{backend:?}: only the valid contact was written");
            svc.running.stop().await;
        }
    }
}
