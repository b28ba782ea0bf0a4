//! An MCP server the tests start on 127.0.0.1 as a tenant's app: a few tools (`lookup`, with
//! an output schema and a read-only hint; `files.read`, whose name MCP's names do not allow;
//! `wipe`), served only with the app's bearer token, counting the calls it serves.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    Implementation, ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerCapabilities,
    ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler};
use serde_json::{Value, json};

/// The bearer token the tooling server wants.
pub const TOKEN: &str = "tok-app-0123456789";

/// An MCP server with a few tools that wants a bearer token; it counts the calls it serves.
#[derive(Clone)]
pub struct Tooling {
    pub calls: Arc<AtomicUsize>,
}

impl ServerHandler for Tooling {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_protocol_version(ProtocolVersion::V_2025_06_18)
            .with_server_info(Implementation::new("tooling", "1.0"))
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_06_18))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let object = |v: Value| v.as_object().cloned().unwrap();
        let lookup = Tool::new(
            "lookup",
            "Looks a name up.",
            object(json!({"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]})),
        )
        .with_raw_output_schema(Arc::new(object(json!({"type": "object", "properties": {"found": {"type": "string"}}}))))
        .with_annotations(ToolAnnotations::new().read_only(true));
        Ok(ListToolsResult::with_all_items(vec![
            lookup,
            Tool::new("files.read", "Reads a file.", object(json!({"type": "object"}))),
            Tool::new("wipe", "Wipes everything.", object(json!({"type": "object"}))),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let auth = ctx
            .extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.headers.get("authorization"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if auth != format!("Bearer {TOKEN}") {
            return Ok(CallToolResult::error(vec![ContentBlock::text("no credentials")]).into());
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        let q = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("q"))
            .and_then(Value::as_str)
            .unwrap_or("file")
            .to_owned();
        let mut result = CallToolResult::success(vec![ContentBlock::text(format!("found {q}"))]);
        if request.name == "lookup" {
            result.structured_content = Some(json!({"found": q}));
        }
        Ok(result.into())
    }
}

pub async fn tooling(calls: Arc<AtomicUsize>) -> String {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    let service = StreamableHttpService::new(
        move || Ok(Tooling { calls: calls.clone() }),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let app = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://127.0.0.1:{port}/mcp")
}

