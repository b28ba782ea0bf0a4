//! A fake OIDC issuer for tests (real HTTP on a loopback port): discovery, a JWKS that can be
//! rotated, counted and taken down, and test-only signing keys. The keys are PEMs generated once
//! with openssl (RSA key generation in a debug build is too slow to do per test); they sign
//! nothing but test tokens.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// A test-only RSA key (PKCS#8 PEM).
pub const RSA1: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCoEbwQYLqVvTZD\n\
1WCW2hcGOp/BhlYo1hd2eDaQd5j5Ty4owjP1pY1k1kJ6csX6+2YCKv0l9Dl9E//b\n\
V0F38SIE7xv7GdaVM4Xt6p64extUnbInpMuLCQkIVd3wj0bneiDHIALL5LsS1xVr\n\
EYU5q5cQit1aBmeJQ5zcP5k6c0PIhfW3RmjBBFs96A/6x6w55+w15zPnkuWSsEHz\n\
z/nOLGpMw9AejQ3/TMdlgkX8pc4vvhh6tkfdNocbtvu5nxqYLqW2l6tpLxt9cxpj\n\
RCTNuTZYf0QA7wXiOPooEXu49mTXLGirt6w1310Ok16SKG9R7uKQZawMSBkHdoH8\n\
jeUoIcxhAgMBAAECggEAB/HCqSbcBaef0N1dXJ7AIjK+NMhz+n0tjGjf8hHn1g0I\n\
ml5HqiUNBccHoGscHEzVhGUMz0ZNO1zT0MXomdH48NvD6lQigQNM9t3gFR9N6kDZ\n\
WCdhhFfFKLLfs/cfJmJET1/zfI4ky54FbKizhUeCSK1lC37XAQrZoiLoIXZWWLxB\n\
27PdiuNChIzfLz05X/+IfrAmfDf2jlvj+V1CG6WM+bUsp7rPTGgqFbV13QEvi8NV\n\
0vr64IrdimYaDH/TWPSzXireHPQmXhcd3L7068iVC/w0wMgf1YIMdMqLq9jGY2xF\n\
GFgwsG9YNeSNtHfhst2UmWmOHaxgpqdXhgSRo4TJmwKBgQDsOowP+h+Nz85OIZn2\n\
X0OYMmdrLkFD3/P47hKhwCxC/DOV5zymEMgeo6ePkcsR7favlNNg/LQjb9PT66ll\n\
FtW0EBoi/qGrs3V8Ff8XBnT/QBKqeQbcAV16m6Rd13NxUjKjKPFowOqnphOTFD65\n\
Z4iiefLXUDx7PJPa50WA83RlKwKBgQC2IsyByTXPRxAm2dHVpse2NgxPZN3ftJlp\n\
b9sOBL7qC2V8tOLTO8nF7OCvImPpM+RI4IfxSZ5+SWXr2xUHIPWkE9tKXppwf8hg\n\
J8RRIumFEqx5KkmnUACCaa04PNhdvBifKDv6p+ZRSTLgxPmMszAK3oDdCNu6aQ5M\n\
dESay4MmowKBgQCfcgkVw6LGqku6ys1L0RMjyGmrm2Xr9V6MV8z1pmt5rxb2iESU\n\
ZmFc5ON1cVeau361FoPyQ78m6BUXRkpo9Be8WN37Xtkqto+G+KXcGbygiNPQgq4R\n\
k05QMnun54OBKpUJMdp39Tatf9hYfuKza+F6oUs672pTWBkIOO/d0PVwTwKBgD0f\n\
zJY52o8ngCopq5wSDq/9z3/NkBCFYX7bBR7dRNzy2ipR4lWVmQ+NgZIE7pbSzWgP\n\
wk+dr00egM/4hEQSMZ3Q9CUvPpFGsQ5kCiRYnRoFvFAlevZliOY7ZOCcutgqSfEP\n\
5aEnO8pH0IVSVZV8hUEAjyqe0G7s1tmdo3B3oBoVAoGAc9hzmKazi8evz7tfSYT+\n\
WC6WjlQ9jiQF9ZNEOoA5kmiWxUPzF3TK13vv/zYFjhzjNm5QS/XIrlcsOGLx1146\n\
uDrV9fCwlylSLBlQrLSJHREpUHOj09qcGeKcKdCX51KR+CwEF5a7Qj/pUzMg4wiB\n\
XCKWhq/mT92PQRzt29SMgfQ=\n\
-----END PRIVATE KEY-----\n\
";
/// The public half of [`RSA1`].
pub const RSA1_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAqBG8EGC6lb02Q9VgltoX\n\
BjqfwYZWKNYXdng2kHeY+U8uKMIz9aWNZNZCenLF+vtmAir9JfQ5fRP/21dBd/Ei\n\
BO8b+xnWlTOF7eqeuHsbVJ2yJ6TLiwkJCFXd8I9G53ogxyACy+S7EtcVaxGFOauX\n\
EIrdWgZniUOc3D+ZOnNDyIX1t0ZowQRbPegP+sesOefsNecz55LlkrBB88/5zixq\n\
TMPQHo0N/0zHZYJF/KXOL74YerZH3TaHG7b7uZ8amC6ltperaS8bfXMaY0Qkzbk2\n\
WH9EAO8F4jj6KBF7uPZk1yxoq7esNd9dDpNekihvUe7ikGWsDEgZB3aB/I3lKCHM\n\
YQIDAQAB\n\
-----END PUBLIC KEY-----\n\
";
/// A second test-only RSA key, for rotation.
pub const RSA2: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCdliSNrcgGiJkG\n\
idpddsMB9/PnePBS4IqOL3Yf+SuxGpqqBC4HVtRhyDerG18ujGWnoJ+nzT3fabSo\n\
PWPUCh5N+ZujpLvDV2KLchZNgzWSRTgO1udUiXKxVJWOCx6yN5WvbEzc1uoq3yro\n\
RycIiTp5CE+sexD+TPSQMVOFIaT4Y0v/Vrgovxv0v4xBoCOQhewJU/r3XBmAEK9H\n\
Ok3pezzzNDKK47HSG8foD0eR8OekJZPVx9pmIgO1Q+piWrfwkJgVCaXLtSz9qhVo\n\
BSQld0edwzS69VYBF2/0OHWf+e9+tLTWKTr2vliAwzmVPyje2l9aeR5J9YqpBy87\n\
A8zf7mIZAgMBAAECggEATYlwlt1oy/4t/Q+bB93FeZR8x+mzpbOhuPAVWQoKu2tx\n\
qjHATBAnE62l5mTjYk3mPqJDrBbKWMD0CMub8NrBqnAkalJFqIm4jRAndSAYHc49\n\
FOAclnXCnwoVQ/yor9u1pMjO0OJV+Z4wyHUp+YM76A101lL/O4C13LTIeXriZuv+\n\
tUBp0796pdaCNDd1nV8perTsO18bdZZ6Bm6OvxeuKd9I/U8/zxpQ0/NHPHmgTrJF\n\
pwEtF3oRzrkKrSgm9WGwkEtfhd1FdflvCmJ87p6wXqVIbdx//vyrPqLRS94Cma7v\n\
1B5CMs0tFRQ3uBNT/gFcXZGpd5ijlsVoUcYr5xIOGQKBgQDTDP3QLuwowgVZ9u2S\n\
AVwwZvaSSEAm/TzIAf1LsqfUO9xHenKCA8vitA4QRBaadxFSfn4oH43+tPg+NbqB\n\
AwCs24jap1aeqIZ9shncjGzZWcpv3csBP0hfBIuW+tdOKTnOU1uIK2kALXcpoooX\n\
39en8f+kLfLmq8p3xsRd3OgbkwKBgQC/JiXp3TOcmvTxyjM2hj/UCifgfyGb8GLS\n\
5FCTqKrQqB7w+2LXD7JKnQlWC7bbDwyhjRd1NDbOS50hkwANibNf7XbS2VLsPZ3g\n\
XpgZv9l0jvdMuOytnTR1+Rs0vuURVt15fBIQ+UoCVBSoZ9y+rKAIOCxx4/nqCA7a\n\
O7frAjcPIwKBgCnSij2F/uB4ykywpRVo1Zb14GjOjn/rcO8FjedBSQbCsf0sI6Lm\n\
E7IiEiNhCsWjULhzPpa+4gmWXRce2I2WRbz7aBxESuL37GbeM0fEQBG2PGp8nizq\n\
GHJT2UGbBa2Ed+MOG7ZZO96AI/wJLKpcfkTWrN0hCeByLJYdum4LR6enAoGAb0d9\n\
IPXW2x/W44BMajyjogS7jFVWspqyXYXvZtb1gn2tbatbskoACLH9QmuVa1gKiW5D\n\
LsdT9KtOccJLcJYup/TtjPhZ7xA7/efz8mGe7d1hGPg7SSNQ7DE2ZnGPl5WTX+sb\n\
9We7bzmVwSid+R80FzTkovUOg/Fm/CNyAc2LUjMCgYBa1b4It3pc7I4M3BKt4Sof\n\
PaN3w78k8rJx43onM2zffipA/DsZj+nwFs9tb1uYEYj+b5A+cCmzM18gJ0YxJUlT\n\
cCipNTq9VaRCrDwAqkYLZFScY/UpDquDq+deNj6c6zqsBWdd17WVbGCa7rEUEZE2\n\
KlF10+CgBIcOMYYMvOAmLw==\n\
-----END PRIVATE KEY-----\n\
";
/// A test-only P-256 key (PKCS#8 PEM).
pub const EC1: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgZumQkAa9Q8rCy/sZ\n\
guhf3u+UErz0UiauTQsH7nfC9WuhRANCAASUwVPXkw4fWGf8liCKOYNwViaFXenQ\n\
SUIjELwNeqwpbqMR2Unmys+x2X/wx2PawqolTuFqh1r3G7OQvc/HY95p\n\
-----END PRIVATE KEY-----\n\
";

/// A fake OIDC issuer: discovery plus a mutable JWKS that counts fetches and can fail.
pub struct Issuer {
    /// `http://127.0.0.1:<port>` (or `https://` from [`spawn_issuer_tls`]).
    pub base: String,
    /// The published key set.
    pub jwks: Mutex<Value>,
    /// JWKS fetches so far.
    pub jwks_fetches: AtomicUsize,
    /// While true, the JWKS endpoint answers 503.
    pub down: AtomicBool,
}

impl Issuer {
    /// The issuer URL (`iss`).
    pub fn issuer(&self) -> String {
        format!("{}/realms/test", self.base)
    }

    /// Publishes these signing keys (plus an encryption key, as Keycloak does).
    pub fn publish(&self, keys: &[(&str, &EncodingKey, Algorithm)]) {
        let mut set = JwkSet::default();
        for (kid, key, alg) in keys {
            let mut jwk = Jwk::from_encoding_key(key, *alg).unwrap();
            jwk.common.key_id = Some((*kid).to_owned());
            jwk.common.public_key_use = Some(PublicKeyUse::Signature);
            set.keys.push(jwk);
        }
        let mut value = serde_json::to_value(&set).unwrap();
        // Keycloak also publishes an encryption key; it must neither break the set nor verify.
        let n = value["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|k| k.get("n").cloned())
            .unwrap_or(json!("AQAB"));
        value["keys"].as_array_mut().unwrap().push(json!({
            "kid": "enc", "kty": "RSA", "use": "enc", "alg": "RSA-OAEP", "n": n, "e": "AQAB"
        }));
        *self.jwks.lock().unwrap() = value;
    }

    /// JWKS fetches so far.
    pub fn fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }
}

async fn discovery(State(issuer): State<Arc<Issuer>>) -> Json<Value> {
    Json(json!({
        "issuer": issuer.issuer(),
        "jwks_uri": format!("{}/protocol/openid-connect/certs", issuer.issuer()),
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    }))
}

async fn certs(State(issuer): State<Arc<Issuer>>) -> Result<Json<Value>, http::StatusCode> {
    issuer.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    if issuer.down.load(Ordering::SeqCst) {
        return Err(http::StatusCode::SERVICE_UNAVAILABLE);
    }
    Ok(Json(issuer.jwks.lock().unwrap().clone()))
}

/// Starts an issuer on a loopback port with an empty key set.
pub async fn spawn_issuer() -> Arc<Issuer> {
    spawn(false).await
}

/// [`spawn_issuer`] over HTTPS, with a certificate of the test CA ([`super::tls`]).
pub async fn spawn_issuer_tls() -> Arc<Issuer> {
    spawn(true).await
}

async fn spawn(tls: bool) -> Arc<Issuer> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheme = if tls { "https" } else { "http" };
    let issuer = Arc::new(Issuer {
        base: format!("{scheme}://{}", listener.local_addr().unwrap()),
        jwks: Mutex::new(json!({ "keys": [] })),
        jwks_fetches: AtomicUsize::new(0),
        down: AtomicBool::new(false),
    });
    let app = axum::Router::new()
        .route(
            "/realms/test/.well-known/openid-configuration",
            get(discovery),
        )
        .route("/realms/test/protocol/openid-connect/certs", get(certs))
        .with_state(issuer.clone());
    if tls {
        super::tls::serve_listener(listener, app);
    } else {
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    }
    issuer
}

/// Signs `claims` with `key` under `kid`.
pub fn sign(kid: &str, alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, key).expect("test token signs")
}

/// The encoding key of [`RSA1`].
pub fn rsa1() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA1.as_bytes()).expect("test key parses")
}
