//! Projects, tasks, labels and comments as domain code sees them: validated documents (the
//! bitemporal documents kit's store keeps) and their mapping to the wire types.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;
use worktruck_kit::error::quote;
use worktruck_kit::pbjson::{timestamp, to_struct};
use worktruck_kit::store::Record;
use worktruck_kit::{Error, Result};
use worktruck_proto::tasks::v1 as pb;

use crate::recur::Due;
pub use worktruck_kit::check::{check_name, check_text, check_date, check_color, check_id, check_metadata, merge};

/// Most labels or URL links on one task.
pub const MAX_LIST: usize = 50;
/// Most completions kept on a recurring task (the oldest drop out; history keeps them all).
const MAX_COMPLETIONS: usize = 500;

/// The priority names, by value.
pub const PRIORITY_NAMES: [&str; 5] = ["none", "low", "medium", "high", "urgent"];

/// Categories in which a task is done.
pub fn is_done(category: &str) -> bool {
    matches!(category, "completed" | "canceled")
}

/// A moment as stored in documents: fixed width, so text order is time order on both backends.
pub fn fmt_ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// A stored moment back.
pub fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(Error::internal)
}

fn opt_ts(s: &Option<String>) -> Option<prost_types::Timestamp> {
    s.as_deref().and_then(|s| parse_ts(s).ok()).map(timestamp)
}

/// Validates an identifier prefix: 1 to 10 upper-case ASCII letters or digits.
pub fn check_prefix(v: &str) -> Result<String> {
    let ok = !v.is_empty() && v.len() <= 10 && v.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if !ok {
        return Err(Error::validation(format!(
            "identifier {} must be 1 to 10 upper-case letters or digits, such as API",
            quote(v)
        )));
    }
    Ok(v.to_owned())
}

/// The priority from a number and/or a name (which must agree); `None` when neither is given.
pub fn check_priority(n: Option<i32>, name: Option<&str>) -> Result<Option<i32>> {
    let by_name = match name.map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => {
            Some(PRIORITY_NAMES.iter().position(|p| p.eq_ignore_ascii_case(s)).map(|i| i as i32).ok_or_else(|| {
                Error::validation(format!("priority_name {} must be none, low, medium, high or urgent", quote(s)))
            })?)
        }
    };
    if let Some(n) = n
        && !(0..=4).contains(&n)
    {
        return Err(Error::validation(format!("priority {n} must be 0 (none) to 4 (urgent)")));
    }
    match (n, by_name) {
        (Some(a), Some(b)) if a != b => Err(Error::validation("priority and priority_name disagree")),
        (a, b) => Ok(a.or(b)),
    }
}

/// Validates minutes (0 to 1,000,000).
pub fn check_minutes(field: &str, v: i32) -> Result<i32> {
    if !(0..=1_000_000).contains(&v) {
        return Err(Error::validation(format!("{field} must be 0 to 1000000")));
    }
    Ok(v)
}

/// Validates an http(s) URL of at most 2,048 characters.
pub fn check_url(v: &str) -> Result<String> {
    let v = v.trim();
    let ok = (v.starts_with("https://") || v.starts_with("http://"))
        && v.len() > "https://".len()
        && v.chars().count() <= 2048
        && !v.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(Error::validation(format!(
            "url {} must be an http or https URL of at most 2048 characters",
            quote(v)
        )));
    }
    Ok(v.to_owned())
}

/// Validates URL links.
pub fn check_url_links(links: &[pb::UrlLink]) -> Result<Vec<UrlLinkDoc>> {
    if links.len() > MAX_LIST {
        return Err(Error::validation(format!("a task has at most {MAX_LIST} URL links")));
    }
    links
        .iter()
        .map(|l| {
            Ok(UrlLinkDoc {
                url: check_url(&l.url)?,
                title: l.title.as_deref().map(|t| check_name("url_links.title", t, 500)).transpose()?,
            })
        })
        .collect()
}

/// Validates label names: trimmed, 1 to 100 characters, no `,`; duplicates dropped.
pub fn check_label_names(names: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let n = check_label_name(n)?;
        if !out.iter().any(|o| o.to_lowercase() == n.to_lowercase()) {
            out.push(n);
        }
    }
    if out.len() > MAX_LIST {
        return Err(Error::validation(format!("a task has at most {MAX_LIST} labels")));
    }
    Ok(out)
}

/// Validates one label name.
pub fn check_label_name(n: &str) -> Result<String> {
    let n = check_name("label", n, 100)?;
    if n.contains(',') {
        return Err(Error::validation("a label name must not contain ,"));
    }
    Ok(n)
}

/// The lookup key of a label name.
pub fn label_key(n: &str) -> String {
    n.trim().to_lowercase()
}

/// A status category from the wire; `unspecified` is refused.
pub fn category_name(c: i32) -> Result<&'static str> {
    Ok(match pb::StatusCategory::try_from(c) {
        Ok(pb::StatusCategory::Backlog) => "backlog",
        Ok(pb::StatusCategory::Unstarted) => "unstarted",
        Ok(pb::StatusCategory::Started) => "started",
        Ok(pb::StatusCategory::Completed) => "completed",
        Ok(pb::StatusCategory::Canceled) => "canceled",
        _ => return Err(Error::validation("category must be backlog, unstarted, started, completed or canceled")),
    })
}

/// A stored category to the wire.
pub fn category_pb(c: &str) -> pb::StatusCategory {
    match c {
        "backlog" => pb::StatusCategory::Backlog,
        "unstarted" => pb::StatusCategory::Unstarted,
        "started" => pb::StatusCategory::Started,
        "completed" => pb::StatusCategory::Completed,
        "canceled" => pb::StatusCategory::Canceled,
        _ => pb::StatusCategory::Unspecified,
    }
}

/// A member role from the wire.
pub fn role_name(r: i32) -> Result<&'static str> {
    Ok(match pb::MemberRole::try_from(r) {
        Ok(pb::MemberRole::Owner) => "owner",
        Ok(pb::MemberRole::Admin) => "admin",
        Ok(pb::MemberRole::Member) => "member",
        Ok(pb::MemberRole::Viewer) => "viewer",
        _ => return Err(Error::validation("role must be owner, admin, member or viewer")),
    })
}

fn role_pb(r: &str) -> pb::MemberRole {
    match r {
        "owner" => pb::MemberRole::Owner,
        "admin" => pb::MemberRole::Admin,
        "member" => pb::MemberRole::Member,
        "viewer" => pb::MemberRole::Viewer,
        _ => pb::MemberRole::Unspecified,
    }
}

/// A status of a project's workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// backlog, unstarted, started, completed or canceled.
    pub category: String,
    /// Colour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
}

/// A section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SectionDoc {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
}

/// A milestone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MilestoneDoc {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Target date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_date: Option<String>,
}

/// A member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberDoc {
    /// Contact id or principal.
    pub member_id: String,
    /// owner, admin, member or viewer.
    pub role: String,
}

/// The stored fields of a project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectDoc {
    /// Name.
    pub name: String,
    /// Identifier prefix.
    pub identifier: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Start date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<String>,
    /// Target date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_date: Option<String>,
    /// Archived.
    pub is_archived: bool,
    /// Private.
    pub is_private: bool,
    /// Free JSON.
    pub metadata: Value,
    /// The default status.
    pub default_status_id: String,
    /// The workflow, in order.
    pub statuses: Vec<StatusDoc>,
    /// The sections, in order.
    #[serde(default)]
    pub sections: Vec<SectionDoc>,
    /// The milestones.
    #[serde(default)]
    pub milestones: Vec<MilestoneDoc>,
    /// The members.
    #[serde(default)]
    pub members: Vec<MemberDoc>,
}

impl ProjectDoc {
    /// A new project with the default workflow.
    pub fn new(name: String, identifier: String) -> ProjectDoc {
        let statuses: Vec<StatusDoc> = [
            ("Backlog", "backlog"),
            ("Todo", "unstarted"),
            ("In Progress", "started"),
            ("Done", "completed"),
            ("Canceled", "canceled"),
        ]
        .into_iter()
        .map(|(n, c)| StatusDoc { id: Uuid::now_v7().to_string(), name: n.into(), category: c.into(), color: None })
        .collect();
        ProjectDoc {
            name,
            identifier,
            description: None,
            start_date: None,
            target_date: None,
            is_archived: false,
            is_private: false,
            metadata: Value::Object(Default::default()),
            default_status_id: statuses[1].id.clone(),
            statuses,
            sections: Vec::new(),
            milestones: Vec::new(),
            members: Vec::new(),
        }
    }

    /// The status `id` of this project.
    pub fn status(&self, id: &str) -> Option<&StatusDoc> {
        self.statuses.iter().find(|s| s.id == id)
    }

    /// The status a task gets on completion (or cancellation): the first of that category.
    pub fn first_of(&self, category: &str) -> Option<&StatusDoc> {
        self.statuses.iter().find(|s| s.category == category)
    }

    /// The status a reopened task gets: the default when it is open, else the first open one.
    pub fn reopen_status(&self) -> Option<&StatusDoc> {
        self.status(&self.default_status_id)
            .filter(|s| !is_done(&s.category))
            .or_else(|| self.statuses.iter().find(|s| !is_done(&s.category)))
    }

    /// Checks that start and target dates are in order.
    pub fn check_dates(&self) -> Result<()> {
        if let (Some(s), Some(t)) = (&self.start_date, &self.target_date)
            && t < s
        {
            return Err(Error::validation("target_date must not be before start_date"));
        }
        Ok(())
    }

    /// The stored JSON.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a project serialises")
    }

    /// Reads a stored document.
    pub fn from_value(v: &Value) -> Result<ProjectDoc> {
        serde_json::from_value(v.clone()).map_err(Error::internal)
    }

    /// The text full-text search covers.
    pub fn search_text(&self) -> String {
        format!("{} {}", self.identifier, self.name)
    }
}

/// Milestone counts: (all tasks, completed tasks), by milestone id.
pub type MilestoneCounts = std::collections::HashMap<String, (i64, i64)>;

/// The wire status.
pub fn status_pb(p: &ProjectDoc, i: usize, s: &StatusDoc) -> pb::Status {
    pb::Status {
        id: s.id.clone(),
        name: s.name.clone(),
        category: category_pb(&s.category) as i32,
        color: s.color.clone(),
        position: i as i32,
        is_default: s.id == p.default_status_id,
    }
}

/// The wire milestone with its progress.
pub fn milestone_pb(m: &MilestoneDoc, counts: &MilestoneCounts) -> pb::Milestone {
    let (all, done) = counts.get(&m.id).copied().unwrap_or((0, 0));
    pb::Milestone {
        id: m.id.clone(),
        name: m.name.clone(),
        description: m.description.clone(),
        target_date: m.target_date.clone(),
        task_count: all as i32,
        completed_count: done as i32,
        progress: if all == 0 { 0.0 } else { done as f64 / all as f64 },
    }
}

/// The wire project.
pub fn project_pb(tenant: &str, r: &Record, p: &ProjectDoc, next_number: i64, counts: &MilestoneCounts) -> pb::Project {
    let mut milestones: Vec<&MilestoneDoc> = p.milestones.iter().collect();
    milestones.sort_by(|a, b| {
        (a.target_date.is_none(), &a.target_date, &a.name).cmp(&(b.target_date.is_none(), &b.target_date, &b.name))
    });
    pb::Project {
        id: r.id.to_string(),
        tenant_id: tenant.to_owned(),
        name: p.name.clone(),
        identifier: p.identifier.clone(),
        description: p.description.clone(),
        start_date: p.start_date.clone(),
        target_date: p.target_date.clone(),
        is_archived: p.is_archived,
        is_private: p.is_private,
        next_task_number: next_number as i32,
        default_status_id: p.default_status_id.clone(),
        statuses: p.statuses.iter().enumerate().map(|(i, s)| status_pb(p, i, s)).collect(),
        sections: p
            .sections
            .iter()
            .enumerate()
            .map(|(i, s)| pb::Section { id: s.id.clone(), name: s.name.clone(), position: i as i32 })
            .collect(),
        milestones: milestones.into_iter().map(|m| milestone_pb(m, counts)).collect(),
        members: p
            .members
            .iter()
            .map(|m| pb::Member { member_id: m.member_id.clone(), role: role_pb(&m.role) as i32 })
            .collect(),
        metadata: Some(to_struct(&p.metadata)),
        version: r.version,
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
    }
}

/// A URL link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UrlLinkDoc {
    /// URL.
    pub url: String,
    /// Title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// A done or skipped occurrence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionDoc {
    /// Due time of the occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<String>,
    /// Due date of the occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_date: Option<String>,
    /// When.
    pub completed_at: String,
    /// Skipped rather than done.
    #[serde(default)]
    pub skipped: bool,
}

/// The stored fields of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TaskDoc {
    /// Title.
    pub title: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// 0..4.
    pub priority: i32,
    /// Position among siblings.
    pub position: i32,
    /// Project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// Section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_id: Option<String>,
    /// Status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_id: Option<String>,
    /// The status's category (or the state of a task outside projects).
    pub status_category: String,
    /// Milestone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub milestone_id: Option<String>,
    /// Parent task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// Assignee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee_id: Option<String>,
    /// Creator.
    pub creator_id: String,
    /// Identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    /// Identifiers of former projects.
    #[serde(default)]
    pub previous_identifiers: Vec<String>,
    /// Due time ([`fmt_ts`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<String>,
    /// Due date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_date: Option<String>,
    /// Deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// Start date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<String>,
    /// Snoozed until.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snoozed_until: Option<String>,
    /// Estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimation_minutes: Option<i32>,
    /// Time spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_spent_minutes: Option<i32>,
    /// Completed at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// Canceled at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canceled_at: Option<String>,
    /// Recurrence rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rrule: Option<String>,
    /// Time zone set on the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// The first occurrence the rule expands from (the due date when the rule was set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrence_start: Option<String>,
    /// The occurrence after the current one ([`fmt_ts`], or a date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_occurrence: Option<String>,
    /// Done and skipped occurrences.
    #[serde(default)]
    pub completions: Vec<CompletionDoc>,
    /// Label ids.
    #[serde(default)]
    pub labels: Vec<String>,
    /// URL links.
    #[serde(default)]
    pub url_links: Vec<UrlLinkDoc>,
    /// Free JSON.
    pub metadata: Value,
}

/// Fields kept for the service's own use, hidden from history entries.
pub const TASK_HIDDEN: &[&str] = &["recurrence_start"];

impl TaskDoc {
    /// The task's due, if any.
    pub fn due(&self) -> Result<Option<Due>> {
        if let Some(t) = &self.due_at {
            return Ok(Some(Due::At(parse_ts(t)?)));
        }
        match &self.due_date {
            Some(d) => Ok(Some(Due::Date(NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(Error::internal)?))),
            None => Ok(None),
        }
    }

    /// Sets the due fields from `d`.
    pub fn set_due(&mut self, d: Option<Due>) {
        (self.due_at, self.due_date) = match d {
            None => (None, None),
            Some(Due::At(t)) => (Some(fmt_ts(t)), None),
            Some(Due::Date(d)) => (None, Some(d.format("%Y-%m-%d").to_string())),
        };
    }

    /// Records an occurrence as done or skipped.
    pub fn record(&mut self, occurrence: Due, at: DateTime<Utc>, skipped: bool) {
        let (due_at, due_date) = match occurrence {
            Due::At(t) => (Some(fmt_ts(t)), None),
            Due::Date(d) => (None, Some(d.format("%Y-%m-%d").to_string())),
        };
        self.completions.push(CompletionDoc { due_at, due_date, completed_at: fmt_ts(at), skipped });
        if self.completions.len() > MAX_COMPLETIONS {
            self.completions.remove(0);
        }
    }

    /// Moves the task into `category` at `t`: entering completed or canceled stamps the time
    /// (kept when it already was there), leaving clears it.
    pub fn set_category(&mut self, category: &str, t: DateTime<Utc>) {
        if category == "completed" {
            self.completed_at.get_or_insert_with(|| fmt_ts(t));
        } else {
            self.completed_at = None;
        }
        if category == "canceled" {
            self.canceled_at.get_or_insert_with(|| fmt_ts(t));
        } else {
            self.canceled_at = None;
        }
        self.status_category = category.to_owned();
    }

    /// The text full-text search covers.
    pub fn search_text(&self) -> String {
        // Identifiers as words (`API 42`): PostgreSQL's parser reads `API-42` as `api` and `-42`.
        let mut s = String::new();
        for i in self.identifier.iter().chain(&self.previous_identifiers) {
            s.push_str(&i.replace('-', " "));
            s.push(' ');
        }
        s.push_str(&self.title);
        if let Some(d) = &self.description {
            s.push('\n');
            s.push_str(d);
        }
        s
    }

    /// The stored JSON.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a task serialises")
    }

    /// Reads a stored document.
    pub fn from_value(v: &Value) -> Result<TaskDoc> {
        serde_json::from_value(v.clone()).map_err(Error::internal)
    }
}

/// The wire task; `labels` resolved, the counts and `is_blocked` left for the caller.
pub fn task_pb(tenant: &str, r: &Record, d: &TaskDoc, labels: Vec<pb::Label>) -> pb::Task {
    let next_occurrence = d.next_occurrence.as_deref().and_then(|s| {
        parse_ts(s).ok().or_else(|| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|d| d.and_utc())
        })
    });
    pb::Task {
        id: r.id.to_string(),
        tenant_id: tenant.to_owned(),
        identifier: d.identifier.clone(),
        previous_identifiers: d.previous_identifiers.clone(),
        title: d.title.clone(),
        description: d.description.clone(),
        priority: d.priority,
        priority_name: PRIORITY_NAMES.get(d.priority as usize).copied().unwrap_or("none").to_owned(),
        position: d.position,
        project_id: d.project_id.clone(),
        section_id: d.section_id.clone(),
        status_id: d.status_id.clone(),
        status_category: category_pb(&d.status_category) as i32,
        milestone_id: d.milestone_id.clone(),
        parent_id: d.parent_id.clone(),
        assignee_id: d.assignee_id.clone(),
        creator_id: d.creator_id.clone(),
        due_at: opt_ts(&d.due_at),
        due_date: d.due_date.clone(),
        deadline: d.deadline.clone(),
        start_date: d.start_date.clone(),
        snoozed_until: opt_ts(&d.snoozed_until),
        estimation_minutes: d.estimation_minutes,
        time_spent_minutes: d.time_spent_minutes,
        completed_at: opt_ts(&d.completed_at),
        canceled_at: opt_ts(&d.canceled_at),
        rrule: d.rrule.clone(),
        time_zone: d.time_zone.clone(),
        next_occurrence: next_occurrence.map(timestamp),
        completions: d
            .completions
            .iter()
            .map(|c| pb::Completion {
                due_at: opt_ts(&c.due_at),
                due_date: c.due_date.clone(),
                completed_at: opt_ts(&Some(c.completed_at.clone())),
                skipped: c.skipped,
            })
            .collect(),
        labels,
        url_links: d.url_links.iter().map(|l| pb::UrlLink { url: l.url.clone(), title: l.title.clone() }).collect(),
        is_blocked: false,
        subtask_count: 0,
        done_subtask_count: 0,
        comment_count: 0,
        metadata: Some(to_struct(&d.metadata)),
        version: r.version,
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
        deleted_at: r.deleted_at.map(timestamp),
        temporal: r.temporal.as_ref().map(worktruck_kit::pbjson::temporal),
    }
}

/// The stored fields of a label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelDoc {
    /// Name.
    pub name: String,
    /// Lookup key.
    pub key: String,
    /// Colour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
}

impl LabelDoc {
    /// A label named `n`.
    pub fn named(n: &str) -> Result<LabelDoc> {
        let name = check_label_name(n)?;
        Ok(LabelDoc { key: label_key(&name), name, color: None })
    }

    /// The stored JSON.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a label serialises")
    }

    /// Reads a stored document.
    pub fn from_value(v: &Value) -> Result<LabelDoc> {
        serde_json::from_value(v.clone()).map_err(Error::internal)
    }
}

/// The wire label.
pub fn label_pb(r: &Record) -> Result<pb::Label> {
    let d = LabelDoc::from_value(&r.doc)?;
    Ok(pb::Label { id: r.id.to_string(), name: d.name, color: d.color })
}

/// The stored fields of a comment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommentDoc {
    /// The task.
    pub task_id: String,
    /// Markdown body.
    pub body: String,
    /// Who wrote it.
    pub author: String,
    /// Last edit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<String>,
}

impl CommentDoc {
    /// The stored JSON.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a comment serialises")
    }

    /// Reads a stored document.
    pub fn from_value(v: &Value) -> Result<CommentDoc> {
        serde_json::from_value(v.clone()).map_err(Error::internal)
    }
}

/// Validates a comment body: 1 to 50,000 characters.
pub fn check_comment(body: &str) -> Result<String> {
    if body.trim().is_empty() || body.chars().count() > 50_000 {
        return Err(Error::validation("body must be 1 to 50000 characters"));
    }
    Ok(body.to_owned())
}

/// The wire comment.
pub fn comment_pb(r: &Record) -> Result<pb::Comment> {
    let d = CommentDoc::from_value(&r.doc)?;
    Ok(pb::Comment {
        id: r.id.to_string(),
        task_id: d.task_id,
        body: d.body,
        author: d.author,
        created_at: Some(timestamp(r.created_at)),
        edited_at: opt_ts(&d.edited_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_dates_and_priorities() {
        assert!(check_prefix("API").is_ok() && check_prefix("A1B2C3D4E5").is_ok());
        for bad in ["api-x", "", "API-X", "ABCDEFGHIJK", "Api"] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
        assert!(check_date("due_date", "2025-02-30").is_err());
        assert!(check_date("due_date", "2025-2-3").is_err());
        assert_eq!(check_date("d", "2024-02-29").unwrap().as_deref(), Some("2024-02-29"));
        assert_eq!(check_priority(None, Some("High")).unwrap(), Some(3));
        assert_eq!(check_priority(Some(4), Some("urgent")).unwrap(), Some(4));
        assert!(check_priority(Some(7), None).is_err());
        assert!(check_priority(Some(1), Some("high")).is_err());
        assert!(check_priority(None, Some("sometime")).is_err());
    }

    #[test]
    fn stored_moments_sort_as_text() {
        let a: DateTime<Utc> = "2025-01-01T12:00:00Z".parse().unwrap();
        let b: DateTime<Utc> = "2025-01-01T12:00:00.5Z".parse().unwrap();
        assert!(fmt_ts(a) < fmt_ts(b));
        assert_eq!(parse_ts(&fmt_ts(b)).unwrap(), b);
    }
}
