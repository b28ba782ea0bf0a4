//! The SQL kit's generic store does not offer: identifier counters and lookups, dependency
//! edges, counts, task listings with the filters and sorts, labels, comments and the
//! tenant's settings. Identical on both backends except where a dialect branch says otherwise.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{AssertSqlSafe, FromRow};
use uuid::Uuid;
use worktruck_kit::db::{Dialect, Tx};
use worktruck_kit::store::Record;
use worktruck_kit::{Result, exec, on_tx};

/// A task that is not completed or canceled, as SQL on `h`.
pub const OPEN: &str = "h.doc->>'status_category' NOT IN ('completed', 'canceled')";

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
pub enum Bind {
    /// Text.
    Text(String),
    /// An id.
    Id(Uuid),
    /// An integer.
    Int(i64),
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

/// Takes `prefix` for `project` with its first number 1; `already_exists` when the tenant ever
/// used it.
pub async fn take_prefix(tx: &mut Tx, tenant: Uuid, prefix: &str, project: Uuid) -> Result<()> {
    exec!(
        tx,
        sqlx::query("INSERT INTO project_prefixes (tenant_id, prefix, project_id, next_number) VALUES ($1, $2, $3, 1)")
            .bind(tenant)
            .bind(prefix)
            .bind(project)
    )?;
    Ok(())
}

/// The number the project's next task gets.
pub async fn next_number(tx: &mut Tx, tenant: Uuid, project: Uuid) -> Result<i64> {
    let n: Option<i64> = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT next_number FROM project_prefixes WHERE tenant_id = $1 AND project_id = $2")
        .bind(tenant).bind(project).fetch_optional(c).await)?;
    Ok(n.unwrap_or(1))
}

/// Allocates the project's next task number in this transaction. The update locks the
/// counter's row until the transaction ends (SQLite's write transaction holds the file), so
/// concurrent creates queue, and a rolled-back create gives its number back.
pub async fn allocate_number(tx: &mut Tx, tenant: Uuid, project: Uuid) -> Result<i64> {
    let n: i64 = on_tx!(tx, c => sqlx::query_scalar(
        "UPDATE project_prefixes SET next_number = next_number + 1 WHERE tenant_id = $1 AND project_id = $2 \
         RETURNING next_number - 1")
        .bind(tenant).bind(project).fetch_one(c).await)?;
    Ok(n)
}

/// Locks the project's counter row until the transaction ends, so no create can number a
/// task into it meanwhile (a project delete takes it before counting the project's tasks).
pub async fn lock_counter(tx: &mut Tx, tenant: Uuid, project: Uuid) -> Result<()> {
    exec!(
        tx,
        sqlx::query("UPDATE project_prefixes SET next_number = next_number WHERE tenant_id = $1 AND project_id = $2")
            .bind(tenant)
            .bind(project)
    )?;
    Ok(())
}

/// Records that `identifier` names `task` (for good).
pub async fn add_identifier(tx: &mut Tx, tenant: Uuid, identifier: &str, task: Uuid) -> Result<()> {
    exec!(
        tx,
        sqlx::query("INSERT INTO task_identifiers (tenant_id, identifier, task_id) VALUES ($1, $2, $3)")
            .bind(tenant)
            .bind(identifier)
            .bind(task)
    )?;
    Ok(())
}

/// The task `identifier` names, if any.
pub async fn task_by_identifier(tx: &mut Tx, tenant: Uuid, identifier: &str) -> Result<Option<Uuid>> {
    let id: Option<Uuid> = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT task_id FROM task_identifiers WHERE tenant_id = $1 AND identifier = $2")
        .bind(tenant).bind(identifier).fetch_optional(c).await)?;
    Ok(id)
}

/// Adds a dependency edge (a no-op when it exists).
pub async fn add_edge(tx: &mut Tx, tenant: Uuid, from: Uuid, to: Uuid, kind: &str, t: DateTime<Utc>) -> Result<bool> {
    let n = exec!(tx, sqlx::query(
        "INSERT INTO task_dependencies (tenant_id, task_id, other_id, kind, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT DO NOTHING")
        .bind(tenant).bind(from).bind(to).bind(kind).bind(t))?;
    Ok(n > 0)
}

/// Removes every edge between `a` and `b`; how many went.
pub async fn remove_edges(tx: &mut Tx, tenant: Uuid, a: Uuid, b: Uuid) -> Result<u64> {
    let n = exec!(tx, sqlx::query(
        "DELETE FROM task_dependencies WHERE tenant_id = $1 AND ((task_id = $2 AND other_id = $3) OR (task_id = $3 AND other_id = $2))")
        .bind(tenant).bind(a).bind(b))?;
    Ok(n)
}

/// One stored edge.
#[derive(Debug, Clone, FromRow)]
pub struct Edge {
    /// From.
    pub task_id: Uuid,
    /// To.
    pub other_id: Uuid,
    /// blocks, related or duplicate.
    pub kind: String,
    /// When added.
    pub created_at: DateTime<Utc>,
}

/// Every edge touching `task` whose other end is a live task, oldest first.
pub async fn edges_of(tx: &mut Tx, tenant: Uuid, task: Uuid) -> Result<Vec<Edge>> {
    let rows: Vec<Edge> = on_tx!(tx, c => sqlx::query_as(
        "SELECT d.task_id, d.other_id, d.kind, d.created_at FROM task_dependencies d \
         JOIN entity_heads h ON h.tenant_id = d.tenant_id AND h.entity = 'task' AND h.deleted_at IS NULL \
           AND h.id = CASE WHEN d.task_id = $2 THEN d.other_id ELSE d.task_id END \
         WHERE d.tenant_id = $1 AND (d.task_id = $2 OR d.other_id = $2) ORDER BY d.created_at, d.kind")
        .bind(tenant).bind(task).fetch_all(c).await)?;
    Ok(rows)
}

/// The tasks `task` blocks directly (blocking edges out of it).
pub async fn blocked_by_edge(tx: &mut Tx, tenant: Uuid, task: Uuid) -> Result<Vec<Uuid>> {
    let rows: Vec<Uuid> = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT other_id FROM task_dependencies WHERE tenant_id = $1 AND task_id = $2 AND kind = 'blocks'")
        .bind(tenant).bind(task).fetch_all(c).await)?;
    Ok(rows)
}

/// Which of `tasks` have an open live blocker.
pub async fn blocked(tx: &mut Tx, tenant: Uuid, tasks: &[Uuid]) -> Result<HashSet<Uuid>> {
    let mut out = HashSet::new();
    for chunk in tasks.chunks(100) {
        let list = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT DISTINCT d.other_id FROM task_dependencies d JOIN entity_heads h \
               ON h.tenant_id = d.tenant_id AND h.entity = 'task' AND h.id = d.task_id AND h.deleted_at IS NULL \
             WHERE d.tenant_id = $1 AND d.kind = 'blocks' AND {OPEN} AND d.other_id IN ({list})"
        );
        let rows: Vec<Uuid> = on_tx!(tx, c => {
            let mut q = sqlx::query_scalar::<_, Uuid>(AssertSqlSafe(sql.clone())).bind(tenant);
            for id in chunk { q = q.bind(*id); }
            q.fetch_all(c).await
        })?;
        out.extend(rows);
    }
    Ok(out)
}

/// Live direct subtasks of each of `parents`: (all, done).
pub async fn child_counts(tx: &mut Tx, tenant: Uuid, parents: &[Uuid]) -> Result<HashMap<Uuid, (i64, i64)>> {
    let mut out = HashMap::new();
    for chunk in parents.chunks(100) {
        let list = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT h.doc->>'parent_id' AS parent, COUNT(*) AS n, \
               SUM(CASE WHEN {OPEN} THEN 0 ELSE 1 END) AS done \
             FROM entity_heads h WHERE h.tenant_id = $1 AND h.entity = 'task' AND h.deleted_at IS NULL \
               AND h.doc->>'parent_id' IN ({list}) GROUP BY h.doc->>'parent_id'"
        );
        let rows: Vec<(String, i64, i64)> = on_tx!(tx, c => {
            let mut q = sqlx::query_as::<_, (String, i64, i64)>(AssertSqlSafe(sql.clone())).bind(tenant);
            for id in chunk { q = q.bind(id.to_string()); }
            q.fetch_all(c).await
        })?;
        for (p, n, d) in rows {
            if let Ok(p) = Uuid::parse_str(&p) {
                out.insert(p, (n, d));
            }
        }
    }
    Ok(out)
}

/// Live comments on each of `tasks`.
pub async fn comment_counts(tx: &mut Tx, tenant: Uuid, tasks: &[Uuid]) -> Result<HashMap<Uuid, i64>> {
    let mut out = HashMap::new();
    for chunk in tasks.chunks(100) {
        let list = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT h.doc->>'task_id' AS task, COUNT(*) AS n FROM entity_heads h \
             WHERE h.tenant_id = $1 AND h.entity = 'comment' AND h.deleted_at IS NULL \
               AND h.doc->>'task_id' IN ({list}) GROUP BY h.doc->>'task_id'"
        );
        let rows: Vec<(String, i64)> = on_tx!(tx, c => {
            let mut q = sqlx::query_as::<_, (String, i64)>(AssertSqlSafe(sql.clone())).bind(tenant);
            for id in chunk { q = q.bind(id.to_string()); }
            q.fetch_all(c).await
        })?;
        for (t, n) in rows {
            if let Ok(t) = Uuid::parse_str(&t) {
                out.insert(t, n);
            }
        }
    }
    Ok(out)
}

/// Live direct subtasks of `parent`, by position.
pub async fn children(tx: &mut Tx, tenant: Uuid, parent: Uuid) -> Result<Vec<Record>> {
    fetch(
        tx,
        "SELECT h.id, h.version, h.created_at, h.updated_at, h.doc FROM entity_heads h \
         WHERE h.tenant_id = $1 AND h.entity = 'task' AND h.deleted_at IS NULL AND h.doc->>'parent_id' = $2 \
         ORDER BY CAST(h.doc->>'position' AS INTEGER), h.created_at, h.id LIMIT 1000"
            .to_owned(),
        vec![Bind::Id(tenant), Bind::Text(parent.to_string())],
    )
    .await
}

/// Live tasks of a project per milestone: (all, completed).
pub async fn milestone_counts(tx: &mut Tx, tenant: Uuid, project: Uuid) -> Result<HashMap<String, (i64, i64)>> {
    let rows: Vec<(String, i64, i64)> = on_tx!(tx, c => sqlx::query_as(
        "SELECT h.doc->>'milestone_id' AS m, COUNT(*) AS n, \
           SUM(CASE WHEN h.doc->>'status_category' = 'completed' THEN 1 ELSE 0 END) AS done \
         FROM entity_heads h WHERE h.tenant_id = $1 AND h.entity = 'task' AND h.deleted_at IS NULL \
           AND h.doc->>'project_id' = $2 AND h.doc->>'milestone_id' IS NOT NULL GROUP BY h.doc->>'milestone_id'")
        .bind(tenant).bind(project.to_string()).fetch_all(c).await)?;
    Ok(rows.into_iter().map(|(m, n, d)| (m, (n, d))).collect())
}

/// Live tasks whose `field` is `value`.
pub async fn count_tasks(tx: &mut Tx, tenant: Uuid, field: &'static str, value: &str) -> Result<i64> {
    let sql = format!(
        "SELECT COUNT(*) FROM entity_heads h WHERE h.tenant_id = $1 AND h.entity = 'task' AND h.deleted_at IS NULL \
         AND h.doc->>'{field}' = $2"
    );
    let n: i64 =
        on_tx!(tx, c => sqlx::query_scalar(AssertSqlSafe(sql.clone())).bind(tenant).bind(value).fetch_one(c).await)?;
    Ok(n)
}

/// Every live record of `entity` (projects and labels, which a tenant has few of), by id.
pub async fn all(tx: &mut Tx, tenant: Uuid, entity: &str) -> Result<Vec<Record>> {
    fetch(
        tx,
        "SELECT h.id, h.version, h.created_at, h.updated_at, h.doc FROM entity_heads h \
         WHERE h.tenant_id = $1 AND h.entity = $2 AND h.deleted_at IS NULL ORDER BY h.id LIMIT 10000"
            .to_owned(),
        vec![Bind::Id(tenant), Bind::Text(entity.to_owned())],
    )
    .await
}

/// Live comments of `task`, oldest first.
pub async fn comments(tx: &mut Tx, tenant: Uuid, task: Uuid) -> Result<Vec<Record>> {
    fetch(
        tx,
        "SELECT h.id, h.version, h.created_at, h.updated_at, h.doc FROM entity_heads h \
         WHERE h.tenant_id = $1 AND h.entity = 'comment' AND h.deleted_at IS NULL AND h.doc->>'task_id' = $2 \
         ORDER BY h.created_at, h.id LIMIT 10000"
            .to_owned(),
        vec![Bind::Id(tenant), Bind::Text(task.to_string())],
    )
    .await
}

/// The live label whose key is `key`.
pub async fn label_by_key(tx: &mut Tx, tenant: Uuid, key: &str) -> Result<Option<Uuid>> {
    let id: Option<Uuid> = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT id FROM entity_heads WHERE tenant_id = $1 AND entity = 'label' AND deleted_at IS NULL \
         AND doc->>'key' = $2 LIMIT 1")
        .bind(tenant).bind(key).fetch_optional(c).await)?;
    Ok(id)
}

/// The tenant's time zone setting.
pub async fn time_zone(tx: &mut Tx, tenant: Uuid) -> Result<Option<String>> {
    let tz: Option<String> = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT time_zone FROM task_settings WHERE tenant_id = $1").bind(tenant).fetch_optional(c).await)?;
    Ok(tz)
}

/// Sets the tenant's time zone.
pub async fn set_time_zone(tx: &mut Tx, tenant: Uuid, tz: &str) -> Result<()> {
    exec!(
        tx,
        sqlx::query(
            "INSERT INTO task_settings (tenant_id, time_zone) VALUES ($1, $2) \
         ON CONFLICT (tenant_id) DO UPDATE SET time_zone = excluded.time_zone"
        )
        .bind(tenant)
        .bind(tz)
    )?;
    Ok(())
}

/// How a listing is sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Most recently updated first.
    #[default]
    Updated,
    /// Most urgent first.
    Priority,
    /// Soonest due first, undated last.
    Due,
    /// By position.
    Position,
}

/// Filters on current tasks. Ids are the stored (text) forms.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `doc->>field = value` conditions; field names come from code.
    pub equals: Vec<(&'static str, String)>,
    /// Only top-level tasks.
    pub top_level: bool,
    /// With this priority.
    pub priority: Option<i64>,
    /// With this label id.
    pub label: Option<String>,
    /// Due before: (moment as stored, the last date-only due date that counts).
    pub due_before: Option<(String, String)>,
    /// Due at or after: (moment as stored, the last date-only due date that does not count).
    pub due_after: Option<(String, String)>,
    /// Overdue or not: (now as stored, today's date in the tenant's time zone).
    pub overdue: Option<(bool, String, String)>,
    /// Blocked or not.
    pub is_blocked: Option<bool>,
    /// Open tasks only.
    pub open_only: bool,
    /// Full-text query in the dialect's syntax (`kit::store::search_query`).
    pub search: Option<String>,
}

/// The overdue condition on `h`, binding `now` and `today` as `$a`, `$b`.
fn overdue_sql(a: usize, b: usize) -> String {
    format!(
        "({OPEN} AND ((h.doc->>'due_at' IS NOT NULL AND h.doc->>'due_at' < ${a}) \
          OR (h.doc->>'due_date' IS NOT NULL AND h.doc->>'due_date' < ${b})))"
    )
}

/// Current tasks matching `f`, sorted, from `offset`; `limit + 1` rows at most so the caller
/// can tell whether a page follows.
pub async fn list(tx: &mut Tx, tenant: Uuid, f: &Filter, sort: Sort, offset: i64, limit: i64) -> Result<Vec<Record>> {
    let dialect = tx.dialect();
    let mut binds = vec![Bind::Id(tenant)];
    let mut sql = String::from(
        "SELECT h.id, h.version, h.created_at, h.updated_at, h.doc FROM entity_heads h \
         WHERE h.tenant_id = $1 AND h.entity = 'task' AND h.deleted_at IS NULL",
    );
    let push = |binds: &mut Vec<Bind>, b: Bind| {
        binds.push(b);
        binds.len()
    };
    for (field, value) in &f.equals {
        let n = push(&mut binds, Bind::Text(value.clone()));
        sql.push_str(&format!(" AND h.doc->>'{field}' = ${n}"));
    }
    if f.top_level {
        sql.push_str(" AND h.doc->>'parent_id' IS NULL");
    }
    if let Some(p) = f.priority {
        let n = push(&mut binds, Bind::Int(p));
        sql.push_str(&format!(" AND CAST(h.doc->>'priority' AS INTEGER) = ${n}"));
    }
    if let Some(label) = &f.label {
        let n = push(&mut binds, Bind::Text(label.clone()));
        sql.push_str(&match dialect {
            Dialect::Postgres => format!(" AND (h.doc->'labels') ? ${n}"),
            Dialect::Sqlite => format!(" AND EXISTS (SELECT 1 FROM json_each(h.doc, '$.labels') WHERE value = ${n})"),
        });
    }
    if let Some((at, date)) = &f.due_before {
        let a = push(&mut binds, Bind::Text(at.clone()));
        let b = push(&mut binds, Bind::Text(date.clone()));
        sql.push_str(&format!(" AND (h.doc->>'due_at' < ${a} OR h.doc->>'due_date' <= ${b})"));
    }
    if let Some((at, date)) = &f.due_after {
        let a = push(&mut binds, Bind::Text(at.clone()));
        let b = push(&mut binds, Bind::Text(date.clone()));
        sql.push_str(&format!(" AND (h.doc->>'due_at' >= ${a} OR h.doc->>'due_date' > ${b})"));
    }
    if let Some((yes, now, today)) = &f.overdue {
        let a = push(&mut binds, Bind::Text(now.clone()));
        let b = push(&mut binds, Bind::Text(today.clone()));
        let cond = overdue_sql(a, b);
        sql.push_str(&if *yes { format!(" AND {cond}") } else { format!(" AND NOT {cond}") });
    }
    if let Some(yes) = f.is_blocked {
        let cond = "EXISTS (SELECT 1 FROM task_dependencies d JOIN entity_heads b \
               ON b.tenant_id = d.tenant_id AND b.entity = 'task' AND b.id = d.task_id AND b.deleted_at IS NULL \
             WHERE d.tenant_id = h.tenant_id AND d.other_id = h.id AND d.kind = 'blocks' \
               AND b.doc->>'status_category' NOT IN ('completed', 'canceled'))";
        sql.push_str(&if yes { format!(" AND {cond}") } else { format!(" AND NOT {cond}") });
    }
    if f.open_only {
        sql.push_str(&format!(" AND {OPEN}"));
    }
    if let Some(q) = &f.search {
        let n = push(&mut binds, Bind::Text(q.clone()));
        sql.push_str(&match dialect {
            Dialect::Postgres => format!(" AND h.search @@ to_tsquery('simple', ${n})"),
            Dialect::Sqlite => {
                format!(" AND h.rid IN (SELECT rowid FROM entity_heads_fts WHERE entity_heads_fts MATCH ${n})")
            }
        });
    }
    sql.push_str(match sort {
        Sort::Updated => " ORDER BY h.updated_at DESC, h.id DESC",
        Sort::Priority => " ORDER BY CAST(h.doc->>'priority' AS INTEGER) DESC, h.updated_at DESC, h.id DESC",
        Sort::Due => " ORDER BY COALESCE(h.doc->>'due_at', h.doc->>'due_date') ASC NULLS LAST, h.id ASC",
        Sort::Position => " ORDER BY CAST(h.doc->>'position' AS INTEGER) ASC, h.created_at ASC, h.id ASC",
    });
    let l = push(&mut binds, Bind::Int(limit + 1));
    let o = push(&mut binds, Bind::Int(offset));
    sql.push_str(&format!(" LIMIT ${l} OFFSET ${o}"));
    fetch(tx, sql, binds).await
}
