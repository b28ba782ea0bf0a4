//! Idempotency keys for writes, Stripe's way: the first answer to a write sent with
//! `Idempotency-Key` (REST) or `_meta.idempotency_key` (MCP) is kept by the tenants service
//! for 24 hours per (tenant, key), and a retry with the same key and the same request answers
//! it again (`Idempotent-Replayed: true`) without running the write; the same key with another
//! request is a 422 `idempotency_key_reused`, and a retry while the first still runs a 409.
//! Both gateways use this one implementation; the client of the tenants service is
//! `kit::idempotency` (the agents worker's tool calls use it too).

use http::HeaderValue;

use crate::error::ApiError;

pub use worktruck_kit::idempotency::{Claim, Held, Keeper, fingerprint, keeps};

/// The REST request header.
pub const HEADER: &str = "idempotency-key";
/// The answer header of a replay.
pub const REPLAYED: &str = "idempotent-replayed";
/// The answer headers kept with a replayed answer.
pub const KEPT_HEADERS: [&str; 3] = ["content-type", "location", "etag"];

/// Checks a key as sent: 1 to 255 visible ASCII characters.
pub fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid(
            "Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID is a good one)",
        ));
    }
    Ok(())
}

/// The header marking a replayed answer.
pub fn replayed() -> (http::HeaderName, HeaderValue) {
    (http::HeaderName::from_static(REPLAYED), HeaderValue::from_static("true"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii() {
        assert!(check_key("9b1f-x").is_ok());
        for bad in ["", "a b", "ключ", &"k".repeat(256)] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
        assert!(keeps(201) && keeps(404) && keeps(409) && !keeps(429) && !keeps(503));
    }
}
