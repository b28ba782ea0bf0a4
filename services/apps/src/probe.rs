//! The probe: an MCP client (rmcp over Streamable HTTP, on a `kit::http::guarded` client) that
//! runs `initialize` (protocol 2025-06-18; an older revision the server answers with is
//! accepted) and `tools/list` page by page — at most `max_pages` pages, `max_tools` tools and
//! `max_bytes` of answers (rmcp refuses a single answer past it before decoding), a repeated
//! cursor is an error — all within one deadline. rmcp's own `list_all_tools` is not used: it
//! follows `nextCursor` without a bound.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, JsonObject,
    PaginatedRequestParams, ProtocolVersion,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::Value;
use worktruck_kit::config::OutboundConfig;
use worktruck_kit::http::{Guard, RefusalLog, Timeouts};
use zeroize::Zeroizing;

use crate::Settings;

/// The protocol revisions a server may answer `initialize` with.
pub const ACCEPTED_VERSIONS: &[&str] = &["2025-06-18", "2025-03-26", "2024-11-05"];
/// Longest failure reason kept (a server's own text may be part of it).
const MAX_REASON_CHARS: usize = 500;

/// An initialized MCP client session.
type Session = rmcp::service::RunningService<rmcp::RoleClient, ClientConfig>;

/// Why a call failed; `refused` when the SSRF guard stopped it.
#[derive(Debug, Clone)]
pub struct CallError {
    pub reason: String,
    pub refused: bool,
}

/// The protocol revision a session's server answered `initialize` with.
fn version_of(client: &Session) -> String {
    client
        .peer_info()
        .and_then(|p| serde_json::to_value(&p.protocol_version).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// What the probe sends to authenticate. The secret is dropped with it.
pub struct Credentials {
    /// `none`, `bearer` or `header`.
    pub kind: String,
    /// The header for `header`.
    pub header_name: Option<String>,
    /// The secret for `bearer` and `header` (wiped from memory when dropped).
    pub secret: Option<Zeroizing<String>>,
}

impl Credentials {
    /// No credentials.
    pub fn none() -> Credentials {
        Credentials {
            kind: "none".into(),
            header_name: None,
            secret: None,
        }
    }
}

/// A tool as the server listed it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedTool {
    pub name: String,
    pub title: Option<String>,
    pub description: Option<String>,
    pub input_schema: Value,
    pub output_schema: Option<Value>,
    pub annotations: Option<Value>,
}

/// A successful probe.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// The revision the server answered with.
    pub protocol_version: String,
    /// Its tools, in the order listed.
    pub tools: Vec<ListedTool>,
}

/// How a probe ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The catalog.
    Listed(Catalog),
    /// The server could not be probed; `refused` when the SSRF guard stopped it.
    Failed { reason: String, refused: bool },
}

/// Probes servers for the service.
#[derive(Clone)]
pub struct Prober {
    outbound: OutboundConfig,
    guard: Guard,
    settings: Settings,
}

impl Prober {
    /// A prober with the process's outbound settings and the service's bounds.
    pub fn new(outbound: OutboundConfig, guard: Guard, settings: Settings) -> Prober {
        Prober {
            outbound,
            guard,
            settings,
        }
    }

    /// The SSRF guard (registration checks URLs with it first).
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// A guarded client for one task that ends within `deadline`, and the log of its guard's
    /// first refusal; the URL is checked first.
    fn client(
        &self,
        url: &str,
        deadline: Duration,
    ) -> Result<(reqwest::Client, RefusalLog), (String, bool)> {
        let (guard, log) = self.guard.recording();
        guard.check_url(url).map_err(|r| (r.0, true))?;
        let timeouts = Timeouts {
            connect: Duration::from_millis(self.settings.connect_timeout_ms),
            // The task's own deadline ends it first, with its own message.
            total: deadline + Duration::from_secs(1),
        };
        let client = worktruck_kit::http::guarded(&self.outbound, guard, timeouts)
            .map_err(|e| (e.0, false))?;
        Ok((client, log))
    }

    /// Probes `url` with `creds`, within the deadline.
    pub async fn probe(&self, url: &str, creds: Credentials) -> Outcome {
        let (client, log) = match self.client(url, self.settings.deadline()) {
            Ok(c) => c,
            Err((reason, refused)) => return Outcome::Failed { reason, refused },
        };
        let run = self.run(client, url, creds);
        let result = tokio::time::timeout(self.settings.deadline(), run).await;
        if let Some(r) = log.first() {
            return Outcome::Failed {
                reason: r.0,
                refused: true,
            };
        }
        match result {
            Err(_) => Outcome::Failed {
                reason: format!(
                    "the server did not answer within the probe deadline of {} ms",
                    self.settings.probe_deadline_ms
                ),
                refused: false,
            },
            Ok(Err(reason)) => Outcome::Failed {
                reason: clean(&reason),
                refused: false,
            },
            Ok(Ok(c)) => Outcome::Listed(c),
        }
    }

    /// Calls `tool` with `arguments` on `url` (a session of its own: `initialize`, then
    /// `tools/call`), within `call_timeout_ms`, with an answer of at most `max_result_bytes`.
    /// Answers the `CallToolResult` as JSON.
    pub async fn call(
        &self,
        url: &str,
        creds: Credentials,
        tool: &str,
        arguments: JsonObject,
    ) -> Result<Value, CallError> {
        let deadline = Duration::from_millis(self.settings.call_timeout_ms);
        let (client, log) = self
            .client(url, deadline)
            .map_err(|(reason, refused)| CallError { reason, refused })?;
        let limit = self.settings.max_result_bytes;
        let run = async move {
            let session = self.connect(client, url, creds, limit).await?;
            let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
            let result = session
                .call_tool(params)
                .await
                .map_err(|e| format!("tools/call failed: {e}"));
            let _ = session.cancel().await;
            serde_json::to_value(result?).map_err(|e| format!("tools/call: {e}"))
        };
        let result = tokio::time::timeout(deadline, run).await;
        if let Some(r) = log.first() {
            return Err(CallError {
                reason: r.0,
                refused: true,
            });
        }
        match result {
            Err(_) => Err(CallError {
                reason: format!(
                    "the server did not answer within the call timeout of {} ms",
                    self.settings.call_timeout_ms
                ),
                refused: false,
            }),
            Ok(Err(reason)) => Err(CallError {
                reason: clean(&reason),
                refused: false,
            }),
            Ok(Ok(v)) => Ok(v),
        }
    }

    async fn run(
        &self,
        http: reqwest::Client,
        url: &str,
        creds: Credentials,
    ) -> Result<Catalog, String> {
        let client = self
            .connect(http, url, creds, self.settings.max_bytes)
            .await?;
        let version = version_of(&client);
        let listed = self.list(&client).await;
        let _ = client.cancel().await;
        Ok(Catalog {
            protocol_version: version,
            tools: listed?,
        })
    }

    /// An initialized MCP session with `url` at an accepted protocol revision, each answer at
    /// most `max_bytes` (rmcp refuses a larger one before decoding it).
    async fn connect(
        &self,
        http: reqwest::Client,
        url: &str,
        creds: Credentials,
        max_bytes: usize,
    ) -> Result<Session, String> {
        let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_owned())
            .max_json_response_size(max_bytes)
            .max_sse_event_size(max_bytes);
        match (creds.kind.as_str(), creds.secret) {
            ("bearer", Some(secret)) => config = config.auth_header(secret.as_str()),
            ("header", Some(secret)) => {
                let name =
                    http::HeaderName::from_bytes(creds.header_name.unwrap_or_default().as_bytes())
                        .map_err(|_| "the app's auth header name is not valid".to_owned())?;
                let mut value = http::HeaderValue::from_str(secret.as_str())
                    .map_err(|_| "the app's secret is not a valid header value".to_owned())?;
                value.set_sensitive(true);
                config = config.custom_headers(HashMap::from([(name, value)]));
            }
            _ => {}
        }
        let transport = StreamableHttpClientTransport::with_client(http, config);
        let client = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("worktruck-apps", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(ProtocolVersion::V_2025_06_18)
        .serve(transport)
        .await
        .map_err(|e| format!("initialize failed: {e}"))?;
        let version = version_of(&client);
        if !ACCEPTED_VERSIONS.contains(&version.as_str()) {
            let _ = client.cancel().await;
            return Err(format!(
                "the server answered initialize with protocol revision {version:?}; accepted are {}",
                ACCEPTED_VERSIONS.join(", ")
            ));
        }
        Ok(client)
    }

    async fn list(&self, client: &Session) -> Result<Vec<ListedTool>, String> {
        let s = &self.settings;
        let mut tools: Vec<ListedTool> = Vec::new();
        let mut names = HashSet::new();
        let mut cursors = HashSet::new();
        let mut cursor: Option<String> = None;
        let mut bytes = 0usize;
        for page_no in 1.. {
            if page_no > s.max_pages {
                return Err(format!(
                    "tools/list did not end within {} pages",
                    s.max_pages
                ));
            }
            let params = PaginatedRequestParams::default().with_cursor(cursor.clone());
            let page = client
                .list_tools(Some(params))
                .await
                .map_err(|e| format!("tools/list failed: {e}"))?;
            let page = serde_json::to_value(&page).map_err(|e| format!("tools/list: {e}"))?;
            bytes += serde_json::to_vec(&page)
                .map(|b| b.len())
                .unwrap_or(usize::MAX);
            if bytes > s.max_bytes {
                return Err(format!(
                    "tools/list answered more than {} bytes",
                    s.max_bytes
                ));
            }
            for t in page
                .get("tools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let tool = listed(t)?;
                if !names.insert(tool.name.clone()) {
                    return Err(format!("tools/list named the tool {:?} twice", tool.name));
                }
                tools.push(tool);
                if tools.len() > s.max_tools {
                    return Err(format!("tools/list listed more than {} tools", s.max_tools));
                }
            }
            match page.get("nextCursor").and_then(Value::as_str) {
                None => break,
                Some(next) => {
                    if !cursors.insert(next.to_owned()) {
                        return Err("tools/list repeated a cursor".into());
                    }
                    cursor = Some(next.to_owned());
                }
            }
        }
        Ok(tools)
    }
}

/// A listed tool from its JSON: a name of 1 to 128 characters, an object input schema.
fn listed(t: &Value) -> Result<ListedTool, String> {
    let name = t.get("name").and_then(Value::as_str).unwrap_or_default();
    if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err(
            "tools/list named a tool with an empty, over-long or control-character name".into(),
        );
    }
    let text = |k: &str| {
        t.get(k)
            .and_then(Value::as_str)
            .map(|s| s.replace('\0', ""))
    };
    let object = |k: &str| t.get(k).filter(|v| v.is_object()).cloned();
    Ok(ListedTool {
        name: name.to_owned(),
        title: text("title"),
        description: text("description"),
        input_schema: object("inputSchema")
            .unwrap_or_else(|| serde_json::json!({"type": "object"})),
        output_schema: object("outputSchema"),
        annotations: object("annotations"),
    })
}

/// A failure's text as kept: one line, control characters dropped, bounded.
fn clean(reason: &str) -> String {
    let one_line: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= MAX_REASON_CHARS {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(MAX_REASON_CHARS).collect();
    cut.push('…');
    cut
}
