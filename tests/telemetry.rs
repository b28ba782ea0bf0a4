//! Traces as an SRE reads them, received by an OTLP collector this test runs (a gRPC
//! `TraceService`) from a `worktruck dev` process exporting to it: one REST request sent with a
//! `traceparent` is one trace — its HTTP server span (`POST /api/v1/contacts`, child of the
//! caller's span, with OpenTelemetry's HTTP attributes), the authentication span under it, the
//! gateway's gRPC client span and the service's server span under that (`rpc.*`); and an MCP
//! tool call has a span of its own, with the tool's name, in the trace of the HTTP request
//! that carried it.

#[path = "common/dev.rs"]
mod dev;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::{Value, json};

/// Every span received.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

async fn collector() -> (Collector, String) {
    let c = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(c.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream_of(listener))
            .await
            .unwrap();
    });
    (c, format!("http://{addr}"))
}

/// The listener's connections as tonic's incoming stream.
fn tokio_stream_of(listener: tokio::net::TcpListener) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let next = l.accept().await.map(|(s, _)| s);
        Some((next, l))
    })
}

fn attr(span: &Span, key: &str) -> Option<Value> {
    let kv = span.attributes.iter().find(|kv| kv.key == key)?;
    match kv.value.as_ref()?.value.as_ref()? {
        Any::StringValue(s) => Some(json!(s)),
        Any::IntValue(i) => Some(json!(i)),
        Any::BoolValue(b) => Some(json!(b)),
        Any::DoubleValue(d) => Some(json!(d)),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The spans of trace `trace` once `done` says they are all there (30 s at most).
async fn trace_of(c: &Collector, trace: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans: Vec<Span> = c.spans.lock().unwrap().iter().filter(|s| hex(&s.trace_id) == trace).cloned().collect();
        if done(&spans) {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "trace {trace} incomplete: {:?}",
            spans.iter().map(|s| (s.name.clone(), s.kind)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn named<'a>(spans: &'a [Span], name: &str, kind: SpanKind) -> Option<&'a Span> {
    spans.iter().find(|s| s.name == name && s.kind == kind as i32)
}

#[tokio::test]
async fn a_rest_request_and_an_mcp_tool_call_are_traces_with_the_conventions_attributes() {
    let (c, endpoint) = collector().await;
    let data = tempfile::tempdir().unwrap();
    let env = vec![
        ("WORKTRUCK_TELEMETRY__OTLP_ENDPOINT".to_owned(), endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "100".to_owned()),
    ];
    let (dev, key) = dev::Dev::start(data.path(), env).await;
    let key = key.expect("the first start prints a key");
    let http = worktruck_kit::http::client();

    // REST, with the caller's trace.
    let (trace, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let r = http
        .post(format!("{}/api/v1/contacts", dev.base))
        .bearer_auth(&key)
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .json(&json!({"kind": "person", "display_name": "Traced Person"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let contact: Value = r.json().await.unwrap();
    let create = "worktruck.contacts.v1.ContactsService/CreateContact";
    let spans = trace_of(&c, trace, |s| {
        s.iter().any(|x| x.name == "transaction")
            && named(s, create, SpanKind::Server).is_some()
            && named(s, create, SpanKind::Client).is_some()
            && named(s, "POST /api/v1/contacts", SpanKind::Server).is_some()
            && s.iter().any(|x| x.name == "authenticate")
    })
    .await;
    let by_id: HashMap<String, &Span> = spans.iter().map(|s| (hex(&s.span_id), s)).collect();
    let parent_of = |s: &Span| by_id.get(&hex(&s.parent_span_id)).map(|p| p.name.clone());
    let request = named(&spans, "POST /api/v1/contacts", SpanKind::Server).unwrap();
    assert_eq!(hex(&request.parent_span_id), parent, "the caller's span is the request's parent");
    assert_eq!(attr(request, "http.request.method"), Some(json!("POST")));
    assert_eq!(attr(request, "http.route"), Some(json!("/api/v1/contacts")));
    assert_eq!(attr(request, "http.response.status_code"), Some(json!(201)));
    let auth = spans.iter().find(|s| s.name == "authenticate").unwrap();
    assert_eq!(parent_of(auth).as_deref(), Some("POST /api/v1/contacts"));
    // The key was not cached yet: the tenants service was asked, under the authentication.
    let check = "worktruck.tenants.v1.TenantsService/AuthenticateApiKey";
    let asked = named(&spans, check, SpanKind::Client).expect("the key check's client span");
    assert_eq!(parent_of(asked).as_deref(), Some("authenticate"));
    let answered = named(&spans, check, SpanKind::Server).expect("the tenants service's span");
    assert_eq!(hex(&answered.parent_span_id), hex(&asked.span_id));
    let client = named(&spans, create, SpanKind::Client).unwrap();
    assert_eq!(parent_of(client).as_deref(), Some("POST /api/v1/contacts"));
    let server = named(&spans, create, SpanKind::Server).unwrap();
    assert_eq!(hex(&server.parent_span_id), hex(&client.span_id), "the service's span is the call's child");
    for s in [client, server] {
        assert_eq!(attr(s, "rpc.system"), Some(json!("grpc")));
        assert_eq!(attr(s, "rpc.service"), Some(json!("worktruck.contacts.v1.ContactsService")));
        assert_eq!(attr(s, "rpc.method"), Some(json!("CreateContact")));
        assert_eq!(attr(s, "rpc.grpc.status_code"), Some(json!(0)), "{} {}: {:?}", s.name, s.kind, s.attributes.iter().map(|a| a.key.clone()).collect::<Vec<_>>());
    }
    // The service's database work is a span under its server span.
    let db = spans.iter().find(|s| s.name == "transaction" && s.parent_span_id == server.span_id).expect("the service's transaction span");
    assert_eq!(db.kind, SpanKind::Client as i32);
    assert_eq!(attr(db, "db.system.name"), Some(json!("sqlite")));

    // MCP: a session, then a tools/call with its own trace.
    let mcp = format!("{}/mcp/v1", dev.mcp);
    let post = |body: Value, session: Option<String>, traceparent: Option<String>| {
        let mut r = http
            .post(&mcp)
            .bearer_auth(&key)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .json(&body);
        if let Some(s) = session {
            r = r.header("mcp-session-id", s);
        }
        if let Some(t) = traceparent {
            r = r.header("traceparent", t);
        }
        r.send()
    };
    let init = post(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}),
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(init.status(), 200);
    let session = init.headers().get("mcp-session-id").unwrap().to_str().unwrap().to_owned();
    let _ = init.text().await;
    let r = post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}), Some(session.clone()), None).await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let tool_trace = "0af7651916cd43dd8448eb211c80319c";
    let r = post(
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "contacts_get", "arguments": {"id": contact["id"]}}}),
        Some(session),
        Some(format!("00-{tool_trace}-b7ad6b7169203331-01")),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("Traced Person"), "{text}");
    let get = "worktruck.contacts.v1.ContactsService/GetContact";
    let spans = trace_of(&c, tool_trace, |s| {
        named(s, get, SpanKind::Server).is_some() && named(s, "tools/call contacts_get", SpanKind::Internal).is_some()
    })
    .await;
    let by_id: HashMap<String, &Span> = spans.iter().map(|s| (hex(&s.span_id), s)).collect();
    let parent_of = |s: &Span| by_id.get(&hex(&s.parent_span_id)).copied();
    let http_span = named(&spans, "tools/call contacts_get", SpanKind::Server).expect("the MCP request's span");
    assert_eq!(attr(http_span, "mcp.method.name"), Some(json!("tools/call")));
    assert_eq!(attr(http_span, "http.response.status_code"), Some(json!(200)));
    let tool = named(&spans, "tools/call contacts_get", SpanKind::Internal).unwrap();
    assert_eq!(attr(tool, "gen_ai.tool.name"), Some(json!("contacts_get")));
    assert_eq!(parent_of(tool).map(|p| p.span_id.clone()), Some(http_span.span_id.clone()), "the tool call is in its request's trace");
    let call = named(&spans, get, SpanKind::Client).unwrap();
    assert_eq!(hex(&call.parent_span_id), hex(&tool.span_id), "the tool's gRPC call is under the tool's span");

    // An event's publish and its consumer's handling join the trace of the write that made it:
    // a note naming the contact links to it, and the contacts service's links consumer takes
    // the link in.
    let note_trace = "5c1e4b0fd0a64e7e9a3c6a0f0d2b8e11";
    let r = http
        .post(format!("{}/api/v1/notes", dev.base))
        .bearer_auth(&key)
        .header("traceparent", format!("00-{note_trace}-1f2e3d4c5b6a7988-01"))
        .json(&json!({"title": "Traced", "body": format!("About [[contact:{}]].", contact["id"].as_str().unwrap())}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let is_link = |s: &Span, op: &str| s.name.contains(".link.created.") && s.name.ends_with(op);
    let spans = trace_of(&c, note_trace, |s| {
        s.iter().any(|x| is_link(x, " publish") && x.kind == SpanKind::Producer as i32)
            && s.iter().any(|x| is_link(x, " process") && x.kind == SpanKind::Consumer as i32)
    })
    .await;
    let publish = spans.iter().find(|s| is_link(s, " publish")).unwrap();
    assert_eq!(attr(publish, "messaging.system"), Some(json!("nats")));
    // Every service that keeps links consumes the event; each handling is the publish's child.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans: Vec<Span> = c.spans.lock().unwrap().iter().filter(|s| hex(&s.trace_id) == note_trace).cloned().collect();
        let processed: Vec<&Span> = spans.iter().filter(|s| is_link(s, " process")).collect();
        assert!(processed.iter().all(|p| hex(&p.parent_span_id) == hex(&publish.span_id)), "the consumers' spans are the publish's children");
        let groups: Vec<String> = processed.iter().filter_map(|p| attr(p, "messaging.consumer.group.name")).map(|g| g.as_str().unwrap().to_owned()).collect();
        if groups.iter().any(|g| g.starts_with("links-contacts-")) {
            break;
        }
        assert!(Instant::now() < deadline, "no contacts consumer span: {groups:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(spans.iter().any(|s| s.name == "POST /api/v1/notes" && s.kind == SpanKind::Server as i32));
    dev.kill();
}
