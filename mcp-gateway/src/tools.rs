//! The MCP server handler: lists the registry's tools (optionally narrowed by `?toolsets=`) and
//! serves a call as the generic unary gRPC call REST makes, answering failures in band.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use http::uri::PathAndQuery;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig,
    Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::Value;
use tonic::transport::Channel;
use worktruck_gateway::Principal;
use worktruck_gateway::idempotency::{self, Claim, Keeper};
use worktruck_gateway::telemetry::RequestId;
use worktruck_gateway::upstream::{self, Upstreams};
use worktruck_kit::context::Signer;
use worktruck_kit::Error;
use worktruck_proto::mask::FieldMask;
use worktruck_proto::registry::Registry;
use worktruck_proto::schema::{Mode, message_schema};

use crate::Error as BuildError;

/// The protocol revisions served: 2025-06-18, and 2025-03-26 (the first with Streamable HTTP).
/// A client asking for anything else is answered with 2025-06-18.
pub(crate) static SUPPORTED: [ProtocolVersion; 2] =
    [ProtocolVersion::V_2025_03_26, ProtocolVersion::V_2025_06_18];

/// One registry tool, resolved against its upstream at start-up.
struct Entry {
    tool: Tool,
    toolset: String,
    rpc: prost_reflect::MethodDescriptor,
    read_only: bool,
    /// Takes a `fields` mask.
    masked: bool,
    channel: Channel,
    grpc_path: PathAndQuery,
}

/// The MCP server handler; one clone serves each session.
#[derive(Clone)]
pub struct McpGateway {
    entries: Arc<[Entry]>,
    by_name: Arc<HashMap<String, usize>>,
    signer: Signer,
    /// Idempotency keys of writing tools (`_meta.idempotency_key`), kept as REST keeps them.
    keeper: Keeper,
}

impl McpGateway {
    /// The handler for every tool of `registry`; fails when a tool's service has no upstream.
    pub fn new(
        registry: &Registry,
        upstreams: &Upstreams,
        signer: Signer,
    ) -> Result<Self, BuildError> {
        let tenants = upstreams
            .get(worktruck_gateway::TENANTS_SERVICE)
            .ok_or_else(|| BuildError::MissingUpstream(worktruck_gateway::TENANTS_SERVICE.to_owned()))?
            .clone();
        let keeper = Keeper::new(
            worktruck_proto::tenants::v1::tenants_service_client::TenantsServiceClient::new(tenants),
            signer.clone(),
            "gateway",
        );
        let mut entries = Vec::new();
        for t in registry.tools() {
            let channel = upstreams
                .get(&t.service)
                .ok_or_else(|| BuildError::MissingUpstream(t.service.clone()))?
                .clone();
            let grpc_path = PathAndQuery::try_from(t.grpc_path.as_str())
                .map_err(|_| BuildError::InvalidGrpcPath(t.grpc_path.clone()))?;
            let mut input = object(message_schema(registry, &t.rpc.input(), Mode::Input));
            // A read tool takes a field mask, as its REST twin's `fields` query parameter.
            let masked = t.read_only && FieldMask::applies(&t.rpc.input());
            if masked && let Some(Value::Object(props)) = input.get_mut("properties") {
                props.insert("fields".into(), serde_json::json!({
                    "type": "string",
                    "description": "Only these fields of the answer (of each item, for a list): field names, comma-separated, \
                        `.` for a nested field (`id,display_name,channels.value`). Keeps the answer small.",
                }));
            }
            let output = object(message_schema(registry, &t.rpc.output(), Mode::Output));
            let mut annotations = ToolAnnotations::new()
                .read_only(t.read_only)
                .destructive(t.destructive)
                .idempotent(t.idempotent);
            annotations.title = t.title.clone();
            let mut tool = Tool::new_with_raw(
                t.name.clone(),
                t.description.clone().map(Cow::Owned),
                Arc::new(input),
            )
            .with_raw_output_schema(Arc::new(output))
            .with_annotations(annotations);
            if let Some(title) = &t.title {
                tool = tool.with_title(title.clone());
            }
            entries.push(Entry {
                tool,
                toolset: t.toolset.clone(),
                rpc: t.rpc.clone(),
                read_only: t.read_only,
                masked,
                channel,
                grpc_path,
            });
        }
        let by_name = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.tool.name.to_string(), i))
            .collect();
        Ok(Self {
            entries: entries.into(),
            by_name: Arc::new(by_name),
            signer,
            keeper,
        })
    }

    /// The tool named `name`, if it exists and is in the request's toolsets.
    fn entry(&self, name: &str, toolsets: Option<&[String]>) -> Option<&Entry> {
        let entry = &self.entries[*self.by_name.get(name)?];
        visible(entry, toolsets).then_some(entry)
    }

    async fn call(
        &self,
        entry: &Entry,
        arguments: Value,
        parts: Option<&http::request::Parts>,
    ) -> Result<Value, Error> {
        let principal = parts
            .and_then(|p| p.extensions.get::<Principal>())
            .ok_or_else(|| Error::unauthenticated("missing credentials"))?;
        // The scope table shared with REST and the services (`worktruck_kit::scopes`).
        worktruck_kit::scopes::check(&principal.ctx, &worktruck_kit::scopes::scope(&entry.rpc, entry.read_only))?;
        let mut arguments = arguments;
        let taken = if entry.masked { arguments.as_object_mut().and_then(|a| a.remove("fields")) } else { None };
        let mask = match taken {
            None => None,
            Some(Value::String(f)) => FieldMask::parse(&entry.rpc.output(), [f.as_str()]).map_err(Error::invalid)?,
            Some(_) => return Err(Error::invalid("fields must be a string of comma-separated field names")),
        };
        let request_id = parts.map(RequestId::of).unwrap_or_default();
        let metadata = worktruck_gateway::telemetry::call_metadata(&self.signer, &principal.ctx, &request_id);
        let mut out = upstream::call_json(entry.channel.clone(), entry.grpc_path.clone(), &entry.rpc, arguments, metadata).await?;
        if let Some(mask) = &mask {
            mask.apply(&mut out);
        }
        Ok(out)
    }
}

/// The `_meta` key of a tool call's idempotency key.
const IDEMPOTENCY_META: &str = "idempotency_key";

/// A call's outcome as a tool result: structured on success, the error envelope in band.
fn answer(result: Result<Value, Error>) -> CallToolResult {
    match result {
        Ok(value) => CallToolResult::structured(value),
        Err(e) => CallToolResult::error(vec![ContentBlock::text(e.to_json().to_string())]),
    }
}

impl McpGateway {
    /// A writing tool's call under an idempotency key (the REST gateway's keys, one store):
    /// the first outcome is kept, a retry with the same key and arguments gets it again with
    /// `_meta.idempotent_replayed`, other arguments are `idempotency_key_reused`.
    async fn call_kept(&self, entry: &Entry, arguments: Value, parts: Option<&http::request::Parts>, key: &Value) -> CallToolResult {
        let refused = |code: &str, message: &str| {
            CallToolResult::error(vec![ContentBlock::text(
                serde_json::json!({"error": {"code": code, "message": message}}).to_string(),
            )])
        };
        let Some(key) = key.as_str() else {
            return answer(Err(Error::invalid("_meta.idempotency_key must be a string")));
        };
        if let Err(e) = idempotency::check_key(key) {
            return refused(e.code(), e.message());
        }
        let Some((tenant, ctx)) = parts
            .and_then(|p| p.extensions.get::<Principal>())
            .and_then(|p| Some((p.ctx.tenant_id?, p.ctx.clone())))
        else {
            return answer(self.call(entry, arguments, parts).await);
        };
        // A credential that may not call the tool cannot claim keys with it either.
        if let Err(e) = worktruck_kit::scopes::check(&ctx, &worktruck_kit::scopes::scope(&entry.rpc, entry.read_only)) {
            return answer(Err(e));
        }
        let request_id = parts.map(RequestId::of).unwrap_or_default();
        let body = serde_json::to_vec(&arguments).unwrap_or_default();
        let fingerprint = idempotency::fingerprint(&[b"mcp tools/call", entry.tool.name.as_bytes(), &body]);
        let held = match self.keeper.claim(tenant, key, fingerprint, &request_id).await {
            Err(e) => return answer(Err(e)),
            Ok(Claim::Replay(kept)) => {
                let value: Value = serde_json::from_slice(&kept.body).unwrap_or(Value::Null);
                let mut result = if kept.status < 300 {
                    CallToolResult::structured(value)
                } else {
                    CallToolResult::error(vec![ContentBlock::text(value.to_string())])
                };
                let mut meta = rmcp::model::MetaObject::default();
                meta.0.insert("idempotent_replayed".into(), Value::Bool(true));
                result.meta = Some(meta);
                return result;
            }
            Ok(Claim::Run(held)) => held,
        };
        let result = self.call(entry, arguments, parts).await;
        let kept = match &result {
            Ok(value) => Some((200, value.clone())),
            Err(e) if idempotency::keeps(e.code.http_status()) => Some((e.code.http_status(), e.to_json())),
            Err(_) => None,
        };
        let kept = kept.map(|(status, value)| worktruck_proto::tenants::v1::KeptAnswer {
            status: u32::from(status),
            headers: HashMap::from([("content-type".to_owned(), "application/json".to_owned())]),
            body: serde_json::to_vec(&value).unwrap_or_default(),
        });
        self.keeper.complete(held, kept, &request_id).await;
        answer(result)
    }
}

fn object(schema: Value) -> serde_json::Map<String, Value> {
    match schema {
        Value::Object(map) => map,
        _ => unreachable!("a message schema is an object"),
    }
}

fn visible(entry: &Entry, toolsets: Option<&[String]>) -> bool {
    toolsets.is_none_or(|sets| sets.contains(&entry.toolset))
}

/// The `toolsets` query parameter (comma-separated, may repeat) of the HTTP request, if any.
fn toolsets(parts: Option<&http::request::Parts>) -> Option<Vec<String>> {
    let query = parts?.uri.query()?;
    let mut found = false;
    let mut sets = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "toolsets" {
            found = true;
            sets.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        }
    }
    found.then_some(sets)
}

fn parts(ctx: &RequestContext<RoleServer>) -> Option<&http::request::Parts> {
    ctx.extensions.get::<http::request::Parts>()
}

impl ServerHandler for McpGateway {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_protocol_version(ProtocolVersion::V_2025_06_18)
            .with_server_info(Implementation::new("worktruck", env!("CARGO_PKG_VERSION")))
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(&SUPPORTED)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let sets = toolsets(parts(&ctx));
        let tools = self
            .entries
            .iter()
            .filter(|e| visible(e, sets.as_deref()))
            .map(|e| e.tool.clone())
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let sets = toolsets(parts(&ctx));
        let Some(entry) = self.entry(&request.name, sets.as_deref()) else {
            return Err(ErrorData::invalid_params(
                format!("unknown tool {}", request.name),
                None,
            ));
        };
        let key = [request.meta.as_deref(), Some(&*ctx.meta)]
            .into_iter()
            .flatten()
            .find_map(|meta| meta.get(IDEMPOTENCY_META))
            .cloned();
        let arguments = Value::Object(request.arguments.unwrap_or_default());
        let result = match key {
            Some(key) if !entry.read_only => self.call_kept(entry, arguments, parts(&ctx), &key).await,
            _ => answer(self.call(entry, arguments, parts(&ctx)).await),
        };
        Ok(result.into())
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.entry(name, None).map(|e| e.tool.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str) -> http::request::Parts {
        http::Request::get(uri).body(()).unwrap().into_parts().0
    }

    #[test]
    fn toolsets_come_from_the_query() {
        assert_eq!(toolsets(Some(&parts("/"))), None);
        assert_eq!(toolsets(Some(&parts("/?x=1"))), None);
        assert_eq!(
            toolsets(Some(&parts("/?toolsets=contacts,crm&toolsets=notes"))).unwrap(),
            ["contacts", "crm", "notes"]
        );
        assert_eq!(
            toolsets(Some(&parts("/?toolsets="))).unwrap(),
            Vec::<String>::new()
        );
    }
}
