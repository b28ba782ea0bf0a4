//! Outbound HTTP(S) clients: the one place a `reqwest::Client` is made, for the OIDC issuer, the
//! x402 facilitator and whatever later calls out (MCP apps, Anthropic).
//!
//! TLS is rustls with the ring provider (the one async-nats already brings, so no second crypto
//! library is built). reqwest is compiled without a provider of its own, so one must be installed
//! before any client is built; [`builder`] does that, once per process, and every client in the
//! tree (tests and the load harness too) comes from it. Servers are verified against the system's
//! trust store plus the configured `outbound.ca_file`; there is no switch that turns verification
//! off.
//!
//! Servers that tenants name (MCP apps) are reached only through [`guarded`], behind the SSRF
//! [`Guard`]: https unless `outbound.allow_http`, and no private, loopback, link-local, CGNAT,
//! unique-local, multicast or metadata address unless `outbound.allow_ranges` holds it —
//! checked on the URL, again on every address a name resolves to when the connection is made
//! (the client's own resolver, so a name that resolves to a public address when checked and
//! to a private one when used cannot slip through), with redirects refused and no proxy.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Once};
use std::time::Duration;

use ipnet::IpNet;

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

/// Why the SSRF guard refused a URL or an address: a message for the caller that names the
/// reason and the setting that would allow it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// The SSRF guard for servers a tenant names (`outbound.allow_http`, `outbound.allow_ranges`).
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow_http: bool,
    allow: Vec<IpNet>,
    /// Where a [`Guard::recording`] copy keeps its first refusal.
    log: Option<RefusalLog>,
}

/// The first refusal of a [`Guard::recording`] copy: how a caller learns why a connection
/// failed when the client library in between keeps only the error's text.
#[derive(Debug, Clone, Default)]
pub struct RefusalLog(Arc<std::sync::Mutex<Option<Refusal>>>);

impl RefusalLog {
    /// The first refusal recorded, if any.
    pub fn first(&self) -> Option<Refusal> {
        self.0.lock().ok().and_then(|r| r.clone())
    }

    fn record(&self, r: &Refusal) {
        if let Ok(mut slot) = self.0.lock()
            && slot.is_none()
        {
            *slot = Some(r.clone());
        }
    }
}

impl Guard {
    /// The guard `cfg` configures; a range that is not CIDR (`10.0.0.0/8`, `fd00::/8`) or a
    /// bare address is an error.
    pub fn from_config(cfg: &OutboundConfig) -> Result<Guard, ClientError> {
        let mut allow = Vec::new();
        for r in &cfg.allow_ranges {
            let net = r
                .parse::<IpNet>()
                .or_else(|_| r.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| ClientError(format!("{r:?} is not a CIDR range such as 10.0.0.0/8 or fd00::/8")))?;
            allow.push(net.trunc());
        }
        Ok(Guard { allow_http: cfg.allow_http, allow, log: None })
    }

    /// A copy of the guard that records its first refusal (URL, resolution or redirect) in the
    /// returned log; give it to [`guarded`] for one task's client.
    pub fn recording(&self) -> (Guard, RefusalLog) {
        let log = RefusalLog::default();
        (Guard { log: Some(log.clone()), ..self.clone() }, log)
    }

    fn refuse(&self, r: Refusal) -> Refusal {
        if let Some(log) = &self.log {
            log.record(&r);
        }
        r
    }

    /// Checks a URL before anything is sent: http(s) only (plain http only with
    /// `outbound.allow_http`), no credentials in it, a host, and, when the host is an address,
    /// one the guard lets through. A name is checked when it resolves ([`Guard::resolve`]).
    pub fn check_url(&self, url: &str) -> Result<reqwest::Url, Refusal> {
        let parsed = reqwest::Url::parse(url).map_err(|e| Refusal(format!("not a valid URL: {e}")))?;
        match parsed.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => {
                return Err(Refusal(
                    "http:// is refused: the URL must be https (the operator may allow http with outbound.allow_http)".into(),
                ));
            }
            other => return Err(Refusal(format!("the {other}: scheme is refused: the URL must be https"))),
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(Refusal("credentials in the URL are refused: give them as the app's auth".into()));
        }
        match host_ip(&parsed) {
            None if parsed.host_str().unwrap_or_default().is_empty() => return Err(Refusal("the URL has no host".into())),
            None => {}
            Some(ip) => self.check_ip(ip)?,
        }
        Ok(parsed)
    }

    /// Checks one address: refused when it is not public, unless an allowed range holds it.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        self.check_ip_quiet(ip).map_err(|r| self.refuse(r))
    }

    fn check_ip_quiet(&self, ip: IpAddr) -> Result<(), Refusal> {
        let ip = canonical(ip);
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        match non_public(ip) {
            None => Ok(()),
            Some(kind) => Err(Refusal(format!(
                "{ip} is {kind}, which is refused (the operator may allow its range in outbound.allow_ranges)"
            ))),
        }
    }

    /// Resolves `host` and checks every address: all must pass, so a name that also resolves
    /// to a private address is refused whichever address a connection would pick.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refusal> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            self.check_ip(ip)?;
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| Refusal(format!("{host} does not resolve: {e}")))?
            .collect();
        if addrs.is_empty() {
            return Err(Refusal(format!("{host} resolves to no address")));
        }
        for a in &addrs {
            if let Err(r) = self.check_ip_quiet(a.ip()) {
                return Err(self.refuse(Refusal(format!("{host} resolves to {r}"))));
            }
        }
        Ok(addrs)
    }

    /// Checks a URL and, when its host is a name, what the name resolves to now (what a
    /// registration answers with; the connection checks again).
    pub async fn check(&self, url: &str) -> Result<reqwest::Url, Refusal> {
        let parsed = self.check_url(url)?;
        if host_ip(&parsed).is_none() {
            let name = parsed.host_str().unwrap_or_default();
            self.resolve(name, parsed.port_or_known_default().unwrap_or(443)).await?;
        }
        Ok(parsed)
    }
}

/// The URL's host when it is an address (`127.0.0.1`, `[::1]`), not a name.
fn host_ip(url: &reqwest::Url) -> Option<IpAddr> {
    url.host_str()?.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// An IPv4 address carried in IPv6 (mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4
/// `2002::/16`) is judged as that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return IpAddr::V4(Ipv4Addr::from(((s[6] as u32) << 16) | s[7] as u32));
    }
    if s[0] == 0x2002 {
        return IpAddr::V4(Ipv4Addr::from(((s[1] as u32) << 16) | s[2] as u32));
    }
    ip
}

/// What kind of non-public address `ip` is, or `None` for a public one.
fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            if v4 == Ipv4Addr::new(169, 254, 169, 254) || v4 == Ipv4Addr::new(100, 100, 100, 200) {
                Some("a cloud metadata address")
            } else if v4.is_loopback() {
                Some("a loopback address")
            } else if v4.is_private() {
                Some("a private address")
            } else if v4.is_link_local() {
                Some("a link-local address")
            } else if a == 100 && (64..128).contains(&b) {
                Some("a carrier-grade NAT (100.64.0.0/10) address")
            } else if a == 0 || v4.is_unspecified() {
                Some("an unspecified (0.0.0.0/8) address")
            } else if v4.is_multicast() || v4.is_broadcast() || a >= 240 {
                Some("a multicast, broadcast or reserved address")
            } else if (a == 192 && b == 0 && c == 0) || (a == 198 && (b & 0xfe) == 18) {
                Some("a reserved (IETF or benchmarking) address")
            } else if (a, b, c) == (192, 0, 2) || (a, b, c) == (198, 51, 100) || (a, b, c) == (203, 0, 113) {
                Some("a documentation address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                Some("a cloud metadata address")
            } else if v6.is_loopback() {
                Some("a loopback address")
            } else if v6.is_unspecified() {
                Some("an unspecified address")
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Some("a unique-local (fc00::/7) address")
            } else if (s[0] & 0xffc0) == 0xfe80 || (s[0] & 0xffc0) == 0xfec0 {
                Some("a link-local address")
            } else if v6.is_multicast() {
                Some("a multicast address")
            } else if s[0] == 0x2001 && s[1] == 0xdb8 {
                Some("a documentation address")
            } else if s[..6] == [0, 0, 0, 0, 0, 0] {
                Some("an IPv4-compatible (deprecated) address")
            } else {
                None
            }
        }
    }
}

/// The resolver of a guarded client: resolves with the system's resolver and refuses the
/// connection unless every address passes the guard (the connect-time wall against DNS
/// rebinding).
struct GuardResolver(Arc<Guard>);

impl reqwest::dns::Resolve for GuardResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = guard.resolve(&host, 0).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A client for servers a tenant names: [`outbound`]'s TLS and timeouts, no proxy (a proxy
/// would resolve names out of the guard's sight), every resolved address checked by `guard`
/// when connecting, and a redirect an error that names where it pointed (and, when that is an
/// address the guard refuses, why). Check each URL with [`Guard::check_url`] before use too: a
/// URL whose host is an address is connected to without resolution.
pub fn guarded(cfg: &OutboundConfig, guard: Guard, timeouts: Timeouts) -> Result<reqwest::Client, ClientError> {
    let guard = Arc::new(guard);
    let redirects = guard.clone();
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        let target = attempt.url().to_string();
        let quiet = Guard { log: None, ..(*redirects).clone() };
        let why = match quiet.check_url(&target) {
            Err(r) => format!("the server redirected to {target}, which is refused: {r}"),
            Ok(_) => format!("the server redirected to {target}; redirects are not followed"),
        };
        attempt.error(redirects.refuse(Refusal(why)))
    });
    let mut b = builder()
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.total)
        .redirect(policy)
        .no_proxy()
        .dns_resolver(Arc::new(GuardResolver(guard)));
    if !cfg.ca_file.is_empty() {
        for cert in load_roots(Path::new(&cfg.ca_file))? {
            b = b.add_root_certificate(cert);
        }
    }
    b.build().map_err(|e| ClientError(format!("outbound HTTP client: {e}")))
}

/// The guard's refusal in an error's chain of causes, if the error is one.
pub fn refusal_in(e: &(dyn std::error::Error + 'static)) -> Option<Refusal> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(r) = c.downcast_ref::<Refusal>() {
            return Some(r.clone());
        }
        cause = c.source();
    }
    None
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
        outbound(&OutboundConfig { ca_file: ca_file.into(), ..Default::default() }, timeouts).unwrap()
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

    fn guard(allow_http: bool, ranges: &[&str]) -> Guard {
        let cfg = OutboundConfig {
            allow_http,
            allow_ranges: ranges.iter().map(|r| (*r).to_owned()).collect(),
            ..Default::default()
        };
        Guard::from_config(&cfg).unwrap()
    }

    #[test]
    fn the_guard_refuses_what_is_not_public_https_and_names_why() {
        let g = guard(false, &[]);
        assert!(g.check_url("https://mcp.example.com/mcp").is_ok());
        assert!(g.check_url("https://93.184.216.34/mcp").is_ok());
        assert!(g.check_url("http://mcp.example.com/").unwrap_err().0.contains("outbound.allow_http"));
        assert!(g.check_url("ftp://mcp.example.com/").unwrap_err().0.contains("scheme"));
        assert!(g.check_url("https://u:p@mcp.example.com/").unwrap_err().0.contains("credentials"));
        let g = guard(true, &[]);
        for (url, why) in [
            ("http://127.0.0.1:8080/mcp", "loopback"),
            ("http://[::1]/", "loopback"),
            ("http://169.254.169.254/latest/meta-data", "metadata"),
            ("http://[fd00:ec2::254]/", "metadata"),
            ("http://10.1.2.3/", "private"),
            ("http://172.16.0.1/", "private"),
            ("http://192.168.1.1/", "private"),
            ("http://169.254.1.1/", "link-local"),
            ("http://[fe80::1]/", "link-local"),
            ("http://100.64.0.1/", "carrier-grade NAT"),
            ("http://[fd12:3456::1]/", "unique-local"),
            ("http://0.0.0.0/", "unspecified"),
            ("http://[::ffff:127.0.0.1]/", "loopback"),
            ("http://[64:ff9b::a00:1]/", "private"),
            ("http://224.0.0.1/", "multicast"),
        ] {
            let e = g.check_url(url).unwrap_err();
            assert!(e.0.contains(why) && e.0.contains("outbound.allow_ranges"), "{url}: {e}");
        }
        let g = guard(true, &["127.0.0.0/8", "10.0.0.0/8", "::1"]);
        assert!(g.check_url("http://127.0.0.1:8080/mcp").is_ok());
        assert!(g.check_url("http://[::1]/").is_ok());
        assert!(g.check_url("http://10.9.9.9/").is_ok());
        assert!(g.check_url("http://192.168.1.1/").is_err());
        assert!(g.check_url("http://169.254.169.254/").is_err());
    }

    #[test]
    fn a_range_that_is_not_cidr_is_a_configuration_error() {
        let cfg = OutboundConfig { allow_ranges: vec!["10.0.0.0/33".into()], ..Default::default() };
        assert!(Guard::from_config(&cfg).unwrap_err().0.contains("CIDR"));
        let cfg = crate::config::Config {
            outbound: OutboundConfig { allow_ranges: vec!["intranet".into()], ..Default::default() },
            ..Default::default()
        };
        assert!(cfg.validate().unwrap_err().0.contains("outbound.allow_ranges"));
    }

    #[tokio::test]
    async fn a_name_is_judged_by_every_address_it_resolves_to() {
        let e = guard(true, &[]).check("http://localhost:9/").await.unwrap_err();
        assert!(e.0.contains("localhost resolves to") && e.0.contains("loopback"), "{e}");
        assert!(guard(true, &["127.0.0.0/8", "::1/128"]).check("http://localhost:9/").await.is_ok());
    }

    fn plain() -> axum::Router {
        axum::Router::new()
            .route("/hello", axum::routing::get(|| async { "hello" }))
            .route(
                "/metadata",
                axum::routing::get(|| async { axum::response::Redirect::temporary("http://169.254.169.254/latest/meta-data") }),
            )
            .route("/local", axum::routing::get(|| async { axum::response::Redirect::temporary("/hello") }))
    }

    async fn serve_plain() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, plain()).await.unwrap() });
        port
    }

    fn guarded_with(g: Guard) -> reqwest::Client {
        let timeouts = Timeouts { connect: Duration::from_secs(2), total: Duration::from_secs(5) };
        guarded(&OutboundConfig::default(), g, timeouts).unwrap()
    }

    #[tokio::test]
    async fn the_guarded_client_checks_addresses_when_it_connects_and_refuses_redirects() {
        let port = serve_plain().await;
        // A name resolving to loopback is refused at connect time, whatever was checked before.
        let err = guarded_with(guard(true, &[])).get(format!("http://localhost:{port}/hello")).send().await.unwrap_err();
        let r = refusal_in(&err).unwrap_or_else(|| panic!("{err:?}"));
        assert!(r.0.contains("loopback"), "{r}");
        let ok = guarded_with(guard(true, &["127.0.0.0/8", "::1/128"]));
        let body = ok.get(format!("http://localhost:{port}/hello")).send().await.unwrap().text().await.unwrap();
        assert_eq!(body, "hello");
        // A redirect is an error, naming why when it points at a refused address.
        let err = ok.get(format!("http://localhost:{port}/metadata")).send().await.unwrap_err();
        let r = refusal_in(&err).unwrap();
        assert!(r.0.contains("169.254.169.254") && r.0.contains("metadata"), "{r}");
        let err = ok.get(format!("http://localhost:{port}/local")).send().await.unwrap_err();
        assert!(refusal_in(&err).unwrap().0.contains("redirects are not followed"));
        // A recording copy keeps its first refusal for a caller that sees only text.
        let (g, log) = guard(true, &["127.0.0.0/8", "::1/128"]).recording();
        let _ = guarded_with(g).get(format!("http://localhost:{port}/metadata")).send().await.unwrap_err();
        assert!(log.first().unwrap().0.contains("metadata"));
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
            outbound: OutboundConfig { ca_file: "/nonexistent/ca.pem".into(), ..Default::default() },
            ..Default::default()
        };
        assert!(cfg.validate().unwrap_err().0.contains("outbound.ca_file"));
    }
}
