//! Notes end to end: the whole system on SQLite and on PostgreSQL + NATS, over REST and over
//! MCP (rmcp's Streamable HTTP client).

mod common;

use common::{Stack, error_code, moment, ts};
use reqwest::{Method, StatusCode};
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use worktruck_kit::testing::backends;

async fn create(s: &Stack, body: Value) -> Value {
    let (st, v) = s.call(Method::POST, "/api/v1/notes", Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn notes_links_and_history_over_rest() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let (st, nb) = s.call(Method::POST, "/api/v1/notebooks", Some(json!({"name": "Research"}))).await;
        assert_eq!(st, StatusCode::CREATED, "{nb}");
        let src = create(&s, json!({
            "title": "Reading list",
            "body": "---\nstatus: open\n---\nStart with [[Ferris|the crab]] today.\n\n```\n[[Not a link]]\n```\n",
            "notebook_id": nb["id"],
            "tags": ["Books"],
        }))
        .await;
        assert_eq!(src["metadata"], json!({"status": "open"}), "{backend:?}");
        assert_eq!(src["outgoing_link_count"], 1);
        assert_eq!(src["is_pinned"], false);
        assert_eq!(src["tags"][0]["name"], "Books");
        let (_, links) = s.call(Method::GET, &format!("/api/v1/notes/{}/links", id(&src)), None).await;
        assert_eq!(links["data"][0]["status"], "unresolved", "{links}");
        assert_eq!(links["data"][0]["alias"], "the crab");

        // The target appears; the link resolves; backlinks carry the sentence.
        let target = create(&s, json!({"title": "ferris", "body": "The crab."})).await;
        assert_eq!(target["backlink_count"], 1, "{target}");
        let (st, back) = s.call(Method::GET, &format!("/api/v1/notes/{}/backlinks", id(&target)), None).await;
        assert_eq!(st, StatusCode::OK, "{back}");
        assert_eq!(back["data"][0]["source_title"], "Reading list");
        assert_eq!(back["data"][0]["context"], "Start with [[Ferris|the crab]] today.");
        assert_eq!(back["data"][0]["status"], "resolved");
        assert_eq!(back["has_more"], false);

        let between = moment().await;
        // Rename with rewrite_links: the linking body follows.
        let (st, upd) = s
            .call(Method::PATCH, &format!("/api/v1/notes/{}", id(&target)), Some(json!({"title": "Ferris the Crab", "rewrite_links": true})))
            .await;
        assert_eq!(st, StatusCode::OK, "{upd}");
        let (_, got) = s.call(Method::GET, &format!("/api/v1/notes/{}", id(&src)), None).await;
        assert!(got["body"].as_str().unwrap().contains("[[Ferris the Crab|the crab]]"), "{got}");
        let (_, old) = s.call(Method::GET, &format!("/api/v1/notes/{}?as_of={}", id(&target), ts(between)), None).await;
        assert_eq!(old["title"], "ferris");
        assert_eq!(old["_temporal"]["capture_reason"], "create");
        let (_, diff) = s.call(Method::GET, &format!("/api/v1/notes/{}/diff?from={}", id(&target), ts(between)), None).await;
        assert_eq!(diff["changes"][0]["field"], "title", "{diff}");
        let (st, hist) = s.call(Method::GET, &format!("/api/v1/notes/{}/history", id(&target)), None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(hist["data"].as_array().unwrap().len(), 2);
        let (st, tl) = s.call(Method::GET, &format!("/api/v1/notes/{}/timeline?fields=title", id(&target)), None).await;
        assert_eq!(st, StatusCode::OK, "{tl}");

        // Delete and restore: the backlink dangles, then comes back.
        let (st, del) = s.call(Method::DELETE, &format!("/api/v1/notes/{}", id(&target)), None).await;
        assert_eq!((st, del), (StatusCode::OK, json!({"id": id(&target), "deleted": true})));
        let (_, links) = s.call(Method::GET, &format!("/api/v1/notes/{}/links", id(&src)), None).await;
        assert_eq!(links["data"][0]["status"], "dangling");
        let (st, _) = s.call(Method::GET, &format!("/api/v1/notes/{}", id(&target)), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (st, restored) = s.call(Method::POST, &format!("/api/v1/notes/{}/restore", id(&target)), Some(json!({}))).await;
        assert_eq!(st, StatusCode::OK, "{restored}");
        assert_eq!(restored["backlink_count"], 1);

        // Unlinked mentions, search with a snippet, filters, and the 400 of q with as_of.
        create(&s, json!({"title": "Zoo", "body": "Ferris the Crab lives here."})).await;
        let (_, m) = s.call(Method::GET, &format!("/api/v1/notes/{}/unlinked-mentions", id(&target)), None).await;
        assert_eq!(m["data"][0]["source_title"], "Zoo", "{m}");
        let (st, hits) = s.call(Method::GET, "/api/v1/notes?q=crab", None).await;
        assert_eq!(st, StatusCode::OK, "{hits}");
        assert!(hits["data"].as_array().unwrap().iter().all(|h| h["snippet"].is_string()), "{hits}");
        let (_, in_nb) = s.call(Method::GET, &format!("/api/v1/notes?notebook_id={}&tag=books", nb["id"].as_str().unwrap()), None).await;
        assert_eq!(in_nb["data"].as_array().unwrap().len(), 1, "{in_nb}");
        let (st, e) = s.call(Method::GET, &format!("/api/v1/notes?q=crab&as_of={}", ts(between)), None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert_eq!(error_code(&e), "invalid_argument");
        let (_, nbv) = s.call(Method::GET, &format!("/api/v1/notebooks/{}", nb["id"].as_str().unwrap()), None).await;
        assert_eq!(nbv["note_count"], 1);

        // Bad input is a 400 envelope; another tenant's note is a 404.
        let (st, e) = s.call(Method::POST, "/api/v1/notes", Some(json!({"title": "   "}))).await;
        assert_eq!((st, error_code(&e).as_str()), (StatusCode::BAD_REQUEST, "validation_failed"));
        let (st, e) = s.call(Method::POST, "/api/v1/notes", Some(json!({"title": "x", "is_pinned": "yes"}))).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
        let (st, e) = s.call(Method::POST, "/api/v1/note-tags", Some(json!({"name": "books"}))).await;
        assert_eq!((st, error_code(&e).as_str()), (StatusCode::CONFLICT, "already_exists"));
        let other = s.new_tenant("other").await;
        for path in [format!("/api/v1/notes/{}", id(&src)), format!("/api/v1/notes/{}/backlinks", id(&target))] {
            let (st, e) = s.call_as(&other, Method::GET, &path, None).await;
            assert_eq!((st, error_code(&e).as_str()), (StatusCode::NOT_FOUND, "not_found"), "{path}");
        }
        s.stop().await;
    }
}

type Client = RunningService<RoleClient, ClientConfig>;

async fn call(client: &Client, name: &str, args: Value) -> CallToolResult {
    client
        .call_tool(CallToolRequestParams::new(name.to_owned()).with_arguments(args.as_object().cloned().unwrap()))
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn ok(r: &CallToolResult) -> Value {
    assert_ne!(r.is_error, Some(true), "{r:?}");
    r.structured_content.clone().expect("structuredContent")
}

#[tokio::test]
async fn an_agent_writes_links_and_reads_backlinks_over_mcp() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let transport = StreamableHttpClientTransport::with_client(
            worktruck_kit::http::client(),
            StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp/v1", s.mcp)).auth_header(s.key.clone()),
        );
        let client = ClientConfig::new(ClientCapabilities::default(), Implementation::new("notes-test", "1.0"))
            .with_protocol_version(ProtocolVersion::V_2025_06_18)
            .serve(transport)
            .await
            .expect("initialize");
        let target = ok(&call(&client, "notes_create", json!({"title": "Project Atlas", "body": "Plans."})).await);
        let src = ok(&call(&client, "notes_create", json!({"title": "Standup", "body": "We moved [[Project Atlas]] forward."})).await);
        let back = ok(&call(&client, "notes_list_backlinks", json!({"id": target["id"]})).await);
        assert_eq!(back["data"][0]["source_id"], src["id"], "{backend:?} {back}");
        assert_eq!(back["data"][0]["context"], "We moved [[Project Atlas]] forward.");
        let got = ok(&call(&client, "notes_get", json!({"id": target["id"]})).await);
        assert_eq!(got["backlink_count"], 1);
        let upd = ok(&call(&client, "notes_update", json!({"id": src["id"], "is_pinned": true})).await);
        assert_eq!(upd["is_pinned"], true);
        let hits = ok(&call(&client, "notes_search", json!({"q": "atlas"})).await);
        assert_eq!(hits["data"].as_array().unwrap().len(), 2, "{hits}");
        ok(&call(&client, "notes_delete", json!({"id": src["id"]})).await);
        let got = ok(&call(&client, "notes_get", json!({"id": target["id"]})).await);
        assert_eq!(got["backlink_count"], 0, "a deleted source leaves the backlinks");
        let missing = call(&client, "notes_get", json!({"id": src["id"]})).await;
        assert_eq!(missing.is_error, Some(true));
        client.cancel().await.unwrap();
        s.stop().await;
    }
}
