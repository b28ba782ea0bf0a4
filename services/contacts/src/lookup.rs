//! `contacts_lookup`: the current-state rows that answer "which live contacts (relationships,
//! interactions) have X" — canonical channel values, tag, group and organization membership,
//! dates, cadences, relationship ends, interaction participants — replaced as a whole in the
//! transaction that writes their owner. And the contact listings that filter on them.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{AssertSqlSafe, FromRow};
use uuid::Uuid;
use worktruck_kit::Result;
use worktruck_kit::db::{Dialect, Tx};
use worktruck_kit::store::Record;
use worktruck_kit::{exec, on_tx};

use crate::domain::ContactDoc;

/// One lookup row of an owner: (kind, key).
pub type Key = (String, String);

/// The lookup rows of a live contact.
pub fn contact_keys(doc: &ContactDoc) -> BTreeSet<Key> {
    let mut k = BTreeSet::new();
    for c in &doc.channels {
        k.insert((c.kind.clone(), c.canonical_value.clone()));
    }
    for t in &doc.tag_ids {
        k.insert(("tag".into(), t.clone()));
    }
    for g in &doc.group_ids {
        k.insert(("group".into(), g.clone()));
    }
    for a in &doc.affiliations {
        k.insert(("org".into(), a.organization_id.clone()));
    }
    for d in &doc.dates {
        k.insert(("date".into(), format!("{:02}-{:02}", d.date_month, d.date_day)));
    }
    if doc.stay_in_touch_days.is_some() {
        k.insert(("stay".into(), String::new()));
    }
    k
}

/// Replaces the lookup rows of `owner` with `keys` (none for a deleted owner).
pub async fn sync(tx: &mut Tx, tenant: Uuid, owner: Uuid, keys: &BTreeSet<Key>) -> Result<()> {
    exec!(tx, sqlx::query("DELETE FROM contacts_lookup WHERE tenant_id = $1 AND owner_id = $2").bind(tenant).bind(owner))?;
    for (kind, key) in keys {
        exec!(
            tx,
            sqlx::query("INSERT INTO contacts_lookup (tenant_id, kind, key, owner_id) VALUES ($1, $2, $3, $4)")
                .bind(tenant)
                .bind(kind)
                .bind(key)
                .bind(owner)
        )?;
    }
    Ok(())
}

/// The owners with the row (kind, key), by id.
pub async fn owners(tx: &mut Tx, tenant: Uuid, kind: &str, key: &str) -> Result<Vec<Uuid>> {
    let ids: Vec<Uuid> = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT owner_id FROM contacts_lookup WHERE tenant_id = $1 AND kind = $2 AND key = $3 ORDER BY owner_id LIMIT 10000")
        .bind(tenant).bind(kind).bind(key).fetch_all(c).await)?;
    Ok(ids)
}

/// Every (key, owner) of `kind`.
pub async fn all_of_kind(tx: &mut Tx, tenant: Uuid, kind: &str) -> Result<Vec<(String, Uuid)>> {
    let rows: Vec<(String, Uuid)> = on_tx!(tx, c => sqlx::query_as(
        "SELECT key, owner_id FROM contacts_lookup WHERE tenant_id = $1 AND kind = $2 ORDER BY key, owner_id LIMIT 100000")
        .bind(tenant).bind(kind).fetch_all(c).await)?;
    Ok(rows)
}

/// Keys of `kinds` shared by more than one owner: (kind, key, owners).
pub async fn shared_keys(tx: &mut Tx, tenant: Uuid, kinds: &[&str]) -> Result<Vec<(String, String, Vec<Uuid>)>> {
    let mut out = Vec::new();
    for kind in kinds {
        let rows = all_of_kind(tx, tenant, kind).await?;
        let mut i = 0;
        while i < rows.len() {
            let mut j = i + 1;
            while j < rows.len() && rows[j].0 == rows[i].0 {
                j += 1;
            }
            if j - i > 1 {
                out.push(((*kind).to_owned(), rows[i].0.clone(), rows[i..j].iter().map(|r| r.1).collect()));
            }
            i = j;
        }
    }
    Ok(out)
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

/// Live heads of `entity` by id (missing ones left out).
pub async fn heads(tx: &mut Tx, tenant: Uuid, entity: &str, ids: &[Uuid]) -> Result<Vec<Record>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let row: Option<Row> = on_tx!(tx, c => sqlx::query_as(
            "SELECT id, version, created_at, updated_at, doc FROM entity_heads \
             WHERE tenant_id = $1 AND entity = $2 AND id = $3 AND deleted_at IS NULL")
            .bind(tenant).bind(entity).bind(*id).fetch_optional(c).await)?;
        out.extend(row.map(Record::from));
    }
    Ok(out)
}

/// Every live record of `entity` (tags, groups, custom types: a tenant has few), by id.
pub async fn all(tx: &mut Tx, tenant: Uuid, entity: &str) -> Result<Vec<Record>> {
    let rows: Vec<Row> = on_tx!(tx, c => sqlx::query_as(
        "SELECT id, version, created_at, updated_at, doc FROM entity_heads \
         WHERE tenant_id = $1 AND entity = $2 AND deleted_at IS NULL ORDER BY id LIMIT 10000")
        .bind(tenant).bind(entity).fetch_all(c).await)?;
    Ok(rows.into_iter().map(Record::from).collect())
}

/// The live record of `entity` whose `doc->>field` is `value`.
pub async fn by_field(tx: &mut Tx, tenant: Uuid, entity: &str, field: &'static str, value: &str) -> Result<Option<Record>> {
    // The entity is written into the statement (names come from code, never from callers) so
    // that PostgreSQL can prove a partial index `WHERE entity = '…'` applies, generic plan or not.
    let entity: String = entity.chars().filter(|c| c.is_ascii_lowercase() || *c == '_').collect();
    let sql = format!(
        "SELECT id, version, created_at, updated_at, doc FROM entity_heads \
         WHERE tenant_id = $1 AND entity = '{entity}' AND deleted_at IS NULL AND doc->>'{field}' = $2 \
         ORDER BY created_at, id LIMIT 1"
    );
    let row: Option<Row> = on_tx!(tx, c => sqlx::query_as(AssertSqlSafe(sql.clone()))
        .bind(tenant).bind(value).fetch_optional(c).await)?;
    Ok(row.map(Record::from))
}

/// Filters of a current contact listing.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `kind` equals.
    pub kind: Option<String>,
    /// Full-text query, in the dialect's syntax.
    pub search: Option<String>,
    /// Lookup rows the contact must have: (kind, key).
    pub has: Vec<(&'static str, String)>,
    /// Changed at or after.
    pub updated_since: Option<DateTime<Utc>>,
}

enum Bind {
    Text(String),
    Time(DateTime<Utc>),
    Id(Uuid),
    Int(i64),
}

/// Current contacts, most recently updated first, after `(updated_at, id)`; `limit + 1` rows.
pub async fn list(tx: &mut Tx, tenant: Uuid, f: &Filter, after: Option<(DateTime<Utc>, Uuid)>, limit: i64) -> Result<Vec<Record>> {
    let mut sql = String::from(
        "SELECT h.id, h.version, h.created_at, h.updated_at, h.doc FROM entity_heads h \
         WHERE h.tenant_id = $1 AND h.entity = 'contact' AND h.deleted_at IS NULL",
    );
    let mut binds: Vec<Bind> = Vec::new();
    let push = |binds: &mut Vec<Bind>, b: Bind| {
        binds.push(b);
        binds.len() + 1
    };
    if let Some(k) = &f.kind {
        let n = push(&mut binds, Bind::Text(k.clone()));
        sql.push_str(&format!(" AND h.doc->>'kind' = ${n}"));
    }
    for (kind, key) in &f.has {
        let a = push(&mut binds, Bind::Text((*kind).to_owned()));
        let b = push(&mut binds, Bind::Text(key.clone()));
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM contacts_lookup l WHERE l.tenant_id = h.tenant_id AND l.owner_id = h.id \
               AND l.kind = ${a} AND l.key = ${b})"
        ));
    }
    if let Some(s) = &f.search {
        let n = push(&mut binds, Bind::Text(s.clone()));
        sql.push_str(&match tx.dialect() {
            Dialect::Postgres => format!(" AND h.search @@ to_tsquery('simple', ${n})"),
            Dialect::Sqlite => format!(" AND h.rid IN (SELECT rowid FROM entity_heads_fts WHERE entity_heads_fts MATCH ${n})"),
        });
    }
    if let Some(t) = f.updated_since {
        let n = push(&mut binds, Bind::Time(t));
        sql.push_str(&format!(" AND h.updated_at >= ${n}"));
    }
    if let Some((t, id)) = after {
        let a = push(&mut binds, Bind::Time(t));
        let b = push(&mut binds, Bind::Id(id));
        sql.push_str(&format!(" AND (h.updated_at, h.id) < (${a}, ${b})"));
    }
    let n = push(&mut binds, Bind::Int(limit + 1));
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

/// The head of `entity` `id`, live or deleted: (version, deleted, doc).
pub async fn head_any(tx: &mut Tx, tenant: Uuid, entity: &str, id: Uuid) -> Result<Option<(i64, bool, Value)>> {
    let row: Option<(i64, Option<DateTime<Utc>>, Value)> = on_tx!(tx, c => sqlx::query_as(
        "SELECT version, deleted_at, doc FROM entity_heads WHERE tenant_id = $1 AND entity = $2 AND id = $3")
        .bind(tenant).bind(entity).bind(id).fetch_optional(c).await)?;
    Ok(row.map(|(v, d, doc)| (v, d.is_some(), doc)))
}
