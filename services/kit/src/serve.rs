//! Serving HTTP and gRPC connections without letting a client hold one forever: every listener
//! caps its open connections, HTTP drops a connection whose request head (or, on keep-alive,
//! whose next request) does not arrive in time and a request whose body stalls, and gRPC sends
//! HTTP/2 keep-alive pings and bounds each call. The process also raises its open-file limit
//! at start, so the caps, not the kernel, are what a flood of sockets meets.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How a listener treats its connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Open connections at most; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// How long a request head may take to arrive, counted from when the connection is ready
    /// for one: a new connection that sends nothing, half a head, or an idle keep-alive
    /// connection is closed after this.
    pub header_timeout: Duration,
    /// How long a request body may go without sending anything.
    pub body_timeout: Duration,
}

impl ConnLimits {
    /// Limits for an operator's listener (`/health`, `/ready`, `/metrics`).
    pub fn admin() -> Self {
        Self { max_connections: 256, header_timeout: Duration::from_secs(5), body_timeout: Duration::from_secs(5) }
    }
}

/// Raises this process's open-file limit to its hard limit where the system allows it, and
/// returns the limit in force.
pub fn raise_open_file_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            None
        }
    }
}

/// Serves `app` over HTTP/1.1 on `listener` under `limits` until `shutdown` resolves; then
/// stops accepting and lets open connections finish their requests (up to 10 s).
pub async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(max = limits.max_connections, "connection limit reached; closing a new connection");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let body_timeout = limits.body_timeout;
        let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            use tower::ServiceExt as _;
            let request = request.map(|body| axum::body::Body::new(tower_http::timeout::TimeoutBody::new(body_timeout, body)));
            app.clone().oneshot(request)
        });
        let connection = http.serve_connection(TokioIo::new(tcp), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open 10 s after shutdown began; closing them");
    }
    Ok(())
}

/// An accepted TCP connection holding one of its listener's connection slots until dropped.
pub struct Limited {
    io: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for Limited {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Limited {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// The connections of a gRPC `listener`, at most `max` open at once (`TCP_NODELAY` on each);
/// one more is closed as soon as it is accepted.
pub fn limited_incoming(
    listener: TcpListener,
    max: usize,
) -> impl futures::Stream<Item = std::io::Result<Limited>> + Send + 'static {
    let slots = Arc::new(Semaphore::new(max.max(1)));
    futures::stream::unfold((listener, slots), move |(listener, slots)| async move {
        loop {
            match listener.accept().await {
                Ok((tcp, _)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        tracing::warn!(max, "gRPC connection limit reached; closing a new connection");
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    return Some((Ok(Limited { io: tcp, _slot: slot }), (listener, slots)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}
