//! HTTPS test servers: an axum router served over TLS on a loopback port, with a certificate
//! issued by a test-only CA. The certificates (ECDSA P-256, valid until 2126) were made once with
//! openssl; the leaf names `localhost`, `127.0.0.1` and `::1`. The CA's private key was thrown
//! away, so nothing else can ever be issued from it.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The test CA's certificate (PEM).
pub const CA_PEM: &str = include_str!("tls/ca.pem");
const LEAF_PEM: &str = include_str!("tls/leaf.pem");
const LEAF_KEY_PEM: &str = include_str!("tls/leaf.key.pem");

/// A running HTTPS test server.
pub struct TlsServer {
    /// `https://<addr>`.
    pub base: String,
    /// The bound address.
    pub addr: SocketAddr,
}

/// The test CA written to a temporary file (for `outbound.ca_file`).
pub fn ca_file() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), CA_PEM).expect("write CA");
    file
}

/// Serves `app` over TLS on a free loopback port.
pub async fn serve(app: axum::Router) -> TlsServer {
    serve_on("127.0.0.1:0", app).await
}

/// Serves `app` over TLS on `addr`.
pub async fn serve_on(addr: &str, app: axum::Router) -> TlsServer {
    serve_listener(TcpListener::bind(addr).await.expect("bind test TLS server"), app)
}

/// Serves `app` over TLS on an already bound listener (when the app must know its own URL).
pub fn serve_listener(tcp: TcpListener, app: axum::Router) -> TlsServer {
    crate::http::install_crypto();
    let certs = CertificateDer::pem_slice_iter(LEAF_PEM.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("test leaf certificate parses");
    let key = PrivateKeyDer::from_pem_slice(LEAF_KEY_PEM.as_bytes()).expect("test leaf key parses");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("test server config");
    let addr = tcp.local_addr().expect("local addr");
    let listener = TlsListener { tcp, acceptor: TlsAcceptor::from(Arc::new(config)) };
    tokio::spawn(async move { axum::serve(listener, app).await.expect("test TLS server") });
    TlsServer { base: format!("https://{addr}"), addr }
}

struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, peer)) = self.tcp.accept().await else { continue };
            // A client that refuses the certificate ends its handshake here; wait for the next.
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Certificates for mutual TLS between pods (`[grpc.tls]`): a test CA and a leaf it issued
/// with both server and client usages (names `localhost`, `127.0.0.1`, `::1`), and a "rogue"
/// pair from another CA. Made once with openssl; both CA keys were thrown away.
pub mod mtls {
    /// The pods' CA.
    pub const CA_PEM: &str = include_str!("tls/mtls/pod-ca.pem");
    /// A pod's certificate.
    pub const CERT_PEM: &str = include_str!("tls/mtls/pod-leaf.pem");
    /// Its key.
    pub const KEY_PEM: &str = include_str!("tls/mtls/pod-leaf.key.pem");
    /// Another CA's certificate and key, which the pods must refuse.
    pub const ROGUE_CERT_PEM: &str = include_str!("tls/mtls/rogue-leaf.pem");
    /// Its key.
    pub const ROGUE_KEY_PEM: &str = include_str!("tls/mtls/rogue-leaf.key.pem");

    /// `[grpc.tls]` settings for a pod, written to files in `dir`.
    pub fn config(dir: &std::path::Path) -> crate::config::GrpcTlsConfig {
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write a test certificate");
            path.display().to_string()
        };
        crate::config::GrpcTlsConfig {
            cert_file: write("pod.pem", CERT_PEM),
            key_file: write("pod.key.pem", KEY_PEM),
            ca_file: write("ca.pem", CA_PEM),
        }
    }
}
