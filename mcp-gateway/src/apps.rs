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
use serde_json::{Value, json};
use tonic::transport::Channel;
use uuid::Uuid;
use worktruck_gateway::Principal;
use worktruck_gateway::upstream::{self, Upstreams};
use worktruck_kit::Error;
use worktruck_kit::bus::{Bus, Watched};
use worktruck_kit::context::Signer;
use worktruck_proto::app_tools::{self, AppTool, Offer};
use worktruck_proto::registry::Registry;

/// The apps service's gRPC name.
const APPS_SERVICE: &str = "worktruck.apps.v1.AppsService";
/// The toolset app tools are in (with the registry's `apps_list` and `apps_probe`).
pub(crate) const TOOLSET: &str = "apps";
/// The apps service's events.
const APP_EVENTS: &str = "worktruck.apps.app.>";

/// One app tool as offered: its MCP tool and where a call goes.
#[derive(Clone)]
pub(crate) struct Offered {
    pub(crate) tool: Tool,
    pub(crate) app: AppTool,
}

/// `offered`'s tools as MCP tools, its collisions reported in the log.
fn mcp_tools(offer: Offer) -> Vec<Offered> {
    for (upstream, name) in &offer.collisions {
        tracing::warn!(tool = upstream, name = %name, "an app tool's MCP name is taken: not offered");
    }
    offer.tools.into_iter().map(|app| Offered { tool: mcp_tool(&app), app }).collect()
}

/// The MCP tool of an app tool.
fn mcp_tool(t: &AppTool) -> Tool {
    let mut tool = Tool::new_with_raw(t.name.clone(), Some(t.description.clone().into()), Arc::new(t.input_schema.clone()));
    if let Some(output) = &t.output_schema {
        tool = tool.with_raw_output_schema(Arc::new(output.clone()));
    }
    let hints = &t.annotations;
    let mut annotations = ToolAnnotations::new();
    annotations.title = hints["title"].as_str().map(str::to_owned).or_else(|| t.title.clone());
    annotations.read_only_hint = hints["read_only_hint"].as_bool();
    annotations.destructive_hint = hints["destructive_hint"].as_bool();
    annotations.idempotent_hint = hints["idempotent_hint"].as_bool();
    // An app's server is outside Worktruck, whatever it says.
    annotations.open_world_hint = Some(hints["open_world_hint"].as_bool().unwrap_or(true));
    tool = tool.with_annotations(annotations);
    if let Some(title) = &t.title {
        tool = tool.with_title(title.clone());
    }
    tool
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

    /// Every tool the principal's apps offer (bounded by [`app_tools::MAX_PAGES`] pages of apps). A
    /// credential that may not read apps gets none.
    pub(crate) async fn tools(&self, signer: &Signer, principal: &Principal, request_id: &str, taken: &HashSet<String>) -> Vec<Offered> {
        let listed = app_tools::collect(|args| self.list.call(signer, principal, request_id, args), taken).await;
        match listed {
            Ok((offer, left)) => {
                if left {
                    tracing::warn!(pages = app_tools::MAX_PAGES, "a tenant has more apps than tools/list reads: the rest are not offered");
                }
                mcp_tools(offer)
            }
            Err(e) => {
                tracing::debug!(error = %e.message, "app tools not listed");
                Vec::new()
            }
        }
    }

    /// The app tool named `name` for the principal, if its app offers it now.
    pub(crate) async fn find(&self, signer: &Signer, principal: &Principal, request_id: &str, name: &str, taken: &HashSet<String>) -> Result<Option<Offered>, Error> {
        let Some(slug) = app_tools::slug_of(name) else { return Ok(None) };
        let app = match self.get.call(signer, principal, request_id, json!({"slug": slug})).await {
            Ok(app) => app,
            Err(e) if e.code == worktruck_kit::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(mcp_tools(app_tools::offered(&app, taken)).into_iter().find(|o| o.tool.name == name))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_tools_become_mcp_tools_with_their_hints() {
        let app = json!({
            "slug": "x", "display_name": "X", "status": "active", "enabled_tools": ["a"],
            "discovered_tools": [{"name": "a", "title": "A", "description": "d", "input_schema": {"properties": {}},
                                  "output_schema": {"type": "object"}, "annotations": {"read_only_hint": true}}],
        });
        let tools = mcp_tools(app_tools::offered(&app, &HashSet::new()));
        let t = &tools[0].tool;
        assert_eq!(t.name, "x__a");
        assert_eq!(t.input_schema.get("type"), Some(&json!("object")));
        assert!(t.output_schema.is_some());
        let hints = t.annotations.as_ref().unwrap();
        assert_eq!((hints.read_only_hint, hints.open_world_hint, hints.title.as_deref()), (Some(true), Some(true), Some("A")));
        assert_eq!(tools[0].app.upstream, "a");
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
