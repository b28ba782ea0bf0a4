//! Signing secrets and signatures. A secret is `whsec_` and 32 random bytes in unpadded
//! base64url; the whole string is the HMAC key. `Worktruck-Signature: t=<unix seconds>,v1=<hex>`
//! where the hex is HMAC-SHA256(secret, "<t>.<body>"); during a rotation's overlap a second
//! `v1=` signs with the previous secret, so a receiver holding either one verifies.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of every signing secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new signing secret.
pub fn new_secret() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
    Zeroizing::new(format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_ref())
    ))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// HMAC-SHA256(secret, "<t>.<body>") in lower-case hex.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex(&mac.finalize().into_bytes())
}

/// The `Worktruck-Signature` value for `body` at `t`, signed by every secret given (the
/// current one first, then the previous one during an overlap).
pub fn signature_header(secrets: &[&str], t: i64, body: &[u8]) -> String {
    let mut out = format!("t={t}");
    for s in secrets {
        out.push_str(",v1=");
        out.push_str(&sign(s, t, body));
    }
    out
}

/// What a receiver does: true when one `v1=` of `header` is `secret`'s signature of `body` at
/// the header's `t`, and `t` is within `tolerance_seconds` of `now` (replays of old deliveries
/// are refused). Compared in constant time.
pub fn verify(secret: &str, header: &str, body: &[u8], now: i64, tolerance_seconds: i64) -> bool {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => sigs.push(v),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if (now - t).abs() > tolerance_seconds {
        return false;
    }
    sigs.iter().any(|sig| {
        let Some(bytes) = unhex(sig) else {
            return false;
        };
        let mut mac =
            HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(&bytes).is_ok()
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_with_its_secret_only_and_within_the_tolerance() {
        let (a, b) = (new_secret(), new_secret());
        assert!(
            a.starts_with(SECRET_PREFIX) && a.len() == SECRET_PREFIX.len() + 43,
            "{}",
            a.len()
        );
        assert_ne!(*a, *b);
        let body = br#"{"id":"1"}"#;
        let h = signature_header(&[&a], 1_700_000_000, body);
        assert!(h.starts_with("t=1700000000,v1="));
        assert!(verify(&a, &h, body, 1_700_000_100, 300));
        assert!(!verify(&b, &h, body, 1_700_000_100, 300));
        assert!(!verify(&a, &h, b"{}", 1_700_000_100, 300));
        assert!(!verify(&a, &h, body, 1_700_001_000, 300));
        // During an overlap both secrets verify.
        let both = signature_header(&[&b, &a], 1_700_000_000, body);
        assert!(
            verify(&a, &both, body, 1_700_000_000, 300)
                && verify(&b, &both, body, 1_700_000_000, 300)
        );
        // A known vector: HMAC-SHA256("key", "1.body").
        assert_eq!(sign("key", 1, b"body").len(), 64);
        assert!(!verify(&a, "v1=00", body, 0, 300));
    }
}
