//! SQL for tenants and API keys, identical on PostgreSQL and SQLite.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::FromRow;
use uuid::Uuid;
use worktruck_kit::cursor::Cursor;
use worktruck_kit::db::Tx;
use worktruck_kit::{Result, exec, on_tx};

/// A tenant row.
#[derive(Debug, Clone, FromRow)]
pub struct TenantRow {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Slug.
    pub slug: String,
    /// free, pro, scale or enterprise.
    pub plan: String,
    /// Retention window in days.
    pub retention_days: i64,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// An API key row (never holds the secret).
#[derive(Debug, Clone, FromRow)]
pub struct KeyRow {
    /// Id.
    pub id: Uuid,
    /// Tenant.
    pub tenant_id: Uuid,
    /// Name.
    pub name: String,
    /// live or test.
    pub environment: String,
    /// Keyed hash.
    pub secret_hash: String,
    /// Hint.
    pub key_hint: String,
    /// JSON array of scopes.
    pub scopes: Value,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last use.
    pub last_used_at: Option<DateTime<Utc>>,
    /// Revocation.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Last rotation.
    pub rotated_at: Option<DateTime<Utc>>,
}


/// Inserts a tenant.
pub async fn insert_tenant(tx: &mut Tx, t: &TenantRow) -> Result<()> {
    exec!(tx, sqlx::query(
        "INSERT INTO tenants (id, name, slug, plan, retention_days, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(t.id).bind(&t.name).bind(&t.slug).bind(&t.plan).bind(t.retention_days).bind(t.created_at))?;
    Ok(())
}

/// Reads a tenant.
pub async fn tenant(tx: &mut Tx, id: Uuid) -> Result<Option<TenantRow>> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT id, name, slug, plan, retention_days, created_at FROM tenants WHERE id = $1")
        .bind(id).fetch_optional(c).await)?)
}

/// A new key's stored fields.
pub struct InsertKey<'a> {
    /// Id.
    pub id: Uuid,
    /// Tenant.
    pub tenant_id: Uuid,
    /// Name.
    pub name: &'a str,
    /// live or test.
    pub environment: &'a str,
    /// Lookup id.
    pub lookup_id: &'a str,
    /// Hash.
    pub secret_hash: &'a str,
    /// Hint.
    pub key_hint: &'a str,
    /// Scopes.
    pub scopes: &'a Value,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Inserts a key.
pub async fn insert_key(tx: &mut Tx, k: InsertKey<'_>) -> Result<()> {
    exec!(tx, sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, name, environment, lookup_id, secret_hash, key_hint, scopes, \
         created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
        .bind(k.id).bind(k.tenant_id).bind(k.name).bind(k.environment).bind(k.lookup_id)
        .bind(k.secret_hash).bind(k.key_hint).bind(k.scopes).bind(k.created_at).bind(k.expires_at))?;
    Ok(())
}

/// Finds a key by its public lookup id (system scope: the tenant is not known yet).
pub async fn key_by_lookup(tx: &mut Tx, lookup_id: &str) -> Result<Option<KeyRow>> {
    const SQL: &str = "SELECT id, tenant_id, name, environment, secret_hash, key_hint, scopes, created_at, \
         expires_at, last_used_at, revoked_at, rotated_at FROM api_keys WHERE lookup_id = $1";
    Ok(on_tx!(tx, c => sqlx::query_as(SQL).bind(lookup_id).fetch_optional(c).await)?)
}

/// Reads one of a tenant's keys.
pub async fn key(tx: &mut Tx, tenant: Uuid, id: Uuid) -> Result<Option<KeyRow>> {
    const SQL: &str = "SELECT id, tenant_id, name, environment, secret_hash, key_hint, scopes, created_at, \
         expires_at, last_used_at, revoked_at, rotated_at FROM api_keys WHERE tenant_id = $1 AND id = $2";
    Ok(on_tx!(tx, c => sqlx::query_as(SQL).bind(tenant).bind(id).fetch_optional(c).await)?)
}

/// A page of a tenant's keys, newest first.
pub async fn keys(tx: &mut Tx, tenant: Uuid, limit: i64, after: Option<(DateTime<Utc>, Uuid)>) -> Result<(Vec<KeyRow>, Option<Cursor>)> {
    const FIRST: &str = "SELECT id, tenant_id, name, environment, secret_hash, key_hint, scopes, created_at, \
         expires_at, last_used_at, revoked_at, rotated_at FROM api_keys WHERE tenant_id = $1 \
         ORDER BY created_at DESC, id DESC LIMIT $2";
    const NEXT: &str = "SELECT id, tenant_id, name, environment, secret_hash, key_hint, scopes, created_at, \
         expires_at, last_used_at, revoked_at, rotated_at FROM api_keys WHERE tenant_id = $1 \
         AND (created_at, id) < ($3, $4) ORDER BY created_at DESC, id DESC LIMIT $2";
    let mut rows: Vec<KeyRow> = match after {
        None => on_tx!(tx, c => sqlx::query_as(FIRST).bind(tenant).bind(limit + 1).fetch_all(c).await)?,
        Some((t, id)) => on_tx!(tx, c => sqlx::query_as(NEXT).bind(tenant).bind(limit + 1).bind(t).bind(id).fetch_all(c).await)?,
    };
    let next = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| Cursor::TimeId(r.created_at, r.id))
    } else {
        None
    };
    Ok((rows, next))
}

/// Replaces a live key's secret.
pub async fn rotate(tx: &mut Tx, tenant: Uuid, id: Uuid, lookup_id: &str, hash: &str, hint: &str, now: DateTime<Utc>) -> Result<u64> {
    Ok(exec!(tx, sqlx::query(
        "UPDATE api_keys SET lookup_id = $3, secret_hash = $4, key_hint = $5, rotated_at = $6 \
         WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL")
        .bind(tenant).bind(id).bind(lookup_id).bind(hash).bind(hint).bind(now))?)
}

/// Revokes a key (idempotent).
pub async fn revoke(tx: &mut Tx, tenant: Uuid, id: Uuid, now: DateTime<Utc>) -> Result<u64> {
    Ok(exec!(tx, sqlx::query(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3) WHERE tenant_id = $1 AND id = $2")
        .bind(tenant).bind(id).bind(now))?)
}

/// Records a use.
pub async fn touch(tx: &mut Tx, id: Uuid, now: DateTime<Utc>) -> Result<()> {
    exec!(tx, sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1").bind(id).bind(now))?;
    Ok(())
}

/// Finds an external principal: `(principal id, tenant id)`.
pub async fn principal(tx: &mut Tx, kind: &str, issuer: &str, subject: &str) -> Result<Option<(Uuid, Uuid)>> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT id, tenant_id FROM principals WHERE kind = $1 AND issuer = $2 AND subject = $3")
        .bind(kind).bind(issuer).bind(subject).fetch_optional(c).await)?)
}

/// Records an external principal for a tenant.
pub async fn insert_principal(
    tx: &mut Tx,
    id: Uuid,
    kind: &str,
    issuer: &str,
    subject: &str,
    tenant: Uuid,
    now: DateTime<Utc>,
) -> Result<()> {
    exec!(tx, sqlx::query(
        "INSERT INTO principals (id, kind, issuer, subject, tenant_id, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(id).bind(kind).bind(issuer).bind(subject).bind(tenant).bind(now))?;
    Ok(())
}

/// Adds `count` requests to a tenant's usage window and returns the window's total.
pub async fn add_usage(tx: &mut Tx, tenant: Uuid, kind: &str, start: i64, count: i64) -> Result<i64> {
    Ok(on_tx!(tx, c => sqlx::query_scalar(
        "INSERT INTO usage_windows (tenant_id, window_kind, start, count) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id, window_kind, start) DO UPDATE SET count = usage_windows.count + excluded.count \
         RETURNING count")
        .bind(tenant).bind(kind).bind(start).bind(count).fetch_one(c).await)?)
}

/// Forgets minute windows before `minute` and day windows before `day`.
pub async fn prune_usage(tx: &mut Tx, minute: i64, day: i64) -> Result<u64> {
    Ok(exec!(tx, sqlx::query(
        "DELETE FROM usage_windows WHERE (window_kind = 'm' AND start < $1) OR (window_kind = 'd' AND start < $2)")
        .bind(minute).bind(day))?)
}
