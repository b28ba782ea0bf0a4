//! The idempotency keys of writes, kept by the tenants service for 24 hours per (tenant, key):
//! the client side both gateways (`Idempotency-Key`, `_meta.idempotency_key`) and the agents
//! worker (a tool call's `<run>:<seq>`) use. A claim answers "run it" or the first answer
//! again; completing keeps the answer (or releases the claim so a retry runs).

use sha2::{Digest, Sha256};
use tonic::transport::Channel;
use uuid::Uuid;
use worktruck_proto::tenants::v1 as pb;
use worktruck_proto::tenants::v1::tenants_service_client::TenantsServiceClient;

use crate::context::{Ctx, Signer};
use crate::error::{Error, ErrorCode};

/// How long a claim holds before a retry may take over from a caller that died mid-write.
pub const LEASE_SECONDS: u32 = 120;

/// Claims and completes keys through the tenants service.
#[derive(Clone)]
pub struct Keeper {
    tenants: TenantsServiceClient<Channel>,
    signer: Signer,
    role: &'static str,
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

/// Whether an answer with `status` is kept for replays: everything the write decided (2xx and
/// 4xx), not what a retry may fix (429, 5xx).
pub fn keeps(status: u16) -> bool {
    status < 500 && status != 429
}

impl Keeper {
    /// A keeper calling the tenants service on `tenants` as `system:<role>` (`gateway`).
    pub fn new(tenants: TenantsServiceClient<Channel>, signer: Signer, role: &'static str) -> Self {
        Self { tenants, signer, role }
    }

    fn request<T>(&self, message: T, request_id: &str) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let metadata = request.metadata_mut();
        self.signer.attach(&Ctx::system(self.role), metadata);
        crate::telemetry::inject(metadata);
        if let Ok(v) = tonic::metadata::MetadataValue::try_from(request_id) {
            metadata.insert("x-request-id", v);
        }
        request
    }

    /// Claims `key` of `tenant` for a request with `fingerprint`: `idempotency_key_reused`
    /// (another request had the key) and `conflict` (the first still runs) are errors.
    pub async fn claim(&self, tenant: Uuid, key: &str, fingerprint: Vec<u8>, request_id: &str) -> Result<Claim, Error> {
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
            .map_err(|status| Error::from_status(&status))?
            .into_inner();
        match pb::IdempotencyOutcome::try_from(answer.outcome).unwrap_or_default() {
            pb::IdempotencyOutcome::Claimed => Ok(Claim::Run(Held { tenant, key: key.to_owned(), claim_id: answer.claim_id })),
            pb::IdempotencyOutcome::Replay => Ok(Claim::Replay(answer.answer.unwrap_or_default())),
            pb::IdempotencyOutcome::Mismatch => Err(Error::new(
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was used for another request (another path or body); use a new key for a new request",
            )),
            pb::IdempotencyOutcome::InProgress => Err(Error::new(
                ErrorCode::Conflict,
                "the first request with this Idempotency-Key is still running; retry once it has answered",
            )),
            pb::IdempotencyOutcome::Unspecified => Err(Error::internal("idempotency claim without an outcome")),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_tell_parts_apart() {
        assert_ne!(fingerprint(&[b"ab", b"c"]), fingerprint(&[b"a", b"bc"]));
        assert_eq!(fingerprint(&[b"a", b"b"]), fingerprint(&[b"a", b"b"]));
        assert_eq!(fingerprint(&[b""]).len(), 32);
        assert!(keeps(201) && keeps(404) && keeps(409) && !keeps(429) && !keeps(503));
    }
}
