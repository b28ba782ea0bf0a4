//! Idempotency keys, kept for the gateways (`ClaimIdempotencyKey`, `CompleteIdempotencyKey`):
//! a write's first answer per (tenant, key) for 24 hours, so that a retry with the key answers
//! it again instead of writing twice, on whichever gateway replica the retry lands.

use std::collections::BTreeMap;

use uuid::Uuid;
use worktruck_kit::db::{Db, Scope, now};
use worktruck_kit::{Error, Result, exec, on_tx};
use worktruck_proto::tenants::v1 as pb;

/// How long a key's answer is kept.
pub const KEEP_MS: i64 = 24 * 3600 * 1000;
/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 255;
/// The largest answer kept (a write answers one entity; larger answers are not kept, and a
/// retry runs again, which is logged).
pub const MAX_BODY: usize = 2 * 1024 * 1024;

type Row = (Vec<u8>, Uuid, String, Option<i32>, Option<String>, Option<Vec<u8>>, i64);

const SELECT_PG: &str = "SELECT fingerprint, claim_id, state, status, headers, body, lease_until \
     FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 FOR UPDATE";
const SELECT_SQLITE: &str = "SELECT fingerprint, claim_id, state, status, headers, body, lease_until \
     FROM idempotency_keys WHERE tenant_id = $1 AND key = $2";

/// Checks a key as the caller sent it: 1 to 255 visible ASCII characters.
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters (a UUID is a good one)"
        )));
    }
    Ok(())
}

fn tenant_of(id: &str) -> Result<Uuid> {
    Uuid::parse_str(id).map_err(|_| Error::invalid("tenant_id is not a UUID"))
}

/// Claims `r.key` for its tenant, or says why not (see `IdempotencyOutcome`).
pub async fn claim(db: &Db, r: &pb::ClaimIdempotencyKeyRequest) -> Result<pb::ClaimIdempotencyKeyResponse> {
    let tenant = tenant_of(&r.tenant_id)?;
    check_key(&r.key)?;
    if r.fingerprint.len() != 32 {
        return Err(Error::invalid("fingerprint must be a SHA-256 (32 bytes)"));
    }
    if !(1..=3600).contains(&r.lease_seconds) {
        return Err(Error::invalid("lease_seconds must be 1 to 3600"));
    }
    let at = now().timestamp_millis();
    let lease_until = at + i64::from(r.lease_seconds) * 1000;
    let claim_id = Uuid::now_v7();
    let mut owned = db.begin(Scope::Tenant(tenant), true).await?;
    let tx = &mut owned;
    // Expired keys of the tenant go first, this one among them: a key is reusable after 24 h.
    exec!(tx, sqlx::query("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND expires_at < $2").bind(tenant).bind(at))?;
    let inserted: Option<Uuid> = on_tx!(tx, c => sqlx::query_scalar(
        "INSERT INTO idempotency_keys (tenant_id, key, fingerprint, claim_id, state, lease_until, expires_at) \
         VALUES ($1, $2, $3, $4, 'running', $5, $6) ON CONFLICT (tenant_id, key) DO NOTHING RETURNING claim_id")
        .bind(tenant).bind(&r.key).bind(&r.fingerprint).bind(claim_id).bind(lease_until).bind(at + KEEP_MS)
        .fetch_optional(c).await)?;
    let outcome = if inserted.is_some() {
        claimed(claim_id)
    } else {
        let sql = tx.sql(SELECT_PG, SELECT_SQLITE);
        let row: Row = on_tx!(tx, c => sqlx::query_as(sql).bind(tenant).bind(&r.key).fetch_one(c).await)?;
        let (fingerprint, _, state, status, headers, body, held_until) = row;
        if fingerprint != r.fingerprint {
            outcome(pb::IdempotencyOutcome::Mismatch)
        } else if state == "done" {
            let headers: BTreeMap<String, String> =
                headers.and_then(|h| serde_json::from_str(&h).ok()).unwrap_or_default();
            pb::ClaimIdempotencyKeyResponse {
                outcome: pb::IdempotencyOutcome::Replay as i32,
                claim_id: String::new(),
                answer: Some(pb::KeptAnswer {
                    status: status.and_then(|s| u32::try_from(s).ok()).unwrap_or(200),
                    headers: headers.into_iter().collect(),
                    body: body.unwrap_or_default(),
                }),
            }
        } else if held_until > at {
            outcome(pb::IdempotencyOutcome::InProgress)
        } else {
            // Its first request's gateway let the lease run out (it died mid-write): take over.
            exec!(tx, sqlx::query("UPDATE idempotency_keys SET claim_id = $3, lease_until = $4 WHERE tenant_id = $1 AND key = $2")
                .bind(tenant).bind(&r.key).bind(claim_id).bind(lease_until))?;
            claimed(claim_id)
        }
    };
    owned.commit().await?;
    Ok(outcome)
}

fn claimed(claim_id: Uuid) -> pb::ClaimIdempotencyKeyResponse {
    pb::ClaimIdempotencyKeyResponse {
        outcome: pb::IdempotencyOutcome::Claimed as i32,
        claim_id: claim_id.to_string(),
        answer: None,
    }
}

fn outcome(o: pb::IdempotencyOutcome) -> pb::ClaimIdempotencyKeyResponse {
    pb::ClaimIdempotencyKeyResponse { outcome: o as i32, claim_id: String::new(), answer: None }
}

/// Keeps the answer of a claim (or releases it); false when the claim is no longer the caller's.
pub async fn complete(db: &Db, r: &pb::CompleteIdempotencyKeyRequest) -> Result<bool> {
    let tenant = tenant_of(&r.tenant_id)?;
    check_key(&r.key)?;
    let claim_id = Uuid::parse_str(&r.claim_id).map_err(|_| Error::invalid("claim_id is not a UUID"))?;
    let mut owned = db.begin(Scope::Tenant(tenant), true).await?;
    let tx = &mut owned;
    let n = match &r.answer {
        Some(answer) if answer.body.len() <= MAX_BODY => {
            let status = i32::try_from(answer.status).ok().filter(|s| (100..600).contains(s))
                .ok_or_else(|| Error::invalid("answer.status must be an HTTP status"))?;
            let headers: BTreeMap<&String, &String> = answer.headers.iter().collect();
            let headers = serde_json::to_string(&headers).map_err(Error::internal)?;
            exec!(tx, sqlx::query(
                "UPDATE idempotency_keys SET state = 'done', status = $4, headers = $5, body = $6 \
                 WHERE tenant_id = $1 AND key = $2 AND claim_id = $3 AND state = 'running'")
                .bind(tenant).bind(&r.key).bind(claim_id).bind(status).bind(headers).bind(&answer.body))?
        }
        other => {
            if other.is_some() {
                tracing::warn!(bytes = other.as_ref().map(|a| a.body.len()).unwrap_or_default(), "an idempotent answer too large to keep; a retry runs again");
            }
            exec!(tx, sqlx::query("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND claim_id = $3 AND state = 'running'")
                .bind(tenant).bind(&r.key).bind(claim_id))?
        }
    };
    owned.commit().await?;
    Ok(n == 1)
}
