//! The tools an agent may call: the registry's MCP tools (the same names, descriptions and
//! input schemas the MCP gateway lists), called over the same signed gRPC path through
//! `kit::upstream::call_json`, as the principal that enqueued the run, with its scopes.

use std::collections::HashMap;
use std::sync::Arc;

use http::uri::PathAndQuery;
use serde_json::{Value, json};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use worktruck_kit::context::{Ctx, Signer};
use worktruck_kit::idempotency::{self, Claim, Keeper};
use worktruck_kit::upstream::{self, Upstreams};
use worktruck_kit::{Error, ErrorCode};
use worktruck_proto::registry::{Registry, Tool};
use worktruck_proto::schema::{Mode, message_schema};

/// The tenants service, which keeps idempotency keys.
const TENANTS: &str = "worktruck.tenants.v1.TenantsService";

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
    /// The tenants service's idempotency keys, when this process reaches it.
    keeper: Option<Keeper>,
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
        Ok(Self {
            entries: Arc::new(entries),
            signer,
            keeper,
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
        let call = || async {
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
                arguments.clone(),
                metadata,
            )
            .await
        };
        // A write runs under an idempotency key of its own (the run and step), kept by the
        // tenants service as the gateways' keys are: a call repeated after a crash before its
        // completion was journaled gets the first call's answer instead of writing again.
        let (Some(keeper), Some(tenant), false) =
            (&self.keeper, ctx.tenant_id, entry.tool.read_only)
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
