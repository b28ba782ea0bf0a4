//! The note listings kit's generic store does not offer: filters on booleans and tags, and
//! full-text search ranked by relevance (PostgreSQL `ts_rank`, SQLite FTS5 `bm25`).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{AssertSqlSafe, FromRow};
use uuid::Uuid;
use worktruck_kit::Result;
use worktruck_kit::db::{Dialect, Tx};
use worktruck_kit::on_tx;
use worktruck_kit::store::Record;

/// Filters on current notes.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// In this notebook.
    pub notebook: Option<String>,
    /// With this tag id.
    pub tag: Option<String>,
    /// Pinned or not.
    pub pinned: Option<bool>,
    /// Archived or not.
    pub archived: Option<bool>,
    /// Changed at or after.
    pub updated_since: Option<DateTime<Utc>>,
}

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
        Record { id: r.id, version: r.version, created_at: r.created_at, updated_at: r.updated_at, deleted_at: None, doc: r.doc, temporal: None }
    }
}

enum Bind {
    Text(String),
    Time(DateTime<Utc>),
    Id(Uuid),
    Int(i64),
}

/// Appends the filters' conditions on `h` (entity_heads) to `sql`, numbering from `n`.
fn filters(dialect: Dialect, f: &Filter, sql: &mut String, binds: &mut Vec<Bind>) {
    let next = |binds: &mut Vec<Bind>, b: Bind| {
        binds.push(b);
        binds.len() + 1
    };
    if let Some(nb) = &f.notebook {
        let n = next(binds, Bind::Text(nb.clone()));
        sql.push_str(&format!(" AND h.doc->>'notebook_id' = ${n}"));
    }
    if let Some(tag) = &f.tag {
        let n = next(binds, Bind::Text(tag.clone()));
        sql.push_str(&match dialect {
            Dialect::Postgres => format!(" AND (h.doc->'tags') ? ${n}"),
            Dialect::Sqlite => format!(" AND EXISTS (SELECT 1 FROM json_each(h.doc, '$.tags') WHERE value = ${n})"),
        });
    }
    // Booleans read back as 'true'/'false' on PostgreSQL (->>) and from json_type on SQLite,
    // whose ->> gives 1/0.
    for (field, v) in [("is_pinned", f.pinned), ("is_archived", f.archived)] {
        if let Some(v) = v {
            let n = next(binds, Bind::Text(v.to_string()));
            sql.push_str(&match dialect {
                Dialect::Postgres => format!(" AND h.doc->>'{field}' = ${n}"),
                Dialect::Sqlite => format!(" AND json_type(h.doc, '$.{field}') = ${n}"),
            });
        }
    }
    if let Some(t) = f.updated_since {
        let n = next(binds, Bind::Time(t));
        sql.push_str(&format!(" AND h.updated_at >= ${n}"));
    }
}

async fn fetch(tx: &mut Tx, tenant: Uuid, sql: String, binds: Vec<Bind>) -> Result<Vec<Record>> {
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

/// Current notes, most recently updated first, after `(updated_at, id)`; `limit + 1` rows at
/// most, so the caller can tell whether a page follows.
pub async fn list(tx: &mut Tx, tenant: Uuid, f: &Filter, after: Option<(DateTime<Utc>, Uuid)>, limit: i64) -> Result<Vec<Record>> {
    let mut sql = String::from(
        "SELECT h.id, h.version, h.created_at, h.updated_at, h.doc FROM entity_heads h \
         WHERE h.tenant_id = $1 AND h.entity = 'note' AND h.deleted_at IS NULL",
    );
    let mut binds = Vec::new();
    filters(tx.dialect(), f, &mut sql, &mut binds);
    if let Some((t, id)) = after {
        binds.push(Bind::Time(t));
        binds.push(Bind::Id(id));
        sql.push_str(&format!(" AND (h.updated_at, h.id) < (${}, ${})", binds.len(), binds.len() + 1));
    }
    binds.push(Bind::Int(limit + 1));
    sql.push_str(&format!(" ORDER BY h.updated_at DESC, h.id DESC LIMIT ${}", binds.len() + 1));
    fetch(tx, tenant, sql, binds).await
}

/// Current notes matching the full-text query `query` (already in the dialect's syntax, from
/// `kit::store::search_query`), best first, from `offset`; `limit + 1` rows at most.
pub async fn search(tx: &mut Tx, tenant: Uuid, query: &str, f: &Filter, offset: i64, limit: i64) -> Result<Vec<Record>> {
    let dialect = tx.dialect();
    let mut binds = vec![Bind::Text(query.to_owned())];
    let mut sql = match dialect {
        Dialect::Postgres => String::from(
            "SELECT h.id, h.version, h.created_at, h.updated_at, h.doc FROM entity_heads h \
             WHERE h.tenant_id = $1 AND h.entity = 'note' AND h.deleted_at IS NULL \
               AND h.search @@ to_tsquery('simple', $2)",
        ),
        Dialect::Sqlite => String::from(
            "SELECT h.id, h.version, h.created_at, h.updated_at, h.doc FROM entity_heads_fts f \
             JOIN entity_heads h ON h.rid = f.rowid \
             WHERE f.entity_heads_fts MATCH $2 AND h.tenant_id = $1 AND h.entity = 'note' AND h.deleted_at IS NULL",
        ),
    };
    filters(dialect, f, &mut sql, &mut binds);
    sql.push_str(match dialect {
        Dialect::Postgres => " ORDER BY ts_rank(h.search, to_tsquery('simple', $2)) DESC, h.updated_at DESC, h.id DESC",
        Dialect::Sqlite => " ORDER BY bm25(entity_heads_fts) ASC, h.updated_at DESC, h.id DESC",
    });
    binds.push(Bind::Int(limit + 1));
    binds.push(Bind::Int(offset));
    sql.push_str(&format!(" LIMIT ${} OFFSET ${}", binds.len(), binds.len() + 1));
    fetch(tx, tenant, sql, binds).await
}

/// Live notes directly in `notebook`.
pub async fn note_count(tx: &mut Tx, tenant: Uuid, notebook: Uuid) -> Result<i64> {
    let n: i64 = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT COUNT(*) FROM entity_heads WHERE tenant_id = $1 AND entity = 'note' AND deleted_at IS NULL \
         AND doc->>'notebook_id' = $2")
        .bind(tenant).bind(notebook.to_string()).fetch_one(c).await)?;
    Ok(n)
}

/// Live notebooks directly inside `notebook`.
pub async fn child_count(tx: &mut Tx, tenant: Uuid, notebook: Uuid) -> Result<i64> {
    let n: i64 = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT COUNT(*) FROM entity_heads WHERE tenant_id = $1 AND entity = 'notebook' AND deleted_at IS NULL \
         AND doc->>'parent_id' = $2")
        .bind(tenant).bind(notebook.to_string()).fetch_one(c).await)?;
    Ok(n)
}

/// Every live record of `entity` (notebooks and tags, which a tenant has few of), by id.
pub async fn all(tx: &mut Tx, tenant: Uuid, entity: &str) -> Result<Vec<Record>> {
    let rows: Vec<Row> = on_tx!(tx, c => sqlx::query_as(
        "SELECT id, version, created_at, updated_at, doc FROM entity_heads \
         WHERE tenant_id = $1 AND entity = $2 AND deleted_at IS NULL ORDER BY id LIMIT 10000")
        .bind(tenant).bind(entity).fetch_all(c).await)?;
    Ok(rows.into_iter().map(Record::from).collect())
}

/// The live tag whose key is `key`.
pub async fn tag_by_key(tx: &mut Tx, tenant: Uuid, key: &str) -> Result<Option<Uuid>> {
    let id: Option<Uuid> = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT id FROM entity_heads WHERE tenant_id = $1 AND entity = 'tag' AND deleted_at IS NULL \
         AND doc->>'key' = $2 LIMIT 1")
        .bind(tenant).bind(key).fetch_optional(c).await)?;
    Ok(id)
}
