//! OIDC access tokens (Keycloak-issued JWTs) as a credential: `Authorization: Bearer <jwt>`.
//!
//! The issuer is discovered lazily (`<issuer>/.well-known/openid-configuration`, retried until it
//! answers) and its JWKS is cached by `kid`. An unknown `kid` refreshes the set at most once per
//! `jwks_refresh_min_seconds`, single-flight, so callers minting random kids cannot make the
//! gateway fetch per request. A refresh replaces the set (keys the issuer dropped are dropped);
//! a failed refresh keeps the last good set. Only RS256 and ES256 are accepted. The token's
//! subject is mapped to its tenant by the tenants service ([`resolve_external`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http::request::Parts;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tonic::transport::Channel;
use worktruck_kit::config::OidcConfig;
use worktruck_kit::context::{Signer, validate_scope};
use worktruck_kit::http::{Timeouts, read_capped, require_secure, root_cause};
use worktruck_kit::{Error, ErrorCode};
use worktruck_proto::tenants::v1::PrincipalKind;
use worktruck_proto::tenants::v1::tenants_service_client::TenantsServiceClient;

use crate::cache::PrincipalCache;
use crate::auth::{AuthFuture, Authenticator, Principal, bearer_token, resolve_external};
use crate::telemetry::RequestId;

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECONDS: u64 = 60;
/// The largest discovery document or JWKS the gateway reads.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Connect and total timeouts of calls to the issuer.
pub const TIMEOUTS: Timeouts = Timeouts { connect: Duration::from_secs(2), total: Duration::from_secs(5) };
/// Keys older than this are refreshed on the next request (stale-while-error if that fails).
const JWKS_TTL: Duration = Duration::from_secs(600);
/// While no key set has ever been loaded, the least time between two attempts; requests in
/// between get 503 at once instead of queueing behind a dead issuer.
const COLD_RETRY: Duration = Duration::from_secs(1);
/// How long a key set is used while every refresh fails; after that tokens get 503.
const MAX_STALE: Duration = Duration::from_secs(24 * 3600);

/// `Authorization: Bearer <jwt>` from one OIDC issuer, for one audience.
pub struct JwtAuthenticator {
    inner: Arc<Inner>,
}

struct Inner {
    issuer: String,
    audience: String,
    refresh_min: Duration,
    http: reqwest::Client,
    tenants: TenantsServiceClient<Channel>,
    signer: Signer,
    /// Subjects already resolved to their tenant (the token itself is verified every time).
    resolved: PrincipalCache,
    /// The current key set, read on every request.
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Held while fetching, so that one request fetches and the others wait for its result.
    fetch: tokio::sync::Mutex<FetchState>,
}

#[derive(Default)]
struct FetchState {
    jwks_uri: Option<String>,
    /// When the JWKS was last requested, successfully or not.
    last_attempt: Option<Instant>,
}

struct KeySet {
    by_kid: HashMap<String, Key>,
    fetched: Instant,
}

impl KeySet {
    /// Whether this set, still within its TTL, has `kid`.
    fn serves(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid) && self.fetched.elapsed() < JWKS_TTL
    }
}

struct Key {
    /// The only header `alg` this key verifies.
    alg: Algorithm,
    decoding: DecodingKey,
}

/// The claims read from a token; `iss`, `aud`, `exp` and `nbf` are checked by `Validation`.
#[derive(Deserialize)]
struct Claims {
    // Defaulted so that a missing `sub` is reported by `Validation` as a missing claim.
    #[serde(default)]
    sub: String,
    #[serde(default)]
    scope: Option<String>,
    /// Keycloak's token type: `Bearer` for access tokens, `ID`/`Refresh` for the others.
    #[serde(default)]
    typ: Option<String>,
}

impl JwtAuthenticator {
    /// An authenticator for tokens of `cfg.issuer` naming `cfg.audience`, mapping subjects to
    /// tenants through `TenantsService.ResolvePrincipal` on `tenants`, signed as the gateway.
    /// `http` fetches discovery and keys (see [`worktruck_kit::http::outbound`], with
    /// [`TIMEOUTS`]). Nothing is fetched until the first token arrives.
    pub fn new(cfg: &OidcConfig, http: reqwest::Client, tenants: Channel, signer: Signer) -> Self {
        Self {
            inner: Arc::new(Inner {
                issuer: cfg.issuer.clone(),
                audience: cfg.audience.clone(),
                refresh_min: Duration::from_secs(cfg.jwks_refresh_min_seconds),
                http,
                tenants: TenantsServiceClient::new(tenants),
                signer,
                keys: RwLock::new(None),
                fetch: tokio::sync::Mutex::new(FetchState::default()),
                resolved: PrincipalCache::new(Duration::ZERO),
            }),
        }
    }

    /// Keeps resolved subjects in `cache` (share the chain's, so bus events reach it).
    pub fn with_cache(mut self, cache: PrincipalCache) -> Self {
        Arc::get_mut(&mut self.inner).expect("with_cache is called on a new authenticator").resolved = cache;
        self
    }
}

impl Authenticator for JwtAuthenticator {
    fn authenticate<'a>(&'a self, parts: &'a Parts) -> AuthFuture<'a> {
        Box::pin(async move {
            let Some(token) = bearer_token(parts)? else {
                return Ok(None);
            };
            if !looks_like_jwt(token) {
                return Ok(None);
            }
            let request_id = RequestId::of(parts);
            self.inner.check(token, request_id).await.map(Some)
        })
    }
}

/// Three non-empty dot-separated base64url parts.
fn looks_like_jwt(token: &str) -> bool {
    let mut parts = 0;
    for part in token.split('.') {
        parts += 1;
        if part.is_empty()
            || !part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
    }
    parts == 3
}

fn rejected(message: &str) -> Error {
    Error::unauthenticated(format!("invalid access token: {message}"))
}

fn unavailable() -> Error {
    Error::new(
        ErrorCode::Unavailable,
        "the identity provider is unavailable; retry later",
    )
}

impl Inner {
    async fn check(&self, token: &str, request_id: String) -> Result<Principal, Error> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(rejected("token too large"));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| rejected("malformed token header"))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(rejected(
                "unsupported signing algorithm (RS256 or ES256 only)",
            ));
        }
        let kid = header
            .kid
            .as_deref()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| rejected("token header has no kid"))?;
        let keys = self.key_set_with(kid).await?;
        let key = keys
            .by_kid
            .get(kid)
            .ok_or_else(|| rejected("unknown signing key"))?;
        if key.alg != header.alg {
            return Err(rejected("signing key does not match the token algorithm"));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
            .map_err(|e| rejected(describe(e.kind())))?
            .claims;
        if claims.sub.is_empty() {
            return Err(rejected("empty sub"));
        }
        if claims
            .typ
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err(rejected("not an access token (typ)"));
        }
        let cache_key = PrincipalCache::key(&["oidc", &self.issuer, &claims.sub]);
        let mut principal = match self.resolved.get(&cache_key) {
            Some(principal) => principal,
            None => {
                let principal = resolve_external(
                    &self.tenants,
                    &self.signer,
                    PrincipalKind::OidcSubject,
                    &self.issuer,
                    &claims.sub,
                    format!("jwt:{}", claims.sub),
                    request_id,
                )
                .await?;
                self.resolved.insert(cache_key, &principal, None);
                principal
            }
        };
        principal.ctx.scopes = claims
            .scope
            .as_deref()
            .unwrap_or_default()
            .split_ascii_whitespace()
            .filter(|s| validate_scope(s))
            .map(str::to_owned)
            .collect();
        Ok(principal)
    }

    fn current(&self) -> Option<Arc<KeySet>> {
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The key set, refreshed first when it lacks `kid` (or is older than the TTL) and a
    /// refresh is allowed now. 503 only while no set usable within [`MAX_STALE`] is loaded.
    async fn key_set_with(&self, kid: &str) -> Result<Arc<KeySet>, Error> {
        if let Some(keys) = self.current().filter(|k| k.serves(kid)) {
            return Ok(keys);
        }
        let mut state = self.fetch.lock().await;
        // Another request may have refreshed while this one waited.
        let current = self.current();
        if let Some(keys) = current.as_ref().filter(|k| k.serves(kid)) {
            return Ok(keys.clone());
        }
        let current = current.filter(|k| k.fetched.elapsed() < MAX_STALE);
        let min_gap = if current.is_some() {
            self.refresh_min
        } else {
            COLD_RETRY
        };
        if state.last_attempt.is_some_and(|at| at.elapsed() < min_gap) {
            return current.ok_or_else(unavailable);
        }
        state.last_attempt = Some(Instant::now());
        match self.fetch_keys(&mut state).await {
            Ok(by_kid) => {
                let keys = Arc::new(KeySet {
                    by_kid,
                    fetched: Instant::now(),
                });
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Some(keys.clone());
                Ok(keys)
            }
            Err(cause) => {
                tracing::warn!(issuer = %self.issuer, error = %cause, stale = current.is_some(), "oidc key refresh failed");
                current.ok_or_else(unavailable)
            }
        }
    }

    /// Discovery (once it has succeeded, its `jwks_uri` is reused) and the JWKS.
    async fn fetch_keys(&self, state: &mut FetchState) -> Result<HashMap<String, Key>, String> {
        let jwks_uri = match &state.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let uri = self.discover().await?;
                state.jwks_uri = Some(uri.clone());
                uri
            }
        };
        let set: JwkSet = serde_json::from_slice(&self.get(&jwks_uri).await?)
            .map_err(|e| format!("jwks is not a JWK set: {e}"))?;
        let mut by_kid = HashMap::new();
        for jwk in &set.keys {
            if let Some((kid, key)) = usable_key(jwk) {
                by_kid.insert(kid, key);
            }
        }
        tracing::info!(issuer = %self.issuer, keys = by_kid.len(), "oidc keys loaded");
        Ok(by_kid)
    }

    async fn discover(&self) -> Result<String, String> {
        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        require_secure(&self.issuer).map_err(|e| e.0)?;
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let doc: Discovery = serde_json::from_slice(&self.get(&url).await?)
            .map_err(|e| format!("discovery document is invalid: {e}"))?;
        if doc.issuer != self.issuer {
            return Err(format!(
                "discovery names issuer {:?}, configured {:?}",
                doc.issuer, self.issuer
            ));
        }
        require_secure(&doc.jwks_uri).map_err(|e| e.0)?;
        Ok(doc.jwks_uri)
    }

    /// A GET with a 200 answer, its body capped at [`MAX_DOCUMENT_BYTES`].
    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let response = self
            .http
            .get(url)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("GET {url}: {}", root_cause(&e)))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: status {}", response.status()));
        }
        read_capped(response, MAX_DOCUMENT_BYTES).await.map_err(|e| format!("GET {url}: {e}"))
    }
}

/// A signing key the gateway can verify with, keyed by its `kid`: RSA keys verify RS256 and
/// P-256 keys ES256; a JWK `alg` other than that, `use` other than `sig`, or no `kid` rules the
/// key out (e.g. Keycloak's `RSA-OAEP` encryption key).
fn usable_key(jwk: &Jwk) -> Option<(String, Key)> {
    let kid = jwk.common.key_id.clone().filter(|k| !k.is_empty())?;
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let (alg, expected) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (Algorithm::RS256, KeyAlgorithm::RS256),
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            (Algorithm::ES256, KeyAlgorithm::ES256)
        }
        _ => return None,
    };
    if jwk.common.key_algorithm.is_some_and(|a| a != expected) {
        return None;
    }
    let decoding = DecodingKey::from_jwk(jwk).ok()?;
    Some((kid, Key { alg, decoding }))
}

/// What was wrong with a token, for the 401 message.
fn describe(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::InvalidSignature => "bad signature",
        K::ExpiredSignature => "token expired",
        K::ImmatureSignature => "token not yet valid (nbf)",
        K::InvalidIssuer => "wrong issuer",
        K::InvalidAudience => "wrong audience",
        K::InvalidAlgorithm => "algorithm does not match the key",
        K::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => "missing claim exp",
            "iss" => "missing claim iss",
            "aud" => "missing claim aud",
            "sub" => "missing claim sub",
            _ => "missing required claim",
        },
        K::InvalidClaimFormat(_) | K::Json(_) => "malformed claims",
        K::Base64(_) | K::Utf8(_) | K::InvalidToken => "malformed token",
        _ => "token rejected",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("eyJh.eyJz.c2ln"));
        assert!(!looks_like_jwt("bsk_live_abc"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a..c"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt("a.b+.c"));
    }
}
