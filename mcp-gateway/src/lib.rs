//! The MCP gateway: Model Context Protocol (revision 2025-06-18) over Streamable HTTP at
//! `/mcp/v1`, plus its OAuth protected-resource metadata (RFC 9728).
//!
//! Every tool comes from the proto [`Registry`]: an RPC carrying `(worktruck.mcp.v1.tool)` is a
//! tool, with its comment as description and JSON Schemas derived from its messages. A call is
//! transcoded exactly as REST does it and sent to the service as a generic unary gRPC call, so
//! adding a tool needs nothing but the proto option. Callers authenticate on every HTTP request
//! through the same [`Gate`] as REST (authentication and rate limits); sessions are bound to the caller that opened them.
//! With x402 on, a wallet pays per tool call instead (the x402 MCP transport: `_meta["x402/payment"]`
//! on the call, `_meta["x402/payment-response"]` on its result).
//!
//! Like the REST gateway it is stateless beyond rmcp's in-memory sessions: no database, no
//! per-service code.

mod apps;
mod guard;
mod tools;

use std::sync::Arc;

use axum::routing::get;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use worktruck_gateway::{Gate, Upstreams};
use worktruck_kit::context::Signer;
use worktruck_proto::registry::Registry;

pub use apps::ToolListChanges;
pub use worktruck_proto::app_tools::tool_name;
pub use tools::McpGateway;

/// Where the MCP endpoint is mounted.
pub const MCP_PATH: &str = "/mcp/v1";
/// The protected-resource metadata of the MCP endpoint (RFC 9728 §3.1: inserted before the path).
pub const PRM_PATH: &str = "/.well-known/oauth-protected-resource/mcp/v1";
/// The same document at the root, which later spec revisions and many clients probe.
pub const PRM_ROOT_PATH: &str = "/.well-known/oauth-protected-resource";

/// A session opened by a paying wallet (x402): its requests carry no credential but the
/// session, and each of its tool calls must be paid for by the same wallet.
#[derive(Debug, Clone)]
pub(crate) struct Payer {
    /// The wallet's tenant, as every call of the session is made.
    pub(crate) principal: worktruck_gateway::Principal,
    /// The wallet's address, lowercase.
    pub(crate) wallet: String,
}

/// Why the MCP router cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tool's service has no upstream channel.
    #[error("no upstream channel for service {0}")]
    MissingUpstream(String),
    /// A tool's gRPC path is not a valid URI path.
    #[error("invalid gRPC path {0}")]
    InvalidGrpcPath(String),
    /// The public base URL is not an absolute `http(s)://host[:port]` URL.
    #[error("invalid MCP base URL {0:?}: expected http(s)://host[:port]")]
    InvalidBaseUrl(String),
}

/// How the MCP gateway presents itself.
#[derive(Debug, Clone)]
pub struct McpConfig {
    /// The public base URL clients use, without a trailing slash, e.g. `https://mcp.example.com`
    /// (in dev: `http://<bound address>`). The resource URL is this plus [`MCP_PATH`].
    pub base_url: String,
    /// The OAuth authorization server (`auth.oidc.issuer`) advertised in the metadata, if any.
    pub oidc_issuer: Option<String>,
    /// `Host` header values accepted (DNS-rebinding defence) beside the loopback names and the
    /// host of `base_url`, which are always accepted (`mcp.allowed_hosts`).
    pub allowed_hosts: Vec<String>,
    /// Largest request body accepted; larger ones get 413 `payload_too_large`.
    pub body_limit_bytes: usize,
}

impl McpConfig {
    /// A config for `base_url` with the default allowed hosts and no issuer.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            oidc_issuer: None,
            allowed_hosts: Vec::new(),
            body_limit_bytes: 1024 * 1024,
        }
    }

    /// The canonical URL of the MCP endpoint (RFC 9728 `resource`).
    pub fn resource(&self) -> String {
        format!("{}{MCP_PATH}", self.base_url)
    }

    /// The URL of the protected-resource metadata, as the 401 challenge points to it.
    pub fn metadata_url(&self) -> String {
        format!("{}{PRM_PATH}", self.base_url)
    }

    /// The host (without port) of `base_url`.
    fn base_host(&self) -> Result<String, Error> {
        let bad = || Error::InvalidBaseUrl(self.base_url.clone());
        let uri: http::Uri = self.base_url.parse().map_err(|_| bad())?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(bad());
        }
        let host = uri.host().ok_or_else(bad)?;
        Ok(host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned())
    }

    /// The `Host` values accepted: loopback, the base URL's host, then the configured ones.
    fn hosts(&self) -> Result<Vec<String>, Error> {
        let base = self.base_host()?;
        let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
        for host in std::iter::once(base).chain(self.allowed_hosts.iter().map(|h| h.trim().to_ascii_lowercase())) {
            if !host.is_empty() && !hosts.contains(&host) {
                hosts.push(host);
            }
        }
        Ok(hosts)
    }
}

/// The MCP router: `/mcp/v1` (admitted through `gate` on every request) and the two
/// protected-resource metadata documents (public). Fails when a tool's service has no upstream.
/// `changes` holds the open sessions to tell when their tenant's app tools change (see
/// [`ToolListChanges::follow`]).
pub fn router(
    registry: Arc<Registry>,
    upstreams: Upstreams,
    signer: Signer,
    gate: Gate,
    cfg: McpConfig,
    changes: ToolListChanges,
) -> Result<axum::Router, Error> {
    let hosts = cfg.hosts()?;
    let tool_names = registry.tools().iter().map(|t| t.name.clone()).collect();
    let tenants = upstreams
        .get(worktruck_gateway::TENANTS_SERVICE)
        .ok_or_else(|| Error::MissingUpstream(worktruck_gateway::TENANTS_SERVICE.to_owned()))?
        .clone();
    let gateway = McpGateway::new(&registry, &upstreams, signer.clone(), gate.x402().cloned(), changes)?;
    let sessions = Arc::new(LocalSessionManager::default());
    let service = StreamableHttpService::new(
        move || Ok(gateway.clone()),
        sessions.clone(),
        StreamableHttpServerConfig::default().with_allowed_hosts(hosts),
    );
    let metadata = guard::protected_resource_metadata(&registry, &cfg);
    let prm = move || {
        let metadata = metadata.clone();
        async move { axum::Json(metadata) }
    };
    let guarded = axum::Router::new().nest_service(MCP_PATH, service).layer(
        axum::middleware::from_fn_with_state(
            Arc::new(guard::Guard::new(gate, cfg, sessions, tool_names, tenants, signer)),
            guard::guard,
        ),
    );
    Ok(axum::Router::new()
        .route(PRM_PATH, get(prm.clone()))
        .route(PRM_ROOT_PATH, get(prm))
        .merge(guarded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_hosts_are_loopback_plus_the_base_host() {
        let cfg = McpConfig::new("https://mcp.example.com/");
        assert_eq!(cfg.resource(), "https://mcp.example.com/mcp/v1");
        assert_eq!(
            cfg.metadata_url(),
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp/v1"
        );
        assert_eq!(
            cfg.hosts().unwrap(),
            ["localhost", "127.0.0.1", "::1", "mcp.example.com"]
        );
        assert_eq!(
            McpConfig::new("http://127.0.0.1:8081")
                .hosts()
                .unwrap()
                .len(),
            3
        );
        assert!(McpConfig::new("mcp.example.com").hosts().is_err());
        // Configured names come on top of the defaults, never instead of them.
        let mut cfg = McpConfig::new("https://mcp.example.com");
        cfg.allowed_hosts = vec!["worktruck-mcp-gateway".into(), "Mcp.Internal:8081".into(), "localhost".into()];
        assert_eq!(
            cfg.hosts().unwrap(),
            ["localhost", "127.0.0.1", "::1", "mcp.example.com", "worktruck-mcp-gateway", "mcp.internal:8081"]
        );
    }
}
