//! The tools an agent may call: the registry's MCP tools (the same names, descriptions and
//! input schemas the MCP gateway lists), called over the same signed gRPC path through
//! `kit::upstream::call_json`, as the principal that enqueued the run, with its scopes.

use std::collections::HashMap;
use std::sync::Arc;

use http::uri::PathAndQuery;
use serde_json::{Value, json};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use worktruck_kit::Error;
use worktruck_kit::context::{Ctx, Signer};
use worktruck_kit::upstream::{self, Upstreams};
use worktruck_proto::registry::{Registry, Tool};
use worktruck_proto::schema::{Mode, message_schema};

struct Entry {
    tool: Tool,
    schema: Value,
    channel: Channel,
    path: PathAndQuery,
}

/// Every registry tool whose service this process can reach.
#[derive(Clone)]
pub struct Tools {
    entries: Arc<HashMap<String, Entry>>,
    signer: Signer,
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
        Ok(Self {
            entries: Arc::new(entries),
            signer,
        })
    }

    /// The Messages API's `tools` for `names` (those this process can reach), in that order.
    pub fn definitions(&self, names: &[String]) -> Vec<Value> {
        names
            .iter()
            .filter_map(|n| self.entries.get(n))
            .map(|e| {
                let description = e
                    .tool
                    .description
                    .clone()
                    .or_else(|| e.tool.title.clone())
                    .unwrap_or_default();
                json!({"name": e.tool.name, "description": description, "input_schema": e.schema})
            })
            .collect()
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
        let entry = self
            .entries
            .get(name)
            .filter(|_| allowed.iter().any(|a| a == name))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "{} is not a tool this agent may call",
                    worktruck_proto::text::quote(name)
                ))
            })?;
        worktruck_kit::scopes::check(
            ctx,
            &worktruck_kit::scopes::scope(&entry.tool.rpc, entry.tool.read_only),
        )?;
        let mut metadata = tonic::metadata::MetadataMap::new();
        self.signer.attach(ctx, &mut metadata);
        worktruck_kit::telemetry::inject(&mut metadata);
        if let Ok(v) = MetadataValue::try_from(request_id) {
            metadata.insert("x-request-id", v);
        }
        upstream::call_json(
            entry.channel.clone(),
            entry.path.clone(),
            &entry.tool.rpc,
            arguments,
            metadata,
        )
        .await
    }
}
