//! The end-to-end fixture: the whole system started in-process (`worktruck::start_dev`) on a
//! fresh data folder, on SQLite + in-process bus or PostgreSQL + NATS, with a real HTTP client.

#![allow(dead_code)]

pub mod split;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use worktruck::Running;
use worktruck_kit::config::Config;
use worktruck_kit::testing::{Backend, TestData};

/// A running Worktruck and the client to talk to it.
pub struct Stack {
    pub data: TestData,
    pub cfg: Config,
    pub running: Option<Running>,
    pub base: String,
    /// The MCP gateway's base URL (`http://127.0.0.1:<port>`); the endpoint is `{mcp}/mcp/v1`.
    pub mcp: String,
    /// The admin port's base URL (`/health`, `/ready`, `/metrics`).
    pub admin: String,
    pub key: String,
    pub http: reqwest::Client,
}

/// Config for a fresh stack on `data`.
pub fn config(data: &TestData) -> Config {
    let mut cfg = Config {
        data_dir: data.path(),
        ..Config::default()
    };
    cfg.rest.addr = "127.0.0.1:0".parse().unwrap();
    cfg.mcp.addr = "127.0.0.1:0".parse().unwrap();
    cfg.admin.addr = "127.0.0.1:0".parse().unwrap();
    if data.backend == Backend::Postgres {
        cfg.database.url = data.database_url.clone().unwrap();
        if let Ok(n) = std::env::var("NATS_URL") {
            cfg.nats.url = n;
        }
    }
    cfg
}

impl Stack {
    /// Starts a fresh stack; the first start creates a tenant whose key is `key`.
    pub async fn start(backend: Backend) -> Stack {
        Stack::start_with(backend, |_| {}).await
    }

    /// Starts a fresh stack with `adjust` applied to its config first.
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Stack {
        let data = TestData::new(backend).await;
        let mut cfg = config(&data);
        adjust(&mut cfg);
        let running = worktruck::start_dev(cfg.clone()).await.expect("start");
        let base = format!("http://{}", running.rest_addr.unwrap());
        let mcp = format!("http://{}", running.mcp_addr.unwrap());
        let admin = format!("http://{}", running.admin_addr.unwrap());
        let key = running
            .first_key
            .clone()
            .expect("first start creates a key");
        Stack {
            data,
            cfg,
            running: Some(running),
            base,
            mcp,
            admin,
            key,
            http: worktruck_kit::http::client(),
        }
    }

    /// Stops and starts again on the same data.
    pub async fn restart(&mut self) {
        self.running.take().unwrap().stop().await;
        let running = worktruck::start_dev(self.cfg.clone())
            .await
            .expect("restart");
        assert!(
            running.first_key.is_none(),
            "a restart must not create another tenant"
        );
        self.base = format!("http://{}", running.rest_addr.unwrap());
        self.mcp = format!("http://{}", running.mcp_addr.unwrap());
        self.admin = format!("http://{}", running.admin_addr.unwrap());
        self.running = Some(running);
    }

    /// Creates another tenant the way an operator does; returns its key.
    pub async fn new_tenant(&self, name: &str) -> String {
        let out = worktruck::admin::create_tenant(&self.cfg, name, "free")
            .await
            .unwrap();
        out["api_key"].as_str().unwrap().to_owned()
    }

    /// Sends a request with `key` (none when empty) and returns (status, JSON body).
    pub async fn call_as(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if !key.is_empty() {
            req = req.bearer_auth(key);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// Sends a request with the stack's key.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_as(&self.key.clone(), method, path, body).await
    }

    /// Creates a person and returns it.
    pub async fn person(&self, name: &str) -> Value {
        let (s, v) = self
            .call(
                Method::POST,
                "/api/v1/contacts",
                Some(json!({"kind": "person", "display_name": name})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }

    /// Stops the stack.
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}

/// Asserts the error envelope and returns its code.
pub fn error_code(v: &Value) -> String {
    let e = v
        .get("error")
        .unwrap_or_else(|| panic!("no error envelope in {v}"));
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    e["code"].as_str().unwrap().to_owned()
}

/// RFC 3339 for a query string.
pub fn ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        .replace('+', "%2B")
}

/// A moment between two writes.
pub async fn moment() -> chrono::DateTime<chrono::Utc> {
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    let t = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    t
}

impl Stack {
    /// Every byte of the stack's storage: the SQLite files under its data folder, or a
    /// `pg_dump` of its PostgreSQL database (for tests that no secret is kept in plaintext).
    pub fn storage_bytes(&self) -> Vec<u8> {
        match &self.data.database_url {
            Some(url) if self.data.backend == Backend::Postgres => {
                let out = std::process::Command::new("pg_dump").args(["--data-only", url]).output().expect("pg_dump runs");
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                out.stdout
            }
            _ => {
                let mut all = Vec::new();
                let mut dirs = vec![self.data.path().to_owned()];
                while let Some(d) = dirs.pop() {
                    for e in std::fs::read_dir(d).unwrap().map(Result::unwrap) {
                        if e.file_type().unwrap().is_dir() {
                            dirs.push(e.path());
                        } else {
                            all.extend(std::fs::read(e.path()).unwrap());
                        }
                    }
                }
                all
            }
        }
    }
}

/// Whether `haystack` holds `needle`'s bytes.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}
