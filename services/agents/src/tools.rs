//! The tools an agent may call: the registry's MCP tools (the same names, descriptions and
//! input schemas the MCP gateway lists), called over the same signed gRPC path through
//! `kit::upstream::call_json`, as the principal that enqueued the run, with its scopes; and the
//! tools of the tenant's apps its config allows (`<slug>__<tool>`, or `<slug>__*` for all of an
//! app's), as the tenant's MCP endpoint offers them (`worktruck_proto::app_tools`), each call
//! the apps service's `CallAppTool`; and the providers' API tools (`cloudflare_api_get`,
//! `netdata_api_get`: reads with the tenant's integration keys).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use http::uri::PathAndQuery;
use serde_json::{Value, json};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use worktruck_kit::context::{Ctx, Signer};
use worktruck_kit::idempotency::{self, Claim, Keeper};
use worktruck_kit::upstream::{self, Upstreams};
use worktruck_kit::{Error, ErrorCode};
use worktruck_proto::app_tools::{self, AppTool};
use worktruck_proto::registry::{Registry, Tool};
use worktruck_proto::schema::{Mode, message_schema};

/// The tenants service, which keeps idempotency keys.
const TENANTS: &str = "worktruck.tenants.v1.TenantsService";
/// The apps service, whose `CallAppTool` every app tool call is.
const APPS: &str = "worktruck.apps.v1.AppsService";

/// One RPC, resolved.
#[derive(Clone)]
struct Rpc {
    rpc: prost_reflect::MethodDescriptor,
    channel: Channel,
    path: PathAndQuery,
}

impl Rpc {
    fn resolve(registry: &Registry, upstreams: &Upstreams, service: &str, method: &str) -> Option<Self> {
        let rpc = registry.pool().get_service_by_name(service)?.methods().find(|m| m.name() == method)?;
        let channel = upstreams.get(service)?.clone();
        let path = PathAndQuery::try_from(format!("/{service}/{method}")).ok()?;
        Some(Self { rpc, channel, path })
    }
}

/// The apps service's RPCs, when this process reaches it.
#[derive(Clone)]
struct Apps {
    list: Rpc,
    get: Rpc,
    call: Rpc,
}

struct Entry {
    tool: Tool,
    schema: Value,
    channel: Channel,
    path: PathAndQuery,
}

/// The tools a run is offered.
#[derive(Debug, Default)]
pub struct Offered {
    /// The Messages API's `tools`.
    pub definitions: Vec<Value>,
    /// The names of those whose calls destroy or overwrite (for the destructive-calls cap).
    pub destructive: HashSet<String>,
}

/// Every registry tool whose service this process can reach.
#[derive(Clone)]
pub struct Tools {
    entries: Arc<HashMap<String, Entry>>,
    signer: Signer,
    /// The tenants service's idempotency keys, when this process reaches it.
    keeper: Option<Keeper>,
    apps: Option<Apps>,
    /// The providers' API tools (`cloudflare_api_get`, …), with the tenant's integration keys.
    integrations: Option<crate::integrations::Integrations>,
}

impl Tools {
    /// The tools of the embedded registry served by `upstreams`.
    pub fn new(upstreams: &Upstreams, signer: Signer) -> anyhow::Result<Self> {
        let registry = Registry::embedded()?;
        let mut entries = HashMap::new();
        for t in registry.tools() {
            let Some(channel) = upstreams.get(&t.service) else {
                continue;
            };
            let path = PathAndQuery::try_from(t.grpc_path.as_str())?;
            let schema = message_schema(&registry, &t.rpc.input(), Mode::Input);
            entries.insert(
                t.name.clone(),
                Entry {
                    tool: t.clone(),
                    schema,
                    channel: channel.clone(),
                    path,
                },
            );
        }
        let keeper = upstreams.get(TENANTS).map(|ch| {
            let client =
                worktruck_proto::tenants::v1::tenants_service_client::TenantsServiceClient::new(
                    ch.clone(),
                );
            Keeper::new(client, signer.clone(), "agent-worker")
        });
        let apps = (|| {
            Some(Apps {
                list: Rpc::resolve(&registry, upstreams, APPS, "ListApps")?,
                get: Rpc::resolve(&registry, upstreams, APPS, "GetApp")?,
                call: Rpc::resolve(&registry, upstreams, APPS, "CallAppTool")?,
            })
        })();
        Ok(Self {
            entries: Arc::new(entries),
            signer,
            keeper,
            apps,
            integrations: None,
        })
    }

    /// These tools and the providers' API tools, which read with the keys of `integrations`.
    pub(crate) fn with_integrations(mut self, integrations: crate::integrations::Integrations) -> Self {
        self.integrations = Some(integrations);
        self
    }

    /// The registry's tool names, which no app tool may take.
    fn taken(&self) -> HashSet<String> {
        self.entries.keys().cloned().collect()
    }

    /// Calls `rpc` with `arguments` as `ctx`, `request_id` as its `x-request-id`.
    async fn invoke(&self, rpc: &Rpc, ctx: &Ctx, request_id: &str, arguments: Value) -> Result<Value, Error> {
        let mut metadata = tonic::metadata::MetadataMap::new();
        self.signer.attach(ctx, &mut metadata);
        worktruck_kit::telemetry::inject(&mut metadata);
        if let Ok(v) = MetadataValue::try_from(request_id) {
            metadata.insert("x-request-id", v);
        }
        upstream::call_json(rpc.channel.clone(), rpc.path.clone(), &rpc.rpc, arguments, metadata).await
    }

    /// The app tools `allowed` names that the tenant's apps offer now (none when it allows no
    /// app tool, this process does not reach the apps service, or `ctx` may not read apps).
    async fn app_tools(&self, ctx: &Ctx, allowed: &[String], request_id: &str) -> Vec<AppTool> {
        let Some(apps) = &self.apps else { return Vec::new() };
        if !allowed.iter().any(|a| app_tools::slug_of(a).is_some()) {
            return Vec::new();
        }
        let list = |args| async move {
            worktruck_kit::scopes::check(ctx, &worktruck_kit::scopes::scope(&apps.list.rpc, true))?;
            self.invoke(&apps.list, ctx, request_id, args).await
        };
        match app_tools::collect(list, &self.taken()).await {
            Ok((offer, left)) => {
                if left {
                    tracing::warn!(pages = app_tools::MAX_PAGES, "a tenant has more apps than an agent reads: the rest are not offered");
                }
                for (tool, name) in &offer.collisions {
                    tracing::warn!(tool, name = %name, "an app tool's name is taken: not offered to the agent");
                }
                offer.tools.into_iter().filter(|t| allows(allowed, &t.name)).collect()
            }
            Err(e) => {
                tracing::warn!(error = %e.message, "the agent's app tools could not be listed: none offered");
                Vec::new()
            }
        }
    }

    /// The Messages API's `tools` for `allowed`: its registry tools this process can reach, in
    /// that order, then the app tools it allows that the tenant's apps offer now (read as
    /// `ctx`); with the names of those that are destructive.
    pub async fn definitions(&self, ctx: &Ctx, allowed: &[String], request_id: &str) -> Offered {
        let mut out = Offered::default();
        for n in allowed {
            if let Some(e) = self.entries.get(n) {
                let description = e
                    .tool
                    .description
                    .clone()
                    .or_else(|| e.tool.title.clone())
                    .unwrap_or_default();
                out.definitions
                    .push(json!({"name": e.tool.name, "description": description, "input_schema": e.schema}));
                if e.tool.destructive {
                    out.destructive.insert(n.clone());
                }
            } else if let Some(d) = self.integrations.as_ref().and_then(|_| crate::integrations::api_tool_definition(n)) {
                out.definitions.push(d);
            }
        }
        for t in self.app_tools(ctx, allowed, request_id).await {
            // MCP's defaults: a tool that is not read-only is destructive unless it says not.
            let hints = &t.annotations;
            if hints["read_only_hint"] != true && hints["destructive_hint"] != false {
                out.destructive.insert(t.name.clone());
            }
            out.definitions
                .push(json!({"name": t.name, "description": t.description, "input_schema": t.input_schema}));
        }
        out
    }

    /// Calls tool `name` with `arguments` as `ctx`; `request_id` (the run and step) travels as
    /// the call's `x-request-id`. Refused when the tool is not in `allowed`, or `ctx` lacks
    /// its scope.
    pub async fn call(
        &self,
        ctx: &Ctx,
        allowed: &[String],
        name: &str,
        arguments: Value,
        request_id: &str,
    ) -> Result<Value, Error> {
        let refused = || {
            Error::invalid(format!(
                "{} is not a tool this agent may call",
                worktruck_proto::text::quote(name)
            ))
        };
        if !allows(allowed, name) {
            return Err(refused());
        }
        // A provider's API tool: a read with the tenant's key, in this process.
        if let (Some(integrations), Some(_)) = (&self.integrations, crate::integrations::api_tool(name)) {
            worktruck_kit::scopes::check(ctx, "agents:read")?;
            let tenant = ctx.require_tenant()?;
            return integrations.api_get(tenant, name, &arguments).await;
        }
        // A registry tool, or an app tool its app offers now (whose call is `CallAppTool`).
        let (rpc, read_only, arguments) = match self.entries.get(name) {
            Some(entry) => (
                Rpc { rpc: entry.tool.rpc.clone(), channel: entry.channel.clone(), path: entry.path.clone() },
                entry.tool.read_only,
                arguments,
            ),
            None => {
                let (Some(apps), Some(slug)) = (&self.apps, app_tools::slug_of(name)) else {
                    return Err(refused());
                };
                let app = match self.invoke(&apps.get, ctx, request_id, json!({"slug": slug})).await {
                    Ok(app) => app,
                    Err(e) if e.code == ErrorCode::NotFound => return Err(refused()),
                    Err(e) => return Err(e),
                };
                let Some(tool) = app_tools::offered(&app, &self.taken()).tools.into_iter().find(|t| t.name == name) else {
                    return Err(Error::invalid(format!(
                        "{} is not a tool the app {} offers now (it is not enabled, stale, or changed since it was approved)",
                        worktruck_proto::text::quote(name),
                        worktruck_proto::text::quote(slug)
                    )));
                };
                let Value::Object(arguments) = arguments else {
                    return Err(Error::invalid(format!("the arguments of {} are not an object", worktruck_proto::text::quote(name))));
                };
                // An app's server is outside Worktruck: every call is a write, kept by its key.
                (apps.call.clone(), false, tool.call_arguments(arguments))
            }
        };
        worktruck_kit::scopes::check(ctx, &worktruck_kit::scopes::scope(&rpc.rpc, read_only))?;
        let call = || self.invoke(&rpc, ctx, request_id, arguments.clone());
        // A write runs under an idempotency key of its own (the run and step), kept by the
        // tenants service as the gateways' keys are: a call repeated after a crash before its
        // completion was journaled gets the first call's answer instead of writing again.
        let (Some(keeper), Some(tenant), false) = (&self.keeper, ctx.tenant_id, read_only)
        else {
            return call().await;
        };
        let key = format!("agents:{request_id}");
        // Canonical (keys sorted), since a replayed call's arguments come back from the journal,
        // and PostgreSQL's jsonb does not keep key order.
        let body = canonical_bytes(&arguments);
        let fingerprint = idempotency::fingerprint(&[b"agents tool call", name.as_bytes(), &body]);
        let give_up = std::time::Instant::now()
            + std::time::Duration::from_secs(u64::from(idempotency::LEASE_SECONDS) + 10);
        let held = loop {
            match keeper
                .claim(tenant, &key, fingerprint.clone(), request_id)
                .await
            {
                Ok(Claim::Run(held)) => break held,
                Ok(Claim::Replay(kept)) => {
                    tracing::info!(
                        tool = name,
                        request_id,
                        "tool call answered from its idempotency key"
                    );
                    return replayed(&kept);
                }
                // The first call's claim is still held (its caller died mid-call): its lease
                // lapses within LEASE_SECONDS.
                Err(e) if e.code == ErrorCode::Conflict && std::time::Instant::now() < give_up => {
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let result = call().await;
        let kept = match &result {
            Ok(v) => Some((200u16, v.clone())),
            Err(e) if idempotency::keeps(e.code.http_status()) => {
                Some((e.code.http_status(), e.to_json()))
            }
            Err(_) => None,
        };
        let kept = kept.map(|(status, value)| worktruck_proto::tenants::v1::KeptAnswer {
            status: u32::from(status),
            headers: Default::default(),
            body: serde_json::to_vec(&value).unwrap_or_default(),
        });
        keeper.complete(held, kept, request_id).await;
        result
    }
}

/// Whether `allowed` (tool names, and app tool patterns where `*` is any run of characters)
/// lets an agent call `name`.
pub(crate) fn allows(allowed: &[String], name: &str) -> bool {
    allowed.iter().any(|a| a == name || (app_tools::slug_of(a).is_some() && crate::service::matches(a, name)))
}

/// A kept answer as the call's result.
fn replayed(kept: &worktruck_proto::tenants::v1::KeptAnswer) -> Result<Value, Error> {
    let value: Value = serde_json::from_slice(&kept.body).unwrap_or(Value::Null);
    if kept.status < 300 {
        return Ok(value);
    }
    let code = value["error"]["code"]
        .as_str()
        .and_then(ErrorCode::parse)
        .unwrap_or(ErrorCode::Internal);
    Err(Error::new(
        code,
        value["error"]["message"].as_str().unwrap_or_default(),
    ))
}

/// `v` as JSON with every object's keys sorted: the same bytes for the same value, whatever
/// order its keys were stored in.
pub(crate) fn canonical_bytes(v: &Value) -> Vec<u8> {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(o) => {
                let mut keys: Vec<_> = o.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&o[k])))
                        .collect(),
                )
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_vec(&sorted(v)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_ignores_key_order() {
        let a = json!({"title": "x", "body": {"b": 1, "a": [{"z": 1, "y": 2}]}});
        let b = json!({"body": {"a": [{"y": 2, "z": 1}], "b": 1}, "title": "x"});
        assert_eq!(canonical_bytes(&a), canonical_bytes(&b));
        assert_ne!(canonical_bytes(&a), canonical_bytes(&json!({"title": "y"})));
    }
}
