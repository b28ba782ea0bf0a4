//! The apps tools over MCP (`apps_list`, `apps_probe`), on SQLite and on PostgreSQL + NATS:
//! an MCP client connected to Worktruck lists its tenant's apps and probes one, which reaches
//! an MCP server the test starts (an rmcp server on 127.0.0.1, allowed by `[outbound]`); and
//! the apps' own tools on Worktruck's endpoint as `<slug>__<tool>`, for their tenant only,
//! called through with the app's credentials, with `notifications/tools/list_changed` when
//! the tenant changes them.

mod common;
/// The app server these tests register (beside `common`, in these tests only).
#[path = "common/tooling.rs"]
mod tooling;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::Stack;
use tooling::{TOKEN, tooling};
use reqwest::{Method, StatusCode};
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, ErrorData, Implementation,
    ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig,
    Tool,
};
use rmcp::service::{NotificationContext, RequestContext, RunningService};
use rmcp::ClientHandler;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};
use worktruck_kit::testing::backends;

#[derive(Clone)]
struct Upstream;

impl ServerHandler for Upstream {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_protocol_version(ProtocolVersion::V_2025_06_18)
            .with_server_info(Implementation::new("upstream", "1.0"))
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_06_18))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = json!({"type": "object"}).as_object().cloned().unwrap();
        Ok(ListToolsResult::with_all_items(vec![Tool::new(
            "lookup",
            "Looks things up.",
            schema,
        )]))
    }
}

async fn upstream() -> String {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    let service = StreamableHttpService::new(
        || Ok(Upstream),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let app = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://127.0.0.1:{port}/mcp")
}

async fn connect(url: &str, key: &str) -> RunningService<RoleClient, ClientConfig> {
    let transport = StreamableHttpClientTransport::with_client(
        worktruck_kit::http::client(),
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(key.to_owned()),
    );
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("worktruck-test", "1.0"),
    )
    .with_protocol_version(ProtocolVersion::V_2025_06_18)
    .serve(transport)
    .await
    .expect("initialize")
}

async fn call(client: &RunningService<RoleClient, ClientConfig>, name: &str, args: Value) -> Value {
    let r = client
        .call_tool(
            CallToolRequestParams::new(name.to_owned())
                .with_arguments(args.as_object().cloned().unwrap()),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_ne!(r.is_error, Some(true), "{r:?}");
    r.structured_content.expect("structuredContent")
}

#[tokio::test]
async fn agents_list_and_probe_their_tenants_apps_over_mcp() {
    for backend in backends() {
        let s = Stack::start_with(backend, |cfg| {
            cfg.outbound.allow_http = true;
            cfg.outbound.allow_ranges = vec!["127.0.0.0/8".into()];
        })
        .await;
        let url = upstream().await;
        let (st, v) = s
            .call(
                Method::POST,
                "/api/v1/apps",
                Some(json!({"slug": "lookup", "display_name": "Lookup", "mcp_server_url": url})),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{backend:?}: {v}");

        let endpoint = format!("{}/mcp/v1", s.mcp);
        let client = connect(&endpoint, &s.key).await;
        let tools = client.list_all_tools().await.unwrap();
        let list = tools
            .iter()
            .find(|t| t.name == "apps_list")
            .expect("apps_list");
        assert_eq!(
            list.annotations.as_ref().and_then(|a| a.read_only_hint),
            Some(true)
        );
        assert!(tools.iter().any(|t| t.name == "apps_probe"));

        let listed = call(&client, "apps_list", json!({})).await;
        assert_eq!(listed["data"][0]["slug"], "lookup", "{listed}");
        assert_eq!(listed["data"][0]["discovered_tools"][0]["name"], "lookup");
        let probed = call(&client, "apps_probe", json!({"slug": "lookup"})).await;
        assert_eq!(
            (
                probed["probe"]["reachable"].as_bool(),
                probed["probe"]["tools_discovered"].as_i64()
            ),
            (Some(true), Some(1))
        );
        let _ = client.cancel().await;

        // Another tenant's agent sees none of it.
        let other = s.new_tenant("other").await;
        let theirs = connect(&endpoint, &other).await;
        let listed = call(&theirs, "apps_list", json!({})).await;
        assert_eq!(listed["data"], json!([]), "{listed}");
        let r = theirs
            .call_tool(
                CallToolRequestParams::new("apps_probe")
                    .with_arguments(json!({"slug": "lookup"}).as_object().cloned().unwrap()),
            )
            .await
            .unwrap();
        assert_eq!(r.is_error, Some(true), "{r:?}");
        let _ = theirs.cancel().await;
        s.stop().await;
    }
}

/// A client that counts `notifications/tools/list_changed`.
#[derive(Clone, Default)]
struct Watcher {
    changed: Arc<AtomicUsize>,
}

impl ClientHandler for Watcher {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(ClientCapabilities::default(), Implementation::new("worktruck-test", "1.0"))
            .with_protocol_version(ProtocolVersion::V_2025_06_18)
    }

    async fn on_tool_list_changed(&self, _ctx: NotificationContext<RoleClient>) {
        self.changed.fetch_add(1, Ordering::SeqCst);
    }
}

async fn watch(url: &str, key: &str) -> (Watcher, RunningService<RoleClient, Watcher>) {
    let watcher = Watcher::default();
    let transport = StreamableHttpClientTransport::with_client(
        worktruck_kit::http::client(),
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(key.to_owned()),
    );
    let client = watcher.clone().serve(transport).await.expect("initialize");
    (watcher, client)
}

fn names(tools: &[Tool]) -> Vec<String> {
    let mut names: Vec<String> = tools.iter().map(|t| t.name.to_string()).filter(|n| n.contains("__")).collect();
    names.sort();
    names
}

#[tokio::test]
async fn an_apps_enabled_tools_are_its_tenants_mcp_tools_and_changes_reach_open_sessions() {
    for backend in backends() {
        let s = Stack::start_with(backend, |cfg| {
            cfg.outbound.allow_http = true;
            cfg.outbound.allow_ranges = vec!["127.0.0.0/8".into()];
        })
        .await;
        let calls = Arc::new(AtomicUsize::new(0));
        let url = tooling(calls.clone()).await;
        let (st, v) = s
            .call(
                Method::POST,
                "/api/v1/apps",
                Some(json!({"slug": "kb", "display_name": "Knowledge base", "mcp_server_url": url,
                            "auth": {"type": "bearer", "secret": TOKEN}})),
            )
            .await;
        assert_eq!((st, v["app"]["status"].as_str()), (StatusCode::CREATED, Some("active")), "{backend:?}: {v}");
        let endpoint = format!("{}/mcp/v1", s.mcp);

        // Registration enables every tool it mirrored.
        let (watcher, client) = watch(&endpoint, &s.key).await;
        let other = s.new_tenant("other").await;
        let (theirs_watcher, theirs) = watch(&endpoint, &other).await;
        assert_eq!(names(&client.list_all_tools().await.unwrap()), ["kb__files_read", "kb__lookup", "kb__wipe"]);

        // The tenant takes a tool away: its open session is told, and the list has changed.
        let before = watcher.changed.load(Ordering::SeqCst);
        let (st, v) = s
            .call(Method::PATCH, "/api/v1/apps/kb", Some(json!({"enabled_tools": ["lookup", "files.read"]})))
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let mut told = false;
        for _ in 0..100 {
            if watcher.changed.load(Ordering::SeqCst) > before {
                told = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(told, "{backend:?}: no notifications/tools/list_changed within 10 s");
        // Only the app's tenant is told.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(theirs_watcher.changed.load(Ordering::SeqCst), 0, "another tenant's session was told");

        let tools = client.list_all_tools().await.unwrap();
        assert_eq!(names(&tools), ["kb__files_read", "kb__lookup"], "the enabled tools, names mapped to MCP's");
        let lookup = tools.iter().find(|t| t.name == "kb__lookup").unwrap();
        assert_eq!(lookup.annotations.as_ref().and_then(|a| a.read_only_hint), Some(true));
        assert!(lookup.description.as_deref().unwrap().starts_with("Looks a name up."), "{lookup:?}");
        assert_eq!(lookup.input_schema.get("required"), Some(&json!(["q"])));
        assert!(lookup.output_schema.is_some());
        // Another tenant sees none of them, and cannot call them.
        assert_eq!(names(&theirs.list_all_tools().await.unwrap()), Vec::<String>::new());
        let r = theirs
            .call_tool(CallToolRequestParams::new("kb__lookup").with_arguments(json!({"q": "x"}).as_object().cloned().unwrap()))
            .await;
        assert!(r.is_err(), "{r:?}");

        // A call reaches the server with the app's credentials; its answer comes back as given.
        let r = client
            .call_tool(CallToolRequestParams::new("kb__lookup").with_arguments(json!({"q": "ada"}).as_object().cloned().unwrap()))
            .await
            .unwrap();
        assert_eq!(r.is_error, Some(false), "{r:?}");
        assert_eq!(r.structured_content, Some(json!({"found": "ada"})), "{r:?}");
        assert_eq!(serde_json::to_value(&r.content).unwrap()[0]["text"], "found ada");
        let r = client.call_tool(CallToolRequestParams::new("kb__files_read")).await.unwrap();
        assert_eq!(serde_json::to_value(&r.content).unwrap()[0]["text"], "found file", "{r:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Arguments are checked against the mirrored schema before anything is sent.
        let r = client
            .call_tool(CallToolRequestParams::new("kb__lookup").with_arguments(json!({"q": 5}).as_object().cloned().unwrap()))
            .await
            .unwrap();
        assert_eq!(r.is_error, Some(true), "{r:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "a refused call is not sent");
        // A tool that is not enabled is not a tool.
        assert!(client.call_tool(CallToolRequestParams::new("kb__wipe")).await.is_err());

        // `?toolsets=apps` selects them (beside apps_list and apps_probe); another set has none.
        let apps = connect(&format!("{endpoint}?toolsets=apps"), &s.key).await;
        let listed = apps.list_all_tools().await.unwrap();
        assert!(listed.iter().any(|t| t.name == "apps_list") && listed.iter().any(|t| t.name == "kb__lookup"));
        assert!(listed.iter().all(|t| !t.name.starts_with("contacts_")));
        let _ = apps.cancel().await;
        let contacts = connect(&format!("{endpoint}?toolsets=contacts"), &s.key).await;
        assert_eq!(names(&contacts.list_all_tools().await.unwrap()), Vec::<String>::new());
        assert!(contacts.call_tool(CallToolRequestParams::new("kb__files_read")).await.is_err());
        let _ = contacts.cancel().await;

        // A disabled app offers nothing.
        let (st, _) = s.call(Method::PATCH, "/api/v1/apps/kb", Some(json!({"status": "disabled"}))).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(names(&client.list_all_tools().await.unwrap()), Vec::<String>::new());
        assert!(client.call_tool(CallToolRequestParams::new("kb__lookup")).await.is_err());
        let _ = client.cancel().await;
        let _ = theirs.cancel().await;
        s.stop().await;
    }
}
