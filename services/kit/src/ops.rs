//! What operators and orchestrators call: `/health` (liveness), `/ready` (dependencies), and
//! `/metrics` (Prometheus) over HTTP, plus the gRPC server every service runs, with gRPC health
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

/// `/health`, `/ready` and `/metrics`.
pub fn router(checks: Vec<Check>) -> Router {
    // Install the recorder now, before any request records a metric.
    let metrics = metrics_handle();
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
        .route("/metrics", get(move || {
            let metrics = metrics.clone();
            async move { metrics.render() }
        }))
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

/// Serves `routes` (one or more tonic services) on `listener`, with `grpc.health.v1.Health`
/// reporting every name in `service_names` as serving, and server reflection over the whole
/// descriptor set, until `shutdown` resolves. Every call passes [`ScopeGuard`] first: a
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
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(worktruck_proto::DESCRIPTOR_SET)
        .build_v1()?;
    let routes = routes.add_service(health).add_service(reflection);
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
        .trace_fn(crate::telemetry::grpc_span)
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
