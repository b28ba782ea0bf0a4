//! Outbound HTTP(S) clients: the one place a `reqwest::Client` is made, for the OIDC issuer, the
//! x402 facilitator and whatever later calls out (MCP apps, Anthropic).
//!
//! TLS is rustls with the ring provider (the one async-nats already brings, so no second crypto
//! library is built). reqwest is compiled without a provider of its own, so one must be installed
//! before any client is built; [`builder`] does that, once per process, and every client in the
//! tree (tests and the load harness too) comes from it. Servers are verified against the system's
//! trust store plus the configured `outbound.ca_file`; there is no switch that turns verification
//! off.

use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use crate::config::OutboundConfig;

/// Why an outbound client could not be made.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClientError(pub String);

/// Installs ring as the process's rustls provider (idempotent; a provider installed earlier by
/// someone else is kept).
pub fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A client builder with the crypto provider installed and Worktruck's user agent.
pub fn builder() -> reqwest::ClientBuilder {
    install_crypto();
    reqwest::Client::builder().user_agent(concat!("worktruck/", env!("CARGO_PKG_VERSION")))
}

/// A plain client (tests, tools): [`builder`] with nothing else set.
pub fn client() -> reqwest::Client {
    builder().build().expect("an HTTP client with default settings builds")
}

/// The timeouts of an outbound client.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP + TLS connect.
    pub connect: Duration,
    /// The whole request, body included.
    pub total: Duration,
}

/// A client for calls to a third party: the given timeouts, no redirects (a redirect could take
/// a credential-bearing call elsewhere; the callers name exact URLs), HTTPS verified against the
/// system trust store plus `cfg.ca_file`.
pub fn outbound(cfg: &OutboundConfig, timeouts: Timeouts) -> Result<reqwest::Client, ClientError> {
    let mut b = builder()
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.total)
        .redirect(reqwest::redirect::Policy::none());
    if !cfg.ca_file.is_empty() {
        for cert in load_roots(Path::new(&cfg.ca_file))? {
            b = b.add_root_certificate(cert);
        }
    }
    b.build().map_err(|e| ClientError(format!("outbound HTTP client: {e}")))
}

/// The CA certificates of a PEM bundle; an unreadable file or one without a certificate is an
/// error (a typo in the path must not silently fall back to the system store).
pub fn load_roots(path: &Path) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let pem = std::fs::read(path).map_err(|e| ClientError(format!("cannot read {}: {e}", path.display())))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| ClientError(format!("{}: not a PEM certificate bundle: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ClientError(format!("{}: holds no PEM certificate", path.display())));
    }
    Ok(certs)
}

/// Whether `url` may carry credentials or trust: https, or http to a loopback host (a local
/// issuer, tests). Anything else is refused, so that keys and payments never cross a network in
/// clear text.
pub fn require_secure(url: &str) -> Result<(), ClientError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| ClientError(format!("bad url {url:?}: {e}")))?;
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(ClientError(format!("{url:?} must be https (http only on loopback)"))),
    }
}

/// A response's body, read chunk by chunk and refused once it passes `max` bytes, so that a
/// third party cannot make the gateway buffer an unbounded answer.
pub async fn read_capped(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, ClientError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(ClientError(format!("answer larger than {max} bytes")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| ClientError(root_cause(&e)))? {
        if body.len() + chunk.len() > max {
            return Err(ClientError(format!("answer larger than {max} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The innermost cause of a client error, for logs and error messages: reqwest's own message is
/// usually just "error sending request", while the cause says "invalid peer certificate:
/// UnknownIssuer" or "connection refused".
pub fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::tls;

    fn outbound_with(ca_file: &str) -> reqwest::Client {
        let timeouts = Timeouts { connect: Duration::from_secs(2), total: Duration::from_secs(5) };
        outbound(&OutboundConfig { ca_file: ca_file.into() }, timeouts).unwrap()
    }

    fn hello() -> axum::Router {
        axum::Router::new().route("/hello", axum::routing::get(|| async { "hello over tls" }))
    }

    #[tokio::test]
    async fn a_server_issued_by_the_configured_ca_is_trusted() {
        let server = tls::serve(hello()).await;
        let ca = tls::ca_file();
        let body = outbound_with(ca.path().to_str().unwrap())
            .get(format!("{}/hello", server.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "hello over tls");
    }

    #[tokio::test]
    async fn an_unknown_issuer_is_refused_without_the_ca() {
        let server = tls::serve(hello()).await;
        let err = outbound_with("").get(format!("{}/hello", server.base)).send().await.unwrap_err();
        let cause = root_cause(&err);
        assert!(cause.contains("UnknownIssuer"), "{cause}");
    }

    #[tokio::test]
    async fn a_name_the_certificate_does_not_carry_is_refused() {
        // The certificate names localhost, 127.0.0.1 and ::1; 127.0.0.2 is loopback but not named.
        let server = tls::serve_on("127.0.0.2:0", hello()).await;
        let ca = tls::ca_file();
        let err = outbound_with(ca.path().to_str().unwrap())
            .get(format!("{}/hello", server.base))
            .send()
            .await
            .unwrap_err();
        let cause = root_cause(&err);
        assert!(cause.contains("not valid for name"), "{cause}");
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let app = axum::Router::new().route(
            "/jump",
            axum::routing::get(|| async { axum::response::Redirect::temporary("/hello") }),
        );
        let server = tls::serve(app.merge(hello())).await;
        let ca = tls::ca_file();
        let res = outbound_with(ca.path().to_str().unwrap())
            .get(format!("{}/jump", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 307);
    }

    #[test]
    fn only_https_or_loopback_http() {
        assert!(require_secure("https://id.example.com/realms/w").is_ok());
        assert!(require_secure("http://127.0.0.1:8080/realms/w").is_ok());
        assert!(require_secure("http://[::1]:8080/").is_ok());
        assert!(require_secure("http://localhost/realms/w").is_ok());
        assert!(require_secure("http://id.example.com/realms/w").is_err());
        assert!(require_secure("http://127.0.0.1.example.com/").is_err());
        assert!(require_secure("ftp://127.0.0.1/").is_err());
        assert!(require_secure("not a url").is_err());
    }

    #[tokio::test]
    async fn an_oversized_answer_is_cut_off() {
        let app = axum::Router::new().route(
            "/big",
            axum::routing::get(|| async {
                // Streamed, so no content-length: the cap must hold while reading.
                let chunks = (0..64).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 1024])));
                axum::body::Body::from_stream(futures::stream::iter(chunks))
            }),
        );
        let server = tls::serve(app).await;
        let ca = tls::ca_file();
        let client = outbound_with(ca.path().to_str().unwrap());
        let res = client.get(format!("{}/big", server.base)).send().await.unwrap();
        let err = read_capped(res, 16 * 1024).await.unwrap_err();
        assert!(err.0.contains("larger than 16384"), "{err}");
        let res = client.get(format!("{}/big", server.base)).send().await.unwrap();
        assert_eq!(read_capped(res, 64 * 1024).await.unwrap().len(), 64 * 1024);
    }

    #[test]
    fn a_missing_or_empty_bundle_is_an_error() {
        let err = load_roots(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(err.0.contains("cannot read"), "{err}");
        let empty = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(empty.path(), "not a certificate\n").unwrap();
        let err = load_roots(empty.path()).unwrap_err();
        assert!(err.0.contains("no PEM certificate"), "{err}");
        let cfg = crate::config::Config {
            outbound: OutboundConfig { ca_file: "/nonexistent/ca.pem".into() },
            ..Default::default()
        };
        assert!(cfg.validate().unwrap_err().0.contains("outbound.ca_file"));
    }
}
