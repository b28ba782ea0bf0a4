//! The apps tools over MCP (`apps_list`, `apps_probe`), on SQLite and on PostgreSQL + NATS:
//! an MCP client connected to Worktruck lists its tenant's apps and probes one, which reaches
//! an MCP server the test starts (an rmcp server on 127.0.0.1, allowed by `[outbound]`).

mod common;

use std::borrow::Cow;
use std::sync::Arc;

use common::Stack;
use reqwest::{Method, StatusCode};
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, ErrorData, Implementation,
    ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig,
    Tool,
};
use rmcp::service::{RequestContext, RunningService};
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
