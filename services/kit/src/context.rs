//! The signed internal context a gateway attaches to every gRPC call (brief §5).
//!
//! Services accept a tenant only from this short-lived Ed25519-signed token, never from a bare
//! header, so a reachable service port is not a way into another tenant's data.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;
use uuid::Uuid;

use crate::error::{Error, ErrorCode};

/// The gRPC metadata key carrying the token.
pub const METADATA_KEY: &str = "x-worktruck-context";

/// How long a token is valid after it was signed.
const TTL_SECS: i64 = 60;

/// Who is calling, on whose behalf, with which rights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ctx {
    /// The tenant the call acts on; `None` for gateway-internal calls (authentication).
    pub tenant_id: Option<Uuid>,
    /// The principal: `key:<uuid>`, `jwt:<sub>`, `wallet:<address>` or `system:<role>`.
    pub actor: String,
    /// Granted scopes; empty means full access.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The tenant's retention window in days (reads before it are `gone`).
    #[serde(default)]
    pub retention_days: i32,
    /// The tenant's plan (`free`, `pro`, `scale`, `enterprise`), for limits.
    #[serde(default)]
    pub plan: String,
    /// Request id for logs and traces.
    #[serde(default)]
    pub request_id: String,
    /// Expiry (unix seconds).
    pub exp: i64,
}

impl Ctx {
    /// A context for a tenant.
    pub fn tenant(tenant_id: Uuid, actor: impl Into<String>, retention_days: i32) -> Self {
        Self {
            tenant_id: Some(tenant_id),
            actor: actor.into(),
            scopes: Vec::new(),
            retention_days,
            plan: String::new(),
            request_id: String::new(),
            exp: 0,
        }
    }

    /// A context for the gateway itself (no tenant), e.g. to authenticate a key.
    pub fn system(role: &str) -> Self {
        Self {
            tenant_id: None,
            actor: format!("system:{role}"),
            scopes: Vec::new(),
            retention_days: 0,
            plan: String::new(),
            request_id: String::new(),
            exp: 0,
        }
    }

    /// The tenant, or `unauthenticated` when the call carries none.
    pub fn require_tenant(&self) -> Result<Uuid, Error> {
        self.tenant_id.ok_or_else(|| Error::unauthenticated("a tenant is required"))
    }

    /// The earliest moment this tenant may read with `as_of`.
    pub fn retention_cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let days = if self.retention_days > 0 { self.retention_days } else { 365 };
        now - chrono::Duration::days(i64::from(days))
    }
}

/// The domains a scope may name (`<domain>:read` / `<domain>:write`).
pub const SCOPE_DOMAINS: &[&str] =
    &["contacts", "crm", "tasks", "calendar", "notes", "agents", "apps", "admin"];

/// True for a well-formed scope such as `contacts:read`.
pub fn validate_scope(s: &str) -> bool {
    matches!(s.split_once(':'), Some((d, a)) if SCOPE_DOMAINS.contains(&d) && (a == "read" || a == "write"))
}

/// Signs contexts (held by gateways only).
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
}

impl Signer {
    /// A signer from a 32-byte Ed25519 seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self { key: SigningKey::from_bytes(&seed) }
    }

    /// The matching verifier.
    pub fn verifier(&self) -> Verifier {
        Verifier { key: self.key.verifying_key() }
    }

    /// Signs `ctx` with a fresh expiry, as a token `payload.signature`.
    pub fn sign(&self, ctx: &Ctx) -> String {
        let mut ctx = ctx.clone();
        ctx.exp = Utc::now().timestamp() + TTL_SECS;
        let payload = B64.encode(serde_json::to_vec(&ctx).expect("context serialises"));
        let sig = self.key.sign(payload.as_bytes());
        format!("{payload}.{}", B64.encode(sig.to_bytes()))
    }

    /// Puts a signed token for `ctx` into outgoing gRPC metadata.
    pub fn attach(&self, ctx: &Ctx, md: &mut MetadataMap) {
        let token = self.sign(ctx);
        md.insert(METADATA_KEY, token.parse().expect("base64 is valid metadata"));
    }
}

/// Verifies contexts (held by every service).
#[derive(Clone)]
pub struct Verifier {
    key: VerifyingKey,
}

impl Verifier {
    /// A verifier from a 32-byte Ed25519 public key.
    pub fn from_public_key(bytes: [u8; 32]) -> Result<Self, Error> {
        VerifyingKey::from_bytes(&bytes)
            .map(|key| Self { key })
            .map_err(|_| Error::new(ErrorCode::Internal, "invalid context public key"))
    }

    /// The public key, for configuration of services run apart.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Verifies a token and returns its context.
    pub fn verify_token(&self, token: &str) -> Result<Ctx, Error> {
        let bad = || Error::unauthenticated("invalid internal context");
        let (payload, sig) = token.split_once('.').ok_or_else(bad)?;
        let sig = B64.decode(sig).map_err(|_| bad())?;
        let sig = Signature::from_slice(&sig).map_err(|_| bad())?;
        self.key.verify(payload.as_bytes(), &sig).map_err(|_| bad())?;
        let ctx: Ctx = serde_json::from_slice(&B64.decode(payload).map_err(|_| bad())?)
            .map_err(|_| bad())?;
        if ctx.exp < Utc::now().timestamp() {
            return Err(Error::unauthenticated("internal context expired"));
        }
        Ok(ctx)
    }

    /// Verifies the token on an incoming gRPC request.
    pub fn verify(&self, md: &MetadataMap) -> Result<Ctx, Error> {
        let token = md
            .get(METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::unauthenticated("missing internal context"))?;
        self.verify_token(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_context_verifies_and_a_forged_one_does_not() {
        let signer = Signer::from_seed([7; 32]);
        let ctx = Ctx::tenant(Uuid::now_v7(), "key:1", 365);
        let token = signer.sign(&ctx);
        let back = signer.verifier().verify_token(&token).unwrap();
        assert_eq!(back.tenant_id, ctx.tenant_id);

        let other = Signer::from_seed([8; 32]);
        assert!(other.verifier().verify_token(&token).is_err());

        // Swapping the payload for another tenant's breaks the signature.
        let forged = Ctx::tenant(Uuid::now_v7(), "key:1", 365);
        let forged_payload = B64.encode(serde_json::to_vec(&forged).unwrap());
        let sig = token.split_once('.').unwrap().1;
        assert!(signer.verifier().verify_token(&format!("{forged_payload}.{sig}")).is_err());
        assert!(signer.verifier().verify_token("garbage").is_err());
    }
}
