//! The agents phases: a fake Anthropic Messages endpoint the harness starts on loopback (each
//! request answered with one final text turn and its usage, after `--fake-llm-ms`), runs of
//! `site_health` enqueued against it over REST (`agent_enqueue`), and, once every run has
//! ended, what they took (`agent_start`: per run, `started_at` − `created_at`; its
//! throughput column is runs per second from the first enqueue to the last run's end).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{Value, json};

use crate::load::{self, Plan, Target};
use crate::stats::{Failure, Samples, Summary};

/// The key the fake accepts (the server's operator key for the runs).
const FAKE_KEY: &str = "sk-ant-bench-fake-key";
/// The model the fake answers as (priced in the server's default settings).
const MODEL: &str = "claude-sonnet-4-5";

/// A running fake Messages endpoint.
pub struct FakeAnthropic {
    url: String,
    answered: Arc<AtomicU64>,
}

impl FakeAnthropic {
    /// Starts it on a free loopback port; each answer waits `delay` first (a model's think time).
    pub async fn start(delay: Duration) -> anyhow::Result<FakeAnthropic> {
        let answered = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&answered);
        let app = axum::Router::new().route(
            "/v1/messages",
            axum::routing::post(move |headers: axum::http::HeaderMap| {
                let count = Arc::clone(&count);
                async move {
                    if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(FAKE_KEY) {
                        let e = json!({"type": "error", "error": {"type": "authentication_error", "message": "bad key"}});
                        return (axum::http::StatusCode::UNAUTHORIZED, axum::Json(e));
                    }
                    tokio::time::sleep(delay).await;
                    let n = count.fetch_add(1, Ordering::Relaxed);
                    (
                        axum::http::StatusCode::OK,
                        axum::Json(json!({
                            "id": format!("msg_bench_{n}"), "type": "message", "role": "assistant", "model": MODEL,
                            "content": [{"type": "text", "text": "The site answered 200."}],
                            "stop_reason": "end_turn",
                            "usage": {"input_tokens": 1200, "output_tokens": 40, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
                        })),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("loadgen: the fake Anthropic endpoint stopped: {e}");
            }
        });
        Ok(FakeAnthropic { url, answered })
    }

    /// The server's environment that points its agents at the fake, with `workers` runs at
    /// once per worker.
    pub fn server_env(&self, workers: u16) -> Vec<(String, String)> {
        vec![
            ("WORKTRUCK_SETTINGS__AGENTS__ANTHROPIC_BASE_URL".into(), self.url.clone()),
            ("WORKTRUCK_SETTINGS__AGENTS__ANTHROPIC_API_KEY".into(), FAKE_KEY.into()),
            ("WORKTRUCK_SETTINGS__AGENTS__CONCURRENCY".into(), workers.to_string()),
        ]
    }

    /// Messages answered so far.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }
}

/// Enqueues up to `plan.requests` `site_health` runs; the summary and their ids.
pub async fn enqueue_phase(target: &Target, plan: Plan) -> (Summary, Vec<String>) {
    let t = target.clone();
    let (samples, ids, elapsed) = load::run(plan, move |n| {
        let t = t.clone();
        async move {
            let body = json!({"input": {"prompt": format!("Check site {n}.")}});
            let v = t.post_json("api/v1/agents/site_health/runs", &body).await?;
            v.get("id").and_then(Value::as_str).map(|id| Some(id.to_owned())).ok_or(Failure::BadBody)
        }
    })
    .await;
    (samples.summarize("agent_enqueue", elapsed), ids)
}

fn at(v: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(v.as_str()?).ok().map(|t| t.with_timezone(&chrono::Utc))
}

/// Waits (at most `timeout`) until none of the tenant's `site_health` runs is queued or running,
/// then reads them all: the queue-to-start latency of each run in `ids` that ran, failures by
/// category, and runs per second over the span from the first enqueue to the last end.
pub async fn settle_phase(target: &Target, ids: &[String], timeout: Duration) -> anyhow::Result<Summary> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut open = 0;
        for status in ["queued", "running"] {
            let v = target.get_json(&format!("api/v1/agents/site_health/runs?status={status}&limit=1")).await?;
            open += v["data"].as_array().map_or(0, Vec::len);
        }
        if open == 0 {
            break;
        }
        if Instant::now() >= deadline {
            bail!("agent runs still queued or running after {} s", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut samples = Samples::default();
    let (mut first, mut last): (Option<chrono::DateTime<chrono::Utc>>, Option<chrono::DateTime<chrono::Utc>>) = (None, None);
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "api/v1/agents/site_health/runs?limit=200".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = target.get_json(&path).await?;
        for run in page["data"].as_array().into_iter().flatten() {
            if !wanted.contains(run["id"].as_str().unwrap_or_default()) {
                continue;
            }
            let (created, started, finished) = (at(&run["created_at"]), at(&run["started_at"]), at(&run["finished_at"]));
            first = match (first, created) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            last = last.max(finished);
            match (run["status"].as_str(), created, started) {
                (Some("succeeded"), Some(c), Some(s)) => samples.record_ok((s - c).to_std().unwrap_or_default()),
                _ => samples.record_failure(&Failure::Run(run["failure_category"].as_str().unwrap_or("unknown").to_owned())),
            }
        }
        cursor = page["next_cursor"].as_str().filter(|c| !c.is_empty()).map(str::to_owned);
        if cursor.is_none() || page["has_more"] != true {
            break;
        }
    }
    let span = match (first, last) {
        (Some(f), Some(l)) => (l - f).to_std().unwrap_or_default(),
        _ => Duration::ZERO,
    };
    Ok(samples.summarize("agent_start", span))
}
