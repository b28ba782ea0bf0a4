//! The tools of a tenant's apps on its own MCP endpoint: each enabled tool of an `active` app
//! (not stale, not changed since it was approved) is listed as `<slug>__<tool>` in toolset
//! `apps`, with the server's schemas and annotations, and a call is the apps service's
//! `CallAppTool` (which checks the tool, its arguments and its answer again, and adds the app's
//! credentials). The list is the tenant's, read per `tools/list`; the apps service's events
//! tell open sessions of that tenant that it changed (`notifications/tools/list_changed`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use http::uri::PathAndQuery;
use rmcp::model::{CallToolResult, ContentBlock, Tool, ToolAnnotations};
use rmcp::{Peer, RoleServer};
use serde_json::{Map, Value, json};
use tonic::transport::Channel;
use uuid::Uuid;
use worktruck_gateway::Principal;
use worktruck_gateway::upstream::{self, Upstreams};
use worktruck_kit::Error;
use worktruck_kit::bus::{Bus, Watched};
use worktruck_kit::context::Signer;
use worktruck_proto::registry::Registry;

/// The apps service's gRPC name.
const APPS_SERVICE: &str = "worktruck.apps.v1.AppsService";
/// The toolset app tools are in (with the registry's `apps_list` and `apps_probe`).
pub(crate) const TOOLSET: &str = "apps";
/// What separates an app's slug from its tool's name (a slug has no `_`).
const SEPARATOR: &str = "__";
/// The longest MCP tool name (`^[a-zA-Z0-9_-]{1,64}$`).
const MAX_NAME: usize = 64;
/// Apps listed per page, and pages read per `tools/list` (the list's bound).
const PAGE: i64 = 200;
const MAX_PAGES: usize = 10;
/// The apps service's events.
const APP_EVENTS: &str = "worktruck.apps.app.>";

/// The MCP name of `tool` of the app `slug`: `<slug>__<tool>`, each character outside
/// `[a-zA-Z0-9_-]` an `_`; a name longer than 64 characters is cut and ends in a hash of the
/// whole tool name, so two long names do not meet.
pub fn tool_name(slug: &str, tool: &str) -> String {
    let mapped: String = tool
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .collect();
    let name = format!("{slug}{SEPARATOR}{mapped}");
    if name.len() <= MAX_NAME && !tool.is_empty() {
        return name;
    }
    // FNV-1a of the original name: stable across processes and releases.
    let hash = tool.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    let suffix = format!("-{hash:08x}");
    let keep = MAX_NAME - suffix.len();
    format!("{}{suffix}", &name[..keep.min(name.len())])
}

/// One app tool as offered: its MCP tool and where a call goes.
#[derive(Clone)]
pub(crate) struct Offered {
    pub(crate) tool: Tool,
    pub(crate) slug: String,
    /// The tool's name on its server.
    pub(crate) upstream: String,
}

/// The tools `app` (an `App` as JSON) offers, each under its MCP name; a name two tools map to
/// is offered for the first of them (by server name) and the other is reported in the log.
pub(crate) fn offered(app: &Value, taken: &HashSet<String>) -> Vec<Offered> {
    let slug = app["slug"].as_str().unwrap_or_default();
    if app["status"].as_str() != Some("active") || slug.is_empty() || slug.contains('_') {
        return Vec::new();
    }
    let enabled: HashSet<&str> = app["enabled_tools"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut tools: Vec<&Value> = app["discovered_tools"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|t| t["name"].as_str().is_some_and(|n| enabled.contains(n)))
                .filter(|t| !t["stale"].as_bool().unwrap_or(false) && !t["changed"].as_bool().unwrap_or(false))
                .collect()
        })
        .unwrap_or_default();
    tools.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for t in tools {
        let upstream = t["name"].as_str().unwrap_or_default();
        let name = tool_name(slug, upstream);
        if taken.contains(&name) || !seen.insert(name.clone()) {
            tracing::warn!(app = slug, tool = upstream, name = %name, "an app tool's MCP name is taken: not offered");
            continue;
        }
        out.push(Offered { tool: mcp_tool(name, app, t), slug: slug.to_owned(), upstream: upstream.to_owned() });
    }
    out
}

/// The MCP tool of a mirrored tool `t` of `app`.
fn mcp_tool(name: String, app: &Value, t: &Value) -> Tool {
    let mut input = t["input_schema"].as_object().cloned().unwrap_or_default();
    input.entry("type").or_insert_with(|| json!("object"));
    let app_name = app["display_name"].as_str().unwrap_or_default();
    let description = match t["description"].as_str() {
        Some(d) if !d.is_empty() => format!("{d}\n\n(App {app_name}: tool {} of its MCP server.)", t["name"].as_str().unwrap_or_default()),
        _ => format!("Tool {} of the app {app_name}.", t["name"].as_str().unwrap_or_default()),
    };
    let mut tool = Tool::new_with_raw(name, Some(description.into()), Arc::new(input));
    if let Some(output) = t["output_schema"].as_object().filter(|o| !o.is_empty()) {
        tool = tool.with_raw_output_schema(Arc::new(output.clone()));
    }
    let hints = &t["annotations"];
    let mut annotations = ToolAnnotations::new();
    annotations.title = hints["title"].as_str().or_else(|| t["title"].as_str()).map(str::to_owned);
    annotations.read_only_hint = hints["read_only_hint"].as_bool();
    annotations.destructive_hint = hints["destructive_hint"].as_bool();
    annotations.idempotent_hint = hints["idempotent_hint"].as_bool();
    // An app's server is outside Worktruck, whatever it says.
    annotations.open_world_hint = Some(hints["open_world_hint"].as_bool().unwrap_or(true));
    tool = tool.with_annotations(annotations);
    if let Some(title) = t["title"].as_str() {
        tool = tool.with_title(title.to_owned());
    }
    tool
}

/// The slug in an app tool's MCP name, if it is one.
pub(crate) fn slug_of(name: &str) -> Option<&str> {
    let (slug, tool) = name.split_once(SEPARATOR)?;
    (!slug.is_empty() && !tool.is_empty()).then_some(slug)
}

/// An app's `CallAppToolResponse` (JSON) as the tool result its server gave.
pub(crate) fn upstream_result(mut result: CallToolResult) -> CallToolResult {
    if result.is_error == Some(true) {
        return result;
    }
    let Some(answer) = result.structured_content.take() else { return result };
    let content: Vec<ContentBlock> = answer["content"]
        .as_array()
        .map(|blocks| {
            blocks
                .iter()
                .map(|b| serde_json::from_value(b.clone()).unwrap_or_else(|_| ContentBlock::text(b.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let mut out = CallToolResult::success(content);
    out.structured_content = answer.get("structured_content").filter(|s| s.is_object()).cloned();
    out.is_error = Some(answer["is_error"].as_bool().unwrap_or(false));
    out.meta = result.meta;
    out
}

/// One RPC of the apps service, resolved.
#[derive(Clone)]
pub(crate) struct Rpc {
    pub(crate) rpc: prost_reflect::MethodDescriptor,
    pub(crate) channel: Channel,
    pub(crate) path: PathAndQuery,
}

impl Rpc {
    fn resolve(registry: &Registry, upstreams: &Upstreams, method: &str) -> Option<Self> {
        let service = registry.pool().get_service_by_name(APPS_SERVICE)?;
        let rpc = service.methods().find(|m| m.name() == method)?;
        let channel = upstreams.get(APPS_SERVICE)?.clone();
        let path = PathAndQuery::try_from(format!("/{APPS_SERVICE}/{method}")).ok()?;
        Some(Self { rpc, channel, path })
    }

    async fn call(&self, signer: &Signer, principal: &Principal, request_id: &str, arguments: Value) -> Result<Value, Error> {
        worktruck_kit::scopes::check(&principal.ctx, &worktruck_kit::scopes::scope(&self.rpc, true))?;
        let metadata = worktruck_gateway::telemetry::call_metadata(signer, &principal.ctx, request_id);
        upstream::call_json(self.channel.clone(), self.path.clone(), &self.rpc, arguments, metadata).await
    }
}

/// The apps service as the MCP gateway uses it: present when the process routes it.
#[derive(Clone)]
pub(crate) struct Apps {
    list: Rpc,
    get: Rpc,
    /// `CallAppTool`, through which every app tool call goes.
    pub(crate) call: Rpc,
    changes: ToolListChanges,
}

impl Apps {
    pub(crate) fn new(registry: &Registry, upstreams: &Upstreams, changes: ToolListChanges) -> Option<Self> {
        Some(Self {
            list: Rpc::resolve(registry, upstreams, "ListApps")?,
            get: Rpc::resolve(registry, upstreams, "GetApp")?,
            call: Rpc::resolve(registry, upstreams, "CallAppTool")?,
            changes,
        })
    }

    /// Every tool the principal's apps offer (bounded by [`MAX_PAGES`] pages of apps). A
    /// credential that may not read apps gets none.
    pub(crate) async fn tools(&self, signer: &Signer, principal: &Principal, request_id: &str, taken: &HashSet<String>) -> Vec<Offered> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut args = json!({"limit": PAGE});
            if let Some(c) = &cursor {
                args["cursor"] = json!(c);
            }
            let page = match self.list.call(signer, principal, request_id, args).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::debug!(error = %e.message, "app tools not listed");
                    return out;
                }
            };
            for app in page["data"].as_array().into_iter().flatten() {
                out.extend(offered(app, taken));
            }
            cursor = page["next_cursor"].as_str().map(str::to_owned);
            if cursor.is_none() || !page["has_more"].as_bool().unwrap_or(false) {
                return out;
            }
        }
        tracing::warn!(pages = MAX_PAGES, "a tenant has more apps than tools/list reads: the rest are not offered");
        out
    }

    /// The app tool named `name` for the principal, if its app offers it now.
    pub(crate) async fn find(&self, signer: &Signer, principal: &Principal, request_id: &str, name: &str, taken: &HashSet<String>) -> Result<Option<Offered>, Error> {
        let Some(slug) = slug_of(name) else { return Ok(None) };
        let app = match self.get.call(signer, principal, request_id, json!({"slug": slug})).await {
            Ok(app) => app,
            Err(e) if e.code == worktruck_kit::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(offered(&app, taken).into_iter().find(|o| o.tool.name == name))
    }

    /// Tells `peer` when its tenant's app tools change.
    pub(crate) fn watch(&self, tenant: Uuid, peer: Peer<RoleServer>) {
        self.changes.add(tenant, peer);
    }
}

/// The open MCP sessions per tenant, told when the tenant's app tools change. One per process,
/// shared by every session of its MCP gateway.
#[derive(Clone, Default)]
pub struct ToolListChanges {
    peers: Arc<Mutex<HashMap<Uuid, Vec<Peer<RoleServer>>>>>,
}

impl ToolListChanges {
    /// No session yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn add(&self, tenant: Uuid, peer: Peer<RoleServer>) {
        let mut peers = self.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Ended sessions go whenever one is added, so the map holds open ones.
        peers.retain(|_, list| {
            list.retain(|p| !p.is_transport_closed());
            !list.is_empty()
        });
        peers.entry(tenant).or_default().push(peer);
    }

    /// The open sessions of `tenant` (all, when `None`).
    fn of(&self, tenant: Option<Uuid>) -> Vec<Peer<RoleServer>> {
        let peers = self.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match tenant {
            Some(t) => peers.get(&t).cloned().unwrap_or_default(),
            None => peers.values().flatten().cloned().collect(),
        }
    }

    /// Sends `notifications/tools/list_changed` to the sessions of `tenant` (all, when `None`).
    pub async fn notify(&self, tenant: Option<Uuid>) {
        for peer in self.of(tenant) {
            if peer.is_transport_closed() {
                continue;
            }
            if let Err(e) = peer.notify_tool_list_changed().await {
                tracing::debug!(error = %e, "a session was not told its tool list changed");
            }
        }
    }

    /// Follows the apps service's events on `bus` until `shutdown`: each tells its tenant's
    /// sessions; a gap (events possibly missed) tells every session.
    pub async fn follow(self, bus: Bus, shutdown: impl std::future::Future<Output = ()>) {
        use futures::StreamExt as _;
        let watched = bus.watch(APP_EVENTS);
        tokio::pin!(watched);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                next = watched.next() => match next {
                    Some(Watched::Event(m)) => self.notify(Some(m.tenant_id)).await,
                    Some(Watched::Gap) => self.notify(None).await,
                    None => return,
                },
            }
        }
    }
}

/// The arguments of `CallAppTool` for a call of `offered` with `arguments`.
pub(crate) fn call_arguments(offered: &Offered, arguments: Map<String, Value>) -> Value {
    json!({"slug": offered.slug, "tool": offered.upstream, "arguments": arguments})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_mcp_and_long_ones_stay_apart() {
        assert_eq!(tool_name("github", "create_issue"), "github__create_issue");
        assert_eq!(tool_name("my-app", "files.read/all"), "my-app__files_read_all");
        let long_a = tool_name("a-very-long-application-slug-xx", &"t".repeat(60));
        let long_b = tool_name("a-very-long-application-slug-xx", &format!("{}u", "t".repeat(59)));
        for n in [&long_a, &long_b] {
            assert_eq!(n.len(), 64, "{n}");
            assert!(n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'), "{n}");
        }
        assert_ne!(long_a, long_b);
        assert_eq!(slug_of("github__create_issue"), Some("github"));
        assert_eq!(slug_of("contacts_list"), None);
    }

    #[test]
    fn only_enabled_fresh_approved_tools_of_active_apps_are_offered() {
        let tool = |name: &str, stale: bool, changed: bool| {
            json!({"name": name, "description": "d", "input_schema": {"properties": {}}, "stale": stale, "changed": changed,
                   "annotations": {"read_only_hint": true}})
        };
        let app = json!({
            "slug": "x", "display_name": "X", "status": "active",
            "enabled_tools": ["a", "b", "c", "d.e", "d_e"],
            "discovered_tools": [tool("a", false, false), tool("b", true, false), tool("c", false, true),
                                 tool("d.e", false, false), tool("d_e", false, false), tool("off", false, false)],
        });
        let names: Vec<String> = offered(&app, &HashSet::new()).iter().map(|o| o.tool.name.to_string()).collect();
        // `d.e` and `d_e` meet at `x__d_e`: the first by server name keeps it.
        assert_eq!(names, ["x__a", "x__d_e"]);
        let first = &offered(&app, &HashSet::new())[0];
        assert_eq!(first.tool.input_schema.get("type"), Some(&json!("object")));
        let hints = first.tool.annotations.as_ref().unwrap();
        assert_eq!((hints.read_only_hint, hints.open_world_hint), (Some(true), Some(true)));
        assert!(offered(&app, &HashSet::from(["x__a".to_owned()])).iter().all(|o| o.tool.name != "x__a"));
        let mut disabled = app.clone();
        disabled["status"] = json!("disabled");
        assert!(offered(&disabled, &HashSet::new()).is_empty());
    }

    #[test]
    fn an_app_answer_becomes_its_servers_result() {
        let kept = CallToolResult::structured(json!({
            "is_error": false,
            "content": [{"type": "text", "text": "hi"}],
            "structured_content": {"n": 1},
        }));
        let r = upstream_result(kept);
        assert_eq!(r.is_error, Some(false));
        assert_eq!(r.structured_content, Some(json!({"n": 1})));
        assert_eq!(serde_json::to_value(&r.content).unwrap(), json!([{"type": "text", "text": "hi"}]));
        let failed = upstream_result(CallToolResult::structured(json!({"is_error": true, "content": []})));
        assert_eq!(failed.is_error, Some(true));
    }
}
