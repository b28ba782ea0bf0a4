//! The signed internal context a gateway attaches to every gRPC call (brief §5).
//!
//! Services accept a tenant only from this short-lived Ed25519-signed token, never from a bare
//! header, so a reachable service port is not a way into another tenant's data.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;
use uuid::Uuid;

use crate::error::{Error, ErrorCode};

/// The gRPC metadata key carrying the token.
pub const METADATA_KEY: &str = "x-worktruck-context";

/// The answer to a call without a context: it names the header and who signs it, so an
/// internal caller knows what to send.
pub const MISSING: &str = "missing internal context: send the x-worktruck-context metadata, a token a gateway signs with \
     context.signing_key (Ed25519) for 60 s; services verify it with context.public_key";

/// How long a token is valid after it was signed.
const TTL_SECS: i64 = 60;

/// A signed token is reused for the same context while at least this much of its lifetime is
/// left, so a call never carries a token about to expire.
const REUSE_MIN_LEFT_SECS: i64 = 30;

/// The most tokens a signer or verifier remembers; when full, expired ones are dropped, and
/// if none are, all are (the next call of each principal signs or verifies once more).
const CACHE_CAPACITY: usize = 10_000;

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
    /// Expiry (unix seconds). What varies per request (the request id, the trace) travels in
    /// metadata of its own (`x-request-id`, `traceparent`), so that one signed token serves
    /// every call of a principal for most of its lifetime.
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

    /// The tenant's retention window as the store applies it to every read of the past.
    pub fn retention(&self, now: DateTime<Utc>) -> crate::store::Retention {
        let days = if self.retention_days > 0 { self.retention_days } else { 365 };
        crate::store::Retention::new(self.retention_cutoff(now), days)
    }
}

/// The domains a scope may name (`<domain>:read` / `<domain>:write`).
pub const SCOPE_DOMAINS: &[&str] =
    &["contacts", "crm", "tasks", "calendar", "notes", "agents", "apps", "webhooks", "admin"];

/// True for a well-formed scope such as `contacts:read`.
pub fn validate_scope(s: &str) -> bool {
    matches!(s.split_once(':'), Some((d, a)) if SCOPE_DOMAINS.contains(&d) && (a == "read" || a == "write"))
}

/// A bounded map whose entries carry their own expiry (unix seconds).
struct ExpiringCache<V> {
    entries: Mutex<HashMap<String, (V, i64)>>,
}

impl<V: Clone> ExpiringCache<V> {
    fn new() -> Self {
        Self { entries: Mutex::new(HashMap::new()) }
    }

    /// The value under `key` whose expiry is at least `min_exp`.
    fn get(&self, key: &str, min_exp: i64) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(key).filter(|(_, exp)| *exp >= min_exp).map(|(v, _)| v.clone())
    }

    fn insert(&self, key: String, value: V, exp: i64, now: i64) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHE_CAPACITY {
            entries.retain(|_, (_, e)| *e >= now);
            if entries.len() >= CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key, (value, exp));
    }
}

/// Signs contexts (held by gateways only). A context is signed once and its token reused for
/// the same context while [`REUSE_MIN_LEFT_SECS`] of its lifetime are left: one Ed25519
/// signature per principal per half-minute instead of one per call.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
    tokens: Arc<ExpiringCache<Arc<str>>>,
}

impl Signer {
    /// A signer from a 32-byte Ed25519 seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self { key: SigningKey::from_bytes(&seed), tokens: Arc::new(ExpiringCache::new()) }
    }

    /// The matching verifier (with a cache of its own).
    pub fn verifier(&self) -> Verifier {
        Verifier::new(self.key.verifying_key())
    }

    /// Signs `ctx` with a fresh expiry, as a token `payload.signature`.
    pub fn sign(&self, ctx: &Ctx) -> String {
        let mut ctx = ctx.clone();
        ctx.exp = Utc::now().timestamp() + TTL_SECS;
        let payload = B64.encode(serde_json::to_vec(&ctx).expect("context serialises"));
        let sig = self.key.sign(payload.as_bytes());
        format!("{payload}.{}", B64.encode(sig.to_bytes()))
    }

    /// A token for `ctx`: the one signed earlier for the same context while it has
    /// [`REUSE_MIN_LEFT_SECS`] left, else a fresh one.
    pub fn token(&self, ctx: &Ctx) -> Arc<str> {
        let now = Utc::now().timestamp();
        let mut unsigned = ctx.clone();
        unsigned.exp = 0;
        let key = serde_json::to_string(&unsigned).expect("context serialises");
        if let Some(token) = self.tokens.get(&key, now + REUSE_MIN_LEFT_SECS) {
            return token;
        }
        let token: Arc<str> = Arc::from(self.sign(ctx));
        self.tokens.insert(key, token.clone(), now + TTL_SECS, now);
        token
    }

    /// Puts a signed token for `ctx` into outgoing gRPC metadata.
    pub fn attach(&self, ctx: &Ctx, md: &mut MetadataMap) {
        md.insert(METADATA_KEY, self.token(ctx).parse().expect("base64 is valid metadata"));
    }
}

/// Verifies contexts (held by every service). A token verified once is remembered until it
/// expires, so the gateway's reused tokens cost a hash lookup, not an Ed25519 verification;
/// only tokens whose signature verified are ever remembered, and each is checked against the
/// clock on every use.
#[derive(Clone)]
pub struct Verifier {
    key: VerifyingKey,
    verified: Arc<ExpiringCache<Ctx>>,
}

impl Verifier {
    fn new(key: VerifyingKey) -> Self {
        Self { key, verified: Arc::new(ExpiringCache::new()) }
    }

    /// A verifier from a 32-byte Ed25519 public key.
    pub fn from_public_key(bytes: [u8; 32]) -> Result<Self, Error> {
        VerifyingKey::from_bytes(&bytes)
            .map(Self::new)
            .map_err(|_| Error::new(ErrorCode::Internal, "invalid context public key"))
    }

    /// The public key, for configuration of services run apart.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Verifies a token and returns its context.
    pub fn verify_token(&self, token: &str) -> Result<Ctx, Error> {
        let now = Utc::now().timestamp();
        if let Some(ctx) = self.verified.get(token, now) {
            return Ok(ctx);
        }
        let ctx = self.verify_signature(token)?;
        if ctx.exp < now {
            return Err(Error::unauthenticated("internal context expired"));
        }
        self.verified.insert(token.to_owned(), ctx.clone(), ctx.exp, now);
        Ok(ctx)
    }

    fn verify_signature(&self, token: &str) -> Result<Ctx, Error> {
        let bad = || Error::unauthenticated("invalid internal context");
        let (payload, sig) = token.split_once('.').ok_or_else(bad)?;
        let sig = B64.decode(sig).map_err(|_| bad())?;
        let sig = Signature::from_slice(&sig).map_err(|_| bad())?;
        self.key.verify(payload.as_bytes(), &sig).map_err(|_| bad())?;
        serde_json::from_slice(&B64.decode(payload).map_err(|_| bad())?).map_err(|_| bad())
    }

    /// Verifies the token on an incoming gRPC request.
    pub fn verify(&self, md: &MetadataMap) -> Result<Ctx, Error> {
        let token = md
            .get(METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::unauthenticated(MISSING))?;
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

    #[test]
    fn tokens_are_reused_per_context_and_remembered_only_once_verified() {
        let signer = Signer::from_seed([7; 32]);
        let verifier = signer.verifier();
        let a = Ctx::tenant(Uuid::now_v7(), "key:1", 365);
        let b = Ctx::tenant(Uuid::now_v7(), "key:1", 365);
        let t1 = signer.token(&a);
        assert_eq!(signer.token(&a), t1, "the same context reuses its token");
        assert_ne!(signer.token(&b), t1, "another tenant gets its own");
        let mut scoped = a.clone();
        scoped.scopes = vec!["contacts:read".into()];
        assert_ne!(signer.token(&scoped), t1, "other scopes are another context");
        assert_eq!(verifier.verify_token(&t1).unwrap().tenant_id, a.tenant_id);
        assert_eq!(verifier.verify_token(&t1).unwrap().tenant_id, a.tenant_id, "remembered");
        // A remembered token does not make a tampered one pass.
        let (payload, sig) = t1.split_once('.').unwrap();
        let forged = B64.encode(serde_json::to_vec(&b).unwrap());
        assert!(verifier.verify_token(&format!("{forged}.{sig}")).is_err());
        assert!(verifier.verify_token(&format!("{payload}.{}", B64.encode([0u8; 64]))).is_err());
    }

    #[test]
    fn an_expired_token_is_refused_even_when_remembered() {
        let signer = Signer::from_seed([7; 32]);
        let verifier = signer.verifier();
        let ctx = Ctx::tenant(Uuid::now_v7(), "key:1", 365);
        let token = signer.sign(&ctx);
        let now = Utc::now().timestamp();
        let mut remembered = verifier.verify_token(&token).unwrap();
        // As if the clock had moved past the token's expiry.
        remembered.exp = now - 1;
        verifier.verified.insert(token.clone(), remembered, now - 1, now);
        assert!(verifier.verified.get(&token, now).is_none());
        let mut stale = ctx.clone();
        stale.exp = now - 5;
        let payload = B64.encode(serde_json::to_vec(&stale).unwrap());
        let sig = signer.key.sign(payload.as_bytes());
        let expired = format!("{payload}.{}", B64.encode(sig.to_bytes()));
        assert_eq!(verifier.verify_token(&expired).unwrap_err().message, "internal context expired");
    }
}
