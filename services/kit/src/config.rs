//! Typed configuration, loaded once: defaults → optional TOML file → `WORKTRUCK_…` environment
//! variables (`__` nests: `WORKTRUCK_DATABASE__URL`), validated before anything starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Everything Worktruck reads from its environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where embedded data (SQLite files, the master key) lives.
    pub data_dir: PathBuf,
    /// The master secret (base64 of 32 bytes). When absent, `<data_dir>/master.key` is used
    /// (and created on first start). Sub-keys (API-key pepper, context keys) derive from it.
    #[serde(skip_serializing)]
    pub secret_key: Option<SecretString>,
    /// The REST gateway.
    pub rest: RestConfig,
    /// The MCP gateway.
    pub mcp: McpConfig,
    /// The database; empty URL means embedded SQLite.
    pub database: DatabaseConfig,
    /// NATS; empty URL means the in-process bus.
    pub nats: NatsConfig,
    /// Where a service role listens for gRPC.
    pub grpc: GrpcConfig,
    /// Where a service role serves /health, /ready and /metrics.
    pub admin: AdminConfig,
    /// Each service's gRPC URL, keyed by service name (`WORKTRUCK_SERVICES__CONTACTS=http://…`),
    /// for the gateways and for services that call another one when run apart. All-in-one
    /// (`worktruck dev`) needs none: its services listen on loopback ports of its own choosing.
    pub services: BTreeMap<String, String>,
    /// Run and route only these services (empty: every service). `worktruck dev` starts only
    /// these, and the gateways route only their operations; `tenants` is always needed.
    pub enabled_services: Vec<String>,
    /// Each service's own settings, keyed by service name (`[settings.notes]`,
    /// `WORKTRUCK_SETTINGS__NOTES__<KEY>`); a service reads its section with
    /// `ServiceContext::settings`.
    pub settings: BTreeMap<String, serde_json::Value>,
    /// Internal context keys.
    pub context: ContextConfig,
    /// Logging.
    pub log: LogConfig,
    /// Tracing export.
    pub telemetry: TelemetryConfig,
    /// Prometheus metrics (`/metrics` on the admin port).
    pub metrics: MetricsConfig,
    /// Tenant defaults.
    pub tenants: TenantsConfig,
    /// Ways in beyond API keys, and plan limits.
    pub auth: AuthConfig,
    /// Outbound HTTPS (the OIDC issuer, the x402 facilitator).
    pub outbound: OutboundConfig,
    /// Where uploaded files are kept (`kit::blobs`).
    pub blobs: crate::blobs::BlobsConfig,
    /// The master keys that wrap each tenant's data keys (`kit::envelope`).
    pub encryption: EncryptionConfig,
}

/// `[encryption]`: the master keys of envelope encryption (`kit::envelope`). Stored secrets
/// (BYOK keys, integration keys, app credentials) are sealed under a per-tenant data key; the
/// data keys are kept wrapped under a master key. With no keys configured, one master key
/// named `default` is derived from the master secret. To rotate: add a key, make it
/// `active_key`, restart, run `worktruck admin rotate-master-key`, then remove the old one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncryptionConfig {
    /// Master keys by id (`[a-z0-9_-]{1,32}`): base64 of 32 random bytes
    /// (`WORKTRUCK_ENCRYPTION__MASTER_KEYS__K2027=…`).
    #[serde(skip_serializing)]
    pub master_keys: BTreeMap<String, SecretString>,
    /// The id of the key new data keys are wrapped under (and rotation re-wraps to). Empty:
    /// `default`, derived from the master secret.
    pub active_key: String,
}

/// Outbound HTTPS (`[outbound]`). Servers are verified against the system's trust store
/// (`/etc/ssl/certs`, or `SSL_CERT_FILE` / `SSL_CERT_DIR`) plus `ca_file`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// A PEM bundle of extra CA certificates to trust, e.g. the private CA a Keycloak in the
    /// cluster is issued from. Empty: the system's trust store only.
    pub ca_file: String,
    /// Let the SSRF guard (`kit::http::Guard`, for servers tenants register: MCP apps) reach
    /// plain `http://` URLs. Off: https only.
    pub allow_http: bool,
    /// CIDR ranges the SSRF guard lets through although they are private, loopback,
    /// link-local, CGNAT, unique-local or metadata addresses: on-premises servers, or a local
    /// test server (`["127.0.0.0/8"]`). Empty: every such address is refused.
    pub allow_ranges: Vec<String>,
}

/// Authentication and limits (`[auth]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// OIDC JWT access tokens (Keycloak); off while `issuer` is empty.
    pub oidc: OidcConfig,
    /// x402 payments; off while `facilitator_url` is empty.
    pub x402: X402Config,
    /// Limits of the enterprise plan (the other plans' limits are fixed).
    pub enterprise: PlanLimits,
    /// How long a gateway keeps a verified API key or resolved OIDC subject, in seconds: the
    /// longest a revocation can take to reach a gateway while the bus is down (with the bus
    /// up, the tenants service's event reaches every gateway at once). 0 disables the cache.
    pub principal_cache_seconds: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            oidc: OidcConfig::default(),
            x402: X402Config::default(),
            enterprise: PlanLimits::default(),
            principal_cache_seconds: 10,
        }
    }
}

/// `[auth.oidc]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer URL, exactly as tokens carry it in `iss`; discovery is
    /// `<issuer>/.well-known/openid-configuration`. Empty disables JWTs.
    pub issuer: String,
    /// The audience tokens must name in `aud`.
    pub audience: String,
    /// The least time between two JWKS refreshes caused by an unknown `kid`.
    pub jwks_refresh_min_seconds: u64,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self { issuer: String::new(), audience: "mcp".into(), jwks_refresh_min_seconds: 30 }
    }
}

/// `[auth.x402]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct X402Config {
    /// The facilitator's base URL (`/verify`, `/settle`). Empty disables x402.
    pub facilitator_url: String,
    /// The address payments go to.
    pub pay_to: String,
    /// CAIP-2 network.
    pub network: String,
    /// The token contract (USDC on Base by default).
    pub asset: String,
    /// How long a payment authorization may take, in seconds.
    pub max_timeout_seconds: u64,
    /// Prices per operation class, in the asset's atomic units (USDC: 6 decimals).
    pub prices: X402Prices,
}

impl Default for X402Config {
    fn default() -> Self {
        Self {
            facilitator_url: String::new(),
            pay_to: String::new(),
            network: "eip155:8453".into(),
            asset: "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913".into(),
            max_timeout_seconds: 60,
            prices: X402Prices::default(),
        }
    }
}

/// Prices per operation class in atomic units; writes cost more than reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct X402Prices {
    /// A single read (`GET /contacts/{id}`): $0.001.
    pub read: u64,
    /// A list or search: $0.002.
    pub list: u64,
    /// A write: $0.003.
    pub write: u64,
    /// A composite operation: $0.005.
    pub composite: u64,
}

impl Default for X402Prices {
    fn default() -> Self {
        Self { read: 1_000, list: 2_000, write: 3_000, composite: 5_000 }
    }
}

/// Requests allowed per minute and per day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlanLimits {
    /// Per minute.
    pub per_minute: u32,
    /// Per day.
    pub per_day: u32,
}

impl Default for PlanLimits {
    fn default() -> Self {
        Self { per_minute: 60_000, per_day: 50_000_000 }
    }
}

/// REST gateway settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestConfig {
    /// Listen address.
    pub addr: SocketAddr,
    /// Largest request body accepted.
    pub body_limit_bytes: usize,
    /// Largest raw (non-JSON) body accepted by the routes that take one (uploads, imports);
    /// the service behind may allow less (notes: `settings.notes.attachment_max_bytes`).
    pub upload_limit_bytes: usize,
    /// Open connections at most; one more is closed when accepted.
    pub max_connections: usize,
    /// Milliseconds a request head may take to arrive; also how long an idle keep-alive
    /// connection is kept. A connection that sends nothing or half a head is closed then.
    pub header_timeout_ms: u64,
    /// Milliseconds a request body may go without sending a byte.
    pub body_timeout_ms: u64,
    /// Origins browsers may call the API from (CORS), e.g. `["https://app.example.com"]`, or
    /// `["*"]` for any; empty (the default) answers no CORS headers at all.
    pub cors_allowed_origins: Vec<String>,
    /// Compress answers with gzip or brotli when the caller's `Accept-Encoding` asks.
    pub compression: bool,
    /// The URL clients reach the REST API at (`https://api.example.com`), the OpenAPI
    /// document's `servers`; empty: the document names the server it is read from (`/`).
    pub public_url: String,
}

/// MCP gateway settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct McpConfig {
    /// Listen address.
    pub addr: SocketAddr,
    /// The URL clients reach the MCP server at, without `/mcp/v1` (e.g.
    /// `https://mcp.example.com`); it names the resource in the OAuth metadata and its host is
    /// allowed in `Host` headers. Empty means `http://<addr>`.
    pub public_url: String,
    /// More `Host` header values the MCP gateway accepts (DNS-rebinding defence), beside the
    /// loopback names and `public_url`'s host: the names it is reached by inside a cluster or
    /// behind a proxy (`worktruck-mcp-gateway`, `mcp.internal:8081`). A name alone allows every
    /// port; `name:port` that port only.
    pub allowed_hosts: Vec<String>,
    /// Largest JSON-RPC request body accepted; larger ones get 413 `payload_too_large`.
    pub body_limit_bytes: usize,
    /// Open connections at most; one more is closed when accepted.
    pub max_connections: usize,
    /// Milliseconds a request head may take to arrive; also how long an idle keep-alive
    /// connection is kept. A connection that sends nothing or half a head is closed then.
    pub header_timeout_ms: u64,
    /// Milliseconds a request body may go without sending a byte.
    pub body_timeout_ms: u64,
}

/// Database settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://…`; empty for embedded SQLite.
    pub url: String,
    /// Pool size per service.
    pub max_connections: u32,
    /// The prefix of the unprivileged roles runtime connections switch to so row-level security
    /// applies: `<app_role>_<service>`, each granted its own service's schema only.
    pub app_role: String,
    /// How long a request waits for a pool connection before it is answered 503 `unavailable`.
    /// Short, so a database outage fails fast instead of holding every request.
    pub acquire_timeout_ms: u64,
    /// SQLite's `synchronous` pragma: `full` (the default) makes every commit durable on power
    /// loss; `normal` is faster but may lose the last commits (never corrupts).
    pub sqlite_synchronous: SqliteSynchronous,
}

/// SQLite's `synchronous` setting (`database.sqlite_synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    /// No syncs: a crash of the machine may corrupt the file. Tests only.
    Off,
    /// Syncs at checkpoints: a power loss may lose the last commits.
    Normal,
    /// Syncs every commit: an acknowledged write survives a power loss.
    #[default]
    Full,
    /// Like `full`, and syncs the directory too.
    Extra,
}

/// NATS settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// `nats://…`; empty for the in-process bus.
    pub url: String,
}

/// gRPC listener of a service role.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// Listen address.
    pub addr: SocketAddr,
    /// Mutual TLS between pods; off while its files are empty.
    pub tls: GrpcTlsConfig,
}

/// `[grpc.tls]`: internal gRPC over mutual TLS. When set, a service role serves gRPC only to
/// callers presenting a certificate issued by `ca_file`, and every process that calls a
/// service (gateways, services that call others) presents `cert_file` and checks the server
/// against `ca_file`; `[services]` URLs are then `https://`. One certificate per pod with both
/// the server and client usages serves both sides (e.g. from cert-manager). `worktruck dev`
/// needs none: its parts talk through in-process pipes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcTlsConfig {
    /// This process's certificate chain (PEM).
    pub cert_file: String,
    /// Its private key (PEM).
    pub key_file: String,
    /// The CA that issues every pod's certificate (PEM).
    pub ca_file: String,
}

impl GrpcTlsConfig {
    /// Whether mutual TLS is on.
    pub fn enabled(&self) -> bool {
        !(self.cert_file.is_empty() && self.key_file.is_empty() && self.ca_file.is_empty())
    }

    fn read(path: &str, what: &str) -> Result<String, ConfigError> {
        std::fs::read_to_string(path).map_err(|e| ConfigError(format!("grpc.tls.{what} {path}: {e}")))
    }

    /// The server side: identity and the CA client certificates must chain to.
    pub fn server(&self) -> Result<Option<tonic::transport::ServerTlsConfig>, ConfigError> {
        if !self.enabled() {
            return Ok(None);
        }
        let identity = tonic::transport::Identity::from_pem(Self::read(&self.cert_file, "cert_file")?, Self::read(&self.key_file, "key_file")?);
        let ca = tonic::transport::Certificate::from_pem(Self::read(&self.ca_file, "ca_file")?);
        Ok(Some(tonic::transport::ServerTlsConfig::new().identity(identity).client_ca_root(ca)))
    }

    /// The client side: identity to present and the CA servers must chain to.
    pub fn client(&self) -> Result<Option<tonic::transport::ClientTlsConfig>, ConfigError> {
        if !self.enabled() {
            return Ok(None);
        }
        let identity = tonic::transport::Identity::from_pem(Self::read(&self.cert_file, "cert_file")?, Self::read(&self.key_file, "key_file")?);
        let ca = tonic::transport::Certificate::from_pem(Self::read(&self.ca_file, "ca_file")?);
        Ok(Some(tonic::transport::ClientTlsConfig::new().identity(identity).ca_certificate(ca)))
    }
}

/// Admin HTTP listener (`/health`, `/ready`, `/metrics`) of every role and of `worktruck dev`;
/// loopback by default, `0.0.0.0:9090` in containers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Listen address.
    pub addr: SocketAddr,
}

/// Internal context keys. Both derive from the master secret when unset; in a split deployment
/// give the gateway `signing_key` and the services only `public_key`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContextConfig {
    /// Base64 Ed25519 seed (gateways).
    #[serde(skip_serializing)]
    pub signing_key: Option<SecretString>,
    /// Base64 Ed25519 public key (services).
    pub public_key: Option<String>,
}

/// Log settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `json`, `text`, or `auto` (the default): JSON unless the log stream (stderr) is a
    /// terminal, so a container, a service manager or a pipe gets JSON without being told.
    pub format: String,
    /// An `EnvFilter` directive, e.g. `info,worktruck=debug`.
    pub level: String,
}

/// OpenTelemetry settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/gRPC endpoint, e.g. `http://otel-collector:4317`; empty disables export.
    pub otlp_endpoint: String,
}

/// `[metrics]`: what `/metrics` (on `admin.addr` only) exports.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Upper bounds, in seconds, of every latency histogram's buckets (HTTP, MCP, gRPC,
    /// outbox publish); increasing. The same everywhere, so replicas aggregate.
    pub buckets: Vec<f64>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { buckets: crate::telemetry::DEFAULT_BUCKETS.to_vec() }
    }
}

/// Tenant defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantsConfig {
    /// Retention window for new tenants, in days.
    pub default_retention_days: i32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./worktruck-data"),
            secret_key: None,
            rest: RestConfig::default(),
            mcp: McpConfig::default(),
            database: DatabaseConfig::default(),
            nats: NatsConfig::default(),
            grpc: GrpcConfig::default(),
            admin: AdminConfig::default(),
            services: BTreeMap::new(),
            enabled_services: Vec::new(),
            settings: BTreeMap::new(),
            context: ContextConfig::default(),
            log: LogConfig::default(),
            telemetry: TelemetryConfig::default(),
            metrics: MetricsConfig::default(),
            tenants: TenantsConfig::default(),
            auth: AuthConfig::default(),
            outbound: OutboundConfig::default(),
            blobs: crate::blobs::BlobsConfig::default(),
            encryption: EncryptionConfig::default(),
        }
    }
}
/// Open connections a gateway listener accepts by default.
const DEFAULT_MAX_CONNECTIONS: usize = 4096;

impl RestConfig {
    /// The listener's connection limits.
    pub fn limits(&self) -> crate::serve::ConnLimits {
        conn_limits(self.max_connections, self.header_timeout_ms, self.body_timeout_ms)
    }
}

impl McpConfig {
    /// The listener's connection limits.
    pub fn limits(&self) -> crate::serve::ConnLimits {
        conn_limits(self.max_connections, self.header_timeout_ms, self.body_timeout_ms)
    }
}

fn conn_limits(max_connections: usize, header_ms: u64, body_ms: u64) -> crate::serve::ConnLimits {
    crate::serve::ConnLimits {
        max_connections,
        header_timeout: std::time::Duration::from_millis(header_ms),
        body_timeout: std::time::Duration::from_millis(body_ms),
    }
}

impl Default for RestConfig {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8080".parse().expect("addr"),
            body_limit_bytes: 1024 * 1024,
            upload_limit_bytes: 64 * 1024 * 1024,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            cors_allowed_origins: Vec::new(),
            compression: true,
            public_url: String::new(),
        }
    }
}
impl Default for McpConfig {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8081".parse().expect("addr"),
            public_url: String::new(),
            allowed_hosts: Vec::new(),
            body_limit_bytes: 1024 * 1024,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
        }
    }
}
impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            max_connections: 10,
            app_role: "worktruck_app".into(),
            acquire_timeout_ms: 1000,
            sqlite_synchronous: SqliteSynchronous::Full,
        }
    }
}
impl Default for GrpcConfig {
    fn default() -> Self {
        Self { addr: "0.0.0.0:50051".parse().expect("addr"), tls: GrpcTlsConfig::default() }
    }
}
impl Default for AdminConfig {
    fn default() -> Self {
        Self { addr: "127.0.0.1:9090".parse().expect("addr") }
    }
}
impl Default for LogConfig {
    fn default() -> Self {
        Self { format: "auto".into(), level: "info".into() }
    }
}
impl Default for TenantsConfig {
    fn default() -> Self {
        Self { default_retention_days: 365 }
    }
}

/// The top-level configuration keys (sections and plain values).
const TOP_LEVEL_KEYS: &[&str] = &[
    "data_dir", "secret_key", "rest", "mcp", "database", "nats", "grpc", "admin", "services",
    "context", "log", "telemetry", "metrics", "tenants", "auth", "outbound", "enabled_services", "settings", "blobs", "encryption",
];

/// A configuration problem, reported before start.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Loads defaults, then `file` (or `$WORKTRUCK_CONFIG`) when given, then `WORKTRUCK_…`.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        let env_file = std::env::var_os("WORKTRUCK_CONFIG").map(PathBuf::from);
        if let Some(f) = file.map(Path::to_path_buf).or(env_file) {
            if !f.exists() {
                return Err(ConfigError(format!("config file {} not found", f.display())));
            }
            fig = fig.merge(Toml::file(f));
        }
        // Only variables naming a known section are configuration; others (a user's own
        // `WORKTRUCK_…` variables) are left alone. Typos inside a known section still fail.
        let env = Env::prefixed("WORKTRUCK_").split("__").filter(|k| {
            let key = k.as_str().to_ascii_lowercase();
            let first = key.split("__").next().and_then(|s| s.split('.').next()).unwrap_or_default();
            TOP_LEVEL_KEYS.contains(&first)
        });
        let cfg: Config = fig.merge(env).extract().map_err(|e| ConfigError(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that deserialising cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.database.url.is_empty() && !self.database.url.starts_with("postgres") {
            return Err(ConfigError("database.url must be a postgres:// URL (or empty for SQLite)".into()));
        }
        if !self.nats.url.is_empty() && !self.nats.url.starts_with("nats://") && !self.nats.url.contains(':') {
            return Err(ConfigError("nats.url must look like nats://host:4222".into()));
        }
        if !(50..=60_000).contains(&self.database.acquire_timeout_ms) {
            return Err(ConfigError("database.acquire_timeout_ms must be 50..=60000".into()));
        }
        if !["auto", "text", "json"].contains(&self.log.format.as_str()) {
            return Err(ConfigError("log.format must be auto, text or json".into()));
        }
        for origin in &self.rest.cors_allowed_origins {
            let ok = origin == "*"
                || ((origin.starts_with("https://") || origin.starts_with("http://"))
                    && !origin.trim_end_matches('/').contains(['?', '#', ' '])
                    && http::HeaderValue::from_str(origin).is_ok());
            if !ok || (origin == "*" && self.rest.cors_allowed_origins.len() > 1) {
                return Err(ConfigError(format!(
                    "rest.cors_allowed_origins: {origin:?} is not an origin (scheme://host[:port]), or \"*\" alone"
                )));
            }
        }
        if !self.rest.public_url.is_empty() {
            let u = self.rest.public_url.trim_end_matches('/');
            let ok = (u.starts_with("https://") || u.starts_with("http://"))
                && u.parse::<http::Uri>().is_ok_and(|x| x.host().is_some() && x.query().is_none());
            if !ok {
                return Err(ConfigError(format!("rest.public_url: {:?} is not an http(s) URL", self.rest.public_url)));
            }
        }
        if self.rest.body_limit_bytes < 1024 {
            return Err(ConfigError("rest.body_limit_bytes must be at least 1024".into()));
        }
        if self.rest.upload_limit_bytes < self.rest.body_limit_bytes || self.rest.upload_limit_bytes > 1 << 30 {
            return Err(ConfigError("rest.upload_limit_bytes must be between rest.body_limit_bytes and 1 GiB".into()));
        }
        for (name, max, header, body) in [
            ("rest", self.rest.max_connections, self.rest.header_timeout_ms, self.rest.body_timeout_ms),
            ("mcp", self.mcp.max_connections, self.mcp.header_timeout_ms, self.mcp.body_timeout_ms),
        ] {
            if max == 0 {
                return Err(ConfigError(format!("{name}.max_connections must be at least 1")));
            }
            if !(100..=600_000).contains(&header) || !(100..=600_000).contains(&body) {
                return Err(ConfigError(format!("{name}.header_timeout_ms and {name}.body_timeout_ms must be 100..=600000")));
            }
        }
        for host in &self.mcp.allowed_hosts {
            let authority = host.parse::<http::uri::Authority>().ok();
            if host.trim().is_empty() || authority.is_none_or(|a| a.as_str().contains('@')) {
                return Err(ConfigError(format!(
                    "mcp.allowed_hosts: {host:?} is not a host name or host:port (no scheme, path or user)"
                )));
            }
        }
        let b = &self.metrics.buckets;
        if b.is_empty() || b.len() > 40 || b.iter().any(|v| !v.is_finite() || *v <= 0.0) || b.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ConfigError("metrics.buckets must be 1 to 40 increasing positive numbers of seconds".into()));
        }
        if self.mcp.body_limit_bytes < 1024 {
            return Err(ConfigError("mcp.body_limit_bytes must be at least 1024".into()));
        }
        let x = &self.auth.x402;
        if !x.facilitator_url.is_empty() {
            crate::http::require_secure(&x.facilitator_url)
                .map_err(|e| ConfigError(format!("auth.x402.facilitator_url: {e}")))?;
            if x.pay_to.is_empty() {
                return Err(ConfigError("auth.x402.pay_to is required when a facilitator is configured".into()));
            }
            if !x.network.contains(':') {
                return Err(ConfigError("auth.x402.network must be a CAIP-2 id such as eip155:8453".into()));
            }
            if !(x.prices.write > x.prices.read && x.prices.read > 0) {
                return Err(ConfigError("auth.x402.prices: read must be > 0 and write must cost more than read".into()));
            }
        }
        if !self.auth.oidc.issuer.is_empty() {
            crate::http::require_secure(&self.auth.oidc.issuer)
                .map_err(|e| ConfigError(format!("auth.oidc.issuer: {e}")))?;
            if self.auth.oidc.audience.is_empty() {
                return Err(ConfigError("auth.oidc.audience must not be empty".into()));
            }
        }
        let tls = &self.grpc.tls;
        if tls.enabled() {
            if tls.cert_file.is_empty() || tls.key_file.is_empty() || tls.ca_file.is_empty() {
                return Err(ConfigError("grpc.tls needs cert_file, key_file and ca_file together".into()));
            }
            tls.server()?;
        }
        if !self.outbound.ca_file.is_empty() {
            crate::http::load_roots(Path::new(&self.outbound.ca_file))
                .map_err(|e| ConfigError(format!("outbound.ca_file: {e}")))?;
        }
        crate::http::Guard::from_config(&self.outbound).map_err(|e| ConfigError(format!("outbound.allow_ranges: {e}")))?;
        if self.auth.principal_cache_seconds > 300 {
            return Err(ConfigError("auth.principal_cache_seconds must be at most 300 (it bounds how long a revoked key may still work while the bus is down)".into()));
        }
        let enc = &self.encryption;
        for (id, key) in &enc.master_keys {
            if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') {
                return Err(ConfigError(format!("encryption.master_keys: the id {id:?} must match [a-z0-9_-]{{1,32}}")));
            }
            if id == crate::envelope::DEFAULT_KEY_ID {
                return Err(ConfigError("encryption.master_keys: \"default\" is the key derived from the master secret; give yours another id".into()));
            }
            decode_key32(key.expose_secret(), &format!("encryption.master_keys.{id}"))?;
        }
        if !enc.active_key.is_empty() && enc.active_key != crate::envelope::DEFAULT_KEY_ID && !enc.master_keys.contains_key(&enc.active_key) {
            return Err(ConfigError(format!("encryption.active_key: {:?} is not among encryption.master_keys", enc.active_key)));
        }
        if !(1..=36_500).contains(&self.tenants.default_retention_days) {
            return Err(ConfigError("tenants.default_retention_days must be 1..=36500".into()));
        }
        Ok(())
    }

    /// The database URL, if Postgres is configured.
    pub fn database_url(&self) -> Option<String> {
        (!self.database.url.is_empty()).then(|| self.database.url.clone())
    }

    /// Where the master secret comes from, for messages: the setting, or the key file.
    pub fn master_secret_source(&self) -> String {
        match &self.secret_key {
            Some(_) => "secret_key (WORKTRUCK_SECRET_KEY or the config file)".to_owned(),
            None => format!("the key file {}", self.data_dir.join("master.key").display()),
        }
    }

    /// The master secret when this process was given one (`secret_key`, or an existing
    /// `<data_dir>/master.key`); never creates the file.
    pub fn master_secret_if_present(&self) -> Result<Option<Secrets>, ConfigError> {
        if self.secret_key.is_none() && !self.data_dir.join("master.key").exists() {
            return Ok(None);
        }
        self.master_secret().map(Some)
    }

    /// The master secret: from config, else from `<data_dir>/master.key` (created when absent).
    pub fn master_secret(&self) -> Result<Secrets, ConfigError> {
        let raw = match &self.secret_key {
            Some(s) => s.expose_secret().to_owned(),
            None => {
                let path = self.data_dir.join("master.key");
                match std::fs::read_to_string(&path) {
                    Ok(s) => s,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        std::fs::create_dir_all(&self.data_dir)
                            .map_err(|e| ConfigError(format!("cannot create {}: {e}", self.data_dir.display())))?;
                        let mut key = [0u8; 32];
                        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
                        let encoded = B64.encode(key);
                        write_private(&path, &encoded)?;
                        encoded
                    }
                    Err(e) => return Err(ConfigError(format!("cannot read {}: {e}", path.display()))),
                }
            }
        };
        let bytes = B64
            .decode(raw.trim())
            .map_err(|_| ConfigError("secret_key must be base64".into()))?;
        if bytes.len() < 32 {
            return Err(ConfigError("secret_key must hold at least 32 bytes".into()));
        }
        Ok(Secrets { master: bytes })
    }
}

fn write_private(path: &Path, content: &str) -> Result<(), ConfigError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = match opts.open(path) {
        Ok(f) => f,
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(ConfigError(format!("cannot write {}: {e}", path.display()))),
    };
    f.write_all(content.as_bytes()).map_err(|e| ConfigError(e.to_string()))
}

/// Keys derived from the master secret, each for one purpose.
#[derive(Clone)]
pub struct Secrets {
    master: Vec<u8>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

impl Secrets {
    /// Secrets from raw bytes (tests).
    pub fn from_bytes(master: Vec<u8>) -> Self {
        Self { master }
    }

    /// A short public fingerprint of the master secret (an HMAC under it, revealing nothing
    /// of it), recorded in each database at first start.
    pub fn fingerprint(&self) -> String {
        self.derive("worktruck/master-key-fingerprint/v1")[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A 32-byte key for `purpose` (HMAC-SHA256 of the purpose under the master secret).
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.master).expect("any key length");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// Decodes a base64 32-byte key from config.
pub fn decode_key32(s: &str, what: &str) -> Result<[u8; 32], ConfigError> {
    let bytes = B64.decode(s.trim()).map_err(|_| ConfigError(format!("{what} must be base64")))?;
    bytes.try_into().map_err(|_| ConfigError(format!("{what} must be 32 bytes")))
}

#[cfg(test)]
// figment's `Jail` closures return its own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_overrides_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("w.toml", "[rest]\naddr = \"127.0.0.1:9999\"\n[log]\nformat = \"json\"\n")?;
            jail.set_env("WORKTRUCK_LOG__FORMAT", "text");
            jail.set_env("WORKTRUCK_DATABASE__URL", "postgres://x@localhost/db");
            jail.set_env("WORKTRUCK_AUTH__OIDC__ISSUER", "http://127.0.0.1:9/realms/w");
            jail.set_env("WORKTRUCK_AUTH__X402__FACILITATOR_URL", "http://127.0.0.1:9");
            jail.set_env("WORKTRUCK_AUTH__X402__PAY_TO", "0xabc");
            let cfg = Config::load(Some(Path::new("w.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(cfg.rest.addr.port(), 9999);
            assert_eq!(cfg.log.format, "text");
            assert_eq!(cfg.database_url().as_deref(), Some("postgres://x@localhost/db"));
            assert_eq!(cfg.mcp.addr.port(), 8081);
            assert_eq!(cfg.auth.oidc.issuer, "http://127.0.0.1:9/realms/w");
            assert_eq!(cfg.auth.oidc.audience, "mcp");
            assert_eq!(cfg.auth.x402.network, "eip155:8453");
            assert_eq!(cfg.auth.x402.pay_to, "0xabc");
            Ok(())
        });
    }

    #[test]
    fn outbound_trust_and_third_party_urls_are_checked_at_load() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("ca.pem", crate::testing::tls::CA_PEM)?;
            jail.set_env("WORKTRUCK_OUTBOUND__CA_FILE", "ca.pem");
            let cfg = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(cfg.outbound.ca_file, "ca.pem");
            jail.set_env("WORKTRUCK_OUTBOUND__CA_FILE", "missing.pem");
            let e = Config::load(None).unwrap_err();
            assert!(e.0.contains("outbound.ca_file"), "{e}");
            jail.set_env("WORKTRUCK_OUTBOUND__CA_FILE", "");

            // Keys and payments never go to a third party in clear text.
            jail.set_env("WORKTRUCK_AUTH__OIDC__ISSUER", "http://keycloak.example.com/realms/w");
            let e = Config::load(None).unwrap_err();
            assert!(e.0.contains("auth.oidc.issuer"), "{e}");
            jail.set_env("WORKTRUCK_AUTH__OIDC__ISSUER", "https://keycloak.example.com/realms/w");
            jail.set_env("WORKTRUCK_AUTH__X402__FACILITATOR_URL", "http://x402.example.com");
            jail.set_env("WORKTRUCK_AUTH__X402__PAY_TO", "0xabc");
            let e = Config::load(None).unwrap_err();
            assert!(e.0.contains("auth.x402.facilitator_url"), "{e}");
            jail.set_env("WORKTRUCK_AUTH__X402__FACILITATOR_URL", "https://x402.example.com");
            Config::load(None).map_err(|e| e.to_string())?;
            Ok(())
        });
    }

    #[test]
    fn the_documented_example_file_loads() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/worktruck.example.toml");
        figment::Jail::expect_with(|_| {
            let cfg = Config::load(Some(&example)).map_err(|e| e.to_string())?;
            assert_eq!(cfg.rest.addr, Config::default().rest.addr, "the example documents the defaults");
            assert_eq!(cfg.database.acquire_timeout_ms, 1000);
            assert_eq!(cfg.database.sqlite_synchronous, SqliteSynchronous::Full, "durable by default");
            Ok(())
        });
    }

    #[test]
    fn service_addresses_and_settings_are_maps_keyed_by_service() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("w.toml", "[settings.notes]\nmax_attachment_bytes = 10\n")?;
            jail.set_env("WORKTRUCK_SERVICES__CONTACTS", "http://contacts:50051");
            jail.set_env("WORKTRUCK_SERVICES__SOME_NEW_ONE", "http://new:50051");
            jail.set_env("WORKTRUCK_SETTINGS__NOTES__MAX_NOTE_BYTES", "20");
            jail.set_env("WORKTRUCK_ENABLED_SERVICES", "[tenants, contacts]");
            let cfg = Config::load(Some(Path::new("w.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(cfg.services["contacts"], "http://contacts:50051");
            assert_eq!(cfg.services["some_new_one"], "http://new:50051", "a new service needs no config code");
            assert_eq!(cfg.settings["notes"], serde_json::json!({"max_attachment_bytes": 10, "max_note_bytes": 20}));
            assert_eq!(cfg.enabled_services, ["tenants", "contacts"]);
            Ok(())
        });
    }

    #[test]
    fn metrics_buckets_are_increasing_seconds() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("WORKTRUCK_METRICS__BUCKETS", "[0.01, 0.1, 1]");
            assert_eq!(Config::load(None).map_err(|e| e.to_string())?.metrics.buckets, [0.01, 0.1, 1.0]);
            for bad in ["[]", "[1, 0.5]", "[0, 1]", "[0.1, 0.1]"] {
                jail.set_env("WORKTRUCK_METRICS__BUCKETS", bad);
                assert!(Config::load(None).unwrap_err().0.contains("metrics.buckets"), "{bad}");
            }
            Ok(())
        });
    }

    #[test]
    fn mcp_allowed_hosts_are_a_list_of_authorities() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("WORKTRUCK_MCP__ALLOWED_HOSTS", "[worktruck-mcp-gateway, \"mcp.internal:8081\"]");
            let cfg = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(cfg.mcp.allowed_hosts, ["worktruck-mcp-gateway", "mcp.internal:8081"]);
            for bad in ["[\"https://mcp.example.com\"]", "[\"a/b\"]", "[\"\"]", "[\"u@h\"]"] {
                jail.set_env("WORKTRUCK_MCP__ALLOWED_HOSTS", bad);
                let e = Config::load(None).unwrap_err();
                assert!(e.0.contains("mcp.allowed_hosts"), "{bad}: {e}");
            }
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_refused_before_start() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("WORKTRUCK_LOG__FORMAT", "xml");
            assert!(Config::load(None).is_err());
            jail.set_env("WORKTRUCK_LOG__FORMAT", "json");
            jail.set_env("WORKTRUCK_NOT_OURS", "1");
            assert!(Config::load(None).is_ok(), "unrelated WORKTRUCK_ variables are ignored");
            jail.set_env("WORKTRUCK_DATABASE__SQLITE_SYNCHRONOUS", "normal");
            assert_eq!(Config::load(None).unwrap().database.sqlite_synchronous, SqliteSynchronous::Normal);
            jail.set_env("WORKTRUCK_DATABASE__SQLITE_SYNCHRONOUS", "sometimes");
            assert!(Config::load(None).is_err(), "only off, normal, full and extra");
            jail.set_env("WORKTRUCK_DATABASE__SQLITE_SYNCHRONOUS", "full");
            jail.set_env("WORKTRUCK_DATABASE__ACQUIRE_TIMEOUT_MS", "0");
            assert!(Config::load(None).is_err(), "an acquire timeout of 0 would refuse everything");
            jail.set_env("WORKTRUCK_DATABASE__ACQUIRE_TIMEOUT_MS", "1000");
            jail.set_env("WORKTRUCK_DATABASE__ULR", "postgres://typo");
            assert!(Config::load(None).is_err(), "a typo inside a section fails");
            Ok(())
        });
    }
}
