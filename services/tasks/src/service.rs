//! The `worktruck.tasks.v1.TasksService` gRPC implementation over kit's bitemporal store
//! (entities `project`, `task`, `label`, `comment`) and the service's own tables (identifier
//! counters and identifiers, dependency edges, settings: `queries`).

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{DateTime, NaiveDate, Utc};
use tonic::{Request, Response, Status};
use uuid::Uuid;
use worktruck_kit::context::Verifier;
use worktruck_kit::cursor::{self, Cursor};
use worktruck_kit::db::{Db, Scope, Tx, now};
use worktruck_kit::error::quote;
use worktruck_kit::links::Source;
use worktruck_kit::outbox::Relay;
use worktruck_kit::pbjson::{from_struct, opt_datetime, uuid};
use worktruck_kit::rpc::{self, Caller};
use worktruck_kit::store::{ListQuery, Record, Store, Write, search_query};
use worktruck_kit::{Error, ErrorCode, Result};
use worktruck_proto::common::v1 as common;
use worktruck_proto::tasks::v1 as pb;
use worktruck_proto::tasks::v1::tasks_service_server::TasksService;

use crate::domain::{
    self, CommentDoc, LabelDoc, MemberDoc, MilestoneDoc, ProjectDoc, SectionDoc, StatusDoc, TASK_HIDDEN, TaskDoc,
    category_name, check_color, check_comment, check_date, check_id, check_label_names, check_metadata, check_minutes,
    check_name, check_prefix, check_priority, check_text, check_url_links, fmt_ts, is_done, label_key, label_pb, merge,
    parse_ts, project_pb, role_name, task_pb,
};
use crate::queries::{self, Filter, Sort};
use crate::recur::{self, Due};

/// Tasks in kit's store.
pub const TASKS: Store = Store::new("task");
/// Projects in kit's store.
pub const PROJECTS: Store = Store::new("project");
/// Labels in kit's store.
pub const LABELS: Store = Store::new("label");
/// Comments in kit's store.
pub const COMMENTS: Store = Store::new("comment");

/// How deep subtasks nest.
const MAX_DEPTH: usize = 64;
/// Most tasks one tree read returns.
const MAX_TREE: usize = 2000;
/// Most tasks one bulk update changes.
const MAX_BULK: usize = 100;

/// The tasks service.
#[derive(Clone)]
pub struct Tasks {
    db: Db,
    verifier: Verifier,
    relay: Relay,
    links: worktruck_kit::links::Links,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// A stored due (`fmt_ts` moment or date) back.
fn due_from_str(s: &str) -> Result<Due> {
    if s.len() == 10 {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").map(Due::Date).map_err(Error::internal)
    } else {
        parse_ts(s).map(Due::At)
    }
}

fn due_to_str(d: Due) -> String {
    match d {
        Due::At(t) => fmt_ts(t),
        Due::Date(d) => d.format("%Y-%m-%d").to_string(),
    }
}

/// The label or identifier of a task for messages: its identifier, else its quoted title.
fn name_of(d: &TaskDoc) -> String {
    d.identifier.clone().unwrap_or_else(|| quote(&d.title))
}

impl Tasks {
    /// A service over a migrated database.
    pub fn new(db: Db, verifier: Verifier, relay: Relay, links: worktruck_kit::links::Links) -> Self {
        Self { db, verifier, relay, links }
    }

    fn caller<T>(&self, req: &Request<T>) -> Result<Caller> {
        Caller::verify(&self.verifier, req)
    }


    async fn emit_task(&self, tx: &mut Tx, c: &Caller, action: &str, task: &pb::Task, t: DateTime<Utc>) -> Result<()> {
        let id = uuid(&task.id, "id")?;
        let subject = format!("worktruck.tasks.task.{action}.v1");
        rpc::emit(tx, c, &subject, id, task.version, task, t).await
    }

    async fn emit_project(
        &self,
        tx: &mut Tx,
        c: &Caller,
        action: &str,
        p: &pb::Project,
        t: DateTime<Utc>,
    ) -> Result<()> {
        let id = uuid(&p.id, "id")?;
        let subject = format!("worktruck.tasks.project.{action}.v1");
        rpc::emit(tx, c, &subject, id, p.version, p, t).await
    }

    /// Commits and wakes the relay.
    async fn commit(&self, tx: Tx) -> Result<()> {
        tx.commit().await?;
        self.relay.notify();
        Ok(())
    }
}

/// The tenant's time zone (UTC unless set).
async fn tenant_tz(tx: &mut Tx, c: &Caller) -> Result<chrono_tz::Tz> {
    Ok(queries::time_zone(tx, c.tenant).await?.and_then(|s| s.parse().ok()).unwrap_or(chrono_tz::Tz::UTC))
}

/// The time zone a task's recurrence is computed in.
async fn task_tz(tx: &mut Tx, c: &Caller, d: &TaskDoc) -> Result<chrono_tz::Tz> {
    match &d.time_zone {
        Some(z) => recur::check_time_zone(z),
        None => tenant_tz(tx, c).await,
    }
}

/// The tenant's live labels, by id.
async fn label_map(tx: &mut Tx, c: &Caller) -> Result<HashMap<String, pb::Label>> {
    queries::all(tx, c.tenant, "label").await?.iter().map(|r| label_pb(r).map(|l| (l.id.clone(), l))).collect()
}

/// The wire task with its labels (counts and `is_blocked` left at zero).
fn render(c: &Caller, r: &Record, labels: &HashMap<String, pb::Label>) -> Result<pb::Task> {
    let d = TaskDoc::from_value(&r.doc)?;
    let mut l: Vec<pb::Label> = d.labels.iter().filter_map(|id| labels.get(id).cloned()).collect();
    l.sort_by_key(|l| l.name.to_lowercase());
    Ok(task_pb(&c.tenant.to_string(), r, &d, l))
}

/// Wire tasks with labels, subtask and comment counts and `is_blocked`.
async fn render_many(tx: &mut Tx, c: &Caller, recs: &[Record]) -> Result<Vec<pb::Task>> {
    let labels = label_map(tx, c).await?;
    let ids: Vec<Uuid> = recs.iter().map(|r| r.id).collect();
    let children = queries::child_counts(tx, c.tenant, &ids).await?;
    let comments = queries::comment_counts(tx, c.tenant, &ids).await?;
    let blocked = queries::blocked(tx, c.tenant, &ids).await?;
    recs.iter()
        .map(|r| {
            let mut t = render(c, r, &labels)?;
            let (n, done) = children.get(&r.id).copied().unwrap_or((0, 0));
            t.subtask_count = n as i32;
            t.done_subtask_count = done as i32;
            t.comment_count = comments.get(&r.id).copied().unwrap_or(0) as i32;
            t.is_blocked = blocked.contains(&r.id);
            Ok(t)
        })
        .collect()
}

async fn render_one(tx: &mut Tx, c: &Caller, r: &Record) -> Result<pb::Task> {
    Ok(render_many(tx, c, std::slice::from_ref(r)).await?.remove(0))
}

/// The wire project with its next number and milestone progress.
async fn project_out(tx: &mut Tx, c: &Caller, r: &Record) -> Result<pb::Project> {
    let d = ProjectDoc::from_value(&r.doc)?;
    let n = queries::next_number(tx, c.tenant, r.id).await?;
    let counts = queries::milestone_counts(tx, c.tenant, r.id).await?;
    Ok(project_pb(&c.tenant.to_string(), r, &d, n, &counts))
}

/// A project a task names (`field`): 400 when there is none.
async fn project_ref(tx: &mut Tx, c: &Caller, id: Uuid, field: &str) -> Result<ProjectDoc> {
    let rec =
        PROJECTS.head(tx, c.tenant, id).await.map_err(|_| Error::validation(format!("{field}: no project {id}")))?;
    ProjectDoc::from_value(&rec.doc)
}

/// The ids of the labels named `names`, defining the new ones (announced as created).
async fn ensure_labels(
    tx: &mut Tx,
    c: &Caller,
    names: &[String],
    t: DateTime<Utc>,
) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for name in check_label_names(names)? {
        let id = match queries::label_by_key(tx, c.tenant, &label_key(&name)).await? {
            Some(id) => id,
            None => {
                let doc = LabelDoc::named(&name)?;
                let id = Uuid::now_v7();
                let w = Write {
                    search_text: String::new(),
                    doc: doc.to_value(),
                    valid_from: None,
                    actor: c.actor().to_owned(),
                };
                let rec = LABELS.create(tx, c.tenant, id, w, t).await?;
                let out = label_pb(&rec)?;
                rpc::emit(
                    tx,
                    c,
                    "worktruck.tasks.label.created.v1",
                    id,
                    rec.version,
                    &out,
                    t,
                )
                .await?;
                id
            }
        };
        ids.push(id.to_string());
    }
    Ok(ids)
}

/// `parent` as stored for task `moving` (`None` when creating): a live task that is not
/// `moving` nor below it (409 naming the loop), at most [`MAX_DEPTH`] deep.
async fn check_parent(tx: &mut Tx, c: &Caller, moving: Option<(Uuid, &TaskDoc)>, raw: &str) -> Result<Option<String>> {
    let Some(parent) = check_id("parent_id", raw)? else { return Ok(None) };
    let mut at = Some(parent);
    let mut chain: Vec<String> = Vec::new();
    while let Some(id) = at {
        if let Some((m, md)) = moving
            && m == id
        {
            chain.reverse();
            let me = name_of(md);
            let mut names = vec![me.clone()];
            names.extend(chain);
            names.push(me);
            return Err(Error::conflict(format!(
                "a task cannot be below itself: the parent chain would be a loop ({})",
                names.join(" → ")
            )));
        }
        if chain.len() >= MAX_DEPTH {
            return Err(Error::validation(format!("subtasks nest at most {MAX_DEPTH} deep")));
        }
        let rec =
            TASKS.head(tx, c.tenant, id).await.map_err(|_| Error::validation(format!("parent_id: no task {id}")))?;
        let d = TaskDoc::from_value(&rec.doc)?;
        chain.push(name_of(&d));
        at = d.parent_id.as_deref().and_then(|p| Uuid::parse_str(p).ok());
    }
    Ok(Some(parent.to_string()))
}

/// Gives the task `id` the next identifier of `project` (recorded for good).
async fn number_into(
    tx: &mut Tx,
    c: &Caller,
    id: Uuid,
    project: Uuid,
    p: &ProjectDoc,
    doc: &mut TaskDoc,
) -> Result<()> {
    let n = queries::allocate_number(tx, c.tenant, project).await?;
    // Under the counter's lock: a project deleted since it was read takes no more tasks.
    PROJECTS
        .head(tx, c.tenant, project)
        .await
        .map_err(|_| Error::validation(format!("project_id: no project {project}")))?;
    let ident = format!("{}-{n}", p.identifier);
    queries::add_identifier(tx, c.tenant, &ident, id).await?;
    if let Some(old) = doc.identifier.replace(ident) {
        doc.previous_identifiers.push(old);
    }
    Ok(())
}

/// Sets the status `id` of `p` on the task, or refuses one that is not the project's.
fn set_status(doc: &mut TaskDoc, p: &ProjectDoc, id: &str, t: DateTime<Utc>) -> Result<()> {
    let s = p.status(id).ok_or_else(|| {
        Error::validation(format!("status_id {} is not a status of project {}", quote(id), p.identifier))
    })?;
    doc.status_id = Some(s.id.clone());
    doc.set_category(&s.category.clone(), t);
    Ok(())
}

/// Recomputes the recurrence fields after a change of rule, due date or time zone (`reset`
/// starts the rule again from the current due date).
async fn refresh_recurrence(tx: &mut Tx, c: &Caller, doc: &mut TaskDoc, reset: bool) -> Result<()> {
    let Some(rule) = doc.rrule.clone() else {
        doc.recurrence_start = None;
        doc.next_occurrence = None;
        return Ok(());
    };
    let due = doc.due()?.ok_or_else(|| Error::validation("a recurring task needs due_at or due_date"))?;
    let tz = task_tz(tx, c, doc).await?;
    let start = match (&doc.recurrence_start, reset) {
        (Some(s), false) => {
            let s = due_from_str(s)?;
            // A due of another kind (time against date) starts the rule again.
            if std::mem::discriminant(&s) == std::mem::discriminant(&due) { s } else { due }
        }
        _ => due,
    };
    recur::check_fits(&rule, tz, start)?;
    doc.recurrence_start = Some(due_to_str(start));
    doc.next_occurrence = recur::after(&rule, tz, start, due, 1)?.first().map(|d| due_to_str(*d));
    Ok(())
}

/// Applies the changes of `r` to `old` (task `id`) and returns the new document; identifier,
/// label and parent side effects happen in `tx`.
async fn edit(
    tx: &mut Tx,
    c: &Caller,
    id: Uuid,
    old: &TaskDoc,
    r: &pb::UpdateTaskRequest,
    t: DateTime<Utc>,
) -> Result<TaskDoc> {
    let mut doc = old.clone();
    if let Some(title) = &r.title {
        doc.title = check_name("title", title, 500)?;
    }
    if let Some(d) = &r.description {
        doc.description = check_text("description", d, 100_000)?;
    }
    if let Some(p) = check_priority(r.priority, r.priority_name.as_deref())? {
        doc.priority = p;
    }
    if let Some(p) = r.position {
        doc.position = p;
    }
    // The project, then what belongs to it.
    let mut project: Option<ProjectDoc> = None;
    let mut moved = false;
    if let Some(raw) = &r.project_id {
        let new = check_id("project_id", raw)?;
        if new.map(|u| u.to_string()) != doc.project_id {
            moved = true;
            doc.section_id = None;
            doc.milestone_id = None;
            match new {
                Some(pid) => {
                    let p = project_ref(tx, c, pid, "project_id").await?;
                    number_into(tx, c, id, pid, &p, &mut doc).await?;
                    doc.project_id = Some(pid.to_string());
                    project = Some(p);
                }
                None => {
                    if let Some(old) = doc.identifier.take() {
                        doc.previous_identifiers.push(old);
                    }
                    doc.project_id = None;
                    doc.status_id = None;
                    let cat = if is_done(&doc.status_category) {
                        doc.status_category.clone()
                    } else {
                        "unstarted".to_owned()
                    };
                    doc.set_category(&cat, t);
                }
            }
        }
    }
    if project.is_none()
        && let Some(pid) = doc.project_id.as_deref().and_then(|p| Uuid::parse_str(p).ok())
        && (r.status_id.is_some() || r.section_id.is_some() || r.milestone_id.is_some())
    {
        project = Some(project_ref(tx, c, pid, "project_id").await?);
    }
    match (&project, r.status_id.as_deref().map(str::trim).filter(|s| !s.is_empty())) {
        (Some(p), Some(s)) => set_status(&mut doc, p, s, t)?,
        (Some(p), None) if moved => {
            let def = p.default_status_id.clone();
            set_status(&mut doc, p, &def, t)?;
        }
        (None, Some(_)) => return Err(Error::validation("status_id: a task outside projects has no status")),
        _ => {}
    }
    if let Some(raw) = &r.section_id {
        doc.section_id = match (check_id("section_id", raw)?, &project) {
            (None, _) => None,
            (Some(s), Some(p)) if p.sections.iter().any(|x| x.id == s.to_string()) => Some(s.to_string()),
            (Some(s), _) => {
                return Err(Error::validation(format!("section_id {s} is not a section of the task's project")));
            }
        };
    }
    if let Some(raw) = &r.milestone_id {
        doc.milestone_id = match (check_id("milestone_id", raw)?, &project) {
            (None, _) => None,
            (Some(m), Some(p)) if p.milestones.iter().any(|x| x.id == m.to_string()) => Some(m.to_string()),
            (Some(m), _) => {
                return Err(Error::validation(format!("milestone_id {m} is not a milestone of the task's project")));
            }
        };
    }
    if let Some(raw) = &r.parent_id {
        doc.parent_id = check_parent(tx, c, Some((id, old)), raw).await?;
    }
    if let Some(raw) = &r.assignee_id {
        doc.assignee_id = check_id("assignee_id", raw)?.map(|u| u.to_string());
    }
    // Due, recurrence and time zone.
    let due_at = opt_datetime(r.due_at.as_ref(), "due_at")?;
    if due_at.is_some() && r.due_date.as_deref().is_some_and(|d| !d.trim().is_empty()) {
        return Err(Error::validation("give due_at or due_date, not both"));
    }
    if let Some(t) = due_at {
        doc.set_due(Some(Due::At(t)));
    } else if let Some(d) = &r.due_date {
        let d = check_date("due_date", d)?;
        doc.set_due(d.map(|d| Due::Date(NaiveDate::parse_from_str(&d, "%Y-%m-%d").expect("checked"))));
    }
    if let Some(d) = &r.deadline {
        doc.deadline = check_date("deadline", d)?;
    }
    if let Some(d) = &r.start_date {
        doc.start_date = check_date("start_date", d)?;
    }
    if r.clear_snoozed_until {
        doc.snoozed_until = None;
    } else if let Some(s) = opt_datetime(r.snoozed_until.as_ref(), "snoozed_until")? {
        doc.snoozed_until = Some(fmt_ts(s));
    }
    if let Some(m) = r.estimation_minutes {
        doc.estimation_minutes = Some(check_minutes("estimation_minutes", m)?);
    }
    if let Some(m) = r.time_spent_minutes {
        doc.time_spent_minutes = Some(check_minutes("time_spent_minutes", m)?);
    }
    if let Some(z) = &r.time_zone {
        doc.time_zone = if z.trim().is_empty() { None } else { Some(recur::check_time_zone(z)?.name().to_owned()) };
    }
    if let Some(rule) = &r.rrule {
        doc.rrule = recur::check_rule(rule)?;
    }
    let due_changed = doc.due_at != old.due_at || doc.due_date != old.due_date;
    if doc.rrule != old.rrule || due_changed || doc.time_zone != old.time_zone {
        let reset = doc.rrule != old.rrule || due_changed;
        refresh_recurrence(tx, c, &mut doc, reset).await?;
    }
    // Labels, links, metadata.
    if !r.remove_labels.is_empty() {
        let mut remove = Vec::new();
        for name in check_label_names(&r.remove_labels)? {
            if let Some(l) = queries::label_by_key(tx, c.tenant, &label_key(&name)).await? {
                remove.push(l.to_string());
            }
        }
        doc.labels.retain(|l| !remove.contains(l));
    }
    if !r.add_labels.is_empty() {
        for l in ensure_labels(tx, c, &r.add_labels, t).await? {
            if !doc.labels.contains(&l) {
                doc.labels.push(l);
            }
        }
        if doc.labels.len() > domain::MAX_LIST {
            return Err(Error::validation(format!("a task has at most {} labels", domain::MAX_LIST)));
        }
    }
    if r.clear_url_links {
        doc.url_links.clear();
    } else if !r.url_links.is_empty() {
        doc.url_links = check_url_links(&r.url_links)?;
    }
    if let Some(m) = &r.metadata {
        doc.metadata = merge(&doc.metadata, &from_struct(m));
        check_metadata(&doc.metadata)?;
    }
    Ok(doc)
}

/// Completes the task for good: the project's first completed status (or, outside projects,
/// the completed state).
async fn finish(tx: &mut Tx, c: &Caller, doc: &mut TaskDoc, t: DateTime<Utc>) -> Result<()> {
    doc.next_occurrence = None;
    match doc.project_id.as_deref().and_then(|p| Uuid::parse_str(p).ok()) {
        Some(pid) => {
            let p = project_ref(tx, c, pid, "project_id").await?;
            let s = p
                .first_of("completed")
                .ok_or_else(|| {
                    Error::conflict(format!("project {} has no status of category completed", p.identifier))
                })?
                .id
                .clone();
            set_status(doc, &p, &s, t)
        }
        None => {
            doc.set_category("completed", t);
            Ok(())
        }
    }
}

/// Moves a recurring task past its current occurrence (done, or `skipped`); true when the rule
/// had a next occurrence, false when it ended.
async fn advance(tx: &mut Tx, c: &Caller, doc: &mut TaskDoc, skipped: bool, t: DateTime<Utc>) -> Result<bool> {
    let rule = doc.rrule.clone().ok_or_else(|| Error::conflict("the task does not recur"))?;
    let due = doc.due()?.ok_or_else(|| Error::conflict("a recurring task needs a due date"))?;
    let tz = task_tz(tx, c, doc).await?;
    let start = doc.recurrence_start.as_deref().map(due_from_str).transpose()?.unwrap_or(due);
    doc.record(due, t, skipped);
    let next = recur::after(&rule, tz, start, due, 2)?;
    match next.first() {
        Some(n) => {
            doc.set_due(Some(*n));
            doc.next_occurrence = next.get(1).map(|d| due_to_str(*d));
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Validated list filters shared by the list RPCs.
struct ListArgs {
    filter: Filter,
    sort: Sort,
    limit: i64,
    offset: i64,
}

fn offset_of(cursor: Option<&str>, scope: &str) -> Result<i64> {
    Ok(match cursor::decode_opt(cursor, scope)? {
        None => 0,
        Some(Cursor::Number(n)) if n >= 0 => n,
        Some(_) => return Err(Error::invalid("invalid cursor for this listing")),
    })
}

/// `(moment as stored, last date that counts)` for a due bound `t` in `tz`: a date-only due
/// date starts at its day's beginning in `tz`, so it is before `t` when it is on or before the
/// day of the last microsecond before `t`.
fn bound(t: DateTime<Utc>, tz: chrono_tz::Tz) -> (String, String) {
    let day = (t - chrono::Duration::microseconds(1)).with_timezone(&tz).date_naive();
    (fmt_ts(t), day.format("%Y-%m-%d").to_string())
}

/// `(now as stored, today in tz)`: a date-only due date before today is overdue.
fn overdue_bound(t: DateTime<Utc>, tz: chrono_tz::Tz) -> (String, String) {
    (fmt_ts(t), t.with_timezone(&tz).date_naive().format("%Y-%m-%d").to_string())
}

async fn page(tx: &mut Tx, c: &Caller, a: &ListArgs, scope: &str) -> Result<pb::ListTasksResponse> {
    let mut rows = queries::list(tx, c.tenant, &a.filter, a.sort, a.offset, a.limit).await?;
    let more = rows.len() as i64 > a.limit;
    rows.truncate(a.limit as usize);
    let data = render_many(tx, c, &rows).await?;
    Ok(pb::ListTasksResponse {
        data,
        has_more: more,
        next_cursor: if more { Cursor::Number(a.offset + a.limit).encode(scope) } else { String::new() },
    })
}

fn search_expr(tx: &Tx, q: &str) -> Result<String> {
    if q.chars().count() > 500 {
        return Err(Error::invalid("q must be at most 500 characters"));
    }
    search_query(tx.dialect(), q).ok_or_else(|| Error::invalid("q has no searchable words"))
}

/// Seen from `me`: the relation of an edge and the other task.
fn seen_from(me: Uuid, e: &queries::Edge) -> (pb::DependencyType, Uuid) {
    let out = e.task_id == me;
    let other = if out { e.other_id } else { e.task_id };
    let ty = match (e.kind.as_str(), out) {
        ("blocks", true) => pb::DependencyType::Blocks,
        ("blocks", false) => pb::DependencyType::BlockedBy,
        ("duplicate", _) => pb::DependencyType::Duplicate,
        _ => pb::DependencyType::Related,
    };
    (ty, other)
}

async fn dependency_pb(tx: &mut Tx, c: &Caller, me: Uuid, e: &queries::Edge) -> Result<pb::Dependency> {
    let (ty, other) = seen_from(me, e);
    let od = TaskDoc::from_value(&TASKS.head(tx, c.tenant, other).await?.doc)?;
    Ok(pb::Dependency {
        task_id: me.to_string(),
        depends_on_id: other.to_string(),
        depends_on_identifier: od.identifier,
        depends_on_title: od.title,
        r#type: ty as i32,
        created_at: Some(worktruck_kit::pbjson::timestamp(e.created_at)),
    })
}

/// Refuses a blocking edge `blocker` → `blocked` that would close a cycle, naming it.
async fn check_cycle(tx: &mut Tx, c: &Caller, blocker: Uuid, blocked: Uuid) -> Result<()> {
    let mut came_from: HashMap<Uuid, Uuid> = HashMap::new();
    let mut seen: HashSet<Uuid> = HashSet::from([blocked]);
    let mut queue = VecDeque::from([blocked]);
    while let Some(at) = queue.pop_front() {
        if at == blocker {
            // blocked → … → blocker; the cycle is blocker → blocked → … → blocker.
            let mut path = vec![at];
            let mut x = at;
            while let Some(p) = came_from.get(&x) {
                path.push(*p);
                x = *p;
            }
            path.reverse();
            let mut names = Vec::new();
            for id in std::iter::once(blocker).chain(path) {
                let d = TaskDoc::from_value(&TASKS.head(tx, c.tenant, id).await?.doc)?;
                names.push(name_of(&d));
            }
            return Err(Error::conflict(format!("that would make a dependency cycle: {}", names.join(" blocks "))));
        }
        if seen.len() > 10_000 {
            return Err(Error::conflict("the dependency graph is too large to check for cycles"));
        }
        for next in queries::blocked_by_edge(tx, c.tenant, at).await? {
            if seen.insert(next) {
                came_from.insert(next, at);
                queue.push_back(next);
            }
        }
    }
    Ok(())
}

/// A task's tree, recursively, below `rec`.
fn tree<'a>(
    tx: &'a mut Tx,
    c: &'a Caller,
    rec: Record,
    budget: &'a mut usize,
    depth: usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<pb::TaskTree>> + Send + 'a>> {
    Box::pin(async move {
        let task = render_one(tx, c, &rec).await?;
        let mut node = pb::TaskTree { task: Some(task), ..Default::default() };
        if depth >= MAX_DEPTH {
            return Ok(node);
        }
        for child in queries::children(tx, c.tenant, rec.id).await? {
            if *budget == 0 {
                return Err(Error::invalid(format!("the tree holds more than {MAX_TREE} tasks; read it by subtasks")));
            }
            *budget -= 1;
            let done = is_done(&TaskDoc::from_value(&child.doc)?.status_category);
            let sub = tree(tx, c, child, budget, depth + 1).await?;
            if done {
                node.done_children += 1;
                node.done_descendants += 1;
            } else {
                node.open_children += 1;
                node.open_descendants += 1;
            }
            node.open_descendants += sub.open_descendants;
            node.done_descendants += sub.done_descendants;
            node.children.push(sub);
        }
        Ok(node)
    })
}

/// Clears `field = value` on every live task (a deleted section or milestone), one version each.
async fn clear_on_tasks(
    svc: &Tasks,
    tx: &mut Tx,
    c: &Caller,
    field: &'static str,
    value: &str,
    t: DateTime<Utc>,
) -> Result<()> {
    let f = Filter { equals: vec![(field, value.to_owned())], ..Default::default() };
    let rows = queries::list(tx, c.tenant, &f, Sort::Updated, 0, 10_000).await?;
    let labels = label_map(tx, c).await?;
    for rec in rows {
        let head = TASKS.head_for_update(tx, c.tenant, rec.id, None).await?;
        let mut doc = TaskDoc::from_value(&head.doc)?;
        match field {
            "section_id" => doc.section_id = None,
            _ => doc.milestone_id = None,
        }
        let w = Write {
            search_text: doc.search_text(),
            doc: doc.to_value(),
            valid_from: None,
            actor: c.actor().to_owned(),
        };
        let rec = TASKS.update_head(tx, c.tenant, &head, w, t).await?;
        let out = render(c, &rec, &labels)?;
        svc.emit_task(tx, c, "updated", &out, t).await?;
    }
    Ok(())
}

impl Tasks {
    /// Reads a project for a change in this transaction (404 when missing).
    async fn project_for_update(
        &self,
        tx: &mut Tx,
        c: &Caller,
        raw: &str,
        expected: Option<i64>,
    ) -> Result<(Record, ProjectDoc)> {
        let id = uuid(raw, "project_id")?;
        let head = PROJECTS.head_for_update(tx, c.tenant, id, expected).await?;
        let doc = ProjectDoc::from_value(&head.doc)?;
        Ok((head, doc))
    }

    /// Writes a changed project, announces it and returns it.
    async fn save_project(
        &self,
        tx: &mut Tx,
        c: &Caller,
        head: &Record,
        doc: &ProjectDoc,
        t: DateTime<Utc>,
    ) -> Result<pb::Project> {
        doc.check_dates()?;
        let w = Write {
            search_text: doc.search_text(),
            doc: doc.to_value(),
            valid_from: None,
            actor: c.actor().to_owned(),
        };
        let rec = PROJECTS.update_head(tx, c.tenant, head, w, t).await?;
        let out = project_out(tx, c, &rec).await?;
        self.emit_project(tx, c, "updated", &out, t).await?;
        Ok(out)
    }

    /// Writes a changed task (nothing when unchanged), announces it as `action` and returns it.
    #[allow(clippy::too_many_arguments)]
    async fn save_task(
        &self,
        tx: &mut Tx,
        c: &Caller,
        head: &Record,
        old: &TaskDoc,
        doc: &TaskDoc,
        valid_from: Option<DateTime<Utc>>,
        action: &str,
        t: DateTime<Utc>,
    ) -> Result<pb::Task> {
        if doc == old && valid_from.is_none() {
            return render_one(tx, c, head).await;
        }
        let w = Write { search_text: doc.search_text(), doc: doc.to_value(), valid_from, actor: c.actor().to_owned() };
        let rec = TASKS.update_head(tx, c.tenant, head, w, t).await?;
        if doc.title != old.title {
            let title = self.links.title_of(TASKS.entity(), &rec.doc);
            self.links.retitle(tx, c, &Source { entity: TASKS.entity(), id: rec.id, title: &title }, t).await?;
        }
        let out = render_one(tx, c, &rec).await?;
        self.emit_task(tx, c, action, &out, t).await?;
        Ok(out)
    }
}

fn status_out(p: &ProjectDoc, id: &str) -> Result<pb::Status> {
    let (i, s) = p.statuses.iter().enumerate().find(|(_, s)| s.id == id).ok_or_else(|| Error::not_found("status"))?;
    Ok(domain::status_pb(p, i, s))
}

fn reorder<T: Clone>(items: &[T], id: impl Fn(&T) -> &str, ids: &[String], what: &str) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for raw in ids {
        let it = items
            .iter()
            .find(|x| id(x) == raw.trim())
            .ok_or_else(|| Error::validation(format!("ids: {} is not one of the project's {what}", quote(raw))))?;
        if out.iter().any(|o: &T| id(o) == id(it)) {
            return Err(Error::validation(format!("ids: {} is given twice", quote(raw))));
        }
        out.push(it.clone());
    }
    if out.len() != items.len() {
        return Err(Error::validation(format!("ids must list every one of the project's {} {what}", items.len())));
    }
    Ok(out)
}

fn unique_name<T>(
    items: &[T],
    name: impl Fn(&T) -> &str,
    skip: Option<&str>,
    id: impl Fn(&T) -> &str,
    new: &str,
    what: &str,
) -> Result<()> {
    if items.iter().any(|x| Some(id(x)) != skip && name(x).to_lowercase() == new.to_lowercase()) {
        return Err(Error::new(ErrorCode::AlreadyExists, format!("the project has a {what} named {}", quote(new))));
    }
    Ok(())
}

#[tonic::async_trait]
impl TasksService for Tasks {
    async fn create_project(&self, req: Request<pb::CreateProjectRequest>) -> Result<Response<pb::Project>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let mut doc = ProjectDoc::new(check_name("name", &r.name, 200)?, check_prefix(&r.identifier)?);
        doc.description = r.description.as_deref().map(|d| check_text("description", d, 10_000)).transpose()?.flatten();
        doc.start_date = r.start_date.as_deref().map(|d| check_date("start_date", d)).transpose()?.flatten();
        doc.target_date = r.target_date.as_deref().map(|d| check_date("target_date", d)).transpose()?.flatten();
        doc.check_dates()?;
        doc.is_archived = r.is_archived.unwrap_or(false);
        doc.is_private = r.is_private.unwrap_or(false);
        doc.metadata = r.metadata.as_ref().map(from_struct).unwrap_or_else(empty_object);
        check_metadata(&doc.metadata)?;
        for m in &r.members {
            let member_id = check_name("member_id", &m.member_id, 200)?;
            doc.members.retain(|x| x.member_id != member_id);
            doc.members.push(MemberDoc { member_id, role: role_name(m.role)?.to_owned() });
        }
        let t = now();
        let id = Uuid::now_v7();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        queries::take_prefix(&mut tx, c.tenant, &doc.identifier, id).await.map_err(|e| {
            if e.code == ErrorCode::AlreadyExists {
                Error::new(
                    ErrorCode::AlreadyExists,
                    format!("the identifier {} is taken in this tenant", doc.identifier),
                )
            } else {
                e
            }
        })?;
        let w = Write {
            search_text: doc.search_text(),
            doc: doc.to_value(),
            valid_from: None,
            actor: c.actor().to_owned(),
        };
        let rec = PROJECTS.create(&mut tx, c.tenant, id, w, t).await?;
        let out = project_out(&mut tx, &c, &rec).await?;
        self.emit_project(&mut tx, &c, "created", &out, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn get_project(&self, req: Request<pb::GetProjectRequest>) -> Result<Response<pb::Project>, Status> {
        let c = self.caller(&req)?;
        let id = uuid(&req.get_ref().id, "id")?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let rec = PROJECTS.head(&mut tx, c.tenant, id).await?;
        Ok(Response::new(project_out(&mut tx, &c, &rec).await?))
    }

    async fn update_project(&self, req: Request<pb::UpdateProjectRequest>) -> Result<Response<pb::Project>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let (head, old) = self.project_for_update(&mut tx, &c, &r.id, r.expected_version).await?;
        let mut doc = old.clone();
        if let Some(n) = &r.name {
            doc.name = check_name("name", n, 200)?;
        }
        if let Some(d) = &r.description {
            doc.description = check_text("description", d, 10_000)?;
        }
        if let Some(d) = &r.start_date {
            doc.start_date = check_date("start_date", d)?;
        }
        if let Some(d) = &r.target_date {
            doc.target_date = check_date("target_date", d)?;
        }
        if let Some(a) = r.is_archived {
            doc.is_archived = a;
        }
        if let Some(p) = r.is_private {
            doc.is_private = p;
        }
        if let Some(m) = &r.metadata {
            doc.metadata = merge(&doc.metadata, &from_struct(m));
            check_metadata(&doc.metadata)?;
        }
        if doc == old {
            return Ok(Response::new(project_out(&mut tx, &c, &head).await?));
        }
        let out = self.save_project(&mut tx, &c, &head, &doc, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn delete_project(
        &self,
        req: Request<pb::DeleteProjectRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let c = self.caller(&req)?;
        let id = uuid(&req.get_ref().id, "id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        PROJECTS.head_for_update(&mut tx, c.tenant, id, None).await?;
        queries::lock_counter(&mut tx, c.tenant, id).await?;
        let n = queries::count_tasks(&mut tx, c.tenant, "project_id", &id.to_string()).await?;
        if n > 0 {
            return Err(Error::conflict(format!("the project holds {n} tasks: move or delete them first")).into());
        }
        let rec = PROJECTS.delete(&mut tx, c.tenant, id, c.actor(), t).await?;
        let out = project_pb(&c.tenant.to_string(), &rec, &ProjectDoc::from_value(&rec.doc)?, 0, &HashMap::new());
        self.emit_project(&mut tx, &c, "deleted", &out, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(pb::DeleteResponse { id: id.to_string(), deleted: true }))
    }

    async fn list_projects(
        &self,
        req: Request<pb::ListProjectsRequest>,
    ) -> Result<Response<pb::ListProjectsResponse>, Status> {
        let c = self.caller(&req)?;
        let include_archived = req.get_ref().include_archived;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let mut data = Vec::new();
        for rec in queries::all(&mut tx, c.tenant, "project").await? {
            let d = ProjectDoc::from_value(&rec.doc)?;
            if include_archived || !d.is_archived {
                data.push(project_out(&mut tx, &c, &rec).await?);
            }
        }
        data.sort_by(|a, b| a.name.to_lowercase().cmp(&b.name.to_lowercase()).then(a.id.cmp(&b.id)));
        Ok(Response::new(pb::ListProjectsResponse { data }))
    }

    async fn set_project_member(
        &self,
        req: Request<pb::SetProjectMemberRequest>,
    ) -> Result<Response<pb::Project>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let member_id = check_name("member_id", &r.member_id, 200)?;
        let role = role_name(r.role)?.to_owned();
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let (head, mut doc) = self.project_for_update(&mut tx, &c, &r.project_id, None).await?;
        match doc.members.iter_mut().find(|m| m.member_id == member_id) {
            Some(m) if m.role == role => return Ok(Response::new(project_out(&mut tx, &c, &head).await?)),
            Some(m) => m.role = role,
            None => doc.members.push(MemberDoc { member_id, role }),
        }
        let out = self.save_project(&mut tx, &c, &head, &doc, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn remove_project_member(
        &self,
        req: Request<pb::RemoveProjectMemberRequest>,
    ) -> Result<Response<pb::Project>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let (head, mut doc) = self.project_for_update(&mut tx, &c, &r.project_id, None).await?;
        let before = doc.members.len();
        doc.members.retain(|m| m.member_id != r.member_id.trim());
        if doc.members.len() == before {
            return Err(Error::not_found("member").into());
        }
        let out = self.save_project(&mut tx, &c, &head, &doc, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn create_status(&self, req: Request<pb::CreateStatusRequest>) -> Result<Response<pb::Status>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let name = check_name("name", &r.name, 100)?;
        let category = category_name(r.category)?.to_owned();
        let color = r.color.as_deref().map(check_color).transpose()?.flatten();
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let (head, mut doc) = self.project_for_update(&mut tx, &c, &r.project_id, None).await?;
        unique_name(&doc.statuses, |s| &s.name, None, |s| &s.id, &name, "status")?;
        if doc.statuses.len() >= 50 {
            return Err(Error::validation("a project has at most 50 statuses").into());
        }
        let id = Uuid::now_v7().to_string();
        let at = match r.position {
            Some(p) if p < 0 || p as usize > doc.statuses.len() => {
                return Err(Error::validation(format!("position must be 0 to {}", doc.statuses.len())).into());
            }
            Some(p) => p as usize,
            None => doc.statuses.len(),
        };
        doc.statuses.insert(at, StatusDoc { id: id.clone(), name, category, color });
        if r.is_default {
            doc.default_status_id = id.clone();
        }
        self.save_project(&mut tx, &c, &head, &doc, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(status_out(&doc, &id)?))
    }

    async fn update_status(&self, req: Request<pb::UpdateStatusRequest>) -> Result<Response<pb::Status>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let (head, old) = self.project_for_update(&mut tx, &c, &r.project_id, None).await?;
        let mut doc = old.clone();
        let id = r.id.trim().to_owned();
        if doc.status(&id).is_none() {
            return Err(Error::not_found("status").into());
        }
        if let Some(n) = &r.name {
            let n = check_name("name", n, 100)?;
            unique_name(&doc.statuses, |s| &s.name, Some(&id), |s| &s.id, &n, "status")?;
            doc.statuses.iter_mut().find(|s| s.id == id).expect("found").name = n;
        }
        if let Some(col) = &r.color {
            doc.statuses.iter_mut().find(|s| s.id == id).expect("found").color = check_color(col)?;
        }
        match r.is_default {
            Some(true) => doc.default_status_id = id.clone(),
            Some(false) if doc.default_status_id == id => {
                return Err(Error::validation("make another status the default instead").into());
            }
            _ => {}
        }
        if doc != old {
            self.save_project(&mut tx, &c, &head, &doc, t).await?;
            self.commit(tx).await?;
        }
        Ok(Response::new(status_out(&doc, &id)?))
    }

    async fn delete_status(
        &self,
        req: Request<pb::DeleteStatusRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let (head, mut doc) = self.project_for_update(&mut tx, &c, &r.project_id, None).await?;
        let id = r.id.trim().to_owned();
        if doc.status(&id).is_none() {
            return Err(Error::not_found("status").into());
        }
        if doc.default_status_id == id {
            return Err(
                Error::conflict("the default status cannot be deleted: make another one the default first").into()
            );
        }
        let n = queries::count_tasks(&mut tx, c.tenant, "status_id", &id).await?;
        if n > 0 {
            return Err(Error::conflict(format!("{n} tasks have the status: move them first")).into());
        }
        doc.statuses.retain(|s| s.id != id);
        self.save_project(&mut tx, &c, &head, &doc, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(pb::DeleteResponse { id, deleted: true }))
    }

    async fn reorder_statuses(&self, req: Request<pb::ReorderRequest>) -> Result<Response<pb::Project>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let (head, mut doc) = self.project_for_update(&mut tx, &c, &r.project_id, None).await?;
        doc.statuses = reorder(&doc.statuses, |s| &s.id, &r.ids, "statuses")?;
        let out = self.save_project(&mut tx, &c, &head, &doc, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn create_section(&self, req: Request<pb::CreateSectionRequest>) -> Result<Response<pb::Section>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let name = check_name("name", &r.name, 200)?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let (head, mut doc) = self.project_for_update(&mut tx, &c, &r.project_id, None).await?;
        if doc.sections.len() >= 200 {
            return Err(Error::validation("a project has at most 200 sections").into());
        }
        let id = Uuid::now_v7().to_string();
        doc.sections.push(SectionDoc { id: id.clone(), name: name.clone() });
        self.save_project(&mut tx, &c, &head, &doc, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(pb::Section { id, name, position: doc.sections.len() as i32 - 1 }))
    }

    async fn update_section(&self, req: Request<pb::UpdateSectionRequest>) -> Result<Response<pb::Section>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let (head, old) = self.project_for_update(&mut tx, &c, &r.project_id, None).await?;
        let mut doc = old.clone();
        let id = r.id.trim().to_owned();
        let pos = doc.sections.iter().position(|s| s.id == id).ok_or_else(|| Error::not_found("section"))?;
        if let Some(n) = &r.name {
            doc.sections[pos].name = check_name("name", n, 200)?;
        }
        if doc != old {
            self.save_project(&mut tx, &c, &head, &doc, t).await?;
            self.commit(tx).await?;
        }
        Ok(Response::new(pb::Section { id, name: doc.sections[pos].name.clone(), position: pos as i32 }))
    }

    async fn delete_section(
        &self,
        req: Request<pb::DeleteSectionRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let (head, mut doc) = self.project_for_update(&mut tx, &c, &r.project_id, None).await?;
        let id = r.id.trim().to_owned();
        if !doc.sections.iter().any(|s| s.id == id) {
            return Err(Error::not_found("section").into());
        }
        doc.sections.retain(|s| s.id != id);
        clear_on_tasks(self, &mut tx, &c, "section_id", &id, t).await?;
        self.save_project(&mut tx, &c, &head, &doc, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(pb::DeleteResponse { id, deleted: true }))
    }

    async fn reorder_sections(&self, req: Request<pb::ReorderRequest>) -> Result<Response<pb::Project>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let (head, mut doc) = self.project_for_update(&mut tx, &c, &r.project_id, None).await?;
        doc.sections = reorder(&doc.sections, |s| &s.id, &r.ids, "sections")?;
        let out = self.save_project(&mut tx, &c, &head, &doc, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn create_milestone(
        &self,
        req: Request<pb::CreateMilestoneRequest>,
    ) -> Result<Response<pb::Milestone>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let m = MilestoneDoc {
            id: Uuid::now_v7().to_string(),
            name: check_name("name", &r.name, 200)?,
            description: r.description.as_deref().map(|d| check_text("description", d, 10_000)).transpose()?.flatten(),
            target_date: r.target_date.as_deref().map(|d| check_date("target_date", d)).transpose()?.flatten(),
        };
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let (head, mut doc) = self.project_for_update(&mut tx, &c, &r.project_id, None).await?;
        if doc.milestones.len() >= 200 {
            return Err(Error::validation("a project has at most 200 milestones").into());
        }
        doc.milestones.push(m.clone());
        self.save_project(&mut tx, &c, &head, &doc, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(domain::milestone_pb(&m, &HashMap::new())))
    }

    async fn update_milestone(
        &self,
        req: Request<pb::UpdateMilestoneRequest>,
    ) -> Result<Response<pb::Milestone>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let (head, old) = self.project_for_update(&mut tx, &c, &r.project_id, None).await?;
        let mut doc = old.clone();
        let id = r.id.trim().to_owned();
        let pos = doc.milestones.iter().position(|m| m.id == id).ok_or_else(|| Error::not_found("milestone"))?;
        if let Some(n) = &r.name {
            doc.milestones[pos].name = check_name("name", n, 200)?;
        }
        if let Some(d) = &r.description {
            doc.milestones[pos].description = check_text("description", d, 10_000)?;
        }
        if let Some(d) = &r.target_date {
            doc.milestones[pos].target_date = check_date("target_date", d)?;
        }
        if doc != old {
            self.save_project(&mut tx, &c, &head, &doc, t).await?;
        }
        let counts = queries::milestone_counts(&mut tx, c.tenant, head.id).await?;
        let out = domain::milestone_pb(&doc.milestones[pos], &counts);
        if doc != old {
            self.commit(tx).await?;
        }
        Ok(Response::new(out))
    }

    async fn delete_milestone(
        &self,
        req: Request<pb::DeleteMilestoneRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let (head, mut doc) = self.project_for_update(&mut tx, &c, &r.project_id, None).await?;
        let id = r.id.trim().to_owned();
        if !doc.milestones.iter().any(|m| m.id == id) {
            return Err(Error::not_found("milestone").into());
        }
        doc.milestones.retain(|m| m.id != id);
        clear_on_tasks(self, &mut tx, &c, "milestone_id", &id, t).await?;
        self.save_project(&mut tx, &c, &head, &doc, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(pb::DeleteResponse { id, deleted: true }))
    }

    async fn create_task(&self, req: Request<pb::CreateTaskRequest>) -> Result<Response<pb::Task>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let mut doc = TaskDoc {
            title: check_name("title", &r.title, 500)?,
            description: r.description.as_deref().map(|d| check_text("description", d, 100_000)).transpose()?.flatten(),
            priority: check_priority(r.priority, r.priority_name.as_deref())?.unwrap_or(0),
            position: r.position.unwrap_or(0),
            status_category: "unstarted".into(),
            creator_id: c.actor().to_owned(),
            assignee_id: r
                .assignee_id
                .as_deref()
                .map(|a| check_id("assignee_id", a))
                .transpose()?
                .flatten()
                .map(|u| u.to_string()),
            deadline: r.deadline.as_deref().map(|d| check_date("deadline", d)).transpose()?.flatten(),
            start_date: r.start_date.as_deref().map(|d| check_date("start_date", d)).transpose()?.flatten(),
            snoozed_until: opt_datetime(r.snoozed_until.as_ref(), "snoozed_until")?.map(fmt_ts),
            estimation_minutes: r.estimation_minutes.map(|m| check_minutes("estimation_minutes", m)).transpose()?,
            time_spent_minutes: r.time_spent_minutes.map(|m| check_minutes("time_spent_minutes", m)).transpose()?,
            time_zone: r
                .time_zone
                .as_deref()
                .filter(|z| !z.trim().is_empty())
                .map(recur::check_time_zone)
                .transpose()?
                .map(|z| z.name().to_owned()),
            rrule: r.rrule.as_deref().map(recur::check_rule).transpose()?.flatten(),
            url_links: check_url_links(&r.url_links)?,
            metadata: r.metadata.as_ref().map(from_struct).unwrap_or_else(empty_object),
            ..Default::default()
        };
        check_metadata(&doc.metadata)?;
        let due_at = opt_datetime(r.due_at.as_ref(), "due_at")?;
        let due_date = r.due_date.as_deref().map(|d| check_date("due_date", d)).transpose()?.flatten();
        match (due_at, due_date) {
            (Some(_), Some(_)) => return Err(Error::validation("give due_at or due_date, not both").into()),
            (Some(t), None) => doc.set_due(Some(Due::At(t))),
            (None, Some(d)) => {
                doc.set_due(Some(Due::Date(NaiveDate::parse_from_str(&d, "%Y-%m-%d").expect("checked"))))
            }
            (None, None) => {}
        }
        let valid_from = opt_datetime(r.valid_from.as_ref(), "valid_from")?;
        let t = now();
        let id = Uuid::now_v7();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let project = match r.project_id.as_deref().map(|p| check_id("project_id", p)).transpose()?.flatten() {
            Some(pid) => Some((pid, project_ref(&mut tx, &c, pid, "project_id").await?)),
            None => None,
        };
        match &project {
            Some((pid, p)) => {
                doc.project_id = Some(pid.to_string());
                let s = r
                    .status_id
                    .as_deref()
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .unwrap_or(&p.default_status_id)
                    .to_owned();
                set_status(&mut doc, p, &s, t)?;
                if let Some(raw) = &r.section_id
                    && let Some(s) = check_id("section_id", raw)?
                {
                    if !p.sections.iter().any(|x| x.id == s.to_string()) {
                        return Err(Error::validation(format!(
                            "section_id {s} is not a section of project {}",
                            p.identifier
                        ))
                        .into());
                    }
                    doc.section_id = Some(s.to_string());
                }
                if let Some(raw) = &r.milestone_id
                    && let Some(m) = check_id("milestone_id", raw)?
                {
                    if !p.milestones.iter().any(|x| x.id == m.to_string()) {
                        return Err(Error::validation(format!(
                            "milestone_id {m} is not a milestone of project {}",
                            p.identifier
                        ))
                        .into());
                    }
                    doc.milestone_id = Some(m.to_string());
                }
            }
            None => {
                for (set, name) in
                    [(&r.status_id, "status_id"), (&r.section_id, "section_id"), (&r.milestone_id, "milestone_id")]
                {
                    if set.as_deref().is_some_and(|s| !s.trim().is_empty()) {
                        return Err(Error::validation(format!("{name}: a task outside projects has none")).into());
                    }
                }
            }
        }
        if let Some(p) = &r.parent_id {
            doc.parent_id = check_parent(&mut tx, &c, None, p).await?;
        }
        refresh_recurrence(&mut tx, &c, &mut doc, true).await?;
        doc.labels = ensure_labels(&mut tx, &c, &r.labels, t).await?;
        let labels = label_map(&mut tx, &c).await?;
        // Last, so the counter's row lock is held as briefly as possible.
        if let Some((pid, p)) = &project {
            number_into(&mut tx, &c, id, *pid, p, &mut doc).await?;
        }
        let w = Write { search_text: doc.search_text(), doc: doc.to_value(), valid_from, actor: c.actor().to_owned() };
        let rec = TASKS.create(&mut tx, c.tenant, id, w, t).await?;
        let out = render(&c, &rec, &labels)?;
        self.emit_task(&mut tx, &c, "created", &out, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn get_task(&self, req: Request<pb::GetTaskRequest>) -> Result<Response<pb::Task>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let id = uuid(&r.id, "id")?;
        let t = now();
        let at = c.moment(opt_datetime(r.as_of.as_ref(), "as_of")?, opt_datetime(r.valid_at.as_ref(), "valid_at")?, t);
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let out = match at {
            None => {
                let rec = TASKS.head(&mut tx, c.tenant, id).await?;
                render_one(&mut tx, &c, &rec).await?
            }
            Some((as_of, valid_at)) => {
                let rec = TASKS.at(&mut tx, c.tenant, c.retention(t), id, as_of, valid_at).await?;
                render(&c, &rec, &label_map(&mut tx, &c).await?)?
            }
        };
        Ok(Response::new(out))
    }

    async fn get_task_by_identifier(
        &self,
        req: Request<pb::GetTaskByIdentifierRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let c = self.caller(&req)?;
        let ident = req.get_ref().identifier.trim().to_ascii_uppercase();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let id = queries::task_by_identifier(&mut tx, c.tenant, &ident)
            .await?
            .ok_or_else(|| Error::not_found(format!("task {}", quote(&ident))))?;
        let rec = TASKS.head(&mut tx, c.tenant, id).await?;
        Ok(Response::new(render_one(&mut tx, &c, &rec).await?))
    }

    async fn update_task(&self, req: Request<pb::UpdateTaskRequest>) -> Result<Response<pb::Task>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let id = uuid(&r.id, "id")?;
        let valid_from = opt_datetime(r.valid_from.as_ref(), "valid_from")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let head = TASKS.head_for_update(&mut tx, c.tenant, id, r.expected_version).await?;
        let old = TaskDoc::from_value(&head.doc)?;
        let doc = edit(&mut tx, &c, id, &old, &r, t).await?;
        let action =
            if !is_done(&old.status_category) && doc.status_category == "completed" { "completed" } else { "updated" };
        let out = self.save_task(&mut tx, &c, &head, &old, &doc, valid_from, action, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn delete_task(&self, req: Request<pb::DeleteTaskRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        let c = self.caller(&req)?;
        let id = uuid(&req.get_ref().id, "id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let rec = TASKS.delete(&mut tx, c.tenant, id, c.actor(), t).await?;
        let out = render(&c, &rec, &label_map(&mut tx, &c).await?)?;
        self.emit_task(&mut tx, &c, "deleted", &out, t).await?;
        self.links.source_deleted(&mut tx, &c, TASKS.entity(), id, t).await?;
        self.links.target_changed(&mut tx, &c, TASKS.entity(), id, true, rec.version, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(pb::DeleteResponse { id: id.to_string(), deleted: true }))
    }

    async fn create_task_link(&self, req: Request<common::CreateLinkRequest>) -> Result<Response<common::Link>, Status> {
        let c = self.caller(&req)?;
        Ok(Response::new(self.links.create_explicit(&c, TASKS, req.get_ref()).await?))
    }

    async fn delete_task_link(&self, req: Request<common::DeleteLinkRequest>) -> Result<Response<common::DeleteLinkResponse>, Status> {
        let c = self.caller(&req)?;
        Ok(Response::new(self.links.delete_explicit(&c, TASKS, req.get_ref()).await?))
    }

    async fn list_task_links(&self, req: Request<common::ListLinksRequest>) -> Result<Response<common::ListLinksResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let id = uuid(&r.id, "id")?;
        {
            let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
            TASKS.head(&mut tx, c.tenant, id).await?;
        }
        Ok(Response::new(self.links.list(&c, TASKS.entity(), id, &r).await?))
    }

    async fn list_tasks(&self, req: Request<pb::ListTasksRequest>) -> Result<Response<pb::ListTasksResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let t = now();
        let at = c.moment(opt_datetime(r.as_of.as_ref(), "as_of")?, opt_datetime(r.valid_at.as_ref(), "valid_at")?, t);
        let mut key = r.clone();
        key.cursor = None;
        key.limit = None;
        let scope = format!("tasks:{key:?}");
        let ids = [
            ("project_id", &r.project_id),
            ("section_id", &r.section_id),
            ("status_id", &r.status_id),
            ("assignee_id", &r.assignee_id),
            ("parent_id", &r.parent_id),
            ("milestone_id", &r.milestone_id),
        ];
        let mut equals = Vec::new();
        for (field, v) in ids {
            if let Some(v) = v.as_deref() {
                let id = check_id(field, v)?.ok_or_else(|| Error::invalid(format!("{field} must not be empty")))?;
                equals.push((field, id.to_string()));
            }
        }
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        if let Some(at) = at {
            let allowed = ["project_id", "status_id", "parent_id"];
            if let Some((f, _)) = equals.iter().find(|(f, _)| !allowed.contains(f)) {
                return Err(Error::invalid(format!("{f} cannot be combined with as_of or valid_at")).into());
            }
            let others = [
                (r.status_category != 0, "status_category"),
                (r.label.is_some(), "label"),
                (r.priority.is_some(), "priority"),
                (r.top_level, "top_level"),
                (r.due_before.is_some() || r.due_after.is_some(), "due_before/due_after"),
                (r.overdue.is_some(), "overdue"),
                (r.is_blocked.is_some(), "is_blocked"),
                (r.q.is_some(), "q"),
                (r.sort != 0, "sort"),
                (r.include_done.is_some(), "include_done"),
            ];
            if let Some((_, name)) = others.iter().find(|(set, _)| *set) {
                return Err(Error::invalid(format!("{name} cannot be combined with as_of or valid_at")).into());
            }
            let q = ListQuery {
                equals,
                search: None,
                updated_since: None,
                limit: cursor::limit(r.limit)?,
                cursor: cursor::decode_opt(r.cursor.as_deref(), &scope)?,
                at: Some(at),
            };
            let page = TASKS.list(&mut tx, c.tenant, c.retention(t), &q).await?;
            let labels = label_map(&mut tx, &c).await?;
            let data = page.rows.iter().map(|rec| render(&c, rec, &labels)).collect::<Result<Vec<_>>>()?;
            return Ok(Response::new(pb::ListTasksResponse {
                data,
                has_more: page.next.is_some(),
                next_cursor: page.next.map(|n| n.encode(&scope)).unwrap_or_default(),
            }));
        }
        let tz = tenant_tz(&mut tx, &c).await?;
        let mut filter = Filter {
            equals,
            top_level: r.top_level,
            open_only: r.include_done == Some(false),
            is_blocked: r.is_blocked,
            ..Default::default()
        };
        if r.status_category != 0 {
            filter.equals.push(("status_category", category_name(r.status_category)?.to_owned()));
        }
        if let Some(p) = r.priority {
            filter.priority = Some(i64::from(check_priority(Some(p), None)?.unwrap_or(0)));
        }
        if let Some(name) = &r.label {
            let name = domain::check_label_name(name)?;
            match queries::label_by_key(&mut tx, c.tenant, &label_key(&name)).await? {
                Some(id) => filter.label = Some(id.to_string()),
                None => return Ok(Response::new(pb::ListTasksResponse::default())),
            }
        }
        filter.due_before = opt_datetime(r.due_before.as_ref(), "due_before")?.map(|b| bound(b, tz));
        filter.due_after = opt_datetime(r.due_after.as_ref(), "due_after")?.map(|b| bound(b, tz));
        if let Some(yes) = r.overdue {
            let (n, d) = overdue_bound(t, tz);
            filter.overdue = Some((yes, n, d));
        }
        if let Some(q) = r.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
            filter.search = Some(search_expr(&tx, q)?);
        }
        let sort = match pb::TaskSort::try_from(r.sort) {
            Ok(pb::TaskSort::Priority) => Sort::Priority,
            Ok(pb::TaskSort::Due) => Sort::Due,
            Ok(pb::TaskSort::Position) => Sort::Position,
            Ok(_) => Sort::Updated,
            Err(_) => return Err(Error::invalid("sort must be updated, priority, due or position").into()),
        };
        let args =
            ListArgs { filter, sort, limit: cursor::limit(r.limit)?, offset: offset_of(r.cursor.as_deref(), &scope)? };
        Ok(Response::new(page(&mut tx, &c, &args, &scope).await?))
    }

    async fn search_tasks(
        &self,
        req: Request<pb::SearchTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let mut key = r.clone();
        key.cursor = None;
        key.limit = None;
        let scope = format!("tasks:search:{key:?}");
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let mut filter = Filter {
            search: Some(search_expr(&tx, r.q.trim())?),
            open_only: r.include_done == Some(false),
            ..Default::default()
        };
        if let Some(p) = r.project_id.as_deref().map(|p| check_id("project_id", p)).transpose()?.flatten() {
            filter.equals.push(("project_id", p.to_string()));
        }
        let args = ListArgs {
            filter,
            sort: Sort::Updated,
            limit: cursor::limit(r.limit)?,
            offset: offset_of(r.cursor.as_deref(), &scope)?,
        };
        Ok(Response::new(page(&mut tx, &c, &args, &scope).await?))
    }

    async fn list_overdue_tasks(
        &self,
        req: Request<pb::ListOverdueTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let mut key = r.clone();
        key.cursor = None;
        key.limit = None;
        let scope = format!("tasks:overdue:{key:?}");
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let tz = tenant_tz(&mut tx, &c).await?;
        let (n, d) = overdue_bound(t, tz);
        let mut filter = Filter { overdue: Some((true, n, d)), ..Default::default() };
        for (field, v) in [("project_id", &r.project_id), ("assignee_id", &r.assignee_id)] {
            if let Some(id) = v.as_deref().map(|v| check_id(field, v)).transpose()?.flatten() {
                filter.equals.push((field, id.to_string()));
            }
        }
        let args = ListArgs {
            filter,
            sort: Sort::Due,
            limit: cursor::limit(r.limit)?,
            offset: offset_of(r.cursor.as_deref(), &scope)?,
        };
        Ok(Response::new(page(&mut tx, &c, &args, &scope).await?))
    }

    async fn complete_task(&self, req: Request<pb::CompleteTaskRequest>) -> Result<Response<pb::Task>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let id = uuid(&r.id, "id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let head = TASKS.head_for_update(&mut tx, c.tenant, id, None).await?;
        let old = TaskDoc::from_value(&head.doc)?;
        if is_done(&old.status_category) {
            return Ok(Response::new(render_one(&mut tx, &c, &head).await?));
        }
        let mut doc = old.clone();
        let moved_on = doc.rrule.is_some() && !r.stop_recurrence && advance(&mut tx, &c, &mut doc, false, t).await?;
        if !moved_on {
            finish(&mut tx, &c, &mut doc, t).await?;
        }
        let out = self.save_task(&mut tx, &c, &head, &old, &doc, None, "completed", t).await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn reopen_task(&self, req: Request<pb::ReopenTaskRequest>) -> Result<Response<pb::Task>, Status> {
        let c = self.caller(&req)?;
        let id = uuid(&req.get_ref().id, "id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let head = TASKS.head_for_update(&mut tx, c.tenant, id, None).await?;
        let old = TaskDoc::from_value(&head.doc)?;
        if !is_done(&old.status_category) {
            return Ok(Response::new(render_one(&mut tx, &c, &head).await?));
        }
        let mut doc = old.clone();
        match doc.project_id.as_deref().and_then(|p| Uuid::parse_str(p).ok()) {
            Some(pid) => {
                let p = project_ref(&mut tx, &c, pid, "project_id").await?;
                let s = p
                    .reopen_status()
                    .ok_or_else(|| Error::conflict(format!("project {} has no open status", p.identifier)))?
                    .id
                    .clone();
                set_status(&mut doc, &p, &s, t)?;
            }
            None => doc.set_category("unstarted", t),
        }
        if doc.rrule.is_some() {
            refresh_recurrence(&mut tx, &c, &mut doc, false).await?;
        }
        let out = self.save_task(&mut tx, &c, &head, &old, &doc, None, "reopened", t).await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn skip_occurrence(&self, req: Request<pb::SkipOccurrenceRequest>) -> Result<Response<pb::Task>, Status> {
        let c = self.caller(&req)?;
        let id = uuid(&req.get_ref().id, "id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let head = TASKS.head_for_update(&mut tx, c.tenant, id, None).await?;
        let old = TaskDoc::from_value(&head.doc)?;
        if is_done(&old.status_category) {
            return Err(Error::conflict("the task is done; reopen it first").into());
        }
        let mut doc = old.clone();
        let action = if advance(&mut tx, &c, &mut doc, true, t).await? {
            "skipped"
        } else {
            finish(&mut tx, &c, &mut doc, t).await?;
            "completed"
        };
        let out = self.save_task(&mut tx, &c, &head, &old, &doc, None, action, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn bulk_update_tasks(
        &self,
        req: Request<pb::BulkUpdateTasksRequest>,
    ) -> Result<Response<pb::BulkUpdateTasksResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        if r.ids.is_empty() || r.ids.len() > MAX_BULK {
            return Err(Error::validation(format!("ids must hold 1 to {MAX_BULK} task ids")).into());
        }
        let mut ids = Vec::new();
        for raw in &r.ids {
            let id = uuid(raw, "ids")?;
            if ids.contains(&id) {
                return Err(Error::validation(format!("ids: {id} is given twice")).into());
            }
            ids.push(id);
        }
        let change = pb::UpdateTaskRequest {
            status_id: r.status_id.clone(),
            assignee_id: r.assignee_id.clone(),
            add_labels: r.add_labels.clone(),
            remove_labels: r.remove_labels.clone(),
            priority: r.priority,
            project_id: r.project_id.clone(),
            ..Default::default()
        };
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        // Locked in id order, so two bulk updates over the same tasks cannot deadlock.
        let mut order = ids.clone();
        order.sort();
        let mut done: HashMap<Uuid, pb::Task> = HashMap::new();
        for id in order {
            let head = TASKS.head_for_update(&mut tx, c.tenant, id, None).await.map_err(|e| {
                if e.code == ErrorCode::NotFound {
                    Error::not_found(format!("task {id}; no task was changed"))
                } else {
                    e
                }
            })?;
            let old = TaskDoc::from_value(&head.doc)?;
            let doc = edit(&mut tx, &c, id, &old, &change, t)
                .await
                .map_err(|e| Error::new(e.code, format!("{}: {}; no task was changed", name_of(&old), e.message)))?;
            let action = if !is_done(&old.status_category) && doc.status_category == "completed" {
                "completed"
            } else {
                "updated"
            };
            let out = self.save_task(&mut tx, &c, &head, &old, &doc, None, action, t).await?;
            done.insert(id, out);
        }
        self.commit(tx).await?;
        Ok(Response::new(pb::BulkUpdateTasksResponse { data: ids.iter().filter_map(|id| done.remove(id)).collect() }))
    }

    async fn list_subtasks(
        &self,
        req: Request<pb::ListSubtasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let c = self.caller(&req)?;
        let id = uuid(&req.get_ref().id, "id")?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        TASKS.head(&mut tx, c.tenant, id).await?;
        let rows = queries::children(&mut tx, c.tenant, id).await?;
        let data = render_many(&mut tx, &c, &rows).await?;
        Ok(Response::new(pb::ListTasksResponse { data, next_cursor: String::new(), has_more: false }))
    }

    async fn get_task_tree(&self, req: Request<pb::GetTaskTreeRequest>) -> Result<Response<pb::TaskTree>, Status> {
        let c = self.caller(&req)?;
        let id = uuid(&req.get_ref().id, "id")?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let rec = TASKS.head(&mut tx, c.tenant, id).await?;
        let mut budget = MAX_TREE;
        Ok(Response::new(tree(&mut tx, &c, rec, &mut budget, 0).await?))
    }

    async fn add_dependency(&self, req: Request<pb::AddDependencyRequest>) -> Result<Response<pb::Dependency>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let task = uuid(&r.task_id, "task_id")?;
        let other = uuid(&r.depends_on_id, "depends_on_id")?;
        if task == other {
            return Err(Error::validation("a task cannot depend on itself").into());
        }
        let ty = pb::DependencyType::try_from(r.r#type).unwrap_or(pb::DependencyType::Unspecified);
        let (from, to, kind) = match ty {
            pb::DependencyType::Blocks => (task, other, "blocks"),
            pb::DependencyType::BlockedBy => (other, task, "blocks"),
            pb::DependencyType::Related => (task, other, "related"),
            pb::DependencyType::Duplicate => (task, other, "duplicate"),
            pb::DependencyType::Unspecified => {
                return Err(Error::validation("type must be blocks, blocked_by, related or duplicate").into());
            }
        };
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        // Both heads locked in id order: concurrent edges between the same tasks queue, so two
        // halves of a cycle cannot both pass the check.
        let (a, b) = if task < other { (task, other) } else { (other, task) };
        let ha = TASKS.head_for_update(&mut tx, c.tenant, a, None).await?;
        TASKS.head_for_update(&mut tx, c.tenant, b, None).await?;
        if kind == "blocks" {
            check_cycle(&mut tx, &c, from, to).await?;
        }
        let added = queries::add_edge(&mut tx, c.tenant, from, to, kind, t).await?;
        let edge = queries::edges_of(&mut tx, c.tenant, task)
            .await?
            .into_iter()
            .find(|e| e.task_id == from && e.other_id == to && e.kind == kind)
            .ok_or_else(|| Error::internal("the dependency just written is missing"))?;
        let out = dependency_pb(&mut tx, &c, task, &edge).await?;
        if added {
            rpc::emit(
                &mut tx,
                &c,
                "worktruck.tasks.dependency.created.v1",
                task,
                ha.version,
                &out,
                t,
            )
            .await?;
        }
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn remove_dependency(
        &self,
        req: Request<pb::RemoveDependencyRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let task = uuid(&r.task_id, "task_id")?;
        let other = uuid(&r.depends_on_id, "depends_on_id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let head = TASKS.head(&mut tx, c.tenant, task).await?;
        if queries::remove_edges(&mut tx, c.tenant, task, other).await? == 0 {
            return Err(Error::not_found("dependency").into());
        }
        let out = pb::Dependency { task_id: task.to_string(), depends_on_id: other.to_string(), ..Default::default() };
        rpc::emit(
            &mut tx,
            &c,
            "worktruck.tasks.dependency.deleted.v1",
            task,
            head.version,
            &out,
            t,
        )
        .await?;
        self.commit(tx).await?;
        Ok(Response::new(pb::DeleteResponse { id: other.to_string(), deleted: true }))
    }

    async fn list_dependencies(
        &self,
        req: Request<pb::ListDependenciesRequest>,
    ) -> Result<Response<pb::ListDependenciesResponse>, Status> {
        let c = self.caller(&req)?;
        let task = uuid(&req.get_ref().task_id, "task_id")?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        TASKS.head(&mut tx, c.tenant, task).await?;
        let mut data = Vec::new();
        for e in queries::edges_of(&mut tx, c.tenant, task).await? {
            data.push(dependency_pb(&mut tx, &c, task, &e).await?);
        }
        Ok(Response::new(pb::ListDependenciesResponse { data }))
    }

    async fn add_comment(&self, req: Request<pb::AddCommentRequest>) -> Result<Response<pb::Comment>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let task = uuid(&r.task_id, "task_id")?;
        let doc = CommentDoc {
            task_id: task.to_string(),
            body: check_comment(&r.body)?,
            author: c.actor().to_owned(),
            edited_at: None,
        };
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        TASKS.head(&mut tx, c.tenant, task).await?;
        let id = Uuid::now_v7();
        let w =
            Write { search_text: String::new(), doc: doc.to_value(), valid_from: None, actor: c.actor().to_owned() };
        let rec = COMMENTS.create(&mut tx, c.tenant, id, w, t).await?;
        let out = domain::comment_pb(&rec)?;
        rpc::emit(
            &mut tx,
            &c,
            "worktruck.tasks.comment.created.v1",
            id,
            rec.version,
            &out,
            t,
        )
        .await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn update_comment(&self, req: Request<pb::UpdateCommentRequest>) -> Result<Response<pb::Comment>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let task = uuid(&r.task_id, "task_id")?;
        let id = uuid(&r.id, "id")?;
        let body = check_comment(&r.body)?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let head = COMMENTS.head_for_update(&mut tx, c.tenant, id, None).await?;
        let mut doc = CommentDoc::from_value(&head.doc)?;
        if doc.task_id != task.to_string() {
            return Err(Error::not_found("comment").into());
        }
        if doc.body == body {
            return Ok(Response::new(domain::comment_pb(&head)?));
        }
        doc.body = body;
        doc.edited_at = Some(fmt_ts(t));
        let w =
            Write { search_text: String::new(), doc: doc.to_value(), valid_from: None, actor: c.actor().to_owned() };
        let rec = COMMENTS.update_head(&mut tx, c.tenant, &head, w, t).await?;
        let out = domain::comment_pb(&rec)?;
        rpc::emit(
            &mut tx,
            &c,
            "worktruck.tasks.comment.updated.v1",
            id,
            rec.version,
            &out,
            t,
        )
        .await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn delete_comment(
        &self,
        req: Request<pb::DeleteCommentRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let task = uuid(&r.task_id, "task_id")?;
        let id = uuid(&r.id, "id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let head = COMMENTS.head_for_update(&mut tx, c.tenant, id, None).await?;
        if CommentDoc::from_value(&head.doc)?.task_id != task.to_string() {
            return Err(Error::not_found("comment").into());
        }
        let rec = COMMENTS.delete(&mut tx, c.tenant, id, c.actor(), t).await?;
        let out = domain::comment_pb(&rec)?;
        rpc::emit(
            &mut tx,
            &c,
            "worktruck.tasks.comment.deleted.v1",
            id,
            rec.version,
            &out,
            t,
        )
        .await?;
        self.commit(tx).await?;
        Ok(Response::new(pb::DeleteResponse { id: id.to_string(), deleted: true }))
    }

    async fn list_comments(
        &self,
        req: Request<pb::ListCommentsRequest>,
    ) -> Result<Response<pb::ListCommentsResponse>, Status> {
        let c = self.caller(&req)?;
        let task = uuid(&req.get_ref().task_id, "task_id")?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        TASKS.head(&mut tx, c.tenant, task).await?;
        let data = queries::comments(&mut tx, c.tenant, task)
            .await?
            .iter()
            .map(domain::comment_pb)
            .collect::<Result<Vec<_>>>()?;
        Ok(Response::new(pb::ListCommentsResponse { data }))
    }

    async fn get_task_history(
        &self,
        req: Request<common::HistoryRequest>,
    ) -> Result<Response<common::HistoryResponse>, Status> {
        let c = self.caller(&req)?;
        Ok(Response::new(rpc::history(&TASKS, &self.db, &c, req.into_inner(), TASK_HIDDEN).await?))
    }

    async fn diff_task(&self, req: Request<common::DiffRequest>) -> Result<Response<common::DiffResponse>, Status> {
        let c = self.caller(&req)?;
        Ok(Response::new(rpc::diff(&TASKS, &self.db, &c, req.into_inner(), TASK_HIDDEN).await?))
    }

    async fn get_task_timeline(
        &self,
        req: Request<common::TimelineRequest>,
    ) -> Result<Response<common::TimelineResponse>, Status> {
        let c = self.caller(&req)?;
        Ok(Response::new(rpc::timeline(&TASKS, &self.db, &c, req.into_inner(), TASK_HIDDEN).await?))
    }

    async fn create_label(&self, req: Request<pb::CreateLabelRequest>) -> Result<Response<pb::Label>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let mut doc = LabelDoc::named(&r.name)?;
        doc.color = r.color.as_deref().map(check_color).transpose()?.flatten();
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        if queries::label_by_key(&mut tx, c.tenant, &doc.key).await?.is_some() {
            return Err(
                Error::new(ErrorCode::AlreadyExists, format!("a label named {} exists", quote(&doc.name))).into()
            );
        }
        let id = Uuid::now_v7();
        let w =
            Write { search_text: String::new(), doc: doc.to_value(), valid_from: None, actor: c.actor().to_owned() };
        let rec = LABELS.create(&mut tx, c.tenant, id, w, t).await?;
        let out = label_pb(&rec)?;
        rpc::emit(
            &mut tx,
            &c,
            "worktruck.tasks.label.created.v1",
            id,
            rec.version,
            &out,
            t,
        )
        .await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn update_label(&self, req: Request<pb::UpdateLabelRequest>) -> Result<Response<pb::Label>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let id = uuid(&r.id, "id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let head = LABELS.head_for_update(&mut tx, c.tenant, id, None).await?;
        let old = LabelDoc::from_value(&head.doc)?;
        let mut doc = old.clone();
        if let Some(n) = &r.name {
            let named = LabelDoc::named(n)?;
            if named.key != old.key && queries::label_by_key(&mut tx, c.tenant, &named.key).await?.is_some() {
                return Err(Error::new(
                    ErrorCode::AlreadyExists,
                    format!("a label named {} exists", quote(&named.name)),
                )
                .into());
            }
            doc.name = named.name;
            doc.key = named.key;
        }
        if let Some(col) = &r.color {
            doc.color = check_color(col)?;
        }
        if doc == old {
            return Ok(Response::new(label_pb(&head)?));
        }
        let w =
            Write { search_text: String::new(), doc: doc.to_value(), valid_from: None, actor: c.actor().to_owned() };
        let rec = LABELS.update_head(&mut tx, c.tenant, &head, w, t).await?;
        let out = label_pb(&rec)?;
        rpc::emit(
            &mut tx,
            &c,
            "worktruck.tasks.label.updated.v1",
            id,
            rec.version,
            &out,
            t,
        )
        .await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn delete_label(&self, req: Request<pb::DeleteLabelRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        let c = self.caller(&req)?;
        let id = uuid(&req.get_ref().id, "id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let rec = LABELS.delete(&mut tx, c.tenant, id, c.actor(), t).await?;
        let out = label_pb(&rec)?;
        rpc::emit(
            &mut tx,
            &c,
            "worktruck.tasks.label.deleted.v1",
            id,
            rec.version,
            &out,
            t,
        )
        .await?;
        self.commit(tx).await?;
        Ok(Response::new(pb::DeleteResponse { id: id.to_string(), deleted: true }))
    }

    async fn list_labels(
        &self,
        req: Request<pb::ListLabelsRequest>,
    ) -> Result<Response<pb::ListLabelsResponse>, Status> {
        let c = self.caller(&req)?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let mut data: Vec<pb::Label> = label_map(&mut tx, &c).await?.into_values().collect();
        data.sort_by(|a, b| a.name.to_lowercase().cmp(&b.name.to_lowercase()).then(a.id.cmp(&b.id)));
        Ok(Response::new(pb::ListLabelsResponse { data }))
    }

    async fn get_task_settings(
        &self,
        req: Request<pb::GetTaskSettingsRequest>,
    ) -> Result<Response<pb::TaskSettings>, Status> {
        let c = self.caller(&req)?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let tz = tenant_tz(&mut tx, &c).await?;
        Ok(Response::new(pb::TaskSettings { time_zone: tz.name().to_owned() }))
    }

    async fn update_task_settings(&self, req: Request<pb::TaskSettings>) -> Result<Response<pb::TaskSettings>, Status> {
        let c = self.caller(&req)?;
        let tz = recur::check_time_zone(&req.get_ref().time_zone)?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        queries::set_time_zone(&mut tx, c.tenant, tz.name()).await?;
        let out = pb::TaskSettings { time_zone: tz.name().to_owned() };
        rpc::emit(
            &mut tx,
            &c,
            "worktruck.tasks.settings.updated.v1",
            c.tenant,
            0,
            &out,
            t,
        )
        .await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }
}
