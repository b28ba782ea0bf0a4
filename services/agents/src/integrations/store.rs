//! The SQL of integration keys (`integration_keys`). Every query names its tenant. A key is
//! live while `active` or `invalid`; the partial unique index `integration_keys_one_live` keeps
//! one live key per tenant and provider, and revoking wipes the ciphertext in the same statement.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::FromRow;
use uuid::Uuid;
use worktruck_kit::db::{Dialect, Tx};
use worktruck_kit::{Result, exec, on_tx};

/// A stored key, its ciphertext left out.
#[derive(Debug, Clone, FromRow)]
pub struct KeyRow {
    pub id: Uuid,
    pub provider: String,
    pub status: String,
    pub key_hint: String,
    pub label: Option<String>,
    pub metadata: Value,
    pub last_verified_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, provider, status, key_hint, label, metadata, last_verified_at, revoked_at, created_at, updated_at";

/// A key to store.
pub struct NewKey<'a> {
    pub id: Uuid,
    pub provider: &'a str,
    pub sealed: &'a [u8],
    pub key_hint: &'a str,
    pub label: Option<&'a str>,
    pub metadata: &'a Value,
}

/// Serialises the writes of one tenant's keys of `provider`: a transaction lock on PostgreSQL
/// (so two concurrent replacements queue instead of one failing on the unique index); SQLite's
/// write transaction already holds the only write lock.
pub async fn lock(tx: &mut Tx, tenant: Uuid, provider: &str) -> Result<()> {
    if tx.dialect() == Dialect::Postgres {
        exec!(
            tx,
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(format!("agents.integration_keys:{tenant}:{provider}"))
        )?;
    }
    Ok(())
}

/// Revokes the tenant's live key of `provider`, wiping its ciphertext: its id, or `None` when
/// it had none.
pub async fn revoke_live(
    tx: &mut Tx,
    tenant: Uuid,
    provider: &str,
    now: DateTime<Utc>,
) -> Result<Option<Uuid>> {
    const SQL: &str = "UPDATE integration_keys SET status = 'revoked', sealed = NULL, revoked_at = $3, updated_at = $3 \
        WHERE tenant_id = $1 AND provider = $2 AND status IN ('active', 'invalid') RETURNING id";
    Ok(
        on_tx!(tx, c => sqlx::query_scalar(SQL).bind(tenant).bind(provider).bind(now).fetch_optional(c).await)?,
    )
}

/// Revokes the live key `id`, wiping its ciphertext: false when no live key has that id.
pub async fn revoke_id(tx: &mut Tx, tenant: Uuid, id: Uuid, now: DateTime<Utc>) -> Result<bool> {
    const SQL: &str = "UPDATE integration_keys SET status = 'revoked', sealed = NULL, revoked_at = $3, updated_at = $3 \
        WHERE tenant_id = $1 AND id = $2 AND status IN ('active', 'invalid')";
    Ok(exec!(tx, sqlx::query(SQL).bind(tenant).bind(id).bind(now))? == 1)
}

/// Inserts a new `active` key.
pub async fn insert(
    tx: &mut Tx,
    tenant: Uuid,
    k: &NewKey<'_>,
    now: DateTime<Utc>,
) -> Result<KeyRow> {
    let sql = format!(
        "INSERT INTO integration_keys (tenant_id, id, provider, status, sealed, key_hint, label, metadata, created_at, updated_at) \
         VALUES ($1, $2, $3, 'active', $4, $5, $6, $7, $8, $8) RETURNING {COLUMNS}"
    );
    Ok(
        on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(k.id).bind(k.provider).bind(k.sealed)
        .bind(k.key_hint).bind(k.label).bind(k.metadata).bind(now).fetch_one(c).await)?,
    )
}

/// Every key of the tenant, newest first.
pub async fn list(tx: &mut Tx, tenant: Uuid) -> Result<Vec<KeyRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM integration_keys WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC"
    );
    Ok(on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant).fetch_all(c).await)?)
}

/// The tenant's live key of `provider`.
pub async fn live(tx: &mut Tx, tenant: Uuid, provider: &str) -> Result<Option<KeyRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM integration_keys WHERE tenant_id = $1 AND provider = $2 AND status IN ('active', 'invalid')"
    );
    Ok(
        on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(provider).fetch_optional(c).await)?,
    )
}

/// The ciphertext of the live key `id`.
pub async fn sealed(tx: &mut Tx, tenant: Uuid, id: Uuid) -> Result<Option<Vec<u8>>> {
    const SQL: &str = "SELECT sealed FROM integration_keys WHERE tenant_id = $1 AND id = $2 \
        AND status IN ('active', 'invalid') AND sealed IS NOT NULL";
    let row: Option<Option<Vec<u8>>> =
        on_tx!(tx, c => sqlx::query_scalar(SQL).bind(tenant).bind(id).fetch_optional(c).await)?;
    Ok(row.flatten())
}

/// Records a verify's answer on the live key `id`: its status (`active` or `invalid`) and when.
/// `None` when the key is no longer live (revoked meanwhile: nothing changes).
pub async fn verified(
    tx: &mut Tx,
    tenant: Uuid,
    id: Uuid,
    status: &str,
    at: DateTime<Utc>,
) -> Result<Option<KeyRow>> {
    let sql = format!(
        "UPDATE integration_keys SET status = $3, last_verified_at = $4, updated_at = $4 \
         WHERE tenant_id = $1 AND id = $2 AND status IN ('active', 'invalid') RETURNING {COLUMNS}"
    );
    Ok(
        on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(id).bind(status).bind(at)
        .fetch_optional(c).await)?,
    )
}
