//! The gateway's settings.

use worktruck_kit::config::{AuthConfig, OutboundConfig};

/// How the REST gateway behaves; loaded by the binary with the rest of the config.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest request body accepted; larger ones get 413 `payload_too_large`.
    pub body_limit_bytes: usize,
    /// Largest raw body (a `google.api.HttpBody` field: uploads, imports).
    pub upload_limit_bytes: usize,
    /// Ways in beyond API keys (OIDC, x402) and the enterprise plan's limits.
    pub auth: AuthConfig,
    /// Trust for outbound HTTPS (the OIDC issuer, the x402 facilitator).
    pub outbound: OutboundConfig,
    /// Origins allowed by CORS (`*` for any); empty answers no CORS headers.
    pub cors_allowed_origins: Vec<String>,
    /// gzip / brotli answers when asked.
    pub compression: bool,
    /// Where clients reach the API (the OpenAPI `servers`); empty for `/`.
    pub public_url: String,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 1024 * 1024,
            upload_limit_bytes: 64 * 1024 * 1024,
            auth: AuthConfig::default(),
            outbound: OutboundConfig::default(),
            cors_allowed_origins: Vec::new(),
            compression: true,
            public_url: String::new(),
        }
    }
}
