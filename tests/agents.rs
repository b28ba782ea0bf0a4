//! Agents end to end, against a local fake of the Anthropic Messages API (an axum server that
//! answers scripted turns with `tool_use` blocks and usage): configs, a run with two tool calls
//! and its steps and cost, budget and deadline, a refused key, retries, cancel; and a worker
//! killed with SIGKILL between the two tool calls, whose run a new worker resumes without
//! calling the first tool again or counting any cost twice — in process (`worktruck dev` on
//! SQLite, killed and started again) and with the worker as its own process on PostgreSQL + NATS.
//! Schedules: a two-second schedule (six fields: the issue's "every minute with two workers for
//! five minutes" in CI time) fires each tick exactly once with two worker processes on
//! PostgreSQL + NATS and embedded, ticks missed while no worker ran give one catch-up run, and
//! the overlap policies hold against runs that outlast a tick.

mod common;
/// A `worktruck dev` child process.
#[path = "common/dev.rs"]
mod dev;
/// The app server the app-tools test registers.
#[path = "common/tooling.rs"]
mod tooling;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::response::IntoResponse;
use common::split::Split;
use dev::{Dev, free_port};
use common::{Stack, error_code};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use worktruck_kit::testing::{Backend, backends, nats_url};

/// The model the tests price: 3 and 15 dollars per million input and output tokens, cache
/// prices by default (0.3 read, 3.75 write).
const MODEL: &str = "claude-test";
/// What each scripted turn reports: 1,000 input, 100 output, 1,000 cache-read and 1,000
/// cache-write tokens = 3,000 + 1,500 + 300 + 3,750 millionths of a dollar.
const TURN_MICROS: i64 = 8_550;
const FAKE_KEY: &str = "sk-ant-test-operator-key";

type Script = dyn Fn(usize, &Value) -> (u16, Value) + Send + Sync;

/// The fake Anthropic endpoint.
struct Fake {
    /// Answers turn `n` (the number of assistant messages already in the request).
    script: Box<Script>,
    /// Every request body, in arrival order.
    requests: Mutex<Vec<Value>>,
    /// A turn that is not answered while `held` is set (the request waits).
    hold_turn: Option<usize>,
    held: tokio::sync::watch::Sender<bool>,
    /// Requests for the held turn so far.
    reached: AtomicUsize,
    /// Delay before every answer.
    delay: Duration,
    /// Answers sent.
    answered: AtomicUsize,
    /// The `x-api-key` of every Messages request.
    keys: Mutex<Vec<String>>,
    /// Refuse the tenant's key from now on (as revoked).
    revoke_tenant: std::sync::atomic::AtomicBool,
}

/// The tenant's own key (BYOK), which the fake accepts.
const TENANT_KEY: &str = "sk-ant-tenant-own-key-9f3a7c1d";

/// `GET /v1/models`: how a key is probed.
async fn models(headers: HeaderMap) -> impl IntoResponse {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let error = |status: AxumStatus, kind: &str, message: &str| {
        (
            status,
            axum::Json(json!({"type": "error", "error": {"type": kind, "message": message}})),
        )
    };
    match key {
        TENANT_KEY | FAKE_KEY => (
            AxumStatus::OK,
            axum::Json(json!({"data": [{"id": MODEL, "type": "model"}], "has_more": false})),
        ),
        "sk-ant-revoked-key-0000" => error(
            AxumStatus::UNAUTHORIZED,
            "authentication_error",
            "This API key has been revoked",
        ),
        "sk-ant-noperm-key-0000" => error(
            AxumStatus::FORBIDDEN,
            "permission_error",
            "not allowed to use the API",
        ),
        "sk-ant-busy-key-000000" => error(
            AxumStatus::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "slow down",
        ),
        _ => error(
            AxumStatus::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        ),
    }
}

async fn messages(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    body: axum::Json<Value>,
) -> impl IntoResponse {
    let body = body.0;
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(key == FAKE_KEY || key == TENANT_KEY, "{key}");
    fake.keys.lock().unwrap().push(key.clone());
    if key == TENANT_KEY && fake.revoke_tenant.load(Ordering::SeqCst) {
        let e = json!({"type": "error", "error": {"type": "authentication_error", "message": "This API key has been revoked"}});
        return (AxumStatus::UNAUTHORIZED, axum::Json(e));
    }
    assert_eq!(
        headers
            .get("anthropic-version")
            .and_then(|v| v.to_str().ok()),
        Some("2023-06-01")
    );
    let turn = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "assistant")
        .count();
    fake.requests.lock().unwrap().push(body.clone());
    if fake.hold_turn == Some(turn) {
        fake.reached.fetch_add(1, Ordering::SeqCst);
        let mut rx = fake.held.subscribe();
        let _ = rx.wait_for(|held| !*held).await;
    }
    tokio::time::sleep(fake.delay).await;
    let (status, answer) = (fake.script)(turn, &body);
    fake.answered.fetch_add(1, Ordering::SeqCst);
    (AxumStatus::from_u16(status).unwrap(), axum::Json(answer))
}

impl Fake {
    async fn start(
        script: Box<Script>,
        hold_turn: Option<usize>,
        delay: Duration,
    ) -> (Arc<Fake>, String) {
        let (held, _) = tokio::sync::watch::channel(hold_turn.is_some());
        let fake = Arc::new(Fake {
            script,
            requests: Mutex::default(),
            hold_turn,
            held,
            reached: AtomicUsize::new(0),
            delay,
            answered: AtomicUsize::new(0),
            keys: Mutex::default(),
            revoke_tenant: Default::default(),
        });
        let app = axum::Router::new()
            .route("/v1/messages", axum::routing::post(messages))
            .route("/v1/models", axum::routing::get(models))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (fake, url)
    }

    fn release(&self) {
        let _ = self.held.send(false);
    }

    fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }
}

fn usage() -> Value {
    json!({"input_tokens": 1000, "output_tokens": 100, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 1000})
}

/// Two notes_create calls in two turns, then a final answer.
fn two_tools(turn: usize, _body: &Value) -> (u16, Value) {
    let tool = |id: &str, title: &str| {
        json!({
            "id": format!("msg_{id}"), "type": "message", "role": "assistant", "model": MODEL,
            "content": [
                {"type": "text", "text": format!("Writing {title}.")},
                {"type": "tool_use", "id": format!("toolu_{id}"), "name": "notes_create",
                 "input": {"title": title, "body": "Site answered 200."}}
            ],
            "stop_reason": "tool_use", "usage": usage()
        })
    };
    match turn {
        0 => (200, tool("1", "Health first")),
        1 => (200, tool("2", "Health second")),
        _ => (
            200,
            json!({
                "id": "msg_3", "type": "message", "role": "assistant", "model": MODEL,
                "content": [{"type": "text", "text": "All good."}, {"type": "future_block", "x": 1}],
                "stop_reason": "end_turn", "usage": usage()
            }),
        ),
    }
}

fn settings(url: &str) -> Value {
    json!({
        "anthropic_base_url": url,
        "anthropic_api_key": FAKE_KEY,
        "backoff_ms": 10,
        "backoff_max_ms": 50,
        "max_retries": 3,
        "lease_seconds": 3,
        "poll_ms": 100,
        "prices": {MODEL: {"input": 3.0, "output": 15.0}},
    })
}

async fn stack(backend: Backend, url: &str) -> Stack {
    let settings = settings(url);
    Stack::start_with(backend, move |cfg| {
        cfg.settings.insert("agents".into(), settings);
    })
    .await
}

/// Polls the run until it has ended.
async fn ended(http: &reqwest::Client, base: &str, key: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = http
            .get(format!("{base}/api/v1/agents/site_health/runs/{id}"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "reading the run: {v}");
        if ["succeeded", "failed", "cancelled"].contains(&v["status"].as_str().unwrap_or_default())
        {
            return v;
        }
        assert!(Instant::now() < deadline, "the run never ended: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn enqueue(s: &Stack, body: Value) -> String {
    let (st, run) = s
        .call(Method::POST, "/api/v1/agents/site_health/runs", Some(body))
        .await;
    assert_eq!(st, StatusCode::OK, "{run}");
    assert_eq!(run["status"], "queued", "{run}");
    run["id"].as_str().unwrap().to_owned()
}

async fn note_titles(http: &reqwest::Client, base: &str, key: &str) -> Vec<String> {
    try_note_titles(http, base, key).await.unwrap()
}

/// The titles of the tenant's notes, sorted; the answer itself when it is not a list.
async fn try_note_titles(
    http: &reqwest::Client,
    base: &str,
    key: &str,
) -> Result<Vec<String>, String> {
    let r = http
        .get(format!("{base}/api/v1/notes?limit=200"))
        .bearer_auth(key)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let v: Value = r.json().await.map_err(|e| e.to_string())?;
    let Some(notes) = v["data"].as_array().filter(|_| status == StatusCode::OK) else {
        return Err(format!("listing the notes answered {status}: {v}"));
    };
    let mut titles: Vec<String> = notes
        .iter()
        .map(|n| n["title"].as_str().unwrap().to_owned())
        .collect();
    titles.sort();
    Ok(titles)
}

/// The steps of a two-tool run: three LLM turns around two tool calls, each turn costed.
fn check_steps(run: &Value, backend: Backend) {
    let steps = run["steps"].as_array().unwrap();
    let shape: Vec<(i64, &str, &str)> = steps
        .iter()
        .map(|s| {
            (
                s["seq"].as_i64().unwrap(),
                s["kind"].as_str().unwrap(),
                s["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            (1, "llm", MODEL),
            (2, "tool", "notes_create"),
            (3, "llm", MODEL),
            (4, "tool", "notes_create"),
            (5, "llm", MODEL)
        ],
        "{backend:?} {run}"
    );
    for s in steps {
        assert!(
            s["completed_at"].is_string() && s["started_at"].is_string(),
            "{s}"
        );
        assert_eq!(s["input_hash"].as_str().unwrap().len(), 64, "{s}");
        if s["kind"] == "llm" {
            assert_eq!(
                (s["input_tokens"].as_i64(), s["output_tokens"].as_i64()),
                (Some(1000), Some(100)),
                "{s}"
            );
            assert_eq!(
                (
                    s["cache_read_tokens"].as_i64(),
                    s["cache_write_tokens"].as_i64()
                ),
                (Some(1000), Some(1000)),
                "{s}"
            );
            assert_eq!(s["cost_usd_micros"], TURN_MICROS, "{s}");
        } else {
            assert!(
                s["output"]["result"]["id"].is_string(),
                "the tool's answer is journaled: {s}"
            );
        }
    }
    assert_eq!(run["cost_usd_micros"], 3 * TURN_MICROS, "{run}");
    assert_eq!(run["cost_usd_cents"], 3, "{run}");
    assert_eq!(run["output"]["text"], "All good.", "{run}");
}

#[tokio::test]
async fn configs_runs_steps_cost_and_failures() {
    for backend in backends() {
        let (fake, url) = Fake::start(Box::new(two_tools), None, Duration::ZERO).await;
        let s = stack(backend, &url).await;

        // Configs: every blueprint listed with its defaults; a write replaces; bad ones are 400/404.
        let (st, list) = s.call(Method::GET, "/api/v1/agent-configs", None).await;
        assert_eq!(st, StatusCode::OK, "{list}");
        let names: Vec<&str> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["blueprint"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["contact_deduper", "site_health"], "{list}");
        assert_eq!(list["data"][1]["version"], 0);
        assert_eq!(list["data"][1]["byok_status"], "inactive");
        for (bad, code) in [
            (json!({"model": "gpt-4"}), "validation_failed"),
            (
                json!({"allowed_tools": ["contacts_delete"]}),
                "validation_failed",
            ),
            (json!({"schedule": {"cron": "* * *"}}), "validation_failed"),
            (
                json!({"schedule": {"cron": "*/5 * * * *", "timezone": "Mars/Olympus"}}),
                "validation_failed",
            ),
            (json!({"budget_default_cents": 0}), "validation_failed"),
        ] {
            let (st, e) = s
                .call(
                    Method::PUT,
                    "/api/v1/agent-configs/site_health",
                    Some(bad.clone()),
                )
                .await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {e}");
            assert_eq!(error_code(&e), code);
        }
        let (st, e) = s
            .call(Method::PUT, "/api/v1/agent-configs/nosuch", Some(json!({})))
            .await;
        assert_eq!(
            (st, error_code(&e).as_str()),
            (StatusCode::NOT_FOUND, "not_found"),
            "{e}"
        );
        let put = json!({
            "model": MODEL, "allowed_tools": ["notes_create"], "budget_default_cents": 20,
            "schedule": {"cron": "0 9 * * 1-5", "timezone": "Europe/Oslo", "overlap": "buffer_one"},
            "guardrails": [{"tool": "notes_*", "require_approval": false}]
        });
        let (st, cfg) = s
            .call(Method::PUT, "/api/v1/agent-configs/site_health", Some(put))
            .await;
        assert_eq!(st, StatusCode::OK, "{cfg}");
        assert_eq!(
            (cfg["version"].as_i64(), cfg["model"].as_str()),
            (Some(1), Some(MODEL)),
            "{cfg}"
        );
        assert_eq!(cfg["schedule"]["overlap"], "buffer_one", "{cfg}");
        assert_eq!(cfg["allowed_tools"], json!(["notes_create"]), "{cfg}");

        // A run with two tool calls: the right steps, the right cost, two notes.
        let id = enqueue(&s, json!({"input": {"prompt": "Check example.com"}})).await;
        let run = ended(&s.http, &s.base, &s.key, &id).await;
        assert_eq!(run["status"], "succeeded", "{backend:?} {run}");
        check_steps(&run, backend);
        assert_eq!(
            run["budget_usd_cents"], 20,
            "the config's default budget: {run}"
        );
        assert_eq!(
            note_titles(&s.http, &s.base, &s.key).await,
            ["Health first", "Health second"]
        );
        // The second request echoes the assistant's content unchanged, tool results first.
        let second = fake
            .requests()
            .into_iter()
            .find(|r| r["messages"].as_array().unwrap().len() == 3)
            .unwrap();
        assert_eq!(second["messages"][0]["content"], "Check example.com");
        assert_eq!(
            second["messages"][1]["content"][1]["id"], "toolu_1",
            "{second}"
        );
        assert_eq!(
            second["messages"][2]["content"][0]["type"], "tool_result",
            "{second}"
        );
        assert_eq!(
            second["messages"][2]["content"][0]["tool_use_id"], "toolu_1",
            "{second}"
        );
        let tools: Vec<&str> = second["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            tools,
            ["notes_create"],
            "only the allowed tools are offered"
        );
        assert_eq!(second["tools"][0]["input_schema"]["type"], "object");
        // Its events, and the list with a status filter.
        let (_, events) = s
            .call(
                Method::GET,
                &format!("/api/v1/agents/site_health/runs/{id}/events"),
                None,
            )
            .await;
        let kinds: Vec<&str> = events["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["queued", "running", "succeeded"], "{events}");
        let (_, page) = s
            .call(
                Method::GET,
                "/api/v1/agents/site_health/runs?status=succeeded",
                None,
            )
            .await;
        assert_eq!(page["data"][0]["id"], id.as_str(), "{page}");
        assert!(
            page["data"][0]["steps"]
                .as_array()
                .is_none_or(|s| s.is_empty()),
            "lists carry no steps"
        );
        let (_, page) = s
            .call(
                Method::GET,
                "/api/v1/agents/site_health/runs?status=failed",
                None,
            )
            .await;
        assert_eq!(page["data"], json!([]), "{page}");
        // A finished run cannot be cancelled; another tenant does not see it.
        let (st, e) = s
            .call(
                Method::POST,
                &format!("/api/v1/agents/site_health/runs/{id}/cancel"),
                Some(json!({})),
            )
            .await;
        assert_eq!(
            (st, error_code(&e).as_str()),
            (StatusCode::CONFLICT, "conflict"),
            "{e}"
        );
        let other = s.new_tenant("other").await;
        let (st, _) = s
            .call_as(
                &other,
                Method::GET,
                &format!("/api/v1/agents/site_health/runs/{id}"),
                None,
            )
            .await;
        assert_eq!(st, StatusCode::NOT_FOUND);

        // Budget: one cent is spent by the second turn, which ends the run.
        let id = enqueue(&s, json!({"input": {"prompt": "again"}, "budget_cents": 1})).await;
        let run = ended(&s.http, &s.base, &s.key, &id).await;
        assert_eq!(
            (run["status"].as_str(), run["failure_category"].as_str()),
            (Some("failed"), Some("budget_exceeded")),
            "{run}"
        );
        assert_eq!(run["cost_usd_micros"], 2 * TURN_MICROS, "{run}");
        s.stop().await;

        // Deadline: a model slower than the run's deadline.
        let (_, url) = Fake::start(Box::new(two_tools), None, Duration::from_secs(3)).await;
        let s = stack(backend, &url).await;
        let (st, _) = s
            .call(
                Method::PUT,
                "/api/v1/agent-configs/site_health",
                Some(json!({"model": MODEL})),
            )
            .await;
        assert_eq!(st, StatusCode::OK);
        let id = enqueue(
            &s,
            json!({"input": {"prompt": "slow"}, "deadline_seconds": 1}),
        )
        .await;
        let run = ended(&s.http, &s.base, &s.key, &id).await;
        assert_eq!(
            (run["status"].as_str(), run["failure_category"].as_str()),
            (Some("failed"), Some("deadline_exceeded")),
            "{run}"
        );
        assert_eq!(run["steps"], json!([]), "{run}");
        s.stop().await;

        // A revoked key is a clear failure at once, not a retry loop; 529 is retried.
        let refusing = |turn: usize, body: &Value| -> (u16, Value) {
            if body["messages"][0]["content"] == "revoked" {
                return (
                    401,
                    json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}),
                );
            }
            two_tools(turn, body)
        };
        let flaky_count = Arc::new(AtomicUsize::new(0));
        let count = flaky_count.clone();
        let script = move |turn: usize, body: &Value| -> (u16, Value) {
            if body["messages"][0]["content"] == "flaky"
                && turn == 0
                && count.fetch_add(1, Ordering::SeqCst) < 2
            {
                return (
                    529,
                    json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
                );
            }
            refusing(turn, body)
        };
        let (fake, url) = Fake::start(Box::new(script), None, Duration::ZERO).await;
        let s = stack(backend, &url).await;
        let (st, _) = s
            .call(
                Method::PUT,
                "/api/v1/agent-configs/site_health",
                Some(json!({"model": MODEL})),
            )
            .await;
        assert_eq!(st, StatusCode::OK);
        let id = enqueue(&s, json!({"input": {"prompt": "revoked"}})).await;
        let run = ended(&s.http, &s.base, &s.key, &id).await;
        assert_eq!(
            (run["status"].as_str(), run["failure_category"].as_str()),
            (Some("failed"), Some("invalid_key")),
            "{run}"
        );
        assert!(
            run["failure_detail"].as_str().unwrap().contains("401"),
            "{run}"
        );
        assert!(
            !run.to_string().contains(FAKE_KEY),
            "the key never shows: {run}"
        );
        assert_eq!(fake.requests().len(), 1, "a 401 is not retried");
        let id = enqueue(&s, json!({"input": {"prompt": "flaky"}})).await;
        let run = ended(&s.http, &s.base, &s.key, &id).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(
            flaky_count.load(Ordering::SeqCst),
            3,
            "two 529s, then an answer"
        );
        assert_eq!(
            run["cost_usd_micros"],
            3 * TURN_MICROS,
            "retried calls cost nothing: {run}"
        );

        s.stop().await;
    }
}

#[tokio::test]
async fn a_run_is_cancelled_while_its_model_call_hangs() {
    for backend in backends() {
        let (fake, url) = Fake::start(Box::new(two_tools), Some(0), Duration::ZERO).await;
        let s = stack(backend, &url).await;
        let (st, _) = s
            .call(
                Method::PUT,
                "/api/v1/agent-configs/site_health",
                Some(json!({"model": MODEL})),
            )
            .await;
        assert_eq!(st, StatusCode::OK);
        let id = enqueue(&s, json!({"input": {"prompt": "hang"}})).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while fake.reached.load(Ordering::SeqCst) == 0 {
            assert!(
                Instant::now() < deadline,
                "the worker never called the model"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (st, run) = s
            .call(
                Method::POST,
                &format!("/api/v1/agents/site_health/runs/{id}/cancel"),
                Some(json!({})),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{run}");
        assert_eq!(run["status"], "cancelled", "{run}");
        // The model answers after all: the worker, no longer holding the run, journals nothing
        // and calls no tool.
        fake.release();
        while fake.answered.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the model never answered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let (_, run) = s
                .call(
                    Method::GET,
                    &format!("/api/v1/agents/site_health/runs/{id}"),
                    None,
                )
                .await;
            assert_eq!(
                (
                    run["status"].as_str(),
                    run["steps"].as_array().map(Vec::len)
                ),
                (Some("cancelled"), Some(0)),
                "{run}"
            );
        }
        assert_eq!(fake.requests().len(), 1, "no second turn after the cancel");
        assert!(
            note_titles(&s.http, &s.base, &s.key).await.is_empty(),
            "no tool ran"
        );
        let (st, _) = s
            .call(
                Method::POST,
                &format!("/api/v1/agents/site_health/runs/{id}/cancel"),
                Some(json!({})),
            )
            .await;
        assert_eq!(st, StatusCode::CONFLICT);
        s.stop().await;
    }
}

fn settings_env(url: &str) -> Vec<(String, String)> {
    vec![
        (
            "WORKTRUCK_SETTINGS__AGENTS__ANTHROPIC_BASE_URL".into(),
            url.to_owned(),
        ),
        (
            "WORKTRUCK_SETTINGS__AGENTS__ANTHROPIC_API_KEY".into(),
            FAKE_KEY.into(),
        ),
        (
            "WORKTRUCK_SETTINGS__AGENTS__LEASE_SECONDS".into(),
            "3".into(),
        ),
        ("WORKTRUCK_SETTINGS__AGENTS__POLL_MS".into(), "100".into()),
        ("WORKTRUCK_SETTINGS__AGENTS__BACKOFF_MS".into(), "10".into()),
        (
            "WORKTRUCK_SETTINGS__AGENTS__PRICES__CLAUDE-TEST__INPUT".into(),
            "3.0".into(),
        ),
        (
            "WORKTRUCK_SETTINGS__AGENTS__PRICES__CLAUDE-TEST__OUTPUT".into(),
            "15.0".into(),
        ),
    ]
}

async fn http_call(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut r = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(key);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let st = r.status();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// Enqueues the two-tool run and waits until the model is asked for its second turn: by then
/// the first tool call is journaled as completed.
async fn start_held_run(http: &reqwest::Client, base: &str, key: &str, fake: &Fake) -> String {
    let (st, cfg) = http_call(
        http,
        base,
        key,
        Method::PUT,
        "/api/v1/agent-configs/site_health",
        Some(json!({"model": MODEL})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{cfg}");
    let (st, run) = http_call(
        http,
        base,
        key,
        Method::POST,
        "/api/v1/agents/site_health/runs",
        Some(json!({"input": {"prompt": "Check"}})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{run}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while fake.reached.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the worker never asked for the second turn"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run["id"].as_str().unwrap().to_owned()
}

/// After the resume: the first tool ran once, each turn is costed once, two claims.
fn check_resumed(run: &Value, titles: &[String], fake: &Fake, backend: Backend) {
    assert_eq!(run["status"], "succeeded", "{backend:?} {run}");
    check_steps(run, backend);
    assert_eq!(
        titles,
        ["Health first", "Health second"],
        "{backend:?}: the first tool call is not repeated"
    );
    assert_eq!(run["attempts"], 2, "{run}");
    // Turn 2 was asked twice (the first request died with the worker), the others once.
    let turns: Vec<usize> = fake
        .requests()
        .iter()
        .map(|r| {
            r["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["role"] == "assistant")
                .count()
        })
        .collect();
    assert_eq!(turns, [0, 1, 1, 2], "{backend:?}");
}

#[tokio::test]
async fn a_killed_worker_s_run_resumes_without_repeating_a_step_embedded() {
    let (fake, url) = Fake::start(Box::new(two_tools), Some(1), Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let (dev, key) = Dev::start(dir.path(), settings_env(&url)).await;
    let key = key.expect("the first start prints the key");
    let http = worktruck_kit::http::client();
    let id = start_held_run(&http, &dev.base, &key, &fake).await;
    dev.kill();
    fake.release();
    let (dev, again) = Dev::start(dir.path(), settings_env(&url)).await;
    assert!(again.is_none());
    let run = ended(&http, &dev.base, &key, &id).await;
    let titles = note_titles(&http, &dev.base, &key).await;
    check_resumed(&run, &titles, &fake, Backend::Sqlite);
    let (_, events) = http_call(
        &http,
        &dev.base,
        &key,
        Method::GET,
        &format!("/api/v1/agents/site_health/runs/{id}/events"),
        None,
    )
    .await;
    let kinds: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["queued", "running", "lease_lapsed", "running", "succeeded"],
        "{events}"
    );
}

#[tokio::test]
async fn a_killed_worker_s_run_resumes_on_another_worker_process_postgres_nats() {
    let Some(backend) = backends().into_iter().find(|b| *b == Backend::Postgres) else {
        return;
    };
    let Some(nats) = nats_url() else { return };
    let (fake, url) = Fake::start(Box::new(two_tools), Some(1), Duration::ZERO).await;
    let mut split = Split::start_with_env(
        backend,
        &["tenants", "notes", "agents"],
        false,
        Some(nats),
        settings_env(&url),
    )
    .await;
    let admin = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    split.spawn_role("agent-worker", admin(free_port())).await;
    // The test polls the run ten times a second, past the free plan's 30 requests a minute.
    let key = split.create_tenant_on("agents", "enterprise");
    let http = worktruck_kit::http::client();
    let base = split.base.clone();
    let id = start_held_run(&http, &base, &key, &fake).await;
    split.kill("agent-worker");
    fake.release();
    split.spawn_role("agent-worker", admin(free_port())).await;
    let run = ended(&http, &base, &key, &id).await;
    let titles = try_note_titles(&http, &base, &key)
        .await
        .unwrap_or_else(|e| panic!("{e}\nthe run: {run}\n{}", split.logs()));
    check_resumed(&run, &titles, &fake, backend);
}

#[tokio::test]
async fn a_tenant_s_own_key_is_probed_sealed_used_and_never_shown() {
    for backend in backends() {
        let (fake, url) = Fake::start(Box::new(two_tools), None, Duration::ZERO).await;
        let s = stack(backend, &url).await;
        let (st, _) = s
            .call(
                Method::PUT,
                "/api/v1/agent-configs/site_health",
                Some(json!({"model": MODEL})),
            )
            .await;
        assert_eq!(st, StatusCode::OK);

        // Probes only.
        for (key, status, category) in [
            (TENANT_KEY, "valid", ""),
            ("sk-ant-wrong-key-0000", "invalid", "invalid_key"),
            ("sk-ant-revoked-key-0000", "invalid", "revoked_or_expired"),
            (
                "sk-ant-noperm-key-0000",
                "invalid",
                "insufficient_permissions",
            ),
            ("sk-ant-busy-key-000000", "invalid", "rate_limited"),
            ("short", "invalid", "invalid_key"),
        ] {
            let (st, v) = s
                .call(
                    Method::POST,
                    "/api/v1/agent-configs/validate-key",
                    Some(json!({"api_key": key})),
                )
                .await;
            assert_eq!(st, StatusCode::OK, "{key}: {v}");
            assert_eq!(
                (
                    v["status"].as_str(),
                    v["category"].as_str().unwrap_or_default()
                ),
                (Some(status), category),
                "{key}: {v}"
            );
        }

        // A refused key changes nothing.
        let (st, e) = s
            .call(
                Method::PUT,
                "/api/v1/agent-configs/site_health/byok-key",
                Some(json!({"api_key": "sk-ant-revoked-key-0000"})),
            )
            .await;
        assert_eq!(
            (st, error_code(&e).as_str()),
            (StatusCode::BAD_REQUEST, "validation_failed"),
            "{e}"
        );
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("revoked_or_expired"),
            "{e}"
        );
        let (_, list) = s.call(Method::GET, "/api/v1/agent-configs", None).await;
        assert_eq!(list["data"][1]["byok_status"], "inactive", "{list}");

        // A valid one is stored sealed; the answer shows a hint only.
        let (st, cfg) = s
            .call(
                Method::PUT,
                "/api/v1/agent-configs/site_health/byok-key",
                Some(json!({"api_key": TENANT_KEY})),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{cfg}");
        assert_eq!(
            (cfg["byok_status"].as_str(), cfg["byok_key_hint"].as_str()),
            (Some("active"), Some("…7c1d")),
            "{cfg}"
        );
        assert!(cfg["byok_last_probed_at"].is_string(), "{cfg}");
        assert_eq!(cfg["model"], MODEL, "the config is kept: {cfg}");
        let (_, list) = s.call(Method::GET, "/api/v1/agent-configs", None).await;
        assert!(!list.to_string().contains(TENANT_KEY) && !cfg.to_string().contains(TENANT_KEY));

        // Runs of the blueprint use it; the other blueprint's would not.
        let id = enqueue(&s, json!({"input": {"prompt": "Check"}})).await;
        let run = ended(&s.http, &s.base, &s.key, &id).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert!(
            fake.keys.lock().unwrap().iter().all(|k| k == TENANT_KEY),
            "every turn on the tenant's key"
        );
        assert!(!run.to_string().contains(TENANT_KEY));

        // The storage holds only ciphertext.
        let bytes = s.storage_bytes();
        assert!(!bytes.is_empty());
        assert!(
            !common::contains(&bytes, TENANT_KEY),
            "{backend:?}: the plaintext key is in the storage"
        );
        assert!(
            common::contains(&bytes, "Health first"),
            "{backend:?}: the search reads the storage (a note's title is there)"
        );

        // Revoked later: the run fails clearly, the config says so.
        fake.revoke_tenant.store(true, Ordering::SeqCst);
        let before = fake.keys.lock().unwrap().len();
        let id = enqueue(&s, json!({"input": {"prompt": "again"}})).await;
        let run = ended(&s.http, &s.base, &s.key, &id).await;
        assert_eq!(
            (run["status"].as_str(), run["failure_category"].as_str()),
            (Some("failed"), Some("revoked_or_expired")),
            "{run}"
        );
        assert_eq!(
            fake.keys.lock().unwrap().len(),
            before + 1,
            "a revoked key is not retried"
        );
        let (_, list) = s.call(Method::GET, "/api/v1/agent-configs", None).await;
        assert_eq!(list["data"][1]["byok_status"], "auth_failed", "{list}");
        s.stop().await;
    }
}

#[tokio::test]
async fn a_tool_call_whose_completion_was_not_journaled_gets_its_first_answer_again() {
    for backend in backends() {
        let (fake, url) = Fake::start(Box::new(two_tools), None, Duration::ZERO).await;
        let s = stack(backend, &url).await;
        let (st, _) = s
            .call(
                Method::PUT,
                "/api/v1/agent-configs/site_health",
                Some(json!({"model": MODEL})),
            )
            .await;
        assert_eq!(st, StatusCode::OK);
        let id = enqueue(&s, json!({"input": {"prompt": "Check"}})).await;
        let first = ended(&s.http, &s.base, &s.key, &id).await;
        assert_eq!(first["status"], "succeeded", "{first}");
        let asked = fake.requests().len();

        // As if the worker had died after the second tool call ran but before its completion
        // was journaled: the step is started only, and the run is back in the queue.
        let db = worktruck_kit::db::Db::connect(&s.data.db_options("agents"), false)
            .await
            .unwrap();
        let run_id = uuid::Uuid::parse_str(&id).unwrap();
        let mut tx = db
            .begin(worktruck_kit::db::Scope::System, true)
            .await
            .unwrap();
        worktruck_kit::exec!(&mut tx, sqlx::query("UPDATE agent_steps SET output = NULL, completed_at = NULL WHERE run_id = $1 AND seq = 4").bind(run_id))
            .unwrap();
        worktruck_kit::exec!(&mut tx, sqlx::query(
            "UPDATE agent_runs SET status = 'queued', worker_id = NULL, lease_until = NULL, output = NULL, finished_at = NULL WHERE id = $1")
            .bind(run_id))
        .unwrap();
        tx.commit().await.unwrap();
        db.close().await;

        let again = ended(&s.http, &s.base, &s.key, &id).await;
        assert_eq!(again["status"], "succeeded", "{again}");
        assert_eq!(
            note_titles(&s.http, &s.base, &s.key).await,
            ["Health first", "Health second"],
            "{backend:?}: the repeated call did not write again"
        );
        assert_eq!(
            again["steps"][3]["output"], first["steps"][3]["output"],
            "the first call's answer, kept"
        );
        assert_eq!(again["cost_usd_micros"], 3 * TURN_MICROS, "{again}");
        assert_eq!(fake.requests().len(), asked, "no LLM turn is asked again");
        s.stop().await;
    }
}

/// Polls the run until it has `status`.
async fn reaches(s: &Stack, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, v) = s
            .call(
                Method::GET,
                &format!("/api/v1/agents/site_health/runs/{id}"),
                None,
            )
            .await;
        if v["status"] == status {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "the run never became {status}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_guardrail_pauses_a_run_that_survives_a_restart_and_resumes_on_approval() {
    for backend in backends() {
        let (fake, url) = Fake::start(Box::new(two_tools), None, Duration::ZERO).await;
        let mut s = stack(backend, &url).await;
        let (st, e) = s
            .call(
                Method::PUT,
                "/api/v1/agent-configs/site_health",
                Some(json!({"model": MODEL, "guardrails": [{"tool": 3}]})),
            )
            .await;
        assert_eq!(
            (st, error_code(&e).as_str()),
            (StatusCode::BAD_REQUEST, "validation_failed"),
            "{e}"
        );
        let guarded =
            json!({"model": MODEL, "guardrails": [{"tool": "notes_*", "require_approval": true}]});
        let (st, _) = s
            .call(
                Method::PUT,
                "/api/v1/agent-configs/site_health",
                Some(guarded),
            )
            .await;
        assert_eq!(st, StatusCode::OK);
        let id = enqueue(&s, json!({"input": {"prompt": "Check"}})).await;

        // Paused before the first tool call, the pending call visible; nothing written.
        let run = reaches(&s, &id, "waiting").await;
        let steps = run["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 2, "{run}");
        assert_eq!(
            (steps[1]["kind"].as_str(), steps[1]["name"].as_str()),
            (Some("guardrail"), Some("notes_create")),
            "{run}"
        );
        assert_eq!(steps[1]["input"]["title"], "Health first", "{run}");
        assert_eq!(steps[1]["output"]["decision"], "pending", "{run}");
        assert!(note_titles(&s.http, &s.base, &s.key).await.is_empty());
        // A waiting run may be cancelled; then there is nothing to approve.
        let (st, run) = s
            .call(
                Method::POST,
                &format!("/api/v1/agents/site_health/runs/{id}/cancel"),
                Some(json!({})),
            )
            .await;
        assert_eq!(
            (st, run["status"].as_str()),
            (StatusCode::OK, Some("cancelled")),
            "{run}"
        );
        let (st, e) = s
            .call(
                Method::POST,
                &format!("/api/v1/agents/site_health/runs/{id}/approve"),
                Some(json!({})),
            )
            .await;
        assert_eq!(
            (st, error_code(&e).as_str()),
            (StatusCode::CONFLICT, "conflict"),
            "{e}"
        );

        // Waiting survives a restart of everything (its worker included).
        let id = enqueue(&s, json!({"input": {"prompt": "Check"}})).await;
        reaches(&s, &id, "waiting").await;
        s.restart().await;
        let run = reaches(&s, &id, "waiting").await;
        assert_eq!(run["steps"].as_array().unwrap().len(), 2, "{run}");

        // Approve the first call, reject the second: one note, and the model hears why.
        let (st, run) = s
            .call(
                Method::POST,
                &format!("/api/v1/agents/site_health/runs/{id}/approve"),
                Some(json!({})),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{run}");
        let run = reaches(&s, &id, "waiting").await;
        assert_eq!(
            run["steps"].as_array().unwrap().len(),
            5,
            "llm, guardrail, tool, llm, guardrail: {run}"
        );
        let (st, _) = s
            .call(
                Method::POST,
                &format!("/api/v1/agents/site_health/runs/{id}/reject"),
                Some(json!({"reason": "one note is enough"})),
            )
            .await;
        assert_eq!(st, StatusCode::OK);
        let run = ended(&s.http, &s.base, &s.key, &id).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        let kinds: Vec<&str> = run["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            ["llm", "guardrail", "tool", "llm", "guardrail", "llm"],
            "{run}"
        );
        assert_eq!(run["steps"][4]["output"]["decision"], "rejected", "{run}");
        assert_eq!(run["cost_usd_micros"], 3 * TURN_MICROS, "{run}");
        let titles = note_titles(&s.http, &s.base, &s.key).await;
        assert_eq!(titles, ["Health first"], "{backend:?}");
        let last = fake.requests().into_iter().last().unwrap();
        let result = &last["messages"][4]["content"][0];
        assert_eq!(
            (result["is_error"].as_bool(), result["content"].as_str()),
            (
                Some(true),
                Some("A reviewer rejected this call: one note is enough")
            ),
            "{last}"
        );
        let (_, events) = s
            .call(
                Method::GET,
                &format!("/api/v1/agents/site_health/runs/{id}/events"),
                None,
            )
            .await;
        let kinds: Vec<&str> = events["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "queued",
                "running",
                "waiting",
                "queued",
                "running",
                "waiting",
                "queued",
                "running",
                "succeeded"
            ],
            "{events}"
        );
        s.stop().await;
    }
}

/// Every turn is a final answer: a scheduled run succeeds in one turn.
fn answer_at_once(_turn: usize, _body: &Value) -> (u16, Value) {
    (
        200,
        json!({
            "id": "msg_s", "type": "message", "role": "assistant", "model": MODEL,
            "content": [{"type": "text", "text": "Checked."}],
            "stop_reason": "end_turn", "usage": usage()
        }),
    )
}

/// Ticks every two seconds (six fields, seconds first): the issue's "every minute for five
/// minutes" in CI time.
const EVERY_TWO_SECONDS: &str = "*/2 * * * * *";

fn schedule_config(overlap: &str) -> Value {
    json!({"model": MODEL, "schedule": {"cron": EVERY_TWO_SECONDS, "timezone": "Europe/Berlin", "overlap": overlap}})
}

fn at(v: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("a time: {v}")))
        .unwrap()
        .with_timezone(&chrono::Utc)
}

/// Puts `body` as the site_health config; returns it. On a client of its own: a pooled
/// connection left idle through the tests' waits may be closed by the server's idle timeout
/// just as it is reused.
async fn put_config(_http: &reqwest::Client, base: &str, key: &str, body: Value) -> Value {
    let (st, cfg) = http_call(
        &worktruck_kit::http::client(),
        base,
        key,
        Method::PUT,
        "/api/v1/agent-configs/site_health",
        Some(body),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{cfg}");
    cfg
}

/// Every run of site_health once none is queued or running, oldest first.
async fn settled_runs(http: &reqwest::Client, base: &str, key: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (st, v) = http_call(
            http,
            base,
            key,
            Method::GET,
            "/api/v1/agents/site_health/runs?limit=200",
            None,
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let mut runs = v["data"].as_array().unwrap().clone();
        let open = runs
            .iter()
            .filter(|r| ["queued", "running", "waiting"].contains(&r["status"].as_str().unwrap()))
            .count();
        if open == 0 {
            runs.reverse();
            return runs;
        }
        assert!(Instant::now() < deadline, "runs never ended: {v}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs the two-second schedule for `window`, then removes it; returns the runs and when the
/// schedule was put and removed.
async fn run_schedule(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    window: Duration,
) -> (
    Vec<Value>,
    chrono::DateTime<chrono::Utc>,
    chrono::DateTime<chrono::Utc>,
) {
    let start = chrono::Utc::now();
    let cfg = put_config(http, base, key, schedule_config("allow")).await;
    let next = at(&cfg["next_tick_at"]);
    assert!(
        next > start && next <= start + chrono::Duration::seconds(3),
        "the first tick is the next one: {cfg}"
    );
    tokio::time::sleep(window).await;
    let cfg = put_config(http, base, key, json!({"model": MODEL})).await;
    let stop = chrono::Utc::now();
    assert!(
        cfg.get("next_tick_at").is_none_or(Value::is_null),
        "no schedule, no tick: {cfg}"
    );
    (settled_runs(http, base, key).await, start, stop)
}

/// The ticks of `runs` (all scheduled and succeeded), sorted, each asserted to have exactly
/// one run.
fn ticks_of(runs: &[Value], what: &str) -> Vec<chrono::DateTime<chrono::Utc>> {
    let mut ticks = Vec::new();
    for r in runs {
        assert_eq!(r["trigger"], "schedule", "{what}: {r}");
        assert_eq!(r["status"], "succeeded", "{what}: {r}");
        assert_eq!(r["output"]["text"], "Checked.", "{what}: {r}");
        ticks.push(at(&r["scheduled_for"]));
    }
    ticks.sort();
    let mut per_tick = std::collections::BTreeMap::new();
    for t in &ticks {
        *per_tick.entry(*t).or_insert(0) += 1;
    }
    let doubled: Vec<_> = per_tick.iter().filter(|(_, n)| **n != 1).collect();
    assert!(doubled.is_empty(), "{what}: ticks with more than one run: {doubled:?}");
    ticks
}

/// Asserts `ticks` are consecutive two-second ticks.
fn consecutive(ticks: &[chrono::DateTime<chrono::Utc>], what: &str) {
    for w in ticks.windows(2) {
        assert_eq!(
            w[1] - w[0],
            chrono::Duration::seconds(2),
            "{what}: a gap between {} and {} in {ticks:?}",
            w[0],
            w[1]
        );
    }
}

/// Every tick in the window has exactly one run, and the ticks are consecutive from the first
/// after the schedule was put to about when it was removed.
fn check_window(
    runs: &[Value],
    start: chrono::DateTime<chrono::Utc>,
    stop: chrono::DateTime<chrono::Utc>,
    what: &str,
) {
    let ticks = ticks_of(runs, what);
    consecutive(&ticks, what);
    let slack = chrono::Duration::seconds(3);
    let (first, last) = (ticks[0], ticks[ticks.len() - 1]);
    assert!(
        first > start && first <= start + slack,
        "{what}: the first tick after {start} fired: {ticks:?}"
    );
    assert!(
        last <= stop && last >= stop - slack,
        "{what}: the ticks go on until the schedule is removed at {stop}: {ticks:?}"
    );
}

fn schedule_settings_env(url: &str) -> Vec<(String, String)> {
    let mut env = settings_env(url);
    env.push((
        "WORKTRUCK_SETTINGS__AGENTS__SCHEDULE_POLL_MS".into(),
        "200".into(),
    ));
    env
}

async fn schedule_stack(backend: Backend, url: &str) -> Stack {
    let mut settings = settings(url);
    settings["schedule_poll_ms"] = json!(200);
    Stack::start_with(backend, move |cfg| {
        cfg.settings.insert("agents".into(), settings);
    })
    .await
}

#[tokio::test]
async fn a_schedule_s_ticks_fire_once_each_with_two_worker_processes_postgres_nats() {
    let Some(backend) = backends().into_iter().find(|b| *b == Backend::Postgres) else {
        return;
    };
    let Some(nats) = nats_url() else { return };
    let (fake, url) = Fake::start(Box::new(answer_at_once), None, Duration::ZERO).await;
    let mut split = Split::start_with_env(
        backend,
        &["tenants", "notes", "agents"],
        false,
        Some(nats),
        schedule_settings_env(&url),
    )
    .await;
    let admin = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    // Two workers, each running the scheduler, at once.
    split.spawn_role("agent-worker", admin(free_port())).await;
    split.spawn_role("agent-worker", admin(free_port())).await;
    let key = split.create_tenant_on("schedules", "enterprise");
    let http = worktruck_kit::http::client();
    let base = split.base.clone();
    let (runs, start, stop) = run_schedule(&http, &base, &key, Duration::from_secs(24)).await;
    assert!(
        runs.len() >= 10,
        "about twelve ticks in 24 s: {} runs\n{}",
        runs.len(),
        split.logs()
    );
    check_window(&runs, start, stop, "two workers on PostgreSQL + NATS");
    assert_eq!(fake.answered.load(Ordering::SeqCst), runs.len(), "one turn per run");
}

#[tokio::test]
async fn a_schedule_s_ticks_fire_once_each_embedded() {
    let (_fake, url) = Fake::start(Box::new(answer_at_once), None, Duration::ZERO).await;
    let s = schedule_stack(Backend::Sqlite, &url).await;
    let (runs, start, stop) = run_schedule(&s.http, &s.base, &s.key, Duration::from_secs(10)).await;
    assert!(runs.len() >= 4, "about five ticks in 10 s: {runs:?}");
    check_window(&runs, start, stop, "embedded");
}

#[tokio::test]
async fn ticks_missed_while_no_worker_runs_give_one_catch_up_run() {
    let (_fake, url) = Fake::start(Box::new(answer_at_once), None, Duration::ZERO).await;
    let mut s = schedule_stack(Backend::Sqlite, &url).await;
    put_config(&s.http, &s.base, &s.key, schedule_config("allow")).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Down for nine seconds: four or five ticks pass with no worker.
    s.running.take().unwrap().stop().await;
    let down = chrono::Utc::now();
    tokio::time::sleep(Duration::from_secs(9)).await;
    let up = chrono::Utc::now();
    let running = worktruck::start_dev(s.cfg.clone()).await.expect("restart");
    s.base = format!("http://{}", running.rest_addr.unwrap());
    s.running = Some(running);
    tokio::time::sleep(Duration::from_secs(5)).await;
    put_config(&s.http, &s.base, &s.key, json!({"model": MODEL})).await;
    let runs = settled_runs(&s.http, &s.base, &s.key).await;
    let ticks = ticks_of(&runs, "downtime");
    let (before, after): (Vec<_>, Vec<_>) = ticks.iter().partition(|t| **t <= down);
    assert!(before.len() >= 2, "ticks fired before the stop: {ticks:?}");
    consecutive(&before, "before the stop");
    let in_downtime = after.iter().filter(|t| **t < up).count();
    assert!(
        in_downtime <= 1,
        "at most one catch-up run for the ticks missed between {down} and {up}: {ticks:?}"
    );
    // The first run after the restart is for the latest tick missed, not the first: it was
    // enqueued within a tick of its tick.
    let catch_up = runs
        .iter()
        .filter(|r| at(&r["scheduled_for"]) > down)
        .min_by_key(|r| at(&r["scheduled_for"]))
        .expect("runs after the restart");
    let late = at(&catch_up["created_at"]) - at(&catch_up["scheduled_for"]);
    assert!(
        late < chrono::Duration::seconds(2),
        "the catch-up is for the latest missed tick ({late} late): {catch_up}"
    );
    assert!(after.len() >= 2, "ticks go on after the restart: {ticks:?}");
    consecutive(&after, "after the restart");
}

#[tokio::test]
async fn a_schedule_is_checked_by_its_parser_and_a_disabled_config_has_no_tick() {
    let (_fake, url) = Fake::start(Box::new(answer_at_once), None, Duration::ZERO).await;
    for backend in backends() {
        let s = schedule_stack(backend, &url).await;
        for (cron, why) in [
            ("61 * * * *", "minute 61"),
            ("* * * * * * 2030", "a year field"),
            ("0 9 * * FUNDAY", "no such day"),
        ] {
            let (st, e) = s
                .call(
                    Method::PUT,
                    "/api/v1/agent-configs/site_health",
                    Some(json!({"model": MODEL, "schedule": {"cron": cron}})),
                )
                .await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{backend:?} {why}: {e}");
            let text = e.to_string();
            assert!(
                text.contains("schedule.cron"),
                "{backend:?} {why}: the message names the field: {e}"
            );
        }
        // Disabled: stored, but no tick.
        let mut body = schedule_config("skip");
        body["disabled"] = json!(true);
        let (st, cfg) = s
            .call(Method::PUT, "/api/v1/agent-configs/site_health", Some(body))
            .await;
        assert_eq!(st, StatusCode::OK, "{cfg}");
        assert_eq!(cfg["schedule"]["cron"], EVERY_TWO_SECONDS, "{cfg}");
        assert!(cfg.get("next_tick_at").is_none_or(Value::is_null), "{cfg}");
        // Five fields, in a zone: the next tick is the next 09:00 in Tokyo.
        let (st, cfg) = s
            .call(
                Method::PUT,
                "/api/v1/agent-configs/site_health",
                Some(json!({"model": MODEL, "schedule": {"cron": "0 9 * * *", "timezone": "Asia/Tokyo", "overlap": "buffer_one"}})),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{cfg}");
        // Tokyo is UTC+9 all year: 09:00 there is 00:00 UTC.
        let next = at(&cfg["next_tick_at"]);
        assert_eq!(next.format("%H:%M:%S").to_string(), "00:00:00", "{cfg}");
        assert_eq!(cfg["schedule"]["overlap"], "buffer_one", "{cfg}");
        assert_eq!(cfg["ticks_skipped"].as_i64().unwrap_or(0), 0, "{cfg}");
        // A run enqueued by a call says so.
        let id = enqueue(&s, json!({"input": {"prompt": "now"}})).await;
        let (_, run) = s
            .call(
                Method::GET,
                &format!("/api/v1/agents/site_health/runs/{id}"),
                None,
            )
            .await;
        assert_eq!(run["trigger"], "manual", "{run}");
        assert!(run.get("scheduled_for").is_none_or(Value::is_null), "{run}");
    }
}

#[tokio::test]
async fn overlap_skip_drops_ticks_while_a_scheduled_run_is_on_and_buffer_one_lets_one_wait() {
    // Each turn takes three seconds: longer than a tick.
    let (_fake, url) =
        Fake::start(Box::new(answer_at_once), None, Duration::from_secs(3)).await;
    let s = schedule_stack(Backend::Sqlite, &url).await;
    for overlap in ["skip", "buffer_one"] {
        let since = chrono::Utc::now();
        put_config(&s.http, &s.base, &s.key, schedule_config(overlap)).await;
        tokio::time::sleep(Duration::from_secs(9)).await;
        let cfg = put_config(&s.http, &s.base, &s.key, json!({"model": MODEL})).await;
        // This policy's runs only.
        let runs: Vec<Value> = settled_runs(&s.http, &s.base, &s.key)
            .await
            .into_iter()
            .filter(|r| at(&r["created_at"]) > since)
            .collect();
        ticks_of(&runs, overlap);
        assert!(runs.len() >= 2, "{overlap}: {runs:?}");
        for w in runs.windows(2) {
            let (prev, next) = (&w[0], &w[1]);
            let (created, bound) = match overlap {
                // No scheduled run is enqueued before the previous one ended.
                "skip" => (at(&next["created_at"]), at(&prev["finished_at"])),
                // None is enqueued while the previous one still waits to start.
                _ => (at(&next["created_at"]), at(&prev["started_at"])),
            };
            assert!(created >= bound, "{overlap}: {prev}\n{next}");
        }
        if overlap == "skip" {
            assert!(cfg["ticks_skipped"].as_i64().unwrap_or(0) >= 1, "{cfg}");
            assert!(
                cfg["last_skip_reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("overlap skip")),
                "{cfg}"
            );
        }
    }
}

/// An app tool call, then a call of one of the app's tools the config does not allow, then an
/// answer.
fn app_tools_script(turn: usize, _body: &Value) -> (u16, Value) {
    let tool_use = |id: &str, name: &str, input: Value| {
        json!({
            "id": format!("msg_{id}"), "type": "message", "role": "assistant", "model": MODEL,
            "content": [{"type": "tool_use", "id": format!("toolu_{id}"), "name": name, "input": input}],
            "stop_reason": "tool_use", "usage": usage()
        })
    };
    match turn {
        0 => (200, tool_use("1", "kb__lookup", json!({"q": "ada"}))),
        1 => (200, tool_use("2", "kb__wipe", json!({}))),
        _ => (
            200,
            json!({
                "id": "msg_3", "type": "message", "role": "assistant", "model": MODEL,
                "content": [{"type": "text", "text": "Found ada."}],
                "stop_reason": "end_turn", "usage": usage()
            }),
        ),
    }
}

/// The tool result the model was given in `request` (its last message's first block).
fn tool_result(request: &Value) -> &Value {
    &request["messages"].as_array().unwrap().last().unwrap()["content"][0]
}

#[tokio::test]
async fn an_agent_calls_the_app_tools_its_config_allows_with_the_apps_credentials() {
    for backend in backends() {
        let (fake, url) = Fake::start(Box::new(app_tools_script), None, Duration::ZERO).await;
        let settings = settings(&url);
        let s = Stack::start_with(backend, move |cfg| {
            cfg.settings.insert("agents".into(), settings);
            cfg.outbound.allow_http = true;
            cfg.outbound.allow_ranges = vec!["127.0.0.0/8".into()];
        })
        .await;
        let calls = Arc::new(AtomicUsize::new(0));
        let app_url = tooling::tooling(calls.clone()).await;
        let (st, v) = s
            .call(
                Method::POST,
                "/api/v1/apps",
                Some(json!({"slug": "kb", "display_name": "Knowledge base", "mcp_server_url": app_url,
                            "auth": {"type": "bearer", "secret": tooling::TOKEN}})),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{backend:?}: {v}");

        // An entry that is neither a blueprint tool nor an app tool's name is refused.
        for bad in ["KB__lookup", "kb__", "k__x", "kb__a.b", "contacts_*"] {
            let (st, e) = s
                .call(Method::PUT, "/api/v1/agent-configs/site_health", Some(json!({"allowed_tools": ["notes_create", bad]})))
                .await;
            assert_eq!((st, error_code(&e).as_str()), (StatusCode::BAD_REQUEST, "validation_failed"), "{bad}: {e}");
        }
        // App tools are opted in by name or by pattern, beside the blueprint's own.
        let allowed = json!(["notes_create", "kb__lookup", "kb__files*"]);
        let (st, cfg) = s
            .call(Method::PUT, "/api/v1/agent-configs/site_health", Some(json!({"model": MODEL, "allowed_tools": allowed})))
            .await;
        assert_eq!(st, StatusCode::OK, "{cfg}");
        assert_eq!(cfg["allowed_tools"], allowed, "{cfg}");

        let id = enqueue(&s, json!({"input": {"prompt": "Look ada up."}})).await;
        let run = ended(&s.http, &s.base, &s.key, &id).await;
        assert_eq!(run["status"], "succeeded", "{backend:?}: {run}");

        // The model is offered the allowed app tools under their names and mirrored schemas,
        // and no other tool of the app's.
        let requests = fake.requests();
        let offered: Vec<&str> = requests[0]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(offered, ["notes_create", "kb__files_read", "kb__lookup"], "{backend:?}");
        let lookup = requests[0]["tools"].as_array().unwrap().iter().find(|t| t["name"] == "kb__lookup").unwrap();
        assert_eq!(lookup["input_schema"]["required"], json!(["q"]), "{lookup}");
        assert!(lookup["description"].as_str().unwrap().starts_with("Looks a name up."), "{lookup}");

        // The allowed call reached the server with the app's token and its answer came back;
        // the other was refused before anything was sent.
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{backend:?}");
        let shape: Vec<(&str, &str)> = run["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["kind"].as_str().unwrap(), s["name"].as_str().unwrap()))
            .collect();
        assert_eq!(
            shape,
            [("llm", MODEL), ("tool", "kb__lookup"), ("llm", MODEL), ("tool", "kb__wipe"), ("llm", MODEL)],
            "{run}"
        );
        let steps = run["steps"].as_array().unwrap();
        assert_eq!(steps[1]["output"]["result"]["structured_content"], json!({"found": "ada"}), "{run}");
        assert_eq!(steps[3]["output"]["error"]["code"], "invalid_argument", "{run}");
        let first = tool_result(&requests[1]);
        assert_eq!((first["tool_use_id"].as_str(), first["is_error"].as_bool()), (Some("toolu_1"), Some(false)), "{first}");
        assert!(first["content"].as_str().unwrap().contains("found ada"), "{first}");
        let second = tool_result(&requests[2]);
        assert_eq!(second["is_error"], true, "{second}");
        assert!(second["content"].as_str().unwrap().contains("kb__wipe"), "{second}");
        assert_eq!(run["output"]["text"], "Found ada.", "{run}");

        // Another tenant allowing every kb tool is offered none: the app is not theirs.
        // (On the enterprise plan, since the run is polled past the free plan's 30 a minute.)
        let other = worktruck::admin::create_tenant(&s.cfg, "other", "enterprise").await.unwrap();
        let other = other["api_key"].as_str().unwrap().to_owned();
        let r = s
            .http
            .put(format!("{}/api/v1/agent-configs/site_health", s.base))
            .bearer_auth(&other)
            .json(&json!({"model": MODEL, "allowed_tools": ["notes_create", "kb__*"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = s
            .http
            .post(format!("{}/api/v1/agents/site_health/runs", s.base))
            .bearer_auth(&other)
            .json(&json!({"input": {"prompt": "Look ada up."}}))
            .send()
            .await
            .unwrap();
        let queued: Value = r.json().await.unwrap();
        let theirs = ended(&s.http, &s.base, &other, queued["id"].as_str().unwrap()).await;
        let requests = fake.requests();
        let asked = requests.iter().rfind(|r| r["messages"].as_array().unwrap().len() == 1).unwrap();
        let offered: Vec<&str> = asked["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(offered, ["notes_create"], "{backend:?}");
        // Their model's call of kb__lookup is refused, and never reaches the server.
        assert_eq!(theirs["steps"][1]["output"]["error"]["code"], "invalid_argument", "{theirs}");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{backend:?}");
        s.stop().await;
    }
}

/// The contact_deduper runs, newest first.
async fn deduper_runs(s: &Stack) -> Vec<Value> {
    let (st, v) = s.call(Method::GET, "/api/v1/agents/contact_deduper/runs?limit=200", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["data"].as_array().unwrap().clone()
}

/// The contact_deduper config.
async fn deduper_config(s: &Stack) -> Value {
    let (st, v) = s.call(Method::GET, "/api/v1/agent-configs", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["data"].as_array().unwrap().iter().find(|c| c["blueprint"] == "contact_deduper").unwrap().clone()
}

#[tokio::test]
async fn a_revoked_keys_waiting_run_and_schedule_act_no_more() {
    for backend in backends() {
        let (_fake, url) = Fake::start(Box::new(two_tools), None, Duration::ZERO).await;
        let s = schedule_stack(backend, &url).await;
        let (st, k) = s.call(Method::POST, "/api/v1/api-keys", Some(json!({"name": "agent operator"}))).await;
        assert!(st.is_success(), "{k}");
        let (key_id, key) = (k["id"].as_str().unwrap().to_owned(), k["key"].as_str().unwrap().to_owned());

        // The key's run waits for approval of its first tool call; its schedule ticks.
        put_config(&s.http, &s.base, &key, json!({"model": MODEL, "guardrails": [{"tool": "notes_*", "require_approval": true}]})).await;
        let (st, run) = s
            .call_as(&key, Method::POST, "/api/v1/agents/site_health/runs", Some(json!({"input": {"prompt": "Check"}})))
            .await;
        assert_eq!(st, StatusCode::OK, "{run}");
        let id = run["id"].as_str().unwrap().to_owned();
        reaches(&s, &id, "waiting").await;
        let (st, cfg) = s
            .call_as(
                &key,
                Method::PUT,
                "/api/v1/agent-configs/contact_deduper",
                Some(json!({"model": MODEL, "schedule": {"cron": EVERY_TWO_SECONDS, "overlap": "allow"}})),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{cfg}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while deduper_runs(&s).await.is_empty() {
            assert!(Instant::now() < deadline, "{backend:?}: the live key's schedule never fired");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // The key is revoked.
        let (st, v) = s.call(Method::DELETE, &format!("/api/v1/api-keys/{key_id}"), None).await;
        assert!(st.is_success(), "{v}");

        // Approved by someone else, the run resumes only to fail: no tool call as the revoked key.
        let (st, v) = s
            .call(Method::POST, &format!("/api/v1/agents/site_health/runs/{id}/approve"), Some(json!({})))
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let run = ended(&s.http, &s.base, &s.key, &id).await;
        assert_eq!(
            (run["status"].as_str(), run["failure_category"].as_str()),
            (Some("failed"), Some("principal_revoked")),
            "{backend:?}: {run}"
        );
        assert!(run["failure_detail"].as_str().unwrap().contains("revoked"), "{run}");
        assert!(note_titles(&s.http, &s.base, &s.key).await.is_empty(), "{backend:?}: a revoked key's run wrote");

        // Its schedule's ticks are skipped and counted with the reason; none enqueues a run.
        let deadline = Instant::now() + Duration::from_secs(30);
        let (runs, skipped) = loop {
            let cfg = deduper_config(&s).await;
            let skipped = cfg["ticks_skipped"].as_i64().unwrap_or(0);
            if skipped >= 1 {
                assert!(cfg["last_skip_reason"].as_str().unwrap().contains("revoked"), "{cfg}");
                break (deduper_runs(&s).await.len(), skipped);
            }
            assert!(Instant::now() < deadline, "{backend:?}: no tick skipped after the revocation: {cfg}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while deduper_config(&s).await["ticks_skipped"].as_i64().unwrap_or(0) < skipped + 2 {
            assert!(Instant::now() < deadline, "{backend:?}: ticks stopped being counted");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(deduper_runs(&s).await.len(), runs, "{backend:?}: a revoked key's schedule enqueued a run");
        s.stop().await;
    }
}

const CLOUDFLARE_TOKEN: &str = "cf-agent-token-6a2f9d1c";
const NETDATA_TOKEN: &str = "nd-agent-token-3e8b0c7a";

/// A fake Cloudflare API and Netdata server: each answers its token only, and records
/// `(path?query, token)` of every request.
async fn providers() -> (Arc<Mutex<Vec<(String, String)>>>, String) {
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let seen = record.clone();
        async move {
            let token = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default()
                .to_owned();
            let path = req.uri().path().to_owned();
            let target = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
            seen.lock().unwrap().push((target, token.clone()));
            match (path.as_str(), token.as_str()) {
                ("/client/v4/zones", CLOUDFLARE_TOKEN) => (
                    AxumStatus::OK,
                    axum::Json(json!({"success": true, "result": [{"id": "z1", "name": "example.com", "status": "active"}]})),
                ),
                ("/api/v1/alarms", NETDATA_TOKEN) => (
                    AxumStatus::OK,
                    axum::Json(json!({"alarms": {"disk_space.root": {"status": "WARNING", "value": 91.5}}})),
                ),
                _ => (AxumStatus::UNAUTHORIZED, axum::Json(json!({"success": false}))),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (seen, url)
}

/// site_health at work: Cloudflare's zones, Netdata's alarms, a path that climbs out, then a
/// note of the findings, then an answer.
fn site_health_script(turn: usize, _body: &Value) -> (u16, Value) {
    let tool_use = |id: usize, name: &str, input: Value| {
        json!({
            "id": format!("msg_{id}"), "type": "message", "role": "assistant", "model": MODEL,
            "content": [{"type": "tool_use", "id": format!("toolu_{id}"), "name": name, "input": input}],
            "stop_reason": "tool_use", "usage": usage()
        })
    };
    match turn {
        0 => (200, tool_use(0, "cloudflare_api_get", json!({"path": "/zones", "query": {"name": "example.com"}}))),
        1 => (200, tool_use(1, "netdata_api_get", json!({"path": "/api/v1/alarms", "query": {"all": "false"}}))),
        2 => (200, tool_use(2, "cloudflare_api_get", json!({"path": "/zones/../../user/tokens"}))),
        3 => (200, tool_use(3, "notes_create", json!({"title": "Site health", "body": "Disk at 91.5 %."}))),
        _ => (
            200,
            json!({
                "id": "msg_end", "type": "message", "role": "assistant", "model": MODEL,
                "content": [{"type": "text", "text": "One warning: the root disk."}],
                "stop_reason": "end_turn", "usage": usage()
            }),
        ),
    }
}

#[tokio::test]
async fn site_health_reads_cloudflare_and_netdata_with_the_tenants_integration_keys() {
    for backend in backends() {
        let (_fake, url) = Fake::start(Box::new(site_health_script), None, Duration::ZERO).await;
        let (seen, provider) = providers().await;
        let mut settings = settings(&url);
        settings["cloudflare_base_url"] = json!(provider);
        let s = Stack::start_with(backend, move |cfg| {
            cfg.settings.insert("agents".into(), settings);
            cfg.outbound.allow_http = true;
            cfg.outbound.allow_ranges = vec!["127.0.0.0/8".into()];
        })
        .await;
        let (st, cfg) = s
            .call(Method::PUT, "/api/v1/agent-configs/site_health", Some(json!({"model": MODEL})))
            .await;
        assert_eq!(st, StatusCode::OK, "{cfg}");
        assert_eq!(
            cfg["allowed_tools"].as_array().unwrap()[..2],
            [json!("cloudflare_api_get"), json!("netdata_api_get")],
            "{cfg}"
        );
        let outputs = |run: &Value| -> Vec<Value> {
            run["steps"].as_array().unwrap().iter().filter(|s| s["kind"] == "tool").map(|s| s["output"].clone()).collect()
        };

        // Without keys the reads are refused, saying how to give one; the run goes on.
        let id = enqueue(&s, json!({"input": {"prompt": "How is example.com?"}})).await;
        let run = ended(&s.http, &s.base, &s.key, &id).await;
        assert_eq!(run["status"], "succeeded", "{backend:?}: {run}");
        let out = outputs(&run);
        assert_eq!(out[0]["error"]["code"], "not_found", "{run}");
        assert!(out[0]["error"]["message"].as_str().unwrap().contains("integration-keys"), "{run}");
        assert!(seen.lock().unwrap().is_empty(), "no provider is called without a key");

        // With the tenant's keys.
        for body in [
            json!({"provider": "cloudflare", "key": CLOUDFLARE_TOKEN, "metadata": {"account_id": "acc-1"}}),
            json!({"provider": "netdata", "key": NETDATA_TOKEN, "metadata": {"base_url": provider}}),
        ] {
            let (st, v) = s.call(Method::POST, "/api/v1/integration-keys", Some(body)).await;
            assert!(st.is_success(), "{v}");
        }
        let id = enqueue(&s, json!({"input": {"prompt": "How is example.com?"}})).await;
        let run = ended(&s.http, &s.base, &s.key, &id).await;
        assert_eq!(run["status"], "succeeded", "{backend:?}: {run}");
        let out = outputs(&run);
        assert_eq!(out.len(), 4, "{run}");
        assert_eq!(out[0]["result"]["status"], 200, "{run}");
        assert_eq!(out[0]["result"]["body"]["result"][0]["name"], "example.com", "{run}");
        assert_eq!(out[1]["result"]["body"]["alarms"]["disk_space.root"]["status"], "WARNING", "{run}");
        // A path that climbs out of the API is refused before anything is sent.
        assert_eq!(out[2]["error"]["code"], "invalid_argument", "{run}");
        assert!(out[3]["result"]["id"].is_string(), "the note is written: {run}");
        assert_eq!(
            *seen.lock().unwrap(),
            [
                ("/client/v4/zones?name=example.com".to_owned(), CLOUDFLARE_TOKEN.to_owned()),
                ("/api/v1/alarms?all=false".to_owned(), NETDATA_TOKEN.to_owned()),
            ],
            "{backend:?}: each provider is read with its own key"
        );
        // The keys are never in the run's answer.
        let text = run.to_string();
        assert!(!text.contains(CLOUDFLARE_TOKEN) && !text.contains(NETDATA_TOKEN), "{run}");
        s.stop().await;
    }
}

/// Two destructive app calls, then three read-only ones, then an answer: 8,550 millionths of a
/// dollar a turn.
fn guarded_app_script(turn: usize, _body: &Value) -> (u16, Value) {
    let tool_use = |id: usize, name: &str, input: Value| {
        json!({
            "id": format!("msg_{id}"), "type": "message", "role": "assistant", "model": MODEL,
            "content": [{"type": "tool_use", "id": format!("toolu_{id}"), "name": name, "input": input}],
            "stop_reason": "tool_use", "usage": usage()
        })
    };
    match turn {
        0 | 1 => (200, tool_use(turn, "kb__wipe", json!({}))),
        2..=4 => (200, tool_use(turn, "kb__lookup", json!({"q": format!("q{turn}")}))),
        _ => (
            200,
            json!({
                "id": "msg_end", "type": "message", "role": "assistant", "model": MODEL,
                "content": [{"type": "text", "text": "Done."}], "stop_reason": "end_turn", "usage": usage()
            }),
        ),
    }
}

/// The rule of the guardrail step a waiting run is paused on.
fn paused_on(run: &Value) -> (String, String) {
    let step = run["steps"].as_array().unwrap().last().unwrap();
    assert_eq!((step["kind"].as_str(), step["output"]["decision"].as_str()), (Some("guardrail"), Some("pending")), "{run}");
    (step["name"].as_str().unwrap().to_owned(), step["output"]["rule"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_cap_on_destructive_calls_and_a_spend_threshold_pause_a_run_for_approval() {
    for backend in backends() {
        let (_fake, url) = Fake::start(Box::new(guarded_app_script), None, Duration::ZERO).await;
        let settings = settings(&url);
        let s = Stack::start_with(backend, move |cfg| {
            cfg.settings.insert("agents".into(), settings);
            cfg.outbound.allow_http = true;
            cfg.outbound.allow_ranges = vec!["127.0.0.0/8".into()];
        })
        .await;
        let calls = Arc::new(AtomicUsize::new(0));
        let app_url = tooling::tooling(calls.clone()).await;
        let (st, v) = s
            .call(
                Method::POST,
                "/api/v1/apps",
                Some(json!({"slug": "kb", "display_name": "KB", "mcp_server_url": app_url, "auth": {"type": "bearer", "secret": tooling::TOKEN}})),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        for bad in [json!({"max_destructive_calls": -1}), json!({"spend_threshold_cents": 0}), json!({"spend_threshold_cents": 1, "tool": "x"})] {
            let (st, e) = s
                .call(Method::PUT, "/api/v1/agent-configs/site_health", Some(json!({"model": MODEL, "guardrails": [bad]})))
                .await;
            assert_eq!((st, error_code(&e).as_str()), (StatusCode::BAD_REQUEST, "validation_failed"), "{e}");
        }
        // One destructive call free, then each waits; past 3 cents, the next call waits once.
        let (st, cfg) = s
            .call(
                Method::PUT,
                "/api/v1/agent-configs/site_health",
                Some(json!({"model": MODEL, "allowed_tools": ["notes_create", "kb__*"],
                            "guardrails": [{"max_destructive_calls": 1}, {"spend_threshold_cents": 3}]})),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{cfg}");
        let id = enqueue(&s, json!({"input": {"prompt": "Clean up."}})).await;
        let approve = || async {
            let (st, v) = s
                .call(Method::POST, &format!("/api/v1/agents/site_health/runs/{id}/approve"), Some(json!({})))
                .await;
            assert_eq!(st, StatusCode::OK, "{v}");
        };

        // The second wipe waits (the first went through: kb's wipe has no hints, so it is
        // destructive by MCP's defaults).
        let run = reaches(&s, &id, "waiting").await;
        assert_eq!(paused_on(&run), ("kb__wipe".to_owned(), "destructive_cap".to_owned()), "{backend:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        approve().await;
        // After four turns (34,200 ≥ 30,000), the next call waits, read-only as it is.
        let deadline = Instant::now() + Duration::from_secs(60);
        let run = loop {
            let run = reaches(&s, &id, "waiting").await;
            if run["steps"].as_array().unwrap().len() > 4 {
                break run;
            }
            assert!(Instant::now() < deadline, "{run}");
        };
        assert_eq!(paused_on(&run), ("kb__lookup".to_owned(), "spend_threshold".to_owned()), "{backend:?}: {run}");
        assert_eq!(calls.load(Ordering::SeqCst), 3, "two wipes and one lookup so far");
        approve().await;
        // Approved once, the run goes on to its end without another pause.
        let run = ended(&s.http, &s.base, &s.key, &id).await;
        assert_eq!(run["status"], "succeeded", "{backend:?}: {run}");
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        let guardrails: Vec<(&str, &str, &str)> = run["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["kind"] == "guardrail")
            .map(|s| (s["name"].as_str().unwrap(), s["output"]["rule"].as_str().unwrap(), s["output"]["decision"].as_str().unwrap()))
            .collect();
        assert_eq!(
            guardrails,
            [("kb__wipe", "destructive_cap", "approved"), ("kb__lookup", "spend_threshold", "approved")],
            "{run}"
        );
        s.stop().await;
    }
}
