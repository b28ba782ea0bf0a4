//! SQL for webhooks and deliveries, identical on PostgreSQL and SQLite. Every query carries
//! `tenant_id = $1`, except the delivery loop's claim of due deliveries (ids only).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::FromRow;
use uuid::Uuid;
use worktruck_kit::cursor::Cursor;
use worktruck_kit::db::Tx;
use worktruck_kit::{Result, exec, on_tx};

/// A webhook row. `secret_sealed` and `previous_sealed` are sealed secrets: never put on the
/// wire or in a log.
#[derive(Clone, FromRow)]
pub struct WebhookRow {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub url: String,
    pub event_types: Value,
    pub description: Option<String>,
    pub metadata: Value,
    pub status: String,
    pub disabled_reason: Option<String>,
    pub secret_sealed: Vec<u8>,
    pub secret_hint: String,
    pub previous_sealed: Option<Vec<u8>>,
    pub previous_expires_at: Option<DateTime<Utc>>,
    pub consecutive_failures: i32,
    pub failing_since: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for WebhookRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRow")
            .field("id", &self.id)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl WebhookRow {
    /// The event type patterns.
    pub fn patterns(&self) -> Vec<String> {
        self.event_types
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A delivery row.
#[derive(Debug, Clone, FromRow)]
pub struct DeliveryRow {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub entity_key: String,
    pub payload: Value,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub retry_until: DateTime<Utc>,
    pub lease_until: Option<DateTime<Utc>>,
    pub lease_token: Option<Uuid>,
    pub last_error: Option<String>,
    pub last_status_code: Option<i32>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

const WEBHOOK_COLUMNS: &str = "tenant_id, id, url, event_types, description, metadata, status, disabled_reason, \
     secret_sealed, secret_hint, previous_sealed, previous_expires_at, consecutive_failures, failing_since, \
     last_success_at, version, created_at, updated_at";

const DELIVERY_COLUMNS: &str = "tenant_id, id, webhook_id, event_id, event_type, entity_key, payload, status, attempts, \
     next_attempt_at, retry_until, lease_until, lease_token, last_error, last_status_code, last_attempt_at, created_at, \
     delivered_at";

/// Inserts a webhook.
pub async fn insert_webhook(tx: &mut Tx, w: &WebhookRow) -> Result<()> {
    exec!(tx, sqlx::query(
        "INSERT INTO webhooks (tenant_id, id, url, event_types, description, metadata, status, disabled_reason, \
         secret_sealed, secret_hint, previous_sealed, previous_expires_at, consecutive_failures, failing_since, \
         last_success_at, version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)")
        .bind(w.tenant_id).bind(w.id).bind(&w.url).bind(&w.event_types).bind(&w.description).bind(&w.metadata)
        .bind(&w.status).bind(&w.disabled_reason).bind(&w.secret_sealed).bind(&w.secret_hint)
        .bind(&w.previous_sealed).bind(w.previous_expires_at).bind(w.consecutive_failures).bind(w.failing_since)
        .bind(w.last_success_at).bind(w.version).bind(w.created_at).bind(w.updated_at))?;
    Ok(())
}

/// Writes every mutable field of a webhook back.
pub async fn update_webhook(tx: &mut Tx, w: &WebhookRow) -> Result<()> {
    exec!(tx, sqlx::query(
        "UPDATE webhooks SET url = $3, event_types = $4, description = $5, metadata = $6, status = $7, \
         disabled_reason = $8, secret_sealed = $9, secret_hint = $10, previous_sealed = $11, previous_expires_at = $12, \
         consecutive_failures = $13, failing_since = $14, last_success_at = $15, version = $16, updated_at = $17 \
         WHERE tenant_id = $1 AND id = $2")
        .bind(w.tenant_id).bind(w.id).bind(&w.url).bind(&w.event_types).bind(&w.description).bind(&w.metadata)
        .bind(&w.status).bind(&w.disabled_reason).bind(&w.secret_sealed).bind(&w.secret_hint)
        .bind(&w.previous_sealed).bind(w.previous_expires_at).bind(w.consecutive_failures).bind(w.failing_since)
        .bind(w.last_success_at).bind(w.version).bind(w.updated_at))?;
    Ok(())
}

/// One webhook; `lock` holds its row until the transaction ends (PostgreSQL; SQLite's write
/// transaction already holds the only write lock).
pub async fn webhook(
    tx: &mut Tx,
    tenant: Uuid,
    id: Uuid,
    lock: bool,
) -> Result<Option<WebhookRow>> {
    let lock = lock && matches!(tx, Tx::Pg(..));
    let sql = format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = $1 AND id = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    Ok(
        on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(id).fetch_optional(c).await)?,
    )
}

/// The tenant's active webhooks (what an event is matched against).
pub async fn active_webhooks(tx: &mut Tx, tenant: Uuid) -> Result<Vec<WebhookRow>> {
    let sql = format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = $1 AND status = 'active' ORDER BY id"
    );
    Ok(on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant).fetch_all(c).await)?)
}

/// A page of webhooks, newest first, after `after`.
pub async fn list_webhooks(
    tx: &mut Tx,
    tenant: Uuid,
    limit: i64,
    after: Option<Cursor>,
) -> Result<Vec<WebhookRow>> {
    let rows = match after {
        Some(Cursor::TimeId(t, id)) => {
            let sql = format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = $1 AND (created_at < $2 OR (created_at = $2 AND id < $3)) \
                 ORDER BY created_at DESC, id DESC LIMIT $4"
            );
            on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(t).bind(id).bind(limit).fetch_all(c).await)?
        }
        _ => {
            let sql = format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
            );
            on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(limit).fetch_all(c).await)?
        }
    };
    Ok(rows)
}

/// Deletes a webhook and its deliveries.
pub async fn delete_webhook(tx: &mut Tx, tenant: Uuid, id: Uuid) -> Result<()> {
    exec!(
        tx,
        sqlx::query("DELETE FROM deliveries WHERE tenant_id = $1 AND webhook_id = $2")
            .bind(tenant)
            .bind(id)
    )?;
    exec!(
        tx,
        sqlx::query("DELETE FROM webhooks WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
    )?;
    Ok(())
}

/// Inserts a delivery; false when the webhook already has one for the event.
pub async fn insert_delivery(tx: &mut Tx, d: &DeliveryRow) -> Result<bool> {
    let n = exec!(tx, sqlx::query(
        "INSERT INTO deliveries (tenant_id, id, webhook_id, event_id, event_type, entity_key, payload, status, attempts, \
         next_attempt_at, retry_until, lease_until, lease_token, last_error, last_status_code, last_attempt_at, created_at, \
         delivered_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
         ON CONFLICT (tenant_id, webhook_id, event_id) DO NOTHING")
        .bind(d.tenant_id).bind(d.id).bind(d.webhook_id).bind(d.event_id).bind(&d.event_type).bind(&d.entity_key)
        .bind(&d.payload).bind(&d.status).bind(d.attempts).bind(d.next_attempt_at).bind(d.retry_until)
        .bind(d.lease_until).bind(d.lease_token).bind(&d.last_error).bind(d.last_status_code).bind(d.last_attempt_at)
        .bind(d.created_at).bind(d.delivered_at))?;
    Ok(n == 1)
}

/// One delivery of a webhook.
pub async fn delivery(
    tx: &mut Tx,
    tenant: Uuid,
    webhook: Uuid,
    id: Uuid,
) -> Result<Option<DeliveryRow>> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE tenant_id = $1 AND webhook_id = $2 AND id = $3"
    );
    Ok(
        on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(webhook).bind(id).fetch_optional(c).await)?,
    )
}

/// One delivery by id.
pub async fn delivery_by_id(tx: &mut Tx, tenant: Uuid, id: Uuid) -> Result<Option<DeliveryRow>> {
    let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE tenant_id = $1 AND id = $2");
    Ok(
        on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(id).fetch_optional(c).await)?,
    )
}

/// A page of a webhook's deliveries, newest first, of one status or all.
pub async fn list_deliveries(
    tx: &mut Tx,
    tenant: Uuid,
    webhook: Uuid,
    status: Option<&str>,
    limit: i64,
    after: Option<Cursor>,
) -> Result<Vec<DeliveryRow>> {
    let (t, id) = match after {
        Some(Cursor::TimeId(t, id)) => (Some(t), Some(id)),
        _ => (None, None),
    };
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE tenant_id = $1 AND webhook_id = $2 \
         AND ($3 IS NULL OR status = $3) \
         AND ($4 IS NULL OR created_at < $4 OR (created_at = $4 AND id < $5)) \
         ORDER BY created_at DESC, id DESC LIMIT $6"
    );
    let sql = match tx {
        // PostgreSQL needs the parameters' types where nothing else says them.
        Tx::Pg(..) => sql
            .replace("$3 IS NULL", "$3::text IS NULL")
            .replace("$4 IS NULL", "$4::timestamptz IS NULL"),
        Tx::Sqlite(..) => sql,
    };
    Ok(
        on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(webhook).bind(status).bind(t).bind(id).bind(limit).fetch_all(c).await)?,
    )
}

/// Writes a delivery's state back, only while `token` still holds its lease (a replica whose
/// lease lapsed and was taken over writes nothing). Returns whether it was written.
pub async fn record_delivery(tx: &mut Tx, d: &DeliveryRow, token: Uuid) -> Result<bool> {
    let n = exec!(tx, sqlx::query(
        "UPDATE deliveries SET status = $3, attempts = $4, next_attempt_at = $5, retry_until = $6, lease_until = NULL, \
         lease_token = NULL, last_error = $7, last_status_code = $8, last_attempt_at = $9, delivered_at = $10 \
         WHERE tenant_id = $1 AND id = $2 AND lease_token = $11")
        .bind(d.tenant_id).bind(d.id).bind(&d.status).bind(d.attempts).bind(d.next_attempt_at).bind(d.retry_until)
        .bind(&d.last_error).bind(d.last_status_code).bind(d.last_attempt_at).bind(d.delivered_at).bind(token))?;
    Ok(n == 1)
}

/// Resets a delivered or failed delivery to pending, due now, leased to `token` (the caller
/// attempts it at once). False when it is pending already.
pub async fn redeliver(
    tx: &mut Tx,
    tenant: Uuid,
    id: Uuid,
    now: DateTime<Utc>,
    retry_until: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    token: Uuid,
) -> Result<bool> {
    let n = exec!(tx, sqlx::query(
        "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = $3, retry_until = $4, lease_until = $5, \
         lease_token = $6, delivered_at = NULL WHERE tenant_id = $1 AND id = $2 AND status <> 'pending'")
        .bind(tenant).bind(id).bind(now).bind(retry_until).bind(lease_until).bind(token))?;
    Ok(n == 1)
}

/// Claims the due deliveries of every tenant, oldest due first, under `token` until
/// `lease_until`: pending, due, not leased by anyone else, of an active webhook, and the
/// earliest pending one of its (webhook, entity) — so one entity's deliveries go out in order,
/// each after the one before it ended. PostgreSQL: `SKIP LOCKED` between replicas; SQLite has
/// one writer. Run with `Scope::System`: ids only, each attempt then runs in its tenant's scope.
pub async fn claim_due(
    tx: &mut Tx,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    token: Uuid,
    limit: i64,
) -> Result<Vec<(Uuid, Uuid)>> {
    const DUE: &str = "FROM deliveries d JOIN webhooks w ON w.tenant_id = d.tenant_id AND w.id = d.webhook_id \
         WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND (d.lease_until IS NULL OR d.lease_until <= $1) \
         AND w.status = 'active' AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.tenant_id = d.tenant_id \
         AND e.webhook_id = d.webhook_id AND e.entity_key = d.entity_key AND e.status = 'pending' AND e.event_id < d.event_id) \
         ORDER BY d.next_attempt_at LIMIT $4";
    let sql = match tx {
        Tx::Pg(..) => format!(
            "UPDATE deliveries SET lease_until = $2, lease_token = $3 WHERE (tenant_id, id) IN \
             (SELECT d.tenant_id, d.id {DUE} FOR UPDATE OF d SKIP LOCKED) RETURNING tenant_id, id"
        ),
        Tx::Sqlite(..) => format!(
            "UPDATE deliveries SET lease_until = $2, lease_token = $3 WHERE rowid IN (SELECT d.rowid {DUE}) \
             RETURNING tenant_id, id"
        ),
    };
    Ok(
        on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(now).bind(lease_until).bind(token).bind(limit).fetch_all(c).await)?,
    )
}

/// Deletes every tenant's deliveries that ended (delivered or failed) before `cutoff`. Run with
/// `Scope::System`.
pub async fn prune(tx: &mut Tx, cutoff: DateTime<Utc>) -> Result<u64> {
    Ok(exec!(
        tx,
        sqlx::query("DELETE FROM deliveries WHERE status <> 'pending' AND created_at < $1")
            .bind(cutoff)
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use worktruck_kit::db::{Db, Scope, now};
    use worktruck_kit::testing::{TestData, backends};

    fn hook(tenant: Uuid) -> WebhookRow {
        let t = now();
        WebhookRow {
            tenant_id: tenant,
            id: Uuid::now_v7(),
            url: "https://hooks.example.com/".into(),
            event_types: serde_json::json!(["*"]),
            description: None,
            metadata: serde_json::json!({}),
            status: "active".into(),
            disabled_reason: None,
            secret_sealed: vec![1, 2, 3],
            secret_hint: "…abcd".into(),
            previous_sealed: None,
            previous_expires_at: None,
            consecutive_failures: 0,
            failing_since: None,
            last_success_at: None,
            version: 1,
            created_at: t,
            updated_at: t,
        }
    }

    fn delivery(w: &WebhookRow, entity: &str, event: Uuid) -> DeliveryRow {
        let t = now();
        DeliveryRow {
            tenant_id: w.tenant_id,
            id: Uuid::now_v7(),
            webhook_id: w.id,
            event_id: event,
            event_type: "contacts.contact.updated".into(),
            entity_key: entity.into(),
            payload: serde_json::json!({}),
            status: "pending".into(),
            attempts: 0,
            next_attempt_at: t,
            retry_until: t + chrono::Duration::hours(1),
            lease_until: None,
            lease_token: None,
            last_error: None,
            last_status_code: None,
            last_attempt_at: None,
            created_at: t,
            delivered_at: None,
        }
    }

    async fn claim(db: &Db, at: DateTime<Utc>) -> (Uuid, Vec<Uuid>) {
        let token = Uuid::now_v7();
        let mut tx = db.begin(Scope::System, true).await.unwrap();
        let got = claim_due(&mut tx, at, at + chrono::Duration::seconds(30), token, 10)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let mut ids: Vec<Uuid> = got.into_iter().map(|(_, id)| id).collect();
        ids.sort();
        (token, ids)
    }

    #[tokio::test]
    async fn one_delivery_per_event_claimed_once_and_in_order_per_entity() {
        for backend in backends() {
            let data = TestData::new(backend).await;
            let (pg, sqlite) = crate::migrators();
            let db = Db::connect_and_migrate(&data.db_options("webhooks"), pg, sqlite)
                .await
                .unwrap();
            let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
            let (wa, wb) = (hook(a), hook(b));
            let (e1, e2, e3) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
            let (first, second, other, elsewhere) = (
                delivery(&wa, "contacts:x", e1),
                delivery(&wa, "contacts:x", e2),
                delivery(&wa, "contacts:y", e3),
                delivery(&wb, "contacts:x", e1),
            );
            for (tenant, w, ds) in [
                (a, &wa, vec![&second, &first, &other]),
                (b, &wb, vec![&elsewhere]),
            ] {
                let mut tx = db.begin(Scope::Tenant(tenant), true).await.unwrap();
                insert_webhook(&mut tx, w).await.unwrap();
                for d in ds {
                    assert!(insert_delivery(&mut tx, d).await.unwrap());
                }
                // The same event again (the bus redelivered it) makes no second delivery.
                assert!(
                    !insert_delivery(&mut tx, &delivery(w, "contacts:x", e1))
                        .await
                        .unwrap(),
                    "{backend:?}"
                );
                tx.commit().await.unwrap();
            }
            let t = now();
            let (token, ids) = claim(&db, t).await;
            let mut want = vec![first.id, other.id, elsewhere.id];
            want.sort();
            assert_eq!(
                ids, want,
                "{backend:?}: the earliest of each entity, across tenants; not the later one"
            );
            // Another replica at the same moment finds nothing: all are leased, and the later
            // delivery of x still waits for the first.
            assert!(claim(&db, t).await.1.is_empty(), "{backend:?}");
            // The first is delivered: the second becomes due.
            let mut tx = db.begin(Scope::Tenant(a), true).await.unwrap();
            let mut done = delivery_by_id(&mut tx, a, first.id).await.unwrap().unwrap();
            done.status = "delivered".into();
            assert!(
                !record_delivery(&mut tx, &done, Uuid::now_v7())
                    .await
                    .unwrap(),
                "a stranger's token writes nothing"
            );
            assert!(record_delivery(&mut tx, &done, token).await.unwrap());
            tx.commit().await.unwrap();
            assert_eq!(claim(&db, t).await.1, vec![second.id], "{backend:?}");
            // A lapsed lease makes a delivery due again.
            let later = t + chrono::Duration::minutes(5);
            let mut again = claim(&db, later).await.1;
            again.sort();
            let mut want = vec![second.id, other.id, elsewhere.id];
            want.sort();
            assert_eq!(again, want, "{backend:?}");
            // A disabled webhook's deliveries are not claimed.
            let mut tx = db.begin(Scope::Tenant(b), true).await.unwrap();
            let mut off = wb.clone();
            off.status = "disabled".into();
            update_webhook(&mut tx, &off).await.unwrap();
            tx.commit().await.unwrap();
            let much_later = later + chrono::Duration::minutes(5);
            assert!(
                !claim(&db, much_later).await.1.contains(&elsewhere.id),
                "{backend:?}"
            );
            // Ended deliveries are pruned; pending ones stay.
            let mut tx = db.begin(Scope::System, true).await.unwrap();
            assert_eq!(prune(&mut tx, much_later).await.unwrap(), 1, "{backend:?}");
            tx.commit().await.unwrap();
        }
    }
}
