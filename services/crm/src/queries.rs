//! The CRM's queries that kit's generic store does not offer: stages and deals by pipeline,
//! deal listings with date filters, the stage-change log, deal contacts, and the locks that keep
//! "exactly one default pipeline" and "no deal in a deleted stage" true under concurrency.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{AssertSqlSafe, FromRow};
use uuid::Uuid;
use worktruck_kit::db::{Dialect, Tx};
use worktruck_kit::store::Record;
use worktruck_kit::{Result, exec, on_tx};

#[derive(Debug, FromRow)]
struct Row {
    id: Uuid,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    doc: Value,
}

impl From<Row> for Record {
    fn from(r: Row) -> Record {
        Record {
            id: r.id,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
            deleted_at: None,
            doc: r.doc,
            temporal: None,
        }
    }
}

/// Serialises the tenant's structural writes (pipelines, stages, the default): a transaction
/// lock on PostgreSQL; SQLite's write transaction already holds the only write lock.
pub async fn lock_tenant(tx: &mut Tx, tenant: Uuid) -> Result<()> {
    if tx.dialect() == Dialect::Postgres {
        let b = tenant.as_bytes();
        let key = i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) ^ 0x0063_726d_0000_0000;
        exec!(tx, sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(key))?;
    }
    Ok(())
}

/// Holds a live stage's head in share mode until the transaction ends, so a stage being
/// deleted (which locks and updates its head) cannot gain a deal meanwhile; moves into one stage
/// do not wait for each other. False when the stage is no longer live (deleted since it was
/// read). SQLite's write transaction already holds the only write lock.
pub async fn share_stage(tx: &mut Tx, tenant: Uuid, stage: Uuid) -> Result<bool> {
    if tx.dialect() == Dialect::Postgres {
        let live: Option<i32> = on_tx!(tx, c => sqlx::query_scalar(
            "SELECT 1 FROM entity_heads WHERE tenant_id = $1 AND entity = 'stage' AND id = $2 AND deleted_at IS NULL FOR SHARE")
            .bind(tenant).bind(stage).fetch_optional(c).await)?;
        return Ok(live.is_some());
    }
    Ok(true)
}

/// Every live record of `entity` whose `doc->>field` is `value`.
pub async fn live_by(tx: &mut Tx, tenant: Uuid, entity: &str, field: &'static str, value: &str) -> Result<Vec<Record>> {
    let sql = format!(
        "SELECT id, version, created_at, updated_at, doc FROM entity_heads \
         WHERE tenant_id = $1 AND entity = $2 AND deleted_at IS NULL AND doc->>'{field}' = $3 ORDER BY id"
    );
    let rows: Vec<Row> = on_tx!(tx, c => sqlx::query_as(AssertSqlSafe(sql.clone()))
        .bind(tenant).bind(entity).bind(value).fetch_all(c).await)?;
    Ok(rows.into_iter().map(Record::from).collect())
}

/// Every live pipeline of the tenant, oldest first.
pub async fn pipelines(tx: &mut Tx, tenant: Uuid) -> Result<Vec<Record>> {
    let rows: Vec<Row> = on_tx!(tx, c => sqlx::query_as(
        "SELECT id, version, created_at, updated_at, doc FROM entity_heads \
         WHERE tenant_id = $1 AND entity = 'pipeline' AND deleted_at IS NULL ORDER BY created_at, id LIMIT 1000")
        .bind(tenant).fetch_all(c).await)?;
    Ok(rows.into_iter().map(Record::from).collect())
}

/// How many live deals `field` (`stage_id` or `pipeline_id`) names `id`.
pub async fn deal_count(tx: &mut Tx, tenant: Uuid, field: &'static str, id: Uuid) -> Result<i64> {
    let sql = format!(
        "SELECT COUNT(*) FROM entity_heads WHERE tenant_id = $1 AND entity = 'deal' AND deleted_at IS NULL \
         AND doc->>'{field}' = $2"
    );
    let n: i64 = on_tx!(tx, c => sqlx::query_scalar(AssertSqlSafe(sql.clone()))
        .bind(tenant).bind(id.to_string()).fetch_one(c).await)?;
    Ok(n)
}

/// Filters on current deals.
#[derive(Debug, Clone, Default)]
pub struct DealFilter {
    /// `doc->>field = value` conditions (field names from code).
    pub equals: Vec<(&'static str, String)>,
    /// Expected close on or before.
    pub close_before: Option<String>,
    /// Expected close on or after.
    pub close_after: Option<String>,
    /// Full-text query in the dialect's syntax.
    pub search: Option<String>,
    /// Deals linked to this contact in any way (main contact, organization, deal contact).
    pub any_contact: Option<Uuid>,
}

enum Bind {
    Text(String),
    Time(DateTime<Utc>),
    Id(Uuid),
    Int(i64),
}

/// Current deals, most recently updated first, after `(updated_at, id)`; `limit + 1` rows at
/// most, so the caller can tell whether a page follows.
pub async fn deals(tx: &mut Tx, tenant: Uuid, f: &DealFilter, after: Option<(DateTime<Utc>, Uuid)>, limit: i64) -> Result<Vec<Record>> {
    let dialect = tx.dialect();
    let mut sql = String::from(
        "SELECT h.id, h.version, h.created_at, h.updated_at, h.doc FROM entity_heads h \
         WHERE h.tenant_id = $1 AND h.entity = 'deal' AND h.deleted_at IS NULL",
    );
    let mut binds: Vec<Bind> = Vec::new();
    let next = |binds: &mut Vec<Bind>, b: Bind| {
        binds.push(b);
        binds.len() + 1
    };
    for (field, value) in &f.equals {
        let n = next(&mut binds, Bind::Text(value.clone()));
        let field: String = field.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        sql.push_str(&format!(" AND h.doc->>'{field}' = ${n}"));
    }
    if let Some(d) = &f.close_before {
        let n = next(&mut binds, Bind::Text(d.clone()));
        sql.push_str(&format!(" AND h.doc->>'expected_close_date' <= ${n}"));
    }
    if let Some(d) = &f.close_after {
        let n = next(&mut binds, Bind::Text(d.clone()));
        sql.push_str(&format!(" AND h.doc->>'expected_close_date' >= ${n}"));
    }
    if let Some(q) = &f.search {
        let n = next(&mut binds, Bind::Text(q.clone()));
        sql.push_str(&match dialect {
            Dialect::Postgres => format!(" AND h.search @@ to_tsquery('simple', ${n})"),
            Dialect::Sqlite => format!(" AND h.rid IN (SELECT rowid FROM entity_heads_fts WHERE entity_heads_fts MATCH ${n})"),
        });
    }
    if let Some(contact) = f.any_contact {
        let text = next(&mut binds, Bind::Text(contact.to_string()));
        let id = next(&mut binds, Bind::Id(contact));
        sql.push_str(&format!(
            " AND (h.doc->>'contact_id' = ${text} OR h.doc->>'organization_id' = ${text} \
               OR h.id IN (SELECT dc.deal_id FROM deal_contacts dc WHERE dc.tenant_id = $1 AND dc.contact_id = ${id}))"
        ));
    }
    if let Some((t, id)) = after {
        let a = next(&mut binds, Bind::Time(t));
        let b = next(&mut binds, Bind::Id(id));
        sql.push_str(&format!(" AND (h.updated_at, h.id) < (${a}, ${b})"));
    }
    let n = next(&mut binds, Bind::Int(limit + 1));
    sql.push_str(&format!(" ORDER BY h.updated_at DESC, h.id DESC LIMIT ${n}"));
    let rows: Vec<Row> = on_tx!(tx, c => {
        let mut q = sqlx::query_as::<_, Row>(AssertSqlSafe(sql.clone())).bind(tenant);
        for b in &binds {
            q = match b {
                Bind::Text(s) => q.bind(s.clone()),
                Bind::Time(t) => q.bind(*t),
                Bind::Id(id) => q.bind(*id),
                Bind::Int(i) => q.bind(*i),
            };
        }
        q.fetch_all(c).await
    })?;
    Ok(rows.into_iter().map(Record::from).collect())
}

/// The fields of a live deal the analytics read, projected in SQL (no document parsed).
#[derive(Debug, FromRow)]
pub struct DealFigures {
    /// Deal id.
    pub id: Uuid,
    /// Name.
    pub name: Option<String>,
    /// Stage.
    pub stage_id: Option<String>,
    /// `open`, `won` or `lost`.
    pub status: Option<String>,
    /// Exact decimal.
    pub amount: Option<String>,
    /// ISO 4217 code.
    pub currency: Option<String>,
    /// 0 to 100, as text.
    pub confidence: Option<String>,
    /// `YYYY-MM-DD`.
    pub expected_close_date: Option<String>,
    /// RFC 3339.
    pub stage_entered_at: Option<String>,
}

/// The live deals of a pipeline, as [`DealFigures`], in one query.
pub async fn pipeline_deal_figures(tx: &mut Tx, tenant: Uuid, pipeline: Uuid) -> Result<Vec<DealFigures>> {
    let rows = on_tx!(tx, c => sqlx::query_as(
        "SELECT id, CAST(doc->>'name' AS TEXT) AS name, CAST(doc->>'stage_id' AS TEXT) AS stage_id, \
         CAST(doc->>'status' AS TEXT) AS status, CAST(doc->>'amount' AS TEXT) AS amount, \
         CAST(doc->>'currency' AS TEXT) AS currency, CAST(doc->>'confidence' AS TEXT) AS confidence, \
         CAST(doc->>'expected_close_date' AS TEXT) AS expected_close_date, \
         CAST(doc->>'stage_entered_at' AS TEXT) AS stage_entered_at \
         FROM entity_heads WHERE tenant_id = $1 AND entity = 'deal' AND deleted_at IS NULL AND doc->>'pipeline_id' = $2")
        .bind(tenant).bind(pipeline.to_string()).fetch_all(c).await)?;
    Ok(rows)
}

/// One row of the stage-change log.
#[derive(Debug, Clone, FromRow)]
pub struct Change {
    /// Row id.
    pub id: Uuid,
    /// The deal.
    pub deal_id: Uuid,
    /// The pipeline.
    pub pipeline_id: Uuid,
    /// The stage left.
    pub from_stage_id: Option<Uuid>,
    /// The stage entered.
    pub to_stage_id: Uuid,
    /// Its kind.
    pub to_kind: String,
    /// Amount then.
    pub amount: Option<String>,
    /// Currency then.
    pub currency: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// Who.
    pub actor: String,
    /// When, in the world.
    pub changed_at: DateTime<Utc>,
    /// When recorded.
    pub recorded_at: DateTime<Utc>,
}

const CHANGE_COLUMNS: &str =
    "id, deal_id, pipeline_id, from_stage_id, to_stage_id, to_kind, amount, currency, reason, actor, changed_at, recorded_at";

/// Appends a stage change.
pub async fn insert_change(tx: &mut Tx, tenant: Uuid, ch: &Change) -> Result<()> {
    exec!(
        tx,
        sqlx::query(
            "INSERT INTO stage_changes (tenant_id, id, deal_id, pipeline_id, from_stage_id, to_stage_id, to_kind, \
         amount, currency, reason, actor, changed_at, recorded_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        )
        .bind(tenant)
        .bind(ch.id)
        .bind(ch.deal_id)
        .bind(ch.pipeline_id)
        .bind(ch.from_stage_id)
        .bind(ch.to_stage_id)
        .bind(&ch.to_kind)
        .bind(&ch.amount)
        .bind(&ch.currency)
        .bind(&ch.reason)
        .bind(&ch.actor)
        .bind(ch.changed_at)
        .bind(ch.recorded_at)
    )?;
    Ok(())
}

/// A deal's stage changes, oldest first.
pub async fn changes_of(tx: &mut Tx, tenant: Uuid, deal: Uuid) -> Result<Vec<Change>> {
    let sql = format!("SELECT {CHANGE_COLUMNS} FROM stage_changes WHERE tenant_id = $1 AND deal_id = $2 ORDER BY changed_at, seq");
    let rows = on_tx!(tx, c => sqlx::query_as(AssertSqlSafe(sql.clone())).bind(tenant).bind(deal).fetch_all(c).await)?;
    Ok(rows)
}

/// When the deal's latest stage change happened (valid time).
pub async fn last_change_at(tx: &mut Tx, tenant: Uuid, deal: Uuid) -> Result<Option<DateTime<Utc>>> {
    let t: Option<DateTime<Utc>> = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT changed_at FROM stage_changes WHERE tenant_id = $1 AND deal_id = $2 ORDER BY changed_at DESC, seq DESC LIMIT 1")
        .bind(tenant).bind(deal).fetch_optional(c).await)?;
    Ok(t)
}

/// What analytics read of one stage change.
#[derive(Debug, Clone, FromRow)]
pub struct Step {
    /// The deal.
    pub deal_id: Uuid,
    /// The stage entered.
    pub to_stage_id: Uuid,
    /// Its kind.
    pub to_kind: String,
    /// Amount then.
    pub amount: Option<String>,
    /// Currency then.
    pub currency: Option<String>,
    /// When, in the world.
    pub changed_at: DateTime<Utc>,
}

/// The stage changes of a pipeline recorded by `as_of` that happened before `before`, by deal
/// then in the order they happened: everything analytics read of the log, in one query.
pub async fn pipeline_changes(tx: &mut Tx, tenant: Uuid, pipeline: Uuid, as_of: DateTime<Utc>, before: DateTime<Utc>) -> Result<Vec<Step>> {
    let rows = on_tx!(tx, c => sqlx::query_as(
        "SELECT deal_id, to_stage_id, to_kind, amount, currency, changed_at FROM stage_changes \
         WHERE tenant_id = $1 AND pipeline_id = $2 AND recorded_at <= $3 AND changed_at < $4 ORDER BY deal_id, changed_at, seq")
        .bind(tenant).bind(pipeline).bind(as_of).bind(before).fetch_all(c).await)?;
    Ok(rows)
}

/// One deal contact row.
#[derive(Debug, Clone, FromRow)]
pub struct DealContactRow {
    /// Row id.
    pub id: Uuid,
    /// The deal.
    pub deal_id: Uuid,
    /// The contact.
    pub contact_id: Uuid,
    /// Primary.
    pub is_primary: bool,
    /// Introduced by.
    pub introduced_by: Option<Uuid>,
    /// Role.
    pub role: Option<String>,
    /// Free JSON.
    pub metadata: Value,
    /// Added.
    pub created_at: DateTime<Utc>,
    /// Changed.
    pub updated_at: DateTime<Utc>,
}

const DC_COLUMNS: &str = "id, deal_id, contact_id, is_primary, introduced_by, role, metadata, created_at, updated_at";

/// A deal's contacts, the primary first, then by when they were added.
pub async fn deal_contacts(tx: &mut Tx, tenant: Uuid, deal: Uuid) -> Result<Vec<DealContactRow>> {
    let sql = format!(
        "SELECT {DC_COLUMNS} FROM deal_contacts WHERE tenant_id = $1 AND deal_id = $2 \
         ORDER BY is_primary DESC, created_at, contact_id"
    );
    let rows = on_tx!(tx, c => sqlx::query_as(AssertSqlSafe(sql.clone())).bind(tenant).bind(deal).fetch_all(c).await)?;
    Ok(rows)
}

/// Inserts or replaces a deal contact; with `is_primary`, the deal's other contacts stop
/// being primary first.
pub async fn upsert_deal_contact(tx: &mut Tx, tenant: Uuid, row: &DealContactRow) -> Result<DealContactRow> {
    if row.is_primary {
        exec!(
            tx,
            sqlx::query(
                "UPDATE deal_contacts SET is_primary = $3, updated_at = $4 \
             WHERE tenant_id = $1 AND deal_id = $2 AND is_primary AND contact_id <> $5"
            )
            .bind(tenant)
            .bind(row.deal_id)
            .bind(false)
            .bind(row.updated_at)
            .bind(row.contact_id)
        )?;
    }
    let sql = format!(
        "INSERT INTO deal_contacts (tenant_id, {DC_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (tenant_id, deal_id, contact_id) DO UPDATE SET is_primary = excluded.is_primary, \
         introduced_by = excluded.introduced_by, role = excluded.role, metadata = excluded.metadata, \
         updated_at = excluded.updated_at RETURNING {DC_COLUMNS}"
    );
    let out: DealContactRow = on_tx!(tx, c => sqlx::query_as(AssertSqlSafe(sql.clone()))
        .bind(tenant).bind(row.id).bind(row.deal_id).bind(row.contact_id).bind(row.is_primary).bind(row.introduced_by)
        .bind(&row.role).bind(&row.metadata).bind(row.created_at).bind(row.updated_at)
        .fetch_one(c).await)?;
    Ok(out)
}

/// Removes a deal contact; the removed row, if there was one.
pub async fn remove_deal_contact(tx: &mut Tx, tenant: Uuid, deal: Uuid, contact: Uuid) -> Result<Option<DealContactRow>> {
    let sql = format!("DELETE FROM deal_contacts WHERE tenant_id = $1 AND deal_id = $2 AND contact_id = $3 RETURNING {DC_COLUMNS}");
    let row = on_tx!(tx, c => sqlx::query_as(AssertSqlSafe(sql.clone()))
        .bind(tenant).bind(deal).bind(contact).fetch_optional(c).await)?;
    Ok(row)
}
