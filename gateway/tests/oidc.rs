//! The OIDC JWT authenticator against a fake issuer (axum on 127.0.0.1:0 serving discovery and a
//! mutable JWKS that counts fetches) and the real tenants service on SQLite, so subject → tenant
//! mapping is the production one.
//!
//! The signing keys are test-only PEMs generated once with `openssl genpkey` / `openssl ecparam |
//! openssl pkcs8` (RSA key generation in a debug build is too slow to do per test).

mod tenants;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::AUTHORIZATION;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use uuid::Uuid;
use worktruck_gateway::oidc::JwtAuthenticator;
use worktruck_gateway::{ApiError, ApiKeyAuthenticator, AuthChain, Principal};
use worktruck_kit::config::{OidcConfig, OutboundConfig};
use worktruck_kit::context::Signer;
use worktruck_kit::testing::issuer::{
    sign, EC1, Issuer, RSA1, RSA1_PUBLIC, RSA2, spawn_issuer, spawn_issuer_tls,
};
use worktruck_kit::testing::tls;
use worktruck_kit::testing::TestData;
use tenants::spawn_tenants;

const AUDIENCE: &str = "mcp";

struct Keys {
    rsa1: EncodingKey,
    rsa2: EncodingKey,
    ec1: EncodingKey,
}

fn keys() -> Keys {
    Keys {
        rsa1: EncodingKey::from_rsa_pem(RSA1.as_bytes()).unwrap(),
        rsa2: EncodingKey::from_rsa_pem(RSA2.as_bytes()).unwrap(),
        ec1: EncodingKey::from_ec_pem(EC1.as_bytes()).unwrap(),
    }
}

/// A running issuer publishing `rsa1` and `ec1`, the tenants service, and a chain of the API-key
/// and JWT authenticators.
struct Stack {
    issuer: Arc<Issuer>,
    keys: Keys,
    chain: AuthChain,
    _data: TestData,
}

/// The HTTP client of the JWT authenticator: the system trust store only.
fn outbound() -> reqwest::Client {
    outbound_with(&OutboundConfig::default())
}

fn outbound_with(cfg: &OutboundConfig) -> reqwest::Client {
    worktruck_kit::http::outbound(cfg, worktruck_gateway::oidc::TIMEOUTS).unwrap()
}

async fn stack(refresh_min_seconds: u64) -> Stack {
    stack_on(spawn_issuer().await, refresh_min_seconds, outbound()).await
}

async fn stack_on(issuer: Arc<Issuer>, refresh_min_seconds: u64, http: reqwest::Client) -> Stack {
    let keys = keys();
    issuer.publish(&[
        ("rsa1", &keys.rsa1, Algorithm::RS256),
        ("ec1", &keys.ec1, Algorithm::ES256),
    ]);
    let signer = Signer::from_seed([9; 32]);
    let (tenants, data) = spawn_tenants(&signer).await;
    let cfg = OidcConfig {
        issuer: issuer.issuer(),
        audience: AUDIENCE.into(),
        jwks_refresh_min_seconds: refresh_min_seconds,
    };
    let chain = AuthChain::new(vec![
        Arc::new(ApiKeyAuthenticator::new(tenants.clone(), signer.clone())),
        Arc::new(JwtAuthenticator::new(&cfg, http, tenants, signer)),
    ]);
    Stack {
        issuer,
        keys,
        chain,
        _data: data,
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims of a good token for `sub`.
fn claims(stack: &Stack, sub: &str) -> Value {
    json!({
        "iss": stack.issuer.issuer(),
        "aud": [AUDIENCE, "account"],
        "sub": sub,
        "exp": now() + 300,
        "iat": now(),
        "typ": "Bearer",
        "scope": "openid profile contacts:read",
    })
}


fn rs(stack: &Stack, claims: &Value) -> String {
    sign("rsa1", Algorithm::RS256, &stack.keys.rsa1, claims)
}

async fn auth(stack: &Stack, token: &str) -> Result<Principal, ApiError> {
    let (parts, ()) = http::Request::builder()
        .uri("/v1/contacts")
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .body(())
        .unwrap()
        .into_parts();
    stack.chain.authenticate(&parts).await
}

/// Asserts a 401 from the JWT authenticator whose message names `what` and not the token.
async fn rejected(stack: &Stack, token: &str, what: &str) {
    let e = auth(stack, token).await.expect_err(what);
    assert_eq!(e.status(), 401, "{what}: {}", e.message());
    assert_eq!(e.code(), "unauthenticated");
    assert!(
        e.message().contains(what),
        "expected {what:?} in {:?}",
        e.message()
    );
    assert!(!e.message().contains(token), "the message echoes the token");
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

#[tokio::test]
async fn valid_tokens_map_subjects_to_tenants() {
    let s = stack(30).await;
    let alice = auth(&s, &rs(&s, &claims(&s, "alice"))).await.unwrap();
    assert_eq!(alice.ctx.actor, "jwt:alice");
    assert_eq!(alice.ctx.plan, "free");
    assert_eq!(
        alice.ctx.scopes,
        vec!["contacts:read".to_owned()],
        "only Worktruck scopes"
    );
    let tenant = alice.ctx.tenant_id.expect("a tenant");

    // Same subject again, and with an ES256 token: same tenant.
    let again = auth(&s, &rs(&s, &claims(&s, "alice"))).await.unwrap();
    assert_eq!(again.ctx.tenant_id, Some(tenant));
    let es = sign("ec1", Algorithm::ES256, &s.keys.ec1, &claims(&s, "alice"));
    assert_eq!(auth(&s, &es).await.unwrap().ctx.tenant_id, Some(tenant));

    // Another subject: another tenant. `aud` as a plain string; no Worktruck scope = full access.
    let mut bob = claims(&s, "bob");
    bob["aud"] = json!(AUDIENCE);
    bob["scope"] = json!("openid email");
    let bob = auth(&s, &rs(&s, &bob)).await.unwrap();
    assert_ne!(bob.ctx.tenant_id, Some(tenant));
    assert!(bob.ctx.tenant_id.is_some());
    assert!(bob.ctx.scopes.is_empty());
    assert_eq!(bob.ctx.actor, "jwt:bob");

    // Within the leeway is still fine.
    let mut late = claims(&s, "alice");
    late["exp"] = json!(now() - 20);
    assert_eq!(
        auth(&s, &rs(&s, &late)).await.unwrap().ctx.tenant_id,
        Some(tenant)
    );

    assert_eq!(s.issuer.fetches(), 1, "the JWKS is cached");
}

#[tokio::test]
async fn bad_tokens_are_401() {
    let s = stack(30).await;
    let good = claims(&s, "mallory");
    auth(&s, &rs(&s, &good)).await.unwrap();

    let with = |key: &str, value: Value| {
        let mut c = good.clone();
        c[key] = value;
        c
    };
    let without = |key: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(key);
        c
    };
    rejected(
        &s,
        &rs(&s, &with("aud", json!("account"))),
        "wrong audience",
    )
    .await;
    rejected(&s, &rs(&s, &without("aud")), "missing claim aud").await;
    rejected(
        &s,
        &rs(&s, &with("iss", json!("http://127.0.0.1:1/realms/evil"))),
        "wrong issuer",
    )
    .await;
    rejected(&s, &rs(&s, &without("iss")), "missing claim iss").await;
    rejected(
        &s,
        &rs(&s, &with("exp", json!(now() - 3600))),
        "token expired",
    )
    .await;
    rejected(&s, &rs(&s, &without("exp")), "missing claim exp").await;
    rejected(
        &s,
        &rs(&s, &with("nbf", json!(now() + 3600))),
        "not yet valid",
    )
    .await;
    rejected(&s, &rs(&s, &without("sub")), "missing claim sub").await;
    rejected(&s, &rs(&s, &with("sub", json!(""))), "empty sub").await;
    rejected(
        &s,
        &rs(&s, &with("typ", json!("ID"))),
        "not an access token",
    )
    .await;

    // alg: none, with a dummy signature so that it is recognisably a JWT.
    let none = format!(
        "{}.{}.c2ln",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": "rsa1"})),
        b64(&good)
    );
    rejected(&s, &none, "malformed token header").await;

    // Algorithm confusion: HS256 keyed with the RSA public key the JWKS publishes.
    let hs = sign(
        "rsa1",
        Algorithm::HS256,
        &EncodingKey::from_secret(RSA1_PUBLIC.as_bytes()).unwrap(),
        &good,
    );
    rejected(&s, &hs, "unsupported signing algorithm").await;
    let rs384 = sign("rsa1", Algorithm::RS384, &s.keys.rsa1, &good);
    rejected(&s, &rs384, "unsupported signing algorithm").await;

    // RS256 claimed for the EC key's kid; ES256 claimed for the RSA key's kid.
    rejected(
        &s,
        &sign("ec1", Algorithm::RS256, &s.keys.rsa1, &good),
        "does not match",
    )
    .await;
    rejected(
        &s,
        &sign("rsa1", Algorithm::ES256, &s.keys.ec1, &good),
        "does not match",
    )
    .await;
    // The right kid and alg, the wrong private key; then a tampered payload.
    rejected(
        &s,
        &sign("rsa1", Algorithm::RS256, &s.keys.rsa2, &good),
        "bad signature",
    )
    .await;
    let token = rs(&s, &good);
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = b64(&with("sub", json!("alice")));
    parts[1] = &forged;
    rejected(&s, &parts.join("."), "bad signature").await;

    // No kid; an unpublished kid; the encryption key's kid.
    let no_kid = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &good, &s.keys.rsa1).unwrap();
    rejected(&s, &no_kid, "no kid").await;
    rejected(
        &s,
        &sign("nope", Algorithm::RS256, &s.keys.rsa1, &good),
        "unknown signing key",
    )
    .await;
    rejected(
        &s,
        &sign("enc", Algorithm::RS256, &s.keys.rsa1, &good),
        "unknown signing key",
    )
    .await;

    // Oversized.
    let big = rs(&s, &with("pad", json!("x".repeat(9000))));
    rejected(&s, &big, "token too large").await;

    // Not a JWT and not an API key: no authenticator claims it.
    let e = auth(&s, "opaque-token").await.unwrap_err();
    assert_eq!(e.status(), 401);
}

#[tokio::test]
async fn rotation_is_picked_up_and_refetches_are_bounded() {
    let s = stack(2).await;
    let old = rs(&s, &claims(&s, "carol"));
    let carol = auth(&s, &old).await.unwrap().ctx.tenant_id;
    assert_eq!(s.issuer.fetches(), 1);

    // A flood of random kids right after a fetch: no fetch at all.
    let flood = |n: usize| {
        let s = &s;
        futures::future::join_all((0..n).map(move |_| async move {
            let kid = Uuid::new_v4().to_string();
            let token = sign(&kid, Algorithm::RS256, &s.keys.rsa1, &claims(s, "carol"));
            auth(s, &token).await.unwrap_err().status()
        }))
    };
    assert!(flood(20).await.iter().all(|status| *status == 401));
    assert_eq!(s.issuer.fetches(), 1);

    // The issuer rotates: rsa2 replaces rsa1. Once the interval has passed, the new kid is
    // fetched on first sight, without a restart; rsa1 is gone from the new set.
    s.issuer.publish(&[
        ("rsa2", &s.keys.rsa2, Algorithm::RS256),
        ("ec1", &s.keys.ec1, Algorithm::ES256),
    ]);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let new = sign("rsa2", Algorithm::RS256, &s.keys.rsa2, &claims(&s, "carol"));
    assert_eq!(auth(&s, &new).await.unwrap().ctx.tenant_id, carol);
    assert_eq!(s.issuer.fetches(), 2);
    rejected(&s, &old, "unknown signing key").await;
    assert_eq!(s.issuer.fetches(), 2);

    // After another interval, a concurrent flood of random kids causes exactly one fetch.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(flood(30).await.iter().all(|status| *status == 401));
    assert_eq!(s.issuer.fetches(), 3);
    assert!(auth(&s, &new).await.is_ok());
    assert_eq!(s.issuer.fetches(), 3);
}

#[tokio::test]
async fn a_failing_issuer_keeps_the_last_keys() {
    let s = stack(1).await;
    let token = rs(&s, &claims(&s, "dave"));
    auth(&s, &token).await.unwrap();
    s.issuer.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The refresh fails: the unknown kid is still unknown (401, not 503) and known keys work.
    rejected(
        &s,
        &sign("rsa9", Algorithm::RS256, &s.keys.rsa1, &claims(&s, "dave")),
        "unknown signing key",
    )
    .await;
    assert_eq!(s.issuer.fetches(), 2);
    auth(&s, &token).await.unwrap();
    // Back up: the next refresh takes effect.
    s.issuer.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    s.issuer
        .publish(&[("rsa2", &s.keys.rsa2, Algorithm::RS256)]);
    auth(
        &s,
        &sign("rsa2", Algorithm::RS256, &s.keys.rsa2, &claims(&s, "dave")),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn an_unreachable_issuer_is_503_until_it_answers() {
    let s = stack(30).await;
    s.issuer.down.store(true, Ordering::SeqCst);
    let token = rs(&s, &claims(&s, "erin"));
    let e = auth(&s, &token).await.unwrap_err();
    assert_eq!(e.status(), 503);
    assert_eq!(e.code(), "unavailable");
    // Discovery and the JWKS are retried on a later request once the issuer is back.
    s.issuer.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    auth(&s, &token).await.unwrap();

    // An issuer nothing listens on.
    let signer = Signer::from_seed([9; 32]);
    let cfg = OidcConfig {
        issuer: "http://127.0.0.1:1/realms/test".into(),
        audience: AUDIENCE.into(),
        jwks_refresh_min_seconds: 30,
    };
    let (tenants, _data) = spawn_tenants(&signer).await;
    let chain = AuthChain::new(vec![Arc::new(JwtAuthenticator::new(&cfg, outbound(), tenants, signer))]);
    let (parts, ()) = http::Request::builder()
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .body(())
        .unwrap()
        .into_parts();
    assert_eq!(chain.authenticate(&parts).await.unwrap_err().status(), 503);
}

#[tokio::test]
async fn an_https_issuer_is_trusted_through_the_configured_ca_and_only_through_it() {
    let issuer = spawn_issuer_tls().await;
    assert!(issuer.issuer().starts_with("https://"));
    let ca = tls::ca_file();
    let trusting = outbound_with(&OutboundConfig { ca_file: ca.path().to_str().unwrap().into(), ..Default::default() });
    let s = stack_on(issuer.clone(), 30, trusting).await;
    let token = rs(&s, &claims(&s, "tls-user"));
    let principal = auth(&s, &token).await.unwrap();
    assert_eq!(principal.ctx.actor, "jwt:tls-user");
    assert!(principal.ctx.tenant_id.is_some());
    assert_eq!(s.issuer.fetches(), 1);

    // The same issuer for a gateway that does not trust the test CA: discovery fails the TLS
    // handshake, so no key is ever loaded and the token is never accepted.
    let s = stack_on(issuer, 30, outbound()).await;
    let e = auth(&s, &token).await.unwrap_err();
    assert_eq!(e.status(), 503, "{}", e.message());
    assert_eq!(e.code(), "unavailable");
    assert_eq!(s.issuer.fetches(), 1, "the untrusting gateway reached the JWKS");
}
