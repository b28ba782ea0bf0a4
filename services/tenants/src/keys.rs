//! API-key secrets: generation, parsing and the keyed hash. A key is `bsk_live_` or `bsk_test_`
//! followed by 43 random alphanumerics (52 characters). Its first 12 random characters are a
//! public lookup id; the whole key is stored only as HMAC-SHA256 under the server pepper.

use hmac::{Hmac, Mac};
use rand::Rng;
use rand::distributions::Alphanumeric;
use sha2::Sha256;

/// Random characters after the prefix.
const SECRET_LEN: usize = 43;
/// Random characters used as the lookup id.
const LOOKUP_LEN: usize = 12;

/// Live or test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Env {
    /// `bsk_live_`.
    Live,
    /// `bsk_test_`.
    Test,
}

impl Env {
    /// The key prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            Env::Live => "bsk_live_",
            Env::Test => "bsk_test_",
        }
    }
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Env::Live => "live",
            Env::Test => "test",
        }
    }
    /// Parses the stored name.
    pub fn parse(s: &str) -> Env {
        if s == "test" { Env::Test } else { Env::Live }
    }
}

/// A freshly generated key.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The full secret, shown once.
    pub secret: String,
    /// Public lookup id.
    pub lookup_id: String,
    /// Keyed hash of the secret.
    pub hash: String,
    /// `bsk_live_AbCd…wXyZ`.
    pub hint: String,
}

/// Generates a key for `env`.
pub fn generate(env: Env, pepper: &[u8; 32]) -> NewKey {
    let random: String = rand::rngs::OsRng.sample_iter(&Alphanumeric).take(SECRET_LEN).map(char::from).collect();
    let secret = format!("{}{random}", env.prefix());
    NewKey {
        lookup_id: random[..LOOKUP_LEN].to_owned(),
        hash: hash(&secret, pepper),
        hint: format!("{}{}…{}", env.prefix(), &random[..4], &random[SECRET_LEN - 4..]),
        secret,
    }
}

/// The lookup id of a presented key, or `None` when it is not shaped like one of ours.
pub fn lookup_id(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix("bsk_live_").or_else(|| presented.strip_prefix("bsk_test_"))?;
    (rest.len() == SECRET_LEN && rest.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| &rest[..LOOKUP_LEN])
}

/// HMAC-SHA256 of the key under the pepper, hex-encoded.
pub fn hash(secret: &str, pepper: &[u8; 32]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(pepper).expect("any key length");
    mac.update(secret.as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a presented key against a stored hash in constant time.
pub fn verify(presented: &str, stored_hash: &str, pepper: &[u8; 32]) -> bool {
    let computed = hash(presented, pepper);
    computed.len() == stored_hash.len()
        && computed.bytes().zip(stored_hash.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_documented_shape_and_verify() {
        let pepper = [3; 32];
        let k = generate(Env::Live, &pepper);
        assert_eq!(k.secret.len(), 52);
        assert!(k.secret.starts_with("bsk_live_"));
        assert_eq!(lookup_id(&k.secret), Some(k.lookup_id.as_str()));
        assert!(verify(&k.secret, &k.hash, &pepper));
        assert!(!verify(&k.secret, &k.hash, &[4; 32]));
        let mut forged = k.secret.clone();
        forged.pop();
        forged.push(if k.secret.ends_with('a') { 'b' } else { 'a' });
        assert!(!verify(&forged, &k.hash, &pepper));
        assert_eq!(lookup_id("bsk_live_short"), None);
        assert_eq!(lookup_id("Bearer nonsense"), None);
        assert!(generate(Env::Test, &pepper).secret.starts_with("bsk_test_"));
    }
}
