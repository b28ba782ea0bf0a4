//! Idempotency keys for writes, Stripe's way: the first answer to a write sent with
//! `Idempotency-Key` (REST) or `_meta.idempotency_key` (MCP) is kept by the tenants service
//! for 24 hours per (tenant, key), and a retry with the same key and the same request answers
//! it again (`Idempotent-Replayed: true`) without running the write; the same key with another
//! request is a 422 `idempotency_key_reused`, and a retry while the first still runs a 409.
//! Both gateways use this one implementation.

use http::HeaderValue;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;
use uuid::Uuid;
use worktruck_kit::ErrorCode;
use worktruck_kit::context::{Ctx, Signer};
use worktruck_proto::tenants::v1 as pb;
use worktruck_proto::tenants::v1::tenants_service_client::TenantsServiceClient;

use crate::error::ApiError;

/// The REST request header.
pub const HEADER: &str = "idempotency-key";
/// The answer header of a replay.
pub const REPLAYED: &str = "idempotent-replayed";
/// How long a claim holds before a retry may take over from a gateway that died mid-write.
const LEASE_SECONDS: u32 = 120;
/// The answer headers kept with a replayed answer.
pub const KEPT_HEADERS: [&str; 3] = ["content-type", "location", "etag"];

/// Claims and completes keys through the tenants service.
#[derive(Clone)]
pub struct Keeper {
    tenants: TenantsServiceClient<Channel>,
    signer: Signer,
}

/// A claimed key: run the write, then [`Keeper::complete`] it.
#[derive(Debug)]
pub struct Held {
    tenant: Uuid,
    key: String,
    claim_id: String,
}

/// What a claim found.
#[derive(Debug)]
pub enum Claim {
    /// Run the write.
    Run(Held),
    /// Answer this again.
    Replay(pb::KeptAnswer),
}

/// The fingerprint of a request: SHA-256 over its parts, each length-prefixed so that no two
/// different requests share one.
pub fn fingerprint(parts: &[&[u8]]) -> Vec<u8> {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.finalize().to_vec()
}

impl Keeper {
    /// A keeper calling the tenants service on `tenants` as the gateway.
    pub fn new(tenants: TenantsServiceClient<Channel>, signer: Signer) -> Self {
        Self { tenants, signer }
    }

    fn request<T>(&self, message: T, request_id: &str) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        *request.metadata_mut() = crate::telemetry::call_metadata(&self.signer, &Ctx::system("gateway"), request_id);
        request
    }

    /// Claims `key` of `tenant` for a request with `fingerprint`.
    pub async fn claim(&self, tenant: Uuid, key: &str, fingerprint: Vec<u8>, request_id: &str) -> Result<Claim, ApiError> {
        let message = pb::ClaimIdempotencyKeyRequest {
            tenant_id: tenant.to_string(),
            key: key.to_owned(),
            fingerprint,
            lease_seconds: LEASE_SECONDS,
        };
        let answer = self
            .tenants
            .clone()
            .claim_idempotency_key(self.request(message, request_id))
            .await
            .map_err(|status| ApiError::from(worktruck_kit::Error::from_status(&status)))?
            .into_inner();
        match pb::IdempotencyOutcome::try_from(answer.outcome).unwrap_or_default() {
            pb::IdempotencyOutcome::Claimed => Ok(Claim::Run(Held { tenant, key: key.to_owned(), claim_id: answer.claim_id })),
            pb::IdempotencyOutcome::Replay => Ok(Claim::Replay(answer.answer.unwrap_or_default())),
            pb::IdempotencyOutcome::Mismatch => Err(ApiError::new(
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was used for another request (another path or body); use a new key for a new request",
            )),
            pb::IdempotencyOutcome::InProgress => Err(ApiError::new(
                ErrorCode::Conflict,
                "the first request with this Idempotency-Key is still running; retry once it has answered",
            )),
            pb::IdempotencyOutcome::Unspecified => Err(ApiError::internal("idempotency claim without an outcome")),
        }
    }

    /// Keeps `answer` for `held`, or releases the claim when `answer` is none (the write did not
    /// run, or failed in a way worth retrying). A failure here is logged: the write's own
    /// answer still reaches the caller, and a released or lapsed claim lets a retry run.
    pub async fn complete(&self, held: Held, answer: Option<pb::KeptAnswer>, request_id: &str) {
        let message = pb::CompleteIdempotencyKeyRequest {
            tenant_id: held.tenant.to_string(),
            key: held.key,
            claim_id: held.claim_id,
            answer,
        };
        if let Err(status) = self.tenants.clone().complete_idempotency_key(self.request(message, request_id)).await {
            tracing::warn!(code = ?status.code(), "an idempotency key could not be completed; it lapses after its lease");
        }
    }
}

/// Whether an answer with `status` is kept for replays: everything the write decided (2xx and
/// 4xx), not what a retry may fix (429, 5xx).
pub fn keeps(status: u16) -> bool {
    status < 500 && status != 429
}

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
    fn fingerprints_tell_parts_apart() {
        assert_ne!(fingerprint(&[b"ab", b"c"]), fingerprint(&[b"a", b"bc"]));
        assert_eq!(fingerprint(&[b"a", b"b"]), fingerprint(&[b"a", b"b"]));
        assert_eq!(fingerprint(&[b""]).len(), 32);
    }

    #[test]
    fn keys_are_visible_ascii() {
        assert!(check_key("9b1f-x").is_ok());
        for bad in ["", "a b", "ключ", &"k".repeat(256)] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
        assert!(keeps(201) && keeps(404) && keeps(409) && !keeps(429) && !keeps(503));
    }
}
