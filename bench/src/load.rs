//! The load phases: N workers share a bounded request budget and a deadline, time each request
//! from send to last body byte, and count anything but a usable 2xx as an error.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode, Url};

use crate::stats::{Failure, Samples, Summary};

/// The server under load and the key to use.
#[derive(Clone)]
pub struct Target {
    base: Url,
    key: String,
    client: Client,
    /// The MCP endpoint (`…/mcp/v1`), when the MCP phase should run.
    mcp: Option<Url>,
}

/// Sessions the MCP phase opens at most (the server allows 64 per caller).
pub const MAX_MCP_SESSIONS: usize = 32;
/// The MCP protocol revision the harness speaks.
const MCP_VERSION: &str = "2025-06-18";

impl Target {
    /// A target at `base` (e.g. `http://127.0.0.1:8080`) authenticated by API key `key`.
    /// Requests that take longer than `timeout` count as `timeout` errors.
    pub fn new(
        mut base: Url,
        key: String,
        concurrency: usize,
        timeout: Duration,
    ) -> anyhow::Result<Target> {
        // `join` resolves relative to the last `/`, so a base path must end with one.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let client = worktruck_kit::http::builder()
            .pool_max_idle_per_host(concurrency.max(1))
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .build()?;
        Ok(Target { base, key, client, mcp: None })
    }

    /// Also load the MCP endpoint at `url` (e.g. `http://127.0.0.1:8081/mcp/v1`).
    pub fn with_mcp(mut self, url: Url) -> Target {
        self.mcp = Some(url);
        self
    }

    /// The MCP endpoint, if any.
    pub fn mcp(&self) -> Option<&Url> {
        self.mcp.as_ref()
    }

    /// One JSON-RPC POST to the MCP endpoint; the session id the server named (if any) and the
    /// JSON-RPC answer (from a JSON body or the last `data:` line of an SSE body; `None` for a
    /// notification's 202).
    async fn mcp_post(
        &self,
        session: Option<&str>,
        body: serde_json::Value,
    ) -> Result<(Option<String>, Option<serde_json::Value>), Failure> {
        let url = self.mcp.clone().ok_or(Failure::Transport)?;
        let mut req = self
            .client
            .post(url)
            .bearer_auth(&self.key)
            .header("accept", "application/json, text/event-stream")
            .json(&body);
        if let Some(id) = session {
            req = req.header("mcp-session-id", id).header("mcp-protocol-version", MCP_VERSION);
        }
        let (status, headers, bytes) = send(req).await?;
        let session = headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if status == StatusCode::ACCEPTED {
            return Ok((session, None));
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| Failure::BadBody)?;
        let json = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or(text);
        let value = serde_json::from_str(json).map_err(|_| Failure::BadBody)?;
        Ok((session, Some(value)))
    }

    /// Opens an MCP session: `initialize`, then `notifications/initialized`.
    pub async fn mcp_session(&self) -> Result<String, Failure> {
        let init = serde_json::json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": MCP_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "worktruck-loadgen", "version": env!("CARGO_PKG_VERSION")}
            }
        });
        let (session, answer) = self.mcp_post(None, init).await?;
        let session = session.ok_or(Failure::BadBody)?;
        if answer.as_ref().and_then(|a| a.get("result")).is_none() {
            return Err(Failure::BadBody);
        }
        let ready = serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        self.mcp_post(Some(&session), ready).await?;
        Ok(session)
    }

    /// `tools/call contacts_get` in `session`.
    async fn mcp_get_contact(&self, session: &str, id: &str, n: u64) -> Result<(), Failure> {
        let call = serde_json::json!({
            "jsonrpc": "2.0", "id": n + 1, "method": "tools/call",
            "params": {"name": "contacts_get", "arguments": {"id": id}}
        });
        let (_, answer) = self.mcp_post(Some(session), call).await?;
        let result = answer.as_ref().and_then(|a| a.get("result")).ok_or(Failure::BadBody)?;
        if result.get("isError").and_then(serde_json::Value::as_bool) == Some(true) {
            return Err(Failure::ToolError);
        }
        if result.get("structuredContent").and_then(|c| c.get("id")).is_none() {
            return Err(Failure::BadBody);
        }
        Ok(())
    }

    /// The base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("paths are static or ids")
    }

    /// `POST /api/v1/contacts`; the new contact's id on success.
    async fn create_contact(&self, n: u64) -> Result<String, Failure> {
        let body =
            serde_json::json!({ "kind": "person", "display_name": format!("Load Person {n}") });
        let (_, _, bytes) =
            send(self.client.post(self.url("api/v1/contacts")).bearer_auth(&self.key).json(&body)).await?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| Failure::BadBody)?;
        v.get("id")
            .and_then(|id| id.as_str())
            .map(str::to_owned)
            .ok_or(Failure::BadBody)
    }

    /// `GET <path>` (relative to the base, e.g. `health` or `api/v1/contacts?limit=50`), with
    /// the key when `auth`; a 2xx with a body is a success.
    async fn get_path(&self, path: &str, auth: bool) -> Result<(), Failure> {
        let mut req = self.client.get(self.url(path));
        if auth {
            req = req.bearer_auth(&self.key);
        }
        let (_, _, bytes) = send(req).await?;
        if bytes.is_empty() {
            return Err(Failure::BadBody);
        }
        Ok(())
    }

    /// `GET <path>` with the key, as JSON (set-up steps, untimed).
    pub async fn get_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let (_, _, bytes) = send(self.client.get(self.url(path)).bearer_auth(&self.key))
            .await
            .map_err(|f| anyhow::anyhow!("GET {path}: {}", f.key()))?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// `PATCH /api/v1/contacts/{id}` with `body` (set-up steps, untimed).
    pub async fn patch_contact(&self, id: &str, body: &serde_json::Value) -> anyhow::Result<()> {
        send(self.client.patch(self.url(&format!("api/v1/contacts/{id}"))).bearer_auth(&self.key).json(body))
            .await
            .map_err(|f| anyhow::anyhow!("PATCH contact: {}", f.key()))?;
        Ok(())
    }

    /// Creates one contact named `name` (set-up steps, untimed); its id.
    pub async fn create_named(&self, name: &str) -> anyhow::Result<String> {
        let body = serde_json::json!({ "kind": "person", "display_name": name });
        let (_, _, bytes) = send(self.client.post(self.url("api/v1/contacts")).bearer_auth(&self.key).json(&body))
            .await
            .map_err(|f| anyhow::anyhow!("create contact: {}", f.key()))?;
        let v: serde_json::Value = serde_json::from_slice(&bytes)?;
        Ok(v["id"].as_str().unwrap_or_default().to_owned())
    }

    /// `POST /api/v1/projects` (set-up, untimed); the new project's id.
    pub async fn create_project(&self, name: &str, identifier: &str) -> anyhow::Result<String> {
        let body = serde_json::json!({ "name": name, "identifier": identifier });
        let (_, _, bytes) = send(self.client.post(self.url("api/v1/projects")).bearer_auth(&self.key).json(&body))
            .await
            .map_err(|f| anyhow::anyhow!("create project: {}", f.key()))?;
        let v: serde_json::Value = serde_json::from_slice(&bytes)?;
        Ok(v["id"].as_str().unwrap_or_default().to_owned())
    }

    /// `POST /api/v1/tasks` in `project`, every other one due yesterday (so the overdue list
    /// has rows); the identifier the task got.
    async fn create_task(&self, project: &str, n: u64) -> Result<String, Failure> {
        let mut body = serde_json::json!({ "title": format!("Load Task {n}"), "project_id": project, "priority": n % 5 });
        if n.is_multiple_of(2) {
            body["due_at"] = serde_json::json!((chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339());
        }
        let (_, _, bytes) =
            send(self.client.post(self.url("api/v1/tasks")).bearer_auth(&self.key).json(&body)).await?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| Failure::BadBody)?;
        v.get("identifier").and_then(|i| i.as_str()).map(str::to_owned).ok_or(Failure::BadBody)
    }

    /// `POST /api/v1/notes` with `title`; the new note's id on success.
    async fn create_note(&self, title: &str, body: &str) -> Result<String, Failure> {
        let payload = serde_json::json!({ "title": title, "body": body });
        let (_, _, bytes) =
            send(self.client.post(self.url("api/v1/notes")).bearer_auth(&self.key).json(&payload)).await?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| Failure::BadBody)?;
        v.get("id").and_then(|id| id.as_str()).map(str::to_owned).ok_or(Failure::BadBody)
    }

    /// `GET /api/v1/notes/{id}/backlinks` (the first page, 50 links).
    async fn note_backlinks(&self, id: &str) -> Result<(), Failure> {
        let (_, _, bytes) = send(
            self.client.get(self.url(&format!("api/v1/notes/{id}/backlinks"))).bearer_auth(&self.key),
        )
        .await?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| Failure::BadBody)?;
        match v.get("data").and_then(|d| d.as_array()) {
            Some(d) if !d.is_empty() => Ok(()),
            _ => Err(Failure::BadBody),
        }
    }

    /// `GET /api/v1/contacts/{id}`.
    async fn get_contact(&self, id: &str) -> Result<(), Failure> {
        let (_, _, bytes) =
            send(self.client.get(self.url(&format!("api/v1/contacts/{id}"))).bearer_auth(&self.key)).await?;
        if bytes.is_empty() {
            return Err(Failure::BadBody);
        }
        Ok(())
    }
}

impl Target {
    /// `POST <path>` with `body`; the answer as JSON.
    pub(crate) async fn post_json(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, Failure> {
        let (_, _, bytes) = send(self.client.post(self.url(path)).bearer_auth(&self.key).json(body)).await?;
        serde_json::from_slice(&bytes).map_err(|_| Failure::BadBody)
    }

    /// `POST <path>` with `body` (set-up steps, untimed); the answer as JSON.
    pub async fn post_setup(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
        self.post_json(path, body).await.map_err(|f| anyhow::anyhow!("POST {path}: {}", f.key()))
    }

    /// `POST /api/v1/deals`: deal `n` in `pipeline`, in EUR or USD, closing in one of three
    /// months; its id on success.
    pub async fn create_deal(&self, pipeline: &str, n: u64) -> Result<String, Failure> {
        let body = serde_json::json!({
            "name": format!("Load Deal {n}"),
            "pipeline_id": pipeline,
            "amount": format!("{}.{:02}", 1000 + n % 9000, n % 100),
            "currency": if n.is_multiple_of(3) { "USD" } else { "EUR" },
            "expected_close_date": format!("2027-{:02}-15", 1 + n % 3),
        });
        let v = self.post_json("api/v1/deals", &body).await?;
        v.get("id").and_then(|id| id.as_str()).map(str::to_owned).ok_or(Failure::BadBody)
    }
}

impl Target {
    /// `POST /api/v1/events`: a 30-minute event `n` in `calendar`, in one of three zones.
    async fn create_event(&self, calendar: &str, n: u64) -> Result<String, Failure> {
        let start = chrono::DateTime::parse_from_rfc3339("2027-01-04T08:00:00Z").expect("a moment")
            + chrono::Duration::minutes(30 * (n % 20_000) as i64);
        let body = serde_json::json!({
            "calendar_id": calendar,
            "title": format!("Load Event {n}"),
            "start_at": start.to_rfc3339(),
            "end_at": (start + chrono::Duration::minutes(30)).to_rfc3339(),
            "timezone": (["Europe/Berlin", "America/New_York", "Asia/Tokyo"][(n % 3) as usize]),
            "location": "Room 1",
        });
        let v = self.post_json("api/v1/events", &body).await?;
        v.get("id").and_then(|id| id.as_str()).map(str::to_owned).ok_or(Failure::BadBody)
    }
}

/// A calendar named `name` (set-up, untimed); its id.
pub async fn create_calendar(target: &Target, name: &str) -> anyhow::Result<String> {
    let v = target.post_setup("api/v1/calendars", &serde_json::json!({"name": name, "timezone": "UTC"})).await?;
    Ok(v["id"].as_str().unwrap_or_default().to_owned())
}

/// Creates events in `calendar`.
pub async fn event_create_phase(target: &Target, plan: Plan, calendar: String) -> Summary {
    let t = target.clone();
    let calendar = Arc::new(calendar);
    let (samples, _, elapsed) = run(plan, move |n| {
        let (t, calendar) = (t.clone(), Arc::clone(&calendar));
        async move { t.create_event(&calendar, n).await.map(Some) }
    })
    .await;
    samples.summarize("event_create", elapsed)
}

/// The body of recurring series `i` for the `events_month` phase: four in five weekly on one
/// weekday, one in five monthly on a day of the month, starting between 2015 and 2024 in one of
/// three zones, so a month of 2030 holds about 1,900 of their occurrences (under the 2,500
/// cap of an expanded list).
pub fn series_body(calendar: &str, i: u64) -> serde_json::Value {
    let days = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"];
    let rule = if i.is_multiple_of(5) {
        format!("FREQ=MONTHLY;BYMONTHDAY={}", 1 + i % 28)
    } else {
        format!("FREQ=WEEKLY;BYDAY={}", days[(i % 7) as usize])
    };
    let start = chrono::NaiveDate::from_ymd_opt(2015 + (i % 10) as i32, 1 + (i % 12) as u32, 1 + (i % 28) as u32)
        .expect("a date")
        .and_hms_opt(6 + (i % 12) as u32, 0, 0)
        .expect("a time")
        .and_utc();
    serde_json::json!({
        "calendar_id": calendar,
        "title": format!("Load Series {i}"),
        "start_at": start.to_rfc3339(),
        "end_at": (start + chrono::Duration::minutes(45)).to_rfc3339(),
        "timezone": (["Europe/Berlin", "America/New_York", "Australia/Sydney"][(i % 3) as usize]),
        "rrule": rule,
    })
}

/// A CRM pipeline for the deal phases: four open stages, won and lost (set-up, untimed); its id
/// and its open stages' ids.
pub async fn crm_pipeline(target: &Target) -> anyhow::Result<(String, Vec<String>)> {
    let body = serde_json::json!({"name": "Load pipeline", "currency": "EUR", "stages": [
        {"name": "Lead", "probability": 10}, {"name": "Qualified", "probability": 30, "rotting_days": 30},
        {"name": "Proposal", "probability": 60}, {"name": "Negotiation", "probability": 80},
        {"name": "Won", "kind": "won"}, {"name": "Lost", "kind": "lost"},
    ]});
    let p = target.post_setup("api/v1/pipelines", &body).await?;
    let id = p["id"].as_str().unwrap_or_default().to_owned();
    let stages = p["stages"].as_array().map(|a| a.iter().take(4).filter_map(|s| s["id"].as_str().map(str::to_owned)).collect()).unwrap_or_default();
    Ok((id, stages))
}

/// Creates deals in `pipeline`; the summary and the ids created.
pub async fn deal_create_phase(target: &Target, plan: Plan, pipeline: String) -> (Summary, Vec<String>) {
    let t = target.clone();
    let pipeline = Arc::new(pipeline);
    let (samples, ids, elapsed) = run(plan, move |n| {
        let (t, pipeline) = (t.clone(), Arc::clone(&pipeline));
        async move { t.create_deal(&pipeline, n).await.map(Some) }
    })
    .await;
    (samples.summarize("deal_create", elapsed), ids)
}

/// Moves the deals in `ids` round-robin, each time to the next of the open `stages` (so every
/// request is a real move, with its stage change); `None` when there is nothing to move.
pub async fn deal_move_phase(target: &Target, plan: Plan, ids: Vec<String>, stages: Vec<String>) -> Option<Summary> {
    if ids.is_empty() || stages.len() < 2 {
        return None;
    }
    let (ids, stages) = (Arc::new(ids), Arc::new(stages));
    let t = target.clone();
    let (samples, _, elapsed) = run(plan, move |n| {
        let (t, ids, stages) = (t.clone(), Arc::clone(&ids), Arc::clone(&stages));
        async move {
            let len = ids.len() as u64;
            let id = &ids[(n % len) as usize];
            let stage = &stages[((n / len + 1) % stages.len() as u64) as usize];
            let v = t.post_json(&format!("api/v1/deals/{id}/move"), &serde_json::json!({"stage_id": stage})).await?;
            if v.get("stage_id").and_then(|s| s.as_str()) != Some(stage.as_str()) {
                return Err(Failure::BadBody);
            }
            Ok(None)
        }
    })
    .await;
    Some(samples.summarize("deal_move", elapsed))
}

/// Sends a request and reads its whole body; a status outside 2xx is a failure.
async fn send(
    req: reqwest::RequestBuilder,
) -> Result<(StatusCode, reqwest::header::HeaderMap, bytes::Bytes), Failure> {
    let resp = req.send().await.map_err(|e| classify(&e))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.map_err(|e| classify(&e))?;
    check(status)?;
    Ok((status, headers, bytes))
}

fn check(status: StatusCode) -> Result<(), Failure> {
    if status.is_success() {
        Ok(())
    } else {
        Err(Failure::Status(status.as_u16()))
    }
}

fn classify(e: &reqwest::Error) -> Failure {
    if e.is_timeout() {
        Failure::Timeout
    } else if let Some(status) = e.status() {
        Failure::Status(status.as_u16())
    } else {
        Failure::Transport
    }
}

/// How much load one phase applies.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Concurrent workers (each has at most one request in flight).
    pub concurrency: usize,
    /// Requests the phase may send in total.
    pub requests: u64,
    /// No request starts after this much time; the phase ends when in-flight ones finish.
    pub max_duration: Duration,
}

/// Creates contacts; returns the summary and the ids created (for the `get` phase).
pub async fn create_phase(target: &Target, plan: Plan) -> (Summary, Vec<String>) {
    let t = target.clone();
    let (samples, ids, elapsed) = run(plan, move |n| {
        let t = t.clone();
        async move { t.create_contact(n).await.map(Some) }
    })
    .await;
    (samples.summarize("create", elapsed), ids)
}

/// Reads the contacts in `ids`, round-robin; `None` when there is nothing to read.
pub async fn get_phase(target: &Target, plan: Plan, ids: Vec<String>) -> Option<Summary> {
    if ids.is_empty() {
        return None;
    }
    let ids = Arc::new(ids);
    let t = target.clone();
    let (samples, _, elapsed) = run(plan, move |n| {
        let t = t.clone();
        let ids = Arc::clone(&ids);
        async move {
            let id = &ids[(n % ids.len() as u64) as usize];
            t.get_contact(id).await.map(|()| None)
        }
    })
    .await;
    Some(samples.summarize("get", elapsed))
}

/// `GET`s `paths` round-robin (with the key when `auth`), as the phase `name`; `None` when
/// there is nothing to read.
pub async fn get_paths_phase(target: &Target, plan: Plan, name: &str, paths: Vec<String>, auth: bool) -> Option<Summary> {
    if paths.is_empty() {
        return None;
    }
    let paths = Arc::new(paths);
    let t = target.clone();
    let (samples, _, elapsed) = run(plan, move |n| {
        let t = t.clone();
        let paths = Arc::clone(&paths);
        async move { t.get_path(&paths[(n % paths.len() as u64) as usize], auth).await.map(|()| None) }
    })
    .await;
    Some(samples.summarize(name, elapsed))
}

/// Runs `op(n)` as a phase named `name` outside HTTP (e.g. the database's own insert rate).
pub async fn op_phase<F, Fut>(plan: Plan, name: &str, op: F) -> Summary
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Failure>> + Send,
{
    let (samples, _, elapsed) = run(plan, move |n| {
        let fut = op(n);
        async move { fut.await.map(|()| None) }
    })
    .await;
    samples.summarize(name, elapsed)
}

/// Reads the contacts in `ids` through the MCP tool `contacts_get`, over one session per worker
/// (opened before the clock starts; at most [`MAX_MCP_SESSIONS`], shared beyond that); `None`
/// when there is no MCP endpoint or nothing to read.
pub async fn mcp_get_phase(target: &Target, plan: Plan, ids: Vec<String>) -> anyhow::Result<Option<Summary>> {
    if ids.is_empty() || target.mcp.is_none() {
        return Ok(None);
    }
    let mut sessions = Vec::new();
    for _ in 0..plan.concurrency.clamp(1, MAX_MCP_SESSIONS) {
        let session = target
            .mcp_session()
            .await
            .map_err(|f| anyhow::anyhow!("cannot open an MCP session: {}", f.key()))?;
        sessions.push(session);
    }
    let (ids, sessions) = (Arc::new(ids), Arc::new(sessions));
    let t = target.clone();
    let (samples, _, elapsed) = run(plan, move |n| {
        let t = t.clone();
        let (ids, sessions) = (Arc::clone(&ids), Arc::clone(&sessions));
        async move {
            let id = &ids[(n % ids.len() as u64) as usize];
            let session = &sessions[(n % sessions.len() as u64) as usize];
            t.mcp_get_contact(session, id, n).await.map(|()| None)
        }
    })
    .await;
    Ok(Some(samples.summarize("mcp_get", elapsed)))
}

/// How many notes of the `note_create` phase link to the hub note the `backlinks` phase reads.
pub const HUB_BACKLINKS: u64 = 1000;

/// The hub note's title.
const HUB: &str = "Load Hub";

/// Creates the hub note and four more link targets (untimed), then notes whose bodies hold five
/// wikilinks each: the first [`HUB_BACKLINKS`] link to the hub, the rest to a sixth title.
/// Returns the summary and the hub's id.
pub async fn note_create_phase(target: &Target, plan: Plan) -> anyhow::Result<(Summary, String)> {
    let fail = |f: Failure| anyhow::anyhow!("cannot create the link targets: {}", f.key());
    let hub = target.create_note(HUB, "The note everything links to.").await.map_err(fail)?;
    for i in 1..=4 {
        target.create_note(&format!("Load Target {i}"), "A link target.").await.map_err(fail)?;
    }
    let t = target.clone();
    let (samples, _, elapsed) = run(plan, move |n| {
        let t = t.clone();
        async move {
            let first = if n < HUB_BACKLINKS { HUB } else { "Load Target 5" };
            let body = format!(
                "Note {n} links [[{first}]], [[Load Target 1|one]] and [[Load Target 2#Heading]].\n\n\
                 Then [[Load Target 3#^block]] and [[Load Target 4]] close it."
            );
            t.create_note(&format!("Load Note {n}"), &body).await.map(|_| None)
        }
    })
    .await;
    Ok((samples.summarize("note_create", elapsed), hub))
}

/// Reads the hub note's backlinks (first page) over and over.
pub async fn backlinks_phase(target: &Target, plan: Plan, hub: String) -> Summary {
    let t = target.clone();
    let hub = Arc::new(hub);
    let (samples, _, elapsed) = run(plan, move |_| {
        let t = t.clone();
        let hub = Arc::clone(&hub);
        async move { t.note_backlinks(&hub).await.map(|()| None) }
    })
    .await;
    samples.summarize("backlinks", elapsed)
}

/// Creates one project (untimed), then tasks in it from every worker at once: the identifier
/// allocation under concurrency. Fails unless the identifiers given are `PREFIX-1..=n`, each
/// exactly once (no gap, no duplicate).
pub async fn task_create_phase(target: &Target, plan: Plan) -> anyhow::Result<Summary> {
    // A prefix of its own per run, so runs against one server do not collide.
    let prefix = format!("L{}", chrono::Utc::now().timestamp_micros() % 1_000_000_000);
    let project = target.create_project("Load Project", &prefix).await?;
    let t = target.clone();
    let project = Arc::new(project);
    let (samples, idents, elapsed) = run(plan, move |n| {
        let (t, project) = (t.clone(), Arc::clone(&project));
        async move { t.create_task(&project, n).await.map(Some) }
    })
    .await;
    let mut numbers: Vec<u64> = idents
        .iter()
        .map(|i| i.strip_prefix(&format!("{prefix}-")).and_then(|n| n.parse().ok()).unwrap_or(0))
        .collect();
    numbers.sort_unstable();
    let want: Vec<u64> = (1..=numbers.len() as u64).collect();
    if numbers != want {
        anyhow::bail!("task identifiers are not {prefix}-1..={} exactly once: {numbers:?}", want.len());
    }
    Ok(samples.summarize("task_create", elapsed))
}

/// Runs `op(n)` for n in 0..plan.requests across `plan.concurrency` workers until the budget
/// or the deadline runs out. Returns merged samples, the ids `op` produced, and the wall time.
pub(crate) async fn run<F, Fut>(plan: Plan, op: F) -> (Samples, Vec<String>, Duration)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<String>, Failure>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + plan.max_duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..plan.concurrency.max(1) {
        let op = Arc::clone(&op);
        let next = Arc::clone(&next);
        workers.spawn(async move {
            let mut samples = Samples::default();
            let mut ids = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= plan.requests || Instant::now() >= deadline {
                    break;
                }
                let t0 = Instant::now();
                let outcome = op(n).await;
                let latency = t0.elapsed();
                match outcome {
                    Ok(id) => {
                        samples.record_ok(latency);
                        ids.extend(id);
                    }
                    Err(f) => samples.record_failure(&f),
                }
            }
            (samples, ids)
        });
    }
    let mut all = Samples::default();
    let mut all_ids = Vec::new();
    while let Some(joined) = workers.join_next().await {
        // A worker only ends by returning; a panic there is a harness bug worth surfacing.
        let (samples, ids) = joined.expect("load worker panicked");
        all.merge(samples);
        all_ids.extend(ids);
    }
    (all, all_ids, started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn run_respects_the_request_budget_and_collects_ids() {
        let plan = Plan {
            concurrency: 8,
            requests: 100,
            max_duration: Duration::from_secs(30),
        };
        let (samples, ids, _) = run(plan, |n| async move {
            if n % 10 == 0 {
                Err(Failure::Status(500))
            } else {
                Ok(Some(n.to_string()))
            }
        })
        .await;
        assert_eq!(samples.requests(), 100);
        assert_eq!(ids.len(), 90);
        let sum = samples.summarize("create", Duration::from_secs(1));
        assert_eq!(sum.errors, 10);
        assert_eq!(sum.error_kinds.get("http_500"), Some(&10));
    }

    #[tokio::test]
    async fn run_stops_at_the_deadline() {
        let plan = Plan {
            concurrency: 2,
            requests: u64::MAX,
            max_duration: Duration::from_millis(100),
        };
        let (samples, _, elapsed) = run(plan, |_| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(None)
        })
        .await;
        assert!(samples.requests() > 0);
        assert!(samples.requests() < 1000);
        assert!(elapsed < Duration::from_secs(5));
    }
}
