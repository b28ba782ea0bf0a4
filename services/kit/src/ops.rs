//! What operators and orchestrators call: `/health` (liveness), `/ready` (dependencies), and,
//! on the admin port only, `/metrics` (Prometheus) over HTTP, plus the gRPC server every service runs, with gRPC health
//! checking and server reflection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::context::{METADATA_KEY, Verifier};
use crate::db::Db;
use crate::scopes::ScopeTable;
use crate::telemetry::metrics_handle;

/// An async probe.
pub type Probe = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// A readiness check. A failing critical check makes `/ready` answer 503; a failing
/// non-critical one is only reported.
#[derive(Clone)]
pub struct Check {
    /// Name shown in `/ready`.
    pub name: String,
    /// Whether failing makes the process unready.
    pub critical: bool,
    /// The probe.
    pub probe: Probe,
}

/// A readiness check that pings a database.
pub fn db_check(name: &str, db: Db) -> Check {
    let probe: Probe = Arc::new(move || {
        let db = db.clone();
        Box::pin(async move { db.ping().await })
    });
    Check { name: name.to_owned(), critical: true, probe }
}

/// A critical check that an upstream gRPC service reports SERVING (`grpc.health.v1`), for a
/// gateway running apart from its services.
pub fn grpc_check(name: &str, channel: tonic::transport::Channel, service: &'static str) -> Check {
    let probe: Probe = Arc::new(move || {
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        Box::pin(async move {
            let req = tonic_health::pb::HealthCheckRequest { service: service.to_owned() };
            let call = tokio::time::timeout(std::time::Duration::from_secs(2), client.check(req));
            matches!(call.await, Ok(Ok(r)) if r.get_ref().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
        })
    });
    Check { name: name.to_owned(), critical: true, probe }
}

/// A non-critical check on the event bus: writes do not need it (the outbox holds events while
/// it is away), so a bus outage is reported but does not take the process out of service.
/// Failing while disconnected, and while the relay's last publish failed although connected
/// (a broker without the stream or without JetStream).
pub fn bus_check(bus: crate::bus::Bus) -> Check {
    let probe: Probe = Arc::new(move || {
        let ok = bus.can_publish();
        Box::pin(async move { ok })
    });
    Check { name: "bus".to_owned(), critical: false, probe }
}

/// `/health`, `/ready` and `/metrics`, for the admin port only: per-route traffic is not the
/// public's to read.
pub fn admin_router(checks: Vec<Check>) -> Router {
    router(checks).route("/metrics", get(|| async { crate::telemetry::render_metrics() }))
}

/// `/health` and `/ready`, for every port that orchestrators probe (the gateways' public ones
/// too); `/metrics` is [`admin_router`]'s alone.
pub fn router(checks: Vec<Check>) -> Router {
    // Install the recorder now, before any request records a metric.
    let _ = metrics_handle();
    let checks = Arc::new(checks);
    Router::new()
        .route("/health", get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }))
        .route(
            "/ready",
            get(move || {
                let checks = checks.clone();
                async move { ready(&checks).await }
            }),
        )
}

/// The longest a check may take: `/ready` answers within about a second even when a
/// dependency hangs (a check that does not answer in time is failing).
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(900);

async fn ready(checks: &[Check]) -> Response {
    let mut failing = Vec::new();
    let mut status = serde_json::Map::new();
    // All at once, so the answer takes as long as the slowest check, not their sum.
    let results = futures::future::join_all(
        checks.iter().map(|c| async { tokio::time::timeout(CHECK_TIMEOUT, (c.probe)()).await.unwrap_or(false) }),
    )
    .await;
    for (c, ok) in checks.iter().zip(results) {
        status.insert(c.name.clone(), serde_json::Value::from(if ok { "ok" } else { "failing" }));
        if !ok && c.critical {
            failing.push(c.name.clone());
        }
    }
    if failing.is_empty() {
        axum::Json(serde_json::json!({ "status": "ready", "checks": status })).into_response()
    } else {
        let body = serde_json::json!({
            "error": { "code": "unavailable", "message": format!("not ready: {}", failing.join(", ")) },
            "checks": status,
        });
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    }
}

/// Open connections a service's gRPC listener accepts at most: its callers are the gateways and
/// other services, each holding a few multiplexed HTTP/2 connections.
pub const GRPC_MAX_CONNECTIONS: usize = 1024;

/// Where a gRPC server takes its connections from.
pub enum GrpcListener {
    /// A TCP socket (`TCP_NODELAY` on every connection).
    Tcp(TcpListener),
    /// In-process connections from [`in_process_grpc`]'s channel.
    InProcess(InProcessIncoming),
}

impl From<TcpListener> for GrpcListener {
    fn from(l: TcpListener) -> Self {
        GrpcListener::Tcp(l)
    }
}

/// The server half of an in-process gRPC connection pair.
pub type InProcessIncoming = tokio_stream::wrappers::ReceiverStream<Result<tokio::io::DuplexStream, std::io::Error>>;

/// A gRPC channel and the listener it connects to, inside this process: each connection is a
/// `tokio::io::duplex` pipe instead of a socket. `worktruck dev` wires gateways to services so;
/// the request still goes through tonic's client, HTTP/2, the codec, metadata and the server's
/// layers exactly as between pods, only without the kernel's loopback in between.
pub fn in_process_grpc() -> (tonic::transport::Channel, GrpcListener) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<tokio::io::DuplexStream, std::io::Error>>(64);
    let channel = tonic::transport::Endpoint::from_static("http://in-process.invalid").connect_with_connector_lazy(
        tower::service_fn(move |_: http::Uri| {
            let tx = tx.clone();
            async move {
                // A window as large as HTTP/2's default, so a large answer is not chopped up.
                let (client, server) = tokio::io::duplex(1 << 16);
                tx.send(Ok(server))
                    .await
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "the in-process gRPC server has stopped"))?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(client))
            }
        }),
    );
    (channel, GrpcListener::InProcess(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// The gRPC health service's name.
pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";
/// The server reflection services, both served: v1, and v1alpha for grpcurl up to 1.8 and the
/// many clients that only know it.
pub const REFLECTION_SERVICES: [&str; 2] = ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];

/// A reflection builder that lists exactly what a port serves (`service_names`, health and
/// reflection itself) and resolves every type a caller meets: the whole proto tree, the health
/// messages, and the `google.rpc` details errors carry (`ErrorInfo`, `BadRequest`, …).
fn reflection(service_names: &[&str]) -> tonic_reflection::server::Builder<'static> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(worktruck_proto::DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET);
    for name in service_names.iter().copied().chain([HEALTH_SERVICE]).chain(REFLECTION_SERVICES) {
        builder = builder.with_service_name(name);
    }
    builder
}

/// Serves `routes` (one or more tonic services) on `listener`, with `grpc.health.v1.Health`
/// reporting every name in `service_names` as serving, and server reflection (v1 and v1alpha)
/// listing those names, health and reflection, until `shutdown` resolves. Every call passes [`ScopeGuard`] first: a
/// context `verifier` accepts must hold the RPC's scope. With `tls`, only callers presenting a
/// certificate of its CA get in (mutual TLS).
pub async fn serve_grpc(
    listener: impl Into<GrpcListener>,
    routes: tonic::service::Routes,
    service_names: &[&str],
    verifier: Verifier,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in service_names {
        reporter.set_service_status(*name, tonic_health::ServingStatus::Serving).await;
    }
    reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    let routes = routes
        .add_service(health)
        .add_service(reflection(service_names).build_v1()?)
        .add_service(reflection(service_names).build_v1alpha()?);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let server = builder
        // A peer that stops answering is found by pings, not by the next request timing out;
        // no call may run for ever.
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .timeout(std::time::Duration::from_secs(60))
        .layer(GrpcMetricsLayer { table: ScopeTable::embedded() })
        .layer(ScopeGuardLayer { verifier, table: ScopeTable::embedded() })
        .add_routes(routes);
    match listener.into() {
        GrpcListener::Tcp(listener) => {
            let incoming = crate::serve::limited_incoming(listener, GRPC_MAX_CONNECTIONS);
            server.serve_with_incoming_shutdown(incoming, shutdown).await?;
        }
        GrpcListener::InProcess(incoming) => server.serve_with_incoming_shutdown(incoming, shutdown).await?,
    }
    Ok(())
}

/// Counts and times every call a gRPC server answers ([`crate::telemetry::families::GRPC_CALLS`]),
/// by method and status code: the code of a trailers-only answer from its headers, of any other
/// from its trailers, `Cancelled` when the caller went away first.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    table: &'static ScopeTable,
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics { inner, table: self.table }
    }
}

/// See [`GrpcMetricsLayer`].
#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    table: &'static ScopeTable,
}

impl<S, B> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        // Only methods this code knows become labels: a caller's made-up path must not add series.
        let known = self.table.required(path).is_some()
            || ["/grpc.health.v1.Health/", "/grpc.reflection.", "/worktruck.common.v1.LinkTargets/"].iter().any(|p| path.starts_with(p));
        let method: Arc<str> = if known && path.len() <= 200 { path.into() } else { "unmatched".into() };
        // The call's server span (here rather than in tonic's `trace_fn`, so that the code this
        // layer reads is recorded on it).
        let span = {
            let mut head = http::Request::new(());
            *head.uri_mut() = request.uri().clone();
            *head.headers_mut() = request.headers().clone();
            crate::telemetry::grpc_span(&head)
        };
        let call = CallMetric { method, started: std::time::Instant::now(), done: false, span: span.clone() };
        let future = span.in_scope(|| self.inner.call(request));
        Box::pin(tracing::Instrument::instrument(async move {
            let mut call = call;
            let response = future.await?;
            if let Some(code) = response.headers().get("grpc-status") {
                call.finish(code);
                return Ok(response);
            }
            let (parts, body) = response.into_parts();
            Ok(http::Response::from_parts(parts, tonic::body::Body::new(Metered { inner: body, call: Some(call) })))
        }, span))
    }
}

/// One call being measured; recorded once, `Cancelled` when dropped unfinished.
struct CallMetric {
    method: Arc<str>,
    started: std::time::Instant,
    done: bool,
    /// The call's server span (`telemetry::grpc_span`), which gets its code.
    span: tracing::Span,
}

impl CallMetric {
    fn finish(&mut self, status: &http::HeaderValue) {
        let code = status.to_str().ok().and_then(|v| v.parse::<i32>().ok()).map(tonic::Code::from).unwrap_or(tonic::Code::Unknown);
        self.record(code);
    }

    fn record(&mut self, code: tonic::Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        use crate::telemetry::families::{GRPC_CALLS, GRPC_DURATION};
        crate::telemetry::record_grpc_code(&self.span, code, true);
        let code = format!("{code:?}");
        metrics::counter!(GRPC_CALLS, "method" => self.method.to_string(), "code" => code.clone()).increment(1);
        metrics::histogram!(GRPC_DURATION, "method" => self.method.to_string(), "code" => code)
            .record(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for CallMetric {
    fn drop(&mut self) {
        self.record(tonic::Code::Cancelled);
    }
}

/// A response body that records its call's code when the trailers pass.
struct Metered {
    inner: tonic::body::Body,
    call: Option<CallMetric>,
}

impl hyper::body::Body for Metered {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let Some(status) = frame.trailers_ref().and_then(|t| t.get("grpc-status"))
                    && let Some(mut call) = self.call.take()
                {
                    call.finish(status);
                }
            }
            std::task::Poll::Ready(None) => {
                if let Some(mut call) = self.call.take() {
                    call.record(tonic::Code::Unknown);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Wraps a gRPC server in [`ScopeGuard`].
#[derive(Clone)]
pub struct ScopeGuardLayer {
    verifier: Verifier,
    table: &'static ScopeTable,
}

impl<S> tower::Layer<S> for ScopeGuardLayer {
    type Service = ScopeGuard<S>;
    fn layer(&self, inner: S) -> ScopeGuard<S> {
        ScopeGuard { inner, verifier: self.verifier.clone(), table: self.table }
    }
}

/// Refuses a call whose verified context lacks the RPC's scope (`permission_denied` with
/// reason `insufficient_scope`) before the service runs. The gateways check the same table
/// first; this second check is what stops a context captured from a read-only credential
/// and replayed to a service within its lifetime. Calls without a valid context pass on to
/// the service, which refuses them as `unauthenticated`.
#[derive(Clone)]
pub struct ScopeGuard<S> {
    inner: S,
    verifier: Verifier,
    table: &'static ScopeTable,
}

impl<S, B> tower::Service<http::Request<B>> for ScopeGuard<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::Either<S::Future, std::future::Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if let Some(scope) = self.table.required(request.uri().path())
            && let Some(token) = request.headers().get(METADATA_KEY).and_then(|v| v.to_str().ok())
            && let Ok(ctx) = self.verifier.verify_token(token)
            && let Err(e) = crate::scopes::check(&ctx, scope)
        {
            return futures::future::Either::Right(std::future::ready(Ok(e.to_status().into_http())));
        }
        futures::future::Either::Left(self.inner.call(request))
    }
}

/// `listener` with `TCP_NODELAY` on every accepted connection. An answer written in several
/// pieces (an SSE stream's events, HTTP/2 frames) must not wait for the peer's delayed ACK:
/// with Nagle's algorithm on, each MCP tool call took about 40 ms more.
pub fn nodelay(
    listener: TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    })
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM (what Kubernetes sends).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hanging_check_is_reported_failing_instead_of_hanging_ready() {
        let hangs: Probe = Arc::new(|| Box::pin(std::future::pending::<bool>()));
        let fine: Probe = Arc::new(|| Box::pin(async { true }));
        let checks = vec![
            Check { name: "database".into(), critical: true, probe: hangs.clone() },
            Check { name: "other.database".into(), critical: true, probe: hangs },
            Check { name: "bus".into(), critical: false, probe: fine },
        ];
        // Generous: the point is that /ready answers at all (it used to wait as long as the
        // slowest dependency, summed over checks).
        let r = tokio::time::timeout(std::time::Duration::from_secs(30), ready(&checks)).await.expect("/ready answered");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["checks"]["database"], "failing");
        assert_eq!(v["checks"]["other.database"], "failing");
        assert_eq!(v["checks"]["bus"], "ok");
    }

    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        use axum::serve::Listener as _;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut listener = nodelay(listener);
        let client = tokio::net::TcpStream::connect(addr);
        let ((server_side, _), _client) = tokio::join!(listener.accept(), client);
        assert!(server_side.nodelay().unwrap());
    }
}
