//! The SQL kit's generic store does not offer: window reads on `span_start`/`span_end`, a
//! series' exceptions, calendar lookups and search in start order. Identical on both backends
//! except where a dialect branch says otherwise.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{AssertSqlSafe, FromRow};
use uuid::Uuid;
use worktruck_kit::db::{Dialect, Tx};
use worktruck_kit::store::Record;
use worktruck_kit::{Result, on_tx};

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

/// A value bound to a built query.
#[derive(Debug, Clone)]
enum Bind {
    Text(String),
    Id(Uuid),
    Int(i64),
}

fn push(binds: &mut Vec<Bind>, b: Bind) -> usize {
    binds.push(b);
    binds.len()
}

async fn fetch(tx: &mut Tx, sql: String, binds: Vec<Bind>) -> Result<Vec<Record>> {
    let rows: Vec<Row> = on_tx!(tx, c => {
        let mut q = sqlx::query_as::<_, Row>(AssertSqlSafe(sql.clone()));
        for b in &binds {
            q = match b {
                Bind::Text(s) => q.bind(s.clone()),
                Bind::Id(id) => q.bind(*id),
                Bind::Int(i) => q.bind(*i),
            };
        }
        q.fetch_all(c).await
    })?;
    Ok(rows.into_iter().map(Record::from).collect())
}

const SELECT: &str = "SELECT h.id, h.version, h.created_at, h.updated_at, h.doc FROM entity_heads h \
                      WHERE h.tenant_id = $1 AND h.entity = $2 AND h.deleted_at IS NULL";

/// What a window read filters on.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// Only this calendar.
    pub calendar: Option<String>,
    /// Events whose span ends after this moment ([`crate::domain::fmt_ts`]).
    pub from: Option<String>,
    /// Events whose span starts before this moment.
    pub to: Option<String>,
    /// Full-text query in the dialect's syntax.
    pub search: Option<String>,
}

/// Live events matching `w`, by start then id (`limit + 1` rows from `offset`; every row when
/// `limit` is `None`).
pub async fn events(tx: &mut Tx, tenant: Uuid, w: &Window, offset: i64, limit: Option<i64>) -> Result<Vec<Record>> {
    let dialect = tx.dialect();
    let mut binds = vec![Bind::Id(tenant), Bind::Text("event".into())];
    let mut sql = String::from(SELECT);
    if let Some(c) = &w.calendar {
        let n = push(&mut binds, Bind::Text(c.clone()));
        sql.push_str(&format!(" AND h.doc->>'calendar_id' = ${n}"));
    }
    if let Some(to) = &w.to {
        let n = push(&mut binds, Bind::Text(to.clone()));
        sql.push_str(&format!(" AND h.doc->>'span_start' < ${n}"));
    }
    if let Some(from) = &w.from {
        let n = push(&mut binds, Bind::Text(from.clone()));
        sql.push_str(&format!(" AND h.doc->>'span_end' > ${n}"));
    }
    if let Some(q) = &w.search {
        let n = push(&mut binds, Bind::Text(q.clone()));
        sql.push_str(&match dialect {
            Dialect::Postgres => format!(" AND h.search @@ to_tsquery('simple', ${n})"),
            Dialect::Sqlite => {
                format!(" AND h.rid IN (SELECT rowid FROM entity_heads_fts WHERE entity_heads_fts MATCH ${n})")
            }
        });
        sql.push_str(" ORDER BY h.updated_at DESC, h.id DESC");
    } else {
        sql.push_str(" ORDER BY h.doc->>'span_start' ASC, h.id ASC");
    }
    if let Some(limit) = limit {
        let l = push(&mut binds, Bind::Int(limit + 1));
        let o = push(&mut binds, Bind::Int(offset));
        sql.push_str(&format!(" LIMIT ${l} OFFSET ${o}"));
    }
    fetch(tx, sql, binds).await
}

/// The live exceptions of the series `ids`.
pub async fn exceptions(tx: &mut Tx, tenant: Uuid, ids: &[Uuid]) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for chunk in ids.chunks(500) {
        let mut binds = vec![Bind::Id(tenant), Bind::Text("event".into())];
        let mut marks = Vec::new();
        for id in chunk {
            marks.push(format!("${}", push(&mut binds, Bind::Text(id.to_string()))));
        }
        let sql = format!("{SELECT} AND h.doc->>'series_id' IN ({})", marks.join(", "));
        out.extend(fetch(tx, sql, binds).await?);
    }
    Ok(out)
}

/// The tenant's live calendars.
pub async fn calendars(tx: &mut Tx, tenant: Uuid) -> Result<Vec<Record>> {
    let binds = vec![Bind::Id(tenant), Bind::Text("calendar".into())];
    fetch(tx, format!("{SELECT} ORDER BY h.created_at ASC, h.id ASC"), binds).await
}

/// Whether the calendar holds a live event.
pub async fn has_events(tx: &mut Tx, tenant: Uuid, calendar: Uuid) -> Result<bool> {
    let binds = vec![Bind::Id(tenant), Bind::Text("event".into()), Bind::Text(calendar.to_string())];
    Ok(!fetch(tx, format!("{SELECT} AND h.doc->>'calendar_id' = $3 LIMIT 1"), binds).await?.is_empty())
}

/// The live attendees of an event, oldest first.
pub async fn attendees(tx: &mut Tx, tenant: Uuid, event: Uuid) -> Result<Vec<Record>> {
    let binds = vec![Bind::Id(tenant), Bind::Text("attendee".into()), Bind::Text(event.to_string())];
    fetch(tx, format!("{SELECT} AND h.doc->>'event_id' = $3 ORDER BY h.created_at ASC, h.id ASC"), binds).await
}

/// The live attendees of the events `ids`.
pub async fn attendees_of(tx: &mut Tx, tenant: Uuid, ids: &[Uuid]) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for chunk in ids.chunks(500) {
        let mut binds = vec![Bind::Id(tenant), Bind::Text("attendee".into())];
        let mut marks = Vec::new();
        for id in chunk {
            marks.push(format!("${}", push(&mut binds, Bind::Text(id.to_string()))));
        }
        let sql = format!("{SELECT} AND h.doc->>'event_id' IN ({})", marks.join(", "));
        out.extend(fetch(tx, sql, binds).await?);
    }
    Ok(out)
}
