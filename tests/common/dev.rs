//! A `worktruck dev` child process on a data folder (SQLite, in-process bus, every service and
//! one agent worker in process), for tests that need the real binary: its own process, its own
//! global telemetry, a SIGKILL.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `worktruck dev` child process (SQLite, in-process bus, one worker in process).
pub struct Dev {
    child: Child,
    /// The REST base URL.
    pub base: String,
    /// The MCP endpoint's base URL (`{mcp}/mcp/v1`).
    pub mcp: String,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Dev {
    /// Starts `worktruck dev` on `data` with `env` (and none of the caller's database or NATS
    /// URLs); returns it and the first start's key, if printed.
    pub async fn start(data: &std::path::Path, env: Vec<(String, String)>) -> (Dev, Option<String>) {
        let (dev, key, _) = Dev::start_with(data, env, &[]).await;
        (dev, key)
    }

    /// [`Dev::start`] with more arguments; also returns the banner's lines.
    pub async fn start_with(data: &std::path::Path, env: Vec<(String, String)>, args: &[&str]) -> (Dev, Option<String>, Vec<String>) {
        let rest = free_port();
        let mcp = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_worktruck"));
        cmd.args(["dev", "--data-dir"])
            .arg(data)
            .args(["--rest-addr", &format!("127.0.0.1:{rest}")])
            .args(["--mcp-addr", &format!("127.0.0.1:{mcp}")])
            .args(["--admin-addr", &format!("127.0.0.1:{}", free_port())])
            .env_remove("WORKTRUCK_NATS__URL")
            .env_remove("WORKTRUCK_DATABASE__URL")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        // The first start prints the key; read the banner off a thread.
        let (tx, rx) = std::sync::mpsc::channel();
        let banner = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = banner.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                lines.lock().unwrap().push(line.clone());
                if let Some(key) = line.trim().strip_prefix("export WT_KEY=") {
                    let _ = tx.send(Some(key.to_owned()));
                }
                if line.starts_with("  metrics") {
                    let _ = tx.send(None);
                }
            }
        });
        let base = format!("http://127.0.0.1:{rest}");
        let http = worktruck_kit::http::client();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !http
            .get(format!("{base}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            assert!(
                Instant::now() < deadline,
                "worktruck dev never became ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let key = rx.recv_timeout(Duration::from_secs(5)).ok().flatten();
        let key = key.or_else(|| rx.recv_timeout(Duration::from_millis(500)).ok().flatten());
        let banner = banner.lock().unwrap().clone();
        (Dev { child, base, mcp: format!("http://127.0.0.1:{mcp}") }, key, banner)
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

