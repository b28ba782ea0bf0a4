//! Structured logs (text or JSON), optional OTLP trace export, and the Prometheus recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::Config;

/// Writes the current span's trace context (`traceparent`) into outgoing gRPC metadata, so a
/// service's spans join the gateway's trace. A no-op when tracing export is off.
pub fn inject(md: &mut tonic::metadata::MetadataMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    struct Inject<'a>(&'a mut tonic::metadata::MetadataMap);
    impl opentelemetry::propagation::Injector for Inject<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(k), Ok(v)) = (
                tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
                tonic::metadata::MetadataValue::try_from(value.as_str()),
            ) {
                self.0.insert(k, v);
            }
        }
    }
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut Inject(md)));
}

/// The current span's trace context as propagation fields (`traceparent`, and `tracestate` when
/// set), for carriers other than gRPC metadata: the outbox row, then the event's bus headers.
/// Empty when tracing export is off or no span is active.
pub fn trace_fields() -> Vec<(String, String)> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let mut fields = std::collections::HashMap::<String, String>::new();
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut fields));
    let mut fields: Vec<_> = fields.into_iter().collect();
    fields.sort();
    fields
}

/// A header map as the propagator reads it.
struct Extract<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for Extract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Makes `span` continue the trace of `headers`' `traceparent` (when they carry one), and
/// records its trace id in its `trace_id` field, so log lines name the trace.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Extract(headers)));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    record_trace_id(span);
}

/// Records `span`'s trace id in its `trace_id` field (nothing when tracing export is off).
pub fn record_trace_id(span: &tracing::Span) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
    }
}

/// A span's trace context, carried where the work it starts runs on another task (an MCP
/// request's tool call runs in its session's task): put it in the request's extensions, and
/// [`TraceContext::adopt`] makes a span there its child.
#[derive(Clone, Debug)]
pub struct TraceContext(opentelemetry::Context);

impl TraceContext {
    /// The context of `span`.
    pub fn of(span: &tracing::Span) -> Self {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        Self(span.context())
    }

    /// Makes `span` a child of this context's span, and records its trace id.
    pub fn adopt(&self, span: &tracing::Span) {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let _ = span.set_parent(self.0.clone());
        record_trace_id(span);
    }
}

/// Names `span` `name` (OpenTelemetry's span name), also once its trace context has been read,
/// after which its `otel.name` field no longer renames it.
pub fn rename(span: &tracing::Span, name: &str) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    span.record("otel.name", name);
    span.context().span().update_name(name.to_owned());
}

/// The span of an event's publish (`PRODUCER`, `publish`) or of a consumer's handling of it
/// (`CONSUMER`, `process`, with the consumer's `group`), named `<subject> <operation>` with
/// `messaging.*` attributes, as a child of the writing request's span (`trace`, the event's
/// stored `traceparent`); `None` for an untraced event, so that events written outside any
/// request make no root spans.
pub fn message_span(
    operation: &'static str,
    subject: &str,
    event_id: &str,
    trace: &[(String, String)],
    group: Option<&str>,
) -> Option<tracing::Span> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if trace.is_empty() {
        return None;
    }
    let kind = if operation == "publish" { "producer" } else { "consumer" };
    let span = tracing::info_span!(
        "message",
        otel.name = %format!("{subject} {operation}"),
        otel.kind = kind,
        otel.status_code = tracing::field::Empty,
        messaging.system = "nats",
        messaging.operation.name = operation,
        messaging.destination.name = %subject,
        messaging.message.id = %event_id,
        messaging.consumer.group.name = group.unwrap_or_default(),
        trace_id = tracing::field::Empty,
    );
    let fields: std::collections::HashMap<String, String> = trace.iter().cloned().collect();
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&fields));
    let _ = span.set_parent(parent);
    record_trace_id(&span);
    Some(span)
}

/// `/package.Service/Method` as its service and method.
fn rpc_parts(path: &str) -> (&str, &str) {
    path.trim_start_matches('/').split_once('/').unwrap_or((path, ""))
}

/// The span a gRPC server opens for each request (kind `SERVER`, named `package.Service/Method`
/// with `rpc.*` attributes as OpenTelemetry's RPC conventions say), continuing the caller's
/// trace when the request carries a `traceparent`; its status is recorded by the metrics layer.
pub fn grpc_span(req: &http::Request<()>) -> tracing::Span {
    let path = req.uri().path();
    let (service, method) = rpc_parts(path);
    let span = tracing::info_span!(
        "grpc",
        otel.name = %path.trim_start_matches('/'),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        rpc.grpc.status_code = tracing::field::Empty,
        request_id = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    if let Some(id) = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()) {
        span.record("request_id", id);
    }
    continue_trace(&span, req.headers());
    span
}

/// The span of a gRPC call this process makes (kind `CLIENT`), as [`grpc_span`] names and
/// attributes a server's; the call's `traceparent` is injected inside it, so the server's span
/// is its child.
pub fn client_span(path: &str) -> tracing::Span {
    let (service, method) = rpc_parts(path);
    tracing::info_span!(
        "grpc_client",
        otel.name = %path.trim_start_matches('/'),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        rpc.grpc.status_code = tracing::field::Empty,
    )
}

/// Counts and times one gRPC call this process made to `path` ([`families::GRPC_CLIENT_CALLS`]).
pub fn record_client_call(path: &str, code: tonic::Code, elapsed: std::time::Duration) {
    use families::{GRPC_CLIENT_CALLS, GRPC_CLIENT_DURATION};
    // Paths come from the registry or the code, never from a caller: a bounded label.
    let labels = [("method", path.to_owned()), ("code", format!("{code:?}"))];
    metrics::counter!(GRPC_CLIENT_CALLS, &labels).increment(1);
    metrics::histogram!(GRPC_CLIENT_DURATION, &labels).record(elapsed.as_secs_f64());
}

/// Records a gRPC call's `code` on its span: `rpc.grpc.status_code`, and an error status where
/// the conventions count one (a client's every failure; a server's only the codes that are its
/// own fault: `UNKNOWN`, `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`, `INTERNAL`, `UNAVAILABLE`,
/// `DATA_LOSS`).
pub fn record_grpc_code(span: &tracing::Span, code: tonic::Code, server: bool) {
    use tonic::Code;
    span.record("rpc.grpc.status_code", code as i64);
    let error = if server {
        matches!(code, Code::Unknown | Code::DeadlineExceeded | Code::Unimplemented | Code::Internal | Code::Unavailable | Code::DataLoss)
    } else {
        code != Code::Ok
    };
    if error {
        span.record("otel.status_code", "error");
    }
}

/// Keeps the trace exporter alive; flushes on drop.
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Installs the global subscriber. Call once, from `main`.
pub fn init(cfg: &Config, service_name: &str) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&cfg.log.level))?;
    // Logs go to stderr: JSON for a log pipeline unless a person is reading them there.
    let json = match cfg.log.format.as_str() {
        "json" => true,
        "text" => false,
        _ => !std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let fmt = if json {
        tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).boxed()
    } else {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr).boxed()
    };
    let mut provider = None;
    let otel = if cfg.telemetry.otlp_endpoint.is_empty() {
        None
    } else {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(cfg.telemetry.otlp_endpoint.clone())
            .build()?;
        let p = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder().with_service_name(service_name.to_owned()).build(),
            )
            .build();
        let tracer = p.tracer("worktruck");
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        provider = Some(p);
        Some(tracing_opentelemetry::layer().with_tracer(tracer))
    };
    tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init()?;
    Ok(TelemetryGuard { provider })
}

/// Latency histogram buckets, in seconds, when `[metrics] buckets` is not set.
pub const DEFAULT_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The metric families, with their HELP text: the one list `/metrics` describes.
pub mod families {
    /// REST requests: `route` (the template), `method`, `status`, `plan`.
    pub const HTTP_REQUESTS: &str = "worktruck_http_requests_total";
    /// REST request latency.
    pub const HTTP_DURATION: &str = "worktruck_http_request_duration_seconds";
    /// MCP HTTP requests: JSON-RPC `method`, `tool`, `status`, `plan`.
    pub const MCP_REQUESTS: &str = "worktruck_mcp_requests_total";
    /// MCP request latency.
    pub const MCP_DURATION: &str = "worktruck_mcp_request_duration_seconds";
    /// gRPC calls a server answered: `method` (`/package.Service/Method`), `code`.
    pub const GRPC_CALLS: &str = "worktruck_grpc_server_calls_total";
    /// gRPC server call latency.
    pub const GRPC_DURATION: &str = "worktruck_grpc_server_call_duration_seconds";
    /// gRPC calls this process made (gateways, workers): `method`, `code`.
    pub const GRPC_CLIENT_CALLS: &str = "worktruck_grpc_client_calls_total";
    /// gRPC client call latency.
    pub const GRPC_CLIENT_DURATION: &str = "worktruck_grpc_client_call_duration_seconds";
    /// Database pool connections, per `db` (the service) and `state` (`in_use`, `idle`).
    pub const DB_CONNECTIONS: &str = "worktruck_db_pool_connections";
    /// Time to get a pooled connection and begin a transaction, per `db`.
    pub const DB_ACQUIRE: &str = "worktruck_db_acquire_duration_seconds";
    /// Events a durable bus consumer has not yet received, per `consumer` (its lag).
    pub const BUS_PENDING: &str = "worktruck_bus_consumer_pending";
    /// Events delivered to a durable bus consumer again (not acknowledged in time, or
    /// refused), per `consumer`.
    pub const BUS_REDELIVERIES: &str = "worktruck_bus_consumer_redeliveries_total";
    /// Outbox rows not yet published, per `service`.
    pub const OUTBOX_PENDING: &str = "worktruck_outbox_pending";
    /// Time to publish one outbox row to the bus, per `service`.
    pub const OUTBOX_PUBLISH: &str = "worktruck_outbox_publish_duration_seconds";
    /// Outbox publishes that failed, per `service`.
    pub const OUTBOX_FAILURES: &str = "worktruck_outbox_publish_failures_total";
    /// Authentication outcomes at the gateways: `outcome` (`ok`, `unauthenticated`,
    /// `payment_required`, `error`).
    pub const AUTH: &str = "worktruck_auth_attempts_total";
    /// Requests refused by the plan's rate limit, per `plan`.
    pub const RATE_LIMITED: &str = "worktruck_rate_limit_refusals_total";
    /// Resident memory of the process.
    pub const RSS: &str = "worktruck_process_resident_memory_bytes";
    /// Open file descriptors of the process (sockets included).
    pub const OPEN_FDS: &str = "worktruck_process_open_fds";
    /// The soft limit on open file descriptors.
    pub const MAX_FDS: &str = "worktruck_process_max_fds";
    /// CPU time the process used, user and system.
    pub const CPU: &str = "worktruck_process_cpu_seconds_total";
}

/// The plans, for labels that are zero until something happens (so a rate of them exists).
const PLANS: [&str; 4] = ["free", "pro", "scale", "enterprise"];

fn describe() {
    use families::*;
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(HTTP_REQUESTS, "REST requests answered, by route template, method, status and tenant plan.");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "REST request latency, by route template, method, status and tenant plan.");
    describe_counter!(MCP_REQUESTS, "MCP HTTP requests answered, by JSON-RPC method, tool, status and tenant plan.");
    describe_histogram!(MCP_DURATION, Unit::Seconds, "MCP HTTP request latency, by JSON-RPC method, tool, status and tenant plan.");
    describe_counter!(GRPC_CALLS, "gRPC calls answered by this process's servers, by method and status code.");
    describe_histogram!(GRPC_DURATION, Unit::Seconds, "gRPC server call latency, by method and status code.");
    describe_counter!(GRPC_CLIENT_CALLS, "gRPC calls this process made to services, by method and status code.");
    describe_histogram!(GRPC_CLIENT_DURATION, Unit::Seconds, "gRPC client call latency, by method and status code.");
    describe_gauge!(DB_CONNECTIONS, "Database pool connections, by database (service) and state (in_use, idle), as of the last transaction begun.");
    describe_histogram!(DB_ACQUIRE, Unit::Seconds, "Time to get a pooled database connection and begin a transaction, by database (service).");
    describe_gauge!(BUS_PENDING, "Events a durable bus consumer has not yet received (its lag), by consumer.");
    describe_counter!(BUS_REDELIVERIES, "Events delivered to a durable bus consumer again, by consumer.");
    describe_gauge!(OUTBOX_PENDING, "Outbox rows committed but not yet published to the bus, by service.");
    describe_histogram!(OUTBOX_PUBLISH, Unit::Seconds, "Time to publish one outbox row to the bus, by service.");
    describe_counter!(OUTBOX_FAILURES, "Outbox publishes that failed (the row stays and is retried), by service.");
    describe_counter!(AUTH, "Authentication attempts at the gateways, by outcome.");
    describe_counter!(RATE_LIMITED, "Requests refused (429) by the tenant plan's rate limit, by plan.");
    describe_gauge!(RSS, Unit::Bytes, "Resident memory of the process.");
    describe_gauge!(OPEN_FDS, "Open file descriptors of the process.");
    describe_gauge!(MAX_FDS, "Soft limit on open file descriptors of the process.");
    describe_counter!(CPU, Unit::Seconds, "CPU time used by the process, user and system.");
    for plan in PLANS {
        metrics::counter!(RATE_LIMITED, "plan" => plan).increment(0);
    }
    for outcome in ["ok", "unauthenticated", "payment_required", "error"] {
        metrics::counter!(AUTH, "outcome" => outcome).increment(0);
    }
}

/// Installs the process-wide Prometheus recorder with `buckets` for every histogram (the
/// first call wins: one recorder per process) and returns its handle.
pub fn install_metrics(buckets: &[f64]) -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let builder = match builder.set_buckets(buckets) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics buckets refused; using the defaults");
                    PrometheusBuilder::new().set_buckets(DEFAULT_BUCKETS).expect("the default buckets")
                }
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only when another recorder is installed; the handle still renders ours.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

/// The process-wide Prometheus recorder (installed with the default buckets on first use
/// when [`install_metrics`] was not called first).
pub fn metrics_handle() -> PrometheusHandle {
    install_metrics(DEFAULT_BUCKETS)
}

/// `/metrics`: the process gauges read now, then every family in Prometheus text format.
pub fn render_metrics() -> String {
    let handle = metrics_handle();
    process_metrics();
    handle.render()
}

/// Reads RSS, open files and CPU time from `/proc/self` (Linux; elsewhere nothing is set).
fn process_metrics() {
    use families::*;
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(kb) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
    {
        metrics::gauge!(RSS).set(kb * 1024.0);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!(OPEN_FDS).set(fds.count() as f64);
    }
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits")
        && let Some(soft) = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<f64>().ok())
    {
        metrics::gauge!(MAX_FDS).set(soft);
    }
    // Fields 14 and 15 (utime, stime) after the command, in clock ticks (100 a second on Linux).
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
        && let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r)
    {
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if let (Some(u), Some(s)) = (fields.get(11).and_then(|v| v.parse::<u64>().ok()), fields.get(12).and_then(|v| v.parse::<u64>().ok())) {
            metrics::counter!(CPU).absolute((u + s) / 100);
        }
    }
}
