//! The MCP server handler: lists the registry's tools (optionally narrowed by `?toolsets=`) and
//! serves a call as the generic unary gRPC call REST makes, answering failures in band. A call in
//! a paying wallet's session is paid for as x402's MCP transport has it: without a payment it is
//! a tool error whose structured content is the `PaymentRequired`; with one (`_meta["x402/payment"]`,
//! or the request's `PAYMENT-SIGNATURE`) it is verified, settled as REST settles (before a write,
//! after a read, whose answer is withheld if settlement fails) and the settlement is the result's
//! `_meta["x402/payment-response"]`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use http::uri::PathAndQuery;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig,
    Tool, ToolAnnotations,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::Value;
use tonic::transport::Channel;
use worktruck_gateway::Principal;
use worktruck_gateway::idempotency::{self, Claim, Keeper};
use worktruck_gateway::telemetry::RequestId;
use worktruck_gateway::upstream::{self, Upstreams};
use worktruck_gateway::x402::{self, PriceClass, Refusal, Verified, X402};
use worktruck_kit::context::Signer;
use worktruck_kit::Error;
use worktruck_proto::mask::FieldMask;
use worktruck_proto::registry::Registry;
use worktruck_proto::schema::{Mode, message_schema};

use crate::Error as BuildError;
use crate::Payer;
use crate::apps::{self, Apps, ToolListChanges};

/// The protocol revisions served: 2025-06-18, and 2025-03-26 (the first with Streamable HTTP).
/// A client asking for anything else is answered with 2025-06-18.
pub(crate) static SUPPORTED: [ProtocolVersion; 2] =
    [ProtocolVersion::V_2025_03_26, ProtocolVersion::V_2025_06_18];

/// One registry tool, resolved against its upstream at start-up (or, for an app's tool, at its
/// call: `CallAppTool` under the app tool's name).
#[derive(Clone)]
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
    /// Payments, when x402 is on.
    x402: Option<Arc<X402>>,
    /// The tenant's apps' tools, when this process routes the apps service.
    apps: Option<Apps>,
}

impl McpGateway {
    /// The handler for every tool of `registry`; fails when a tool's service has no upstream.
    pub fn new(
        registry: &Registry,
        upstreams: &Upstreams,
        signer: Signer,
        x402: Option<Arc<X402>>,
        changes: ToolListChanges,
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
            x402,
            apps: Apps::new(registry, upstreams, changes),
        })
    }

    /// The registry's tool names, which no app tool may take.
    fn taken(&self) -> std::collections::HashSet<String> {
        self.by_name.keys().cloned().collect()
    }

    /// An app tool's call: `CallAppTool` under the tool's own name (so its idempotency
    /// fingerprint, its x402 resource and its metrics are the tool's).
    fn app_entry(apps: &Apps, offered: &apps::Offered) -> Entry {
        Entry {
            tool: offered.tool.clone(),
            toolset: apps::TOOLSET.to_owned(),
            rpc: apps.call.rpc.clone(),
            read_only: false,
            masked: false,
            channel: apps.call.channel.clone(),
            grpc_path: apps.call.path.clone(),
        }
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
/// The `_meta` key of a tool call's x402 payment (a `PaymentPayload` object).
const PAYMENT_META: &str = "x402/payment";
/// The `_meta` key of a paid call's settlement (the facilitator's `SettleResponse`).
const PAYMENT_RESPONSE_META: &str = "x402/payment-response";

/// A verified payment for one tool call.
struct Paid<'a> {
    x402: &'a X402,
    verified: Verified,
    resource: String,
    class: PriceClass,
}

impl Paid<'_> {
    /// A tool error carrying the `PaymentRequired` for this call (x402's MCP transport).
    fn required(&self, reason: &str) -> CallToolResult {
        payment_required(self.x402, &self.resource, self.class, reason)
    }

    /// Settles the payment: the `SettleResponse`, or the tool result to answer instead (the
    /// payment required again, with the failed settlement in `_meta`; or the facilitator's
    /// unavailability).
    async fn settle(&self) -> Result<Value, CallToolResult> {
        match self.x402.settle_receipt(&self.verified).await {
            Ok(Ok(receipt)) => Ok(receipt),
            Ok(Err(receipt)) => {
                let reason = receipt.get("errorReason").and_then(Value::as_str).unwrap_or("settlement failed");
                let mut result = self.required(&format!("Settlement failed: {reason}"));
                result.meta = Some(meta(PAYMENT_RESPONSE_META, receipt));
                Err(result)
            }
            Err(e) => Err(answer(Err(e))),
        }
    }

    fn release(&self) {
        self.x402.release_unused(&self.verified);
    }
}

/// A `_meta` object of one entry.
fn meta(key: &str, value: Value) -> rmcp::model::MetaObject {
    let mut meta = rmcp::model::MetaObject::default();
    meta.0.insert(key.into(), value);
    meta
}

/// `result` with the settlement in its `_meta`.
fn with_receipt(mut result: CallToolResult, receipt: Value) -> CallToolResult {
    result.meta.get_or_insert_with(Default::default).0.insert(PAYMENT_RESPONSE_META.into(), receipt);
    result
}

/// The tool error of an unpaid (or refused) call: `structuredContent` is the `PaymentRequired`
/// for `resource` at `class`'s price, its text the same JSON.
fn payment_required(x402: &X402, resource: &str, class: PriceClass, reason: &str) -> CallToolResult {
    CallToolResult::structured_error(x402.payment_required_value(resource, &[class], reason))
}

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
    async fn call_kept(
        &self,
        entry: &Entry,
        arguments: Value,
        parts: Option<&http::request::Parts>,
        key: &Value,
        paid: Option<&Paid<'_>>,
    ) -> CallToolResult {
        let release = || {
            if let Some(paid) = paid {
                paid.release();
            }
        };
        let refused = |code: &str, message: &str| {
            CallToolResult::error(vec![ContentBlock::text(
                serde_json::json!({"error": {"code": code, "message": message}}).to_string(),
            )])
        };
        let Some(key) = key.as_str() else {
            release();
            return answer(Err(Error::invalid("_meta.idempotency_key must be a string")));
        };
        if let Err(e) = idempotency::check_key(key) {
            release();
            return refused(e.code(), e.message());
        }
        let Some((tenant, ctx)) = parts
            .and_then(|p| p.extensions.get::<Principal>())
            .and_then(|p| Some((p.ctx.tenant_id?, p.ctx.clone())))
        else {
            // Only a tenant keeps keys; a payer always has one.
            release();
            return answer(self.call(entry, arguments, parts).await);
        };
        // A credential that may not call the tool cannot claim keys with it either.
        if let Err(e) = worktruck_kit::scopes::check(&ctx, &worktruck_kit::scopes::scope(&entry.rpc, entry.read_only)) {
            release();
            return answer(Err(e));
        }
        let request_id = parts.map(RequestId::of).unwrap_or_default();
        let body = serde_json::to_vec(&arguments).unwrap_or_default();
        let fingerprint = idempotency::fingerprint(&[b"mcp tools/call", entry.tool.name.as_bytes(), &body]);
        let held = match self.keeper.claim(tenant, key, fingerprint, &request_id).await {
            Err(e) => {
                release();
                return answer(Err(e));
            }
            Ok(Claim::Replay(kept)) => {
                // The kept answer was paid for when it was made: this payment is not taken.
                release();
                let value: Value = serde_json::from_slice(&kept.body).unwrap_or(Value::Null);
                let mut result = if kept.status < 300 {
                    CallToolResult::structured(value)
                } else {
                    CallToolResult::error(vec![ContentBlock::text(value.to_string())])
                };
                result.meta = Some(meta("idempotent_replayed", Value::Bool(true)));
                return result;
            }
            Ok(Claim::Run(held)) => held,
        };
        // A paid write settles once its key is claimed (so a replay is not charged) and before
        // it runs (so an unsettled write never happens).
        let receipt = match paid {
            None => None,
            Some(paid) => match paid.settle().await {
                Ok(receipt) => Some(receipt),
                Err(refused) => {
                    self.keeper.complete(held, None, &request_id).await;
                    return refused;
                }
            },
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
        match receipt {
            Some(receipt) => with_receipt(answer(result), receipt),
            None => answer(result),
        }
    }

    /// A call in a paying wallet's session: see the module doc. The payment must come from the
    /// wallet that opened the session.
    #[allow(clippy::too_many_arguments)]
    async fn call_paid(
        &self,
        x402: &X402,
        payer: &Payer,
        entry: &Entry,
        arguments: Value,
        parts: Option<&http::request::Parts>,
        payment: Option<Value>,
        key: Option<Value>,
    ) -> CallToolResult {
        let class = PriceClass::of(entry.rpc.name(), entry.read_only);
        let resource = format!("mcp://tool/{}", entry.tool.name);
        let header = parts.and_then(|p| x402::payment_header(&p.headers));
        let payment = match (payment, header) {
            (Some(payment), _) => Ok(payment),
            (None, Some(header)) => X402::decode(header),
            (None, None) => {
                return payment_required(x402, &resource, class, "payment required: pay this call with _meta[\"x402/payment\"]");
            }
        };
        let verified = match payment {
            Ok(payload) => x402.verify_payload(payload, &[class]).await,
            Err(refusal) => Err(refusal),
        };
        let verified = match verified {
            Ok(verified) => verified,
            Err(Refusal::Payment { reason, .. }) => return payment_required(x402, &resource, class, &reason),
            Err(Refusal::Failed(e)) => return answer(Err(e)),
        };
        let paid = Paid { x402, verified, resource, class };
        if !paid.verified.payer.eq_ignore_ascii_case(&payer.wallet) {
            paid.release();
            return paid.required("the payment is from another wallet than the one that opened this session");
        }
        if let Err(e) = worktruck_kit::scopes::check(&payer.principal.ctx, &worktruck_kit::scopes::scope(&entry.rpc, entry.read_only)) {
            paid.release();
            return answer(Err(e));
        }
        match key {
            Some(key) if !entry.read_only => self.call_kept(entry, arguments, parts, &key, Some(&paid)).await,
            _ if class.is_write() => match paid.settle().await {
                Ok(receipt) => with_receipt(answer(self.call(entry, arguments, parts).await), receipt),
                Err(refused) => refused,
            },
            _ => match self.call(entry, arguments, parts).await {
                // A read whose payment does not settle is withheld.
                Ok(value) => match paid.settle().await {
                    Ok(receipt) => with_receipt(answer(Ok(value)), receipt),
                    Err(refused) => refused,
                },
                Err(e) => {
                    paid.release();
                    answer(Err(e))
                }
            },
        }
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
        let capabilities = if self.apps.is_some() {
            // A tenant's tool list changes with its apps.
            ServerCapabilities::builder().enable_tools().enable_tool_list_changed().build()
        } else {
            ServerCapabilities::builder().enable_tools().build()
        };
        ServerConfig::new(capabilities)
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
        let mut tools: Vec<Tool> = self
            .entries
            .iter()
            .filter(|e| visible(e, sets.as_deref()))
            .map(|e| e.tool.clone())
            .collect();
        let principal = parts(&ctx).and_then(|p| p.extensions.get::<Principal>());
        if let (Some(apps), Some(principal)) = (&self.apps, principal)
            && sets.as_deref().is_none_or(|s| s.iter().any(|s| s == apps::TOOLSET))
        {
            let request_id = parts(&ctx).map(RequestId::of).unwrap_or_default();
            let offered = apps.tools(&self.signer, principal, &request_id, &self.taken()).await;
            tools.extend(offered.into_iter().map(|o| o.tool));
        }
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn on_initialized(&self, ctx: NotificationContext<RoleServer>) {
        let tenant = ctx
            .extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.extensions.get::<Principal>())
            .and_then(|p| p.ctx.tenant_id);
        if let (Some(apps), Some(tenant)) = (&self.apps, tenant) {
            apps.watch(tenant, ctx.peer);
        }
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        use tracing::Instrument as _;
        // The call's own span, in the trace of the HTTP request that carried it (whose span
        // the guard left in its extensions: this runs on the session's task).
        let span = tracing::info_span!(
            "mcp_tool",
            otel.name = %format!("tools/call {}", request.name),
            otel.status_code = tracing::field::Empty,
            mcp.method.name = "tools/call",
            gen_ai.operation.name = "execute_tool",
            gen_ai.tool.name = %request.name,
            trace_id = tracing::field::Empty,
        );
        if let Some(trace) = parts(&ctx).and_then(|p| p.extensions.get::<worktruck_kit::telemetry::TraceContext>()) {
            trace.adopt(&span);
        }
        let answer = self.call_tool_in_span(request, ctx).instrument(span.clone()).await;
        let failed = match &answer {
            Err(_) => true,
            Ok(CallToolResponse::Complete(result)) => result.is_error == Some(true),
            Ok(_) => false,
        };
        if failed {
            span.record("otel.status_code", "error");
        }
        answer
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.entry(name, None).map(|e| e.tool.clone())
    }
}

impl McpGateway {
    async fn call_tool_in_span(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let sets = toolsets(parts(&ctx));
        let unknown = || ErrorData::invalid_params(format!("unknown tool {}", request.name), None);
        let mut arguments = Value::Object(request.arguments.clone().unwrap_or_default());
        let app_tool;
        let entry = match self.entry(&request.name, sets.as_deref()) {
            Some(entry) => entry,
            None => {
                let principal = parts(&ctx).and_then(|p| p.extensions.get::<Principal>());
                let (Some(apps), Some(principal)) = (&self.apps, principal) else { return Err(unknown()) };
                if !sets.as_deref().is_none_or(|s| s.iter().any(|s| s == apps::TOOLSET)) {
                    return Err(unknown());
                }
                let request_id = parts(&ctx).map(RequestId::of).unwrap_or_default();
                match apps.find(&self.signer, principal, &request_id, &request.name, &self.taken()).await {
                    Ok(Some(offered)) => {
                        arguments = offered.app.call_arguments(request.arguments.clone().unwrap_or_default());
                        app_tool = Self::app_entry(apps, &offered);
                        &app_tool
                    }
                    Ok(None) => return Err(unknown()),
                    Err(e) => return Ok(answer(Err(e)).into()),
                }
            }
        };
        let is_app = entry.toolset == apps::TOOLSET && entry.rpc.name() == "CallAppTool";
        let finish = |result: CallToolResult| -> CallToolResponse {
            if is_app { apps::upstream_result(result).into() } else { result.into() }
        };
        let from_meta = |name: &str| {
            [request.meta.as_deref(), Some(&*ctx.meta)]
                .into_iter()
                .flatten()
                .find_map(|meta| meta.get(name))
                .cloned()
        };
        let key = from_meta(IDEMPOTENCY_META);
        let payment = from_meta(PAYMENT_META);
        let payer = parts(&ctx).and_then(|p| p.extensions.get::<Payer>());
        if let (Some(x402), Some(payer)) = (&self.x402, payer) {
            let result = self.call_paid(x402, payer, entry, arguments, parts(&ctx), payment, key).await;
            return Ok(finish(result));
        }
        let result = match key {
            Some(key) if !entry.read_only => self.call_kept(entry, arguments, parts(&ctx), &key, None).await,
            _ => answer(self.call(entry, arguments, parts(&ctx)).await),
        };
        Ok(finish(result))
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
