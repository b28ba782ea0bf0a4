//! Tasks end to end: the whole system on SQLite and on PostgreSQL + NATS, over REST and over
//! MCP (rmcp's Streamable HTTP client).

mod common;

use common::{Stack, error_code, moment, ts};
use reqwest::{Method, StatusCode};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use worktruck_kit::testing::backends;

async fn post(s: &Stack, path: &str, body: Value) -> Value {
    let (st, v) = s.call(Method::POST, path, Some(body)).await;
    assert!(st == StatusCode::CREATED || st == StatusCode::OK, "{path}: {st} {v}");
    v
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn projects_tasks_dependencies_and_history_over_rest() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let (st, p) =
            s.call(Method::POST, "/api/v1/projects", Some(json!({"name": "Platform", "identifier": "API"}))).await;
        assert_eq!(st, StatusCode::CREATED, "{backend:?} {p}");
        assert_eq!(p["statuses"][1]["name"], "Todo");
        assert_eq!(p["statuses"][1]["category"], "unstarted");
        assert_eq!(p["statuses"][1]["is_default"], true);
        let (_, other) =
            s.call(Method::POST, "/api/v1/projects", Some(json!({"name": "Web", "identifier": "WEB"}))).await;

        // The workflow reorders through its `:reorder` route.
        let mut ids: Vec<Value> = p["statuses"].as_array().unwrap().iter().map(|s| s["id"].clone()).collect();
        ids.swap(0, 1);
        let (st, re) = s
            .call(Method::POST, &format!("/api/v1/projects/{}/statuses:reorder", id(&p)), Some(json!({"ids": ids})))
            .await;
        assert_eq!(st, StatusCode::OK, "{re}");
        assert_eq!(re["statuses"][0]["name"], "Todo");

        let a = post(
            &s,
            "/api/v1/tasks",
            json!({"title": "Design", "project_id": p["id"], "priority_name": "urgent", "due_date": "2020-05-01"}),
        )
        .await;
        assert_eq!(
            (a["identifier"].as_str(), a["priority"].as_i64(), a["priority_name"].as_str()),
            (Some("API-1"), Some(4), Some("urgent"))
        );
        let b =
            post(&s, "/api/v1/tasks", json!({"title": "Build", "project_id": p["id"], "labels": ["Backend"]})).await;
        let c = post(&s, "/api/v1/tasks", json!({"title": "Ship", "project_id": p["id"], "parent_id": a["id"]})).await;
        let (st, got) = s.call(Method::GET, "/api/v1/tasks/by-identifier/API-2", None).await;
        assert_eq!((st, got["id"].clone()), (StatusCode::OK, b["id"].clone()), "{got}");

        // Dependencies: the edge that would close A→B→C→A is a 409 naming the cycle.
        post(
            &s,
            &format!("/api/v1/tasks/{}/dependencies", id(&a)),
            json!({"depends_on_id": b["id"], "type": "blocks"}),
        )
        .await;
        post(
            &s,
            &format!("/api/v1/tasks/{}/dependencies", id(&b)),
            json!({"depends_on_id": c["id"], "type": "blocks"}),
        )
        .await;
        let (st, e) = s
            .call(
                Method::POST,
                &format!("/api/v1/tasks/{}/dependencies", id(&c)),
                Some(json!({"depends_on_id": a["id"], "type": "blocks"})),
            )
            .await;
        assert_eq!((st, error_code(&e).as_str()), (StatusCode::CONFLICT, "conflict"), "{e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains("API-3 blocks API-1 blocks API-2 blocks API-3"),
            "{e}"
        );
        let (_, gb) = s.call(Method::GET, &format!("/api/v1/tasks/{}", id(&b)), None).await;
        assert_eq!(gb["is_blocked"], true, "{gb}");
        // A parent loop likewise.
        let (st, e) =
            s.call(Method::PATCH, &format!("/api/v1/tasks/{}", id(&a)), Some(json!({"parent_id": c["id"]}))).await;
        assert_eq!((st, error_code(&e).as_str()), (StatusCode::CONFLICT, "conflict"), "{e}");

        // Overdue, subtasks, comments, complete and reopen.
        let (st, over) = s.call(Method::GET, "/api/v1/tasks/overdue", None).await;
        assert_eq!(st, StatusCode::OK, "{over}");
        assert_eq!(over["data"].as_array().unwrap().len(), 1);
        assert_eq!(over["data"][0]["identifier"], "API-1");
        let (_, subs) = s.call(Method::GET, &format!("/api/v1/tasks/{}/subtasks", id(&a)), None).await;
        assert_eq!(subs["data"][0]["id"], c["id"], "{subs}");
        let (_, tree) = s.call(Method::GET, &format!("/api/v1/tasks/{}/tree", id(&a)), None).await;
        assert_eq!(tree["open_children"], 1, "{tree}");
        let cm =
            post(&s, &format!("/api/v1/tasks/{}/comments", id(&a)), json!({"body": "First **draft**\n- point"})).await;
        assert!(cm["author"].as_str().is_some_and(|a| !a.is_empty()), "{cm}");
        let between = moment().await;
        let done = post(&s, &format!("/api/v1/tasks/{}/complete", id(&a)), json!({})).await;
        assert_eq!(done["status_category"], "completed", "{done}");
        assert!(done["completed_at"].is_string());
        let (_, gb) = s.call(Method::GET, &format!("/api/v1/tasks/{}", id(&b)), None).await;
        assert_eq!(gb["is_blocked"], false);
        let (_, over) = s.call(Method::GET, "/api/v1/tasks/overdue", None).await;
        assert_eq!(over["data"].as_array().unwrap().len(), 0, "done tasks are not overdue");
        let reopened = post(&s, &format!("/api/v1/tasks/{}/reopen", id(&a)), json!({})).await;
        assert!(reopened.get("completed_at").is_none(), "{reopened}");

        // History, diff and timeline; as_of.
        let (_, old) = s.call(Method::GET, &format!("/api/v1/tasks/{}?as_of={}", id(&a), ts(between)), None).await;
        assert_eq!(old["_temporal"]["capture_reason"], "create", "{old}");
        let (st, hist) = s.call(Method::GET, &format!("/api/v1/tasks/{}/history", id(&a)), None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(hist["data"].as_array().unwrap().len(), 3, "{hist}");
        let (_, diff) = s.call(Method::GET, &format!("/api/v1/tasks/{}/diff?from={}", id(&a), ts(between)), None).await;
        assert_eq!(diff["intermediate_versions"], 2, "{diff}");
        let (st, tl) =
            s.call(Method::GET, &format!("/api/v1/tasks/{}/timeline?fields=status_category", id(&a)), None).await;
        assert_eq!(st, StatusCode::OK, "{tl}");
        assert_eq!(tl["data"].as_array().unwrap().len(), 3, "{tl}");

        // Moving to another project: a new identifier, the old still resolves.
        let (_, moved) =
            s.call(Method::PATCH, &format!("/api/v1/tasks/{}", id(&b)), Some(json!({"project_id": other["id"]}))).await;
        assert_eq!(moved["identifier"], "WEB-1", "{moved}");
        let (_, old) = s.call(Method::GET, "/api/v1/tasks/by-identifier/API-2", None).await;
        assert_eq!(old["id"], b["id"]);

        // Bulk: one bad id changes nothing; then a real one.
        let missing = uuid_string();
        let (st, e) = s
            .call(Method::POST, "/api/v1/tasks:bulkUpdate", Some(json!({"ids": [a["id"], missing], "priority": 1})))
            .await;
        assert_eq!((st, error_code(&e).as_str()), (StatusCode::NOT_FOUND, "not_found"), "{e}");
        let (_, ga) = s.call(Method::GET, &format!("/api/v1/tasks/{}", id(&a)), None).await;
        assert_eq!(ga["priority"], 4);
        let (st, bulk) = s
            .call(Method::POST, "/api/v1/tasks:bulkUpdate", Some(json!({"ids": [a["id"], c["id"]], "priority": 1})))
            .await;
        assert_eq!(st, StatusCode::OK, "{bulk}");
        assert!(bulk["data"].as_array().unwrap().iter().all(|t| t["priority"] == 1));
        let (_, listed) = s
            .call(Method::GET, &format!("/api/v1/tasks?project_id={}&sort=priority&label=backend", id(&other)), None)
            .await;
        assert_eq!(listed["data"][0]["id"], b["id"], "{listed}");

        // Bad input: each a clear 4xx in the envelope.
        let done_status = p["statuses"].as_array().unwrap().iter().find(|s| s["name"] == "Done").unwrap()["id"].clone();
        for (path, body, status, code) in [
            (
                "/api/v1/projects",
                json!({"name": "x", "identifier": "api-x"}),
                StatusCode::BAD_REQUEST,
                "validation_failed",
            ),
            ("/api/v1/projects", json!({"name": "x", "identifier": "API"}), StatusCode::CONFLICT, "already_exists"),
            (
                "/api/v1/tasks",
                json!({"title": "x", "project_id": other["id"], "status_id": done_status}),
                StatusCode::BAD_REQUEST,
                "validation_failed",
            ),
            (
                "/api/v1/tasks",
                json!({"title": "x", "due_date": "2030-01-01", "rrule": "EVERY=TUESDAY"}),
                StatusCode::BAD_REQUEST,
                "validation_failed",
            ),
            ("/api/v1/tasks", json!({"title": "x", "priority": 7}), StatusCode::BAD_REQUEST, "validation_failed"),
            (
                "/api/v1/tasks",
                json!({"title": "x", "due_date": "2025-02-30"}),
                StatusCode::BAD_REQUEST,
                "validation_failed",
            ),
            ("/api/v1/tasks", json!({"title": "x", "priority": "urgent"}), StatusCode::BAD_REQUEST, "invalid_argument"),
        ] {
            let (st, e) = s.call(Method::POST, path, Some(body.clone())).await;
            assert_eq!((st, error_code(&e).as_str()), (status, code), "{body}: {e}");
        }
        let (_, e) = s.call(Method::POST, "/api/v1/tasks", Some(json!({"title": "x", "due_date": "2025-02-30"}))).await;
        assert!(e["error"]["message"].as_str().unwrap().contains("2025-02-30"), "{e}");

        // Another tenant sees none of it.
        let tenant = s.new_tenant("other").await;
        for path in [
            format!("/api/v1/tasks/{}", id(&a)),
            "/api/v1/tasks/by-identifier/API-1".into(),
            format!("/api/v1/projects/{}", id(&p)),
        ] {
            let (st, e) = s.call_as(&tenant, Method::GET, &path, None).await;
            assert_eq!((st, error_code(&e).as_str()), (StatusCode::NOT_FOUND, "not_found"), "{path}");
        }
        s.stop().await;
    }
}

fn uuid_string() -> String {
    // A v4-shaped id no tenant has.
    "6f1c2a52-8c1e-4f4a-9b9e-3d2f6a7b8c9d".to_owned()
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
async fn an_agent_plans_and_completes_tasks_over_mcp() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let (_, p) = s.call(Method::POST, "/api/v1/projects", Some(json!({"name": "Ops", "identifier": "OPS"}))).await;
        let transport = StreamableHttpClientTransport::with_client(
            worktruck_kit::http::client(),
            StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp/v1", s.mcp)).auth_header(s.key.clone()),
        );
        let client = ClientConfig::new(ClientCapabilities::default(), Implementation::new("tasks-test", "1.0"))
            .with_protocol_version(ProtocolVersion::V_2025_06_18)
            .serve(transport)
            .await
            .expect("initialize");
        let projects = ok(&call(&client, "projects_list", json!({})).await);
        assert_eq!(projects["data"][0]["identifier"], "OPS", "{backend:?} {projects}");
        let a = ok(&call(
            &client,
            "tasks_create",
            json!({"title": "Rotate keys", "project_id": p["id"], "due_at": "2020-01-01T09:00:00Z"}),
        )
        .await);
        assert_eq!(a["identifier"], "OPS-1", "{a}");
        let b = ok(&call(&client, "tasks_create", json!({"title": "Audit access", "project_id": p["id"]})).await);
        let dep = ok(&call(
            &client,
            "tasks_add_dependency",
            json!({"task_id": b["id"], "depends_on_id": a["id"], "type": "blocked_by"}),
        )
        .await);
        assert_eq!(dep["type"], "blocked_by", "{dep}");
        let cycle = call(
            &client,
            "tasks_add_dependency",
            json!({"task_id": b["id"], "depends_on_id": a["id"], "type": "blocks"}),
        )
        .await;
        assert_eq!(cycle.is_error, Some(true), "{cycle:?}");
        let cm = ok(&call(&client, "tasks_add_comment", json!({"task_id": a["id"], "body": "Started."})).await);
        assert_eq!(cm["task_id"], a["id"]);
        let got = ok(&call(&client, "tasks_get", json!({"id": b["id"]})).await);
        assert_eq!(got["is_blocked"], true, "{got}");
        let over = ok(&call(&client, "tasks_list_overdue", json!({})).await);
        assert_eq!(over["data"][0]["id"], a["id"], "{over}");
        let upd = ok(&call(&client, "tasks_update", json!({"id": a["id"], "priority": 3})).await);
        assert_eq!(upd["priority_name"], "high");
        let done = ok(&call(&client, "tasks_complete", json!({"id": a["id"]})).await);
        assert_eq!(done["status_category"], "completed");
        let got = ok(&call(&client, "tasks_get", json!({"id": b["id"]})).await);
        assert_eq!(got["is_blocked"], false);
        let hits = ok(&call(&client, "tasks_search", json!({"q": "audit"})).await);
        assert_eq!(hits["data"].as_array().unwrap().len(), 1, "{hits}");
        let open = ok(&call(&client, "tasks_list", json!({"include_done": false})).await);
        assert_eq!(open["data"].as_array().unwrap().len(), 1, "{open}");
        ok(&call(&client, "tasks_delete", json!({"id": b["id"]})).await);
        let missing = call(&client, "tasks_get", json!({"id": b["id"]})).await;
        assert_eq!(missing.is_error, Some(true));
        let bad = call(&client, "tasks_create", json!({"title": "x", "priority": 7})).await;
        assert_eq!(bad.is_error, Some(true), "{bad:?}");
        client.cancel().await.unwrap();
        s.stop().await;
    }
}
