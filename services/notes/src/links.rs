//! The wikilink projection (`note_links`): one row per `[[link]]` in the current body of each
//! note, rebuilt whenever a note's body is written, resolved by title key and then kept by id.
//!
//! A link resolves to the oldest live note with its title key. Once resolved it keeps pointing
//! at that note through renames of either side and through a delete and restore of the target
//! (it shows as `dangling` meanwhile). An unresolved link resolves when a note with its title
//! appears (created, renamed or restored).

use std::collections::HashMap;

use sqlx::FromRow;
use uuid::Uuid;
use worktruck_kit::Result;
use worktruck_kit::db::Tx;
use worktruck_kit::{exec, on_tx};
use worktruck_proto::notes::v1 as pb;

use crate::markdown::{self, title_key};

/// A link row with what its reads add: the source's title, the target's state, and how many
/// live notes carry its title.
#[derive(Debug, FromRow)]
pub struct LinkRow {
    source_id: Uuid,
    source_title: String,
    position: i32,
    target_title: String,
    target_id: Option<Uuid>,
    heading: Option<String>,
    block: Option<String>,
    alias: Option<String>,
    context: String,
    status: i32,
    target_key: String,
}

impl LinkRow {
    /// The wire link; `same_title` is how many live notes carry its title.
    fn into_pb(self, same_title: i64) -> pb::NoteLink {
        pb::NoteLink {
            source_id: self.source_id.to_string(),
            source_title: self.source_title,
            target_title: self.target_title,
            target_id: self.target_id.map(|t| t.to_string()),
            heading: self.heading,
            block: self.block,
            alias: self.alias,
            status: self.status,
            ambiguous: same_title > 1,
            context: self.context,
            position: self.position,
            target: self.target_id.map(|t| format!("notes:note:{t}")),
            link_id: None,
            link_type: None,
        }
    }
}

/// A link row and what its reads add. The source and target heads are read by scalar
/// subqueries, each a primary-key probe whatever the statistics say: as joins, right after a
/// bulk load (no statistics yet), PostgreSQL scanned every note once per link, and a page of a
/// note with 1,000 backlinks took a second (`bench/`, `backlinks` phase).
const SELECT: &str = "SELECT l.source_id, l.position, l.target_title, l.target_id, l.heading, l.block, \
       l.alias, l.context, l.target_key, \
       (SELECT s.doc->>'title' FROM entity_heads s \
          WHERE s.tenant_id = l.tenant_id AND s.entity = 'note' AND s.id = l.source_id) AS source_title, \
       (SELECT s.updated_at FROM entity_heads s \
          WHERE s.tenant_id = l.tenant_id AND s.entity = 'note' AND s.id = l.source_id) AS source_updated_at, \
       (SELECT CASE WHEN s.deleted_at IS NULL THEN 1 ELSE 0 END FROM entity_heads s \
          WHERE s.tenant_id = l.tenant_id AND s.entity = 'note' AND s.id = l.source_id) AS source_live, \
       COALESCE((SELECT CASE WHEN t.deleted_at IS NULL THEN 1 ELSE 3 END FROM entity_heads t \
          WHERE t.tenant_id = l.tenant_id AND t.entity = 'note' AND t.id = l.target_id), 2) AS status \
     FROM note_links l WHERE l.tenant_id = $1";

/// The wire links of `rows`, each told whether its title is ambiguous. Counted per distinct
/// title of the page, after paging: counting per row inside the listing query made a page of
/// backlinks of a note with 1,000 of them take seconds (`bench/`, `backlinks` phase).
async fn finish(tx: &mut Tx, tenant: Uuid, rows: Vec<LinkRow>) -> Result<Vec<pb::NoteLink>> {
    let mut counts: HashMap<String, i64> = HashMap::new();
    for r in &rows {
        if !counts.contains_key(&r.target_key) {
            let n: i64 = on_tx!(tx, c => sqlx::query_scalar(
                "SELECT COUNT(*) FROM entity_heads WHERE tenant_id = $1 AND entity = 'note' \
                 AND deleted_at IS NULL AND doc->>'title_key' = $2")
                .bind(tenant).bind(&r.target_key).fetch_one(c).await)?;
            counts.insert(r.target_key.clone(), n);
        }
    }
    Ok(rows.into_iter().map(|r| {
        let n = counts.get(&r.target_key).copied().unwrap_or(0);
        r.into_pb(n)
    }).collect())
}

/// The oldest live note whose title has `key`.
pub async fn resolve(tx: &mut Tx, tenant: Uuid, key: &str) -> Result<Option<Uuid>> {
    let id: Option<Uuid> = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT id FROM entity_heads WHERE tenant_id = $1 AND entity = 'note' AND deleted_at IS NULL \
         AND doc->>'title_key' = $2 ORDER BY created_at, id LIMIT 1")
        .bind(tenant).bind(key).fetch_optional(c).await)?;
    Ok(id)
}

/// Rebuilds the links of `source` from `body`. A link keeps the target its title had before
/// (by id); `prefer` pins a title key to a note (a rewrite after a rename), else a new title
/// resolves by key.
/// Wikilinks whose text `cross` calls a reference into another domain (`[[contact:<id>]]`)
/// are kit's links, not rows here.
pub async fn sync(
    tx: &mut Tx,
    tenant: Uuid,
    source: Uuid,
    body: &str,
    prefer: Option<(&str, Uuid)>,
    cross: &(dyn Fn(&str) -> bool + Sync),
) -> Result<usize> {
    let before: Vec<(String, Option<Uuid>)> = on_tx!(tx, c => sqlx::query_as(
        "SELECT target_key, target_id FROM note_links WHERE tenant_id = $1 AND source_id = $2")
        .bind(tenant).bind(source).fetch_all(c).await)?;
    let mut known: HashMap<String, Uuid> =
        before.into_iter().filter_map(|(k, id)| id.map(|id| (k, id))).collect();
    if let Some((k, id)) = prefer {
        known.insert(k.to_owned(), id);
    }
    exec!(tx, sqlx::query("DELETE FROM note_links WHERE tenant_id = $1 AND source_id = $2").bind(tenant).bind(source))?;
    let mut links = markdown::wikilinks(body);
    links.retain(|l| !cross(&l.title));
    let mut resolved: HashMap<String, Option<Uuid>> = HashMap::new();
    for (position, link) in links.iter().enumerate() {
        let key = title_key(&link.title);
        let target = match known.get(&key) {
            Some(id) => Some(*id),
            None => match resolved.get(&key) {
                Some(t) => *t,
                None => {
                    let t = resolve(tx, tenant, &key).await?;
                    resolved.insert(key.clone(), t);
                    t
                }
            },
        };
        let position = i32::try_from(position).unwrap_or(i32::MAX);
        exec!(tx, sqlx::query(
            "INSERT INTO note_links (tenant_id, source_id, position, target_title, target_key, target_id, \
             heading, block, alias, context) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(tenant).bind(source).bind(position).bind(&link.title).bind(&key).bind(target)
            .bind(&link.heading).bind(&link.block).bind(&link.alias).bind(&link.context))?;
    }
    Ok(links.len())
}

/// Points the unresolved links whose title has `key` at `note`, which just took that title.
pub async fn attach(tx: &mut Tx, tenant: Uuid, key: &str, note: Uuid) -> Result<u64> {
    exec!(tx, sqlx::query(
        "UPDATE note_links SET target_id = $3 WHERE tenant_id = $1 AND target_key = $2 AND target_id IS NULL")
        .bind(tenant).bind(key).bind(note))
    .map_err(Into::into)
}

/// The links of `source`, in body order.
pub async fn outgoing(tx: &mut Tx, tenant: Uuid, source: Uuid) -> Result<Vec<pb::NoteLink>> {
    let sql = format!("{SELECT} AND l.source_id = $2 ORDER BY l.position");
    let rows: Vec<LinkRow> = on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
        .bind(tenant).bind(source).fetch_all(c).await)?;
    finish(tx, tenant, rows).await
}

/// The links from live notes to `target`, most recently updated sources first, from `offset`.
///
pub async fn backlinks(tx: &mut Tx, tenant: Uuid, target: Uuid, offset: i64, limit: i64) -> Result<Vec<pb::NoteLink>> {
    let sql = format!(
        "SELECT * FROM ({SELECT} AND l.target_id = $2) b WHERE b.source_live = 1 \
         ORDER BY b.source_updated_at DESC, b.source_id, b.position LIMIT $3 OFFSET $4"
    );
    let rows: Vec<LinkRow> = on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
        .bind(tenant).bind(target).bind(limit).bind(offset).fetch_all(c).await)?;
    finish(tx, tenant, rows).await
}

/// (live notes linking to `id`, links in `id`'s body).
pub async fn counts(tx: &mut Tx, tenant: Uuid, id: Uuid) -> Result<(i64, i64)> {
    let back: i64 = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT COUNT(DISTINCT l.source_id) FROM note_links l \
         JOIN entity_heads s ON s.tenant_id = l.tenant_id AND s.entity = 'note' AND s.id = l.source_id \
         WHERE l.tenant_id = $1 AND l.target_id = $2 AND s.deleted_at IS NULL")
        .bind(tenant).bind(id).fetch_one(c).await)?;
    let out: i64 = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT COUNT(*) FROM note_links WHERE tenant_id = $1 AND source_id = $2")
        .bind(tenant).bind(id).fetch_one(c).await)?;
    Ok((back, out))
}

/// The live notes linking to `target`, for rewriting their bodies.
pub async fn live_sources(tx: &mut Tx, tenant: Uuid, target: Uuid) -> Result<Vec<Uuid>> {
    let ids: Vec<Uuid> = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT DISTINCT l.source_id FROM note_links l \
         JOIN entity_heads s ON s.tenant_id = l.tenant_id AND s.entity = 'note' AND s.id = l.source_id \
         WHERE l.tenant_id = $1 AND l.target_id = $2 AND s.deleted_at IS NULL")
        .bind(tenant).bind(target).fetch_all(c).await)?;
    Ok(ids)
}

/// The title keys under which `source`'s body links to `target` (a target renamed since the
/// link was written is named by its old title).
pub async fn keys_to(tx: &mut Tx, tenant: Uuid, source: Uuid, target: Uuid) -> Result<Vec<String>> {
    let keys: Vec<String> = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT DISTINCT target_key FROM note_links WHERE tenant_id = $1 AND source_id = $2 AND target_id = $3")
        .bind(tenant).bind(source).bind(target).fetch_all(c).await)?;
    Ok(keys)
}
