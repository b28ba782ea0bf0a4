//! SQL for apps and their mirrored tools, identical on PostgreSQL and SQLite. Every query
//! carries `tenant_id = $1`, except the re-probe queue's claim of due apps.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::FromRow;
use uuid::Uuid;
use worktruck_kit::cursor::Cursor;
use worktruck_kit::db::Tx;
use worktruck_kit::{Result, exec, on_tx};

/// An app row. `auth_sealed` is the sealed secret: never put on the wire or in a log.
#[derive(Clone, FromRow)]
pub struct AppRow {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub slug: String,
    pub display_name: String,
    pub description: Option<String>,
    pub mcp_server_url: String,
    pub auth_type: String,
    pub auth_header_name: Option<String>,
    pub auth_hint: Option<String>,
    pub auth_sealed: Option<Vec<u8>>,
    pub status: String,
    pub status_reason: Option<String>,
    pub consecutive_probe_failures: i32,
    pub last_probed_at: Option<DateTime<Utc>>,
    pub last_healthy_at: Option<DateTime<Utc>>,
    pub next_probe_at: DateTime<Utc>,
    pub protocol_version: Option<String>,
    pub enabled_tools: Value,
    pub metadata: Value,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for AppRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppRow")
            .field("id", &self.id)
            .field("slug", &self.slug)
            .finish_non_exhaustive()
    }
}

impl AppRow {
    /// The enabled tools' names.
    pub fn enabled(&self) -> Vec<String> {
        self.enabled_tools
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A mirrored tool.
#[derive(Debug, Clone, FromRow)]
pub struct ToolRow {
    pub name: String,
    pub title: Option<String>,
    pub description: Option<String>,
    pub input_schema: Value,
    pub output_schema: Option<Value>,
    pub annotations: Option<Value>,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub stale: bool,
    pub approved: bool,
    pub approved_description: Option<String>,
    pub approved_input_schema: Option<Value>,
    pub approved_output_schema: Option<Value>,
    pub changed_at: Option<DateTime<Utc>>,
}

const APP_COLUMNS: &str = "tenant_id, id, slug, display_name, description, mcp_server_url, auth_type, \
     auth_header_name, auth_hint, auth_sealed, status, status_reason, consecutive_probe_failures, last_probed_at, \
     last_healthy_at, next_probe_at, protocol_version, enabled_tools, metadata, version, created_at, updated_at";

const TOOL_COLUMNS: &str = "name, title, description, input_schema, output_schema, annotations, first_seen_at, \
     last_seen_at, stale, approved, approved_description, approved_input_schema, approved_output_schema, changed_at";

/// Inserts an app; false when the tenant already has the slug.
pub async fn insert_app(tx: &mut Tx, a: &AppRow) -> Result<bool> {
    let n = exec!(tx, sqlx::query(
        "INSERT INTO apps (tenant_id, id, slug, display_name, description, mcp_server_url, auth_type, auth_header_name, \
         auth_hint, auth_sealed, status, status_reason, consecutive_probe_failures, last_probed_at, last_healthy_at, \
         next_probe_at, protocol_version, enabled_tools, metadata, version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22) \
         ON CONFLICT (tenant_id, slug) DO NOTHING")
        .bind(a.tenant_id).bind(a.id).bind(&a.slug).bind(&a.display_name).bind(&a.description)
        .bind(&a.mcp_server_url).bind(&a.auth_type).bind(&a.auth_header_name).bind(&a.auth_hint)
        .bind(&a.auth_sealed).bind(&a.status).bind(&a.status_reason).bind(a.consecutive_probe_failures)
        .bind(a.last_probed_at).bind(a.last_healthy_at).bind(a.next_probe_at).bind(&a.protocol_version)
        .bind(&a.enabled_tools).bind(&a.metadata).bind(a.version).bind(a.created_at).bind(a.updated_at))?;
    Ok(n == 1)
}

/// Writes every mutable field of an app back (its id, slug, URL and credentials never change).
pub async fn update_app(tx: &mut Tx, a: &AppRow) -> Result<()> {
    exec!(tx, sqlx::query(
        "UPDATE apps SET display_name = $3, description = $4, status = $5, status_reason = $6, \
         consecutive_probe_failures = $7, last_probed_at = $8, last_healthy_at = $9, next_probe_at = $10, \
         protocol_version = $11, enabled_tools = $12, metadata = $13, version = $14, updated_at = $15 \
         WHERE tenant_id = $1 AND id = $2")
        .bind(a.tenant_id).bind(a.id).bind(&a.display_name).bind(&a.description).bind(&a.status)
        .bind(&a.status_reason).bind(a.consecutive_probe_failures).bind(a.last_probed_at).bind(a.last_healthy_at)
        .bind(a.next_probe_at).bind(&a.protocol_version).bind(&a.enabled_tools).bind(&a.metadata)
        .bind(a.version).bind(a.updated_at))?;
    Ok(())
}

/// One app by slug; `lock` holds its row until the transaction ends (PostgreSQL; SQLite's
/// write transaction already holds the only write lock).
pub async fn app_by_slug(
    tx: &mut Tx,
    tenant: Uuid,
    slug: &str,
    lock: bool,
) -> Result<Option<AppRow>> {
    let lock = lock && matches!(tx, Tx::Pg(..));
    let sql = format!(
        "SELECT {APP_COLUMNS} FROM apps WHERE tenant_id = $1 AND slug = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    Ok(
        on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(slug).fetch_optional(c).await)?,
    )
}

/// One app by id, locked as [`app_by_slug`] does.
pub async fn app_by_id(tx: &mut Tx, tenant: Uuid, id: Uuid, lock: bool) -> Result<Option<AppRow>> {
    let lock = lock && matches!(tx, Tx::Pg(..));
    let sql = format!(
        "SELECT {APP_COLUMNS} FROM apps WHERE tenant_id = $1 AND id = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    Ok(
        on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(id).fetch_optional(c).await)?,
    )
}

/// A page of apps, newest first, after `after`.
pub async fn list_apps(
    tx: &mut Tx,
    tenant: Uuid,
    limit: i64,
    after: Option<Cursor>,
) -> Result<Vec<AppRow>> {
    let rows = match after {
        Some(Cursor::TimeId(t, id)) => {
            let sql = format!(
                "SELECT {APP_COLUMNS} FROM apps WHERE tenant_id = $1 AND (created_at < $2 OR (created_at = $2 AND id < $3)) \
                 ORDER BY created_at DESC, id DESC LIMIT $4"
            );
            on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(t).bind(id).bind(limit).fetch_all(c).await)?
        }
        _ => {
            let sql = format!(
                "SELECT {APP_COLUMNS} FROM apps WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
            );
            on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(limit).fetch_all(c).await)?
        }
    };
    Ok(rows)
}

/// Deletes an app (its tools go with it).
pub async fn delete_app(tx: &mut Tx, tenant: Uuid, id: Uuid) -> Result<()> {
    exec!(
        tx,
        sqlx::query("DELETE FROM app_tools WHERE tenant_id = $1 AND app_id = $2")
            .bind(tenant)
            .bind(id)
    )?;
    exec!(
        tx,
        sqlx::query("DELETE FROM apps WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
    )?;
    Ok(())
}

/// An app's mirrored tools, by name.
pub async fn tools(tx: &mut Tx, tenant: Uuid, app: Uuid) -> Result<Vec<ToolRow>> {
    let sql = format!(
        "SELECT {TOOL_COLUMNS} FROM app_tools WHERE tenant_id = $1 AND app_id = $2 ORDER BY name"
    );
    Ok(
        on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(app).fetch_all(c).await)?,
    )
}

/// Writes a tool (inserted or replaced whole).
pub async fn upsert_tool(tx: &mut Tx, tenant: Uuid, app: Uuid, t: &ToolRow) -> Result<()> {
    exec!(tx, sqlx::query(
        "INSERT INTO app_tools (tenant_id, app_id, name, title, description, input_schema, output_schema, annotations, \
         first_seen_at, last_seen_at, stale, approved, approved_description, approved_input_schema, approved_output_schema, \
         changed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
         ON CONFLICT (tenant_id, app_id, name) DO UPDATE SET title = excluded.title, description = excluded.description, \
         input_schema = excluded.input_schema, output_schema = excluded.output_schema, annotations = excluded.annotations, \
         first_seen_at = excluded.first_seen_at, last_seen_at = excluded.last_seen_at, stale = excluded.stale, \
         approved = excluded.approved, approved_description = excluded.approved_description, \
         approved_input_schema = excluded.approved_input_schema, approved_output_schema = excluded.approved_output_schema, \
         changed_at = excluded.changed_at")
        .bind(tenant).bind(app).bind(&t.name).bind(&t.title).bind(&t.description).bind(&t.input_schema)
        .bind(&t.output_schema).bind(&t.annotations).bind(t.first_seen_at).bind(t.last_seen_at).bind(t.stale)
        .bind(t.approved).bind(&t.approved_description).bind(&t.approved_input_schema)
        .bind(&t.approved_output_schema).bind(t.changed_at))?;
    Ok(())
}

/// Claims the apps of every tenant due for a periodic probe at `now` (not disabled), oldest
/// due first: their `next_probe_at` moves to `lease_until`, in the claiming transaction, so
/// another replica's re-probe skips them (PostgreSQL: `SKIP LOCKED`; SQLite has one writer).
/// The probe's own result sets the real next time. Run with `Scope::System`: ids only, each
/// probe then runs in its tenant's scope.
pub async fn claim_due(
    tx: &mut Tx,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(Uuid, Uuid)>> {
    let sql = tx.sql(
        "UPDATE apps SET next_probe_at = $2 WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM apps \
         WHERE status <> 'disabled' AND next_probe_at <= $1 ORDER BY next_probe_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
         RETURNING tenant_id, id",
        "UPDATE apps SET next_probe_at = $2 WHERE rowid IN (SELECT rowid FROM apps \
         WHERE status <> 'disabled' AND next_probe_at <= $1 ORDER BY next_probe_at LIMIT $3) \
         RETURNING tenant_id, id",
    );
    Ok(
        on_tx!(tx, c => sqlx::query_as(sql).bind(now).bind(lease_until).bind(limit).fetch_all(c).await)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use worktruck_kit::db::{Db, Scope, now};
    use worktruck_kit::testing::{TestData, backends};

    fn app(tenant: Uuid, slug: &str, next: DateTime<Utc>) -> AppRow {
        let t = now();
        AppRow {
            tenant_id: tenant,
            id: Uuid::now_v7(),
            slug: slug.into(),
            display_name: slug.into(),
            description: None,
            mcp_server_url: "https://mcp.example.com/".into(),
            auth_type: "none".into(),
            auth_header_name: None,
            auth_hint: None,
            auth_sealed: None,
            status: "active".into(),
            status_reason: None,
            consecutive_probe_failures: 0,
            last_probed_at: None,
            last_healthy_at: None,
            next_probe_at: next,
            protocol_version: None,
            enabled_tools: serde_json::json!([]),
            metadata: serde_json::json!({}),
            version: 1,
            created_at: t,
            updated_at: t,
        }
    }

    #[tokio::test]
    async fn a_due_app_is_claimed_once_across_tenants_and_replicas() {
        for backend in backends() {
            let data = TestData::new(backend).await;
            let (pg, sqlite) = crate::migrators();
            let db = Db::connect_and_migrate(&data.db_options("apps"), pg, sqlite)
                .await
                .unwrap();
            let t = now();
            let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
            for (tenant, slug, next) in [
                (a, "due", t),
                (b, "also-due", t),
                (a, "later", t + chrono::Duration::hours(1)),
            ] {
                let mut tx = db.begin(Scope::Tenant(tenant), true).await.unwrap();
                assert!(insert_app(&mut tx, &app(tenant, slug, next)).await.unwrap());
                tx.commit().await.unwrap();
            }
            let lease = t + chrono::Duration::minutes(1);
            let mut tx = db.begin(Scope::System, true).await.unwrap();
            let first = claim_due(&mut tx, t, lease, 10).await.unwrap();
            tx.commit().await.unwrap();
            assert_eq!(first.len(), 2, "{backend:?}: both tenants' due apps");
            // Another replica's round at the same moment finds nothing left to claim.
            let mut tx = db.begin(Scope::System, true).await.unwrap();
            assert!(claim_due(&mut tx, t, lease, 10).await.unwrap().is_empty());
            tx.commit().await.unwrap();
            // After the lease, unprobed apps are due again.
            let mut tx = db.begin(Scope::System, true).await.unwrap();
            assert_eq!(claim_due(&mut tx, lease, lease, 10).await.unwrap().len(), 2);
            tx.commit().await.unwrap();
        }
    }
}
