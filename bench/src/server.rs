//! A `worktruck dev` child process for one benchmark run: fresh temporary data directory,
//! free loopback ports, a tenant made with `worktruck admin create-tenant --json`, and a
//! process that is stopped on every exit path (SIGTERM when asked, SIGKILL on drop).

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use reqwest::Url;
use tokio::process::{Child, Command};

/// How to start the server.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// The `worktruck` executable.
    pub binary: PathBuf,
    /// A Postgres URL for the server's data; embedded SQLite when `None`.
    pub database_url: Option<String>,
    /// A NATS URL; the in-process bus when `None`.
    pub nats_url: Option<String>,
    /// Extra environment for the server (e.g. `WORKTRUCK_LOG__LEVEL=warn`).
    pub env: Vec<(String, String)>,
}

/// A running `worktruck dev`. Fields drop in order: the child is killed before its temporary
/// directory is removed.
pub struct DevServer {
    child: Child,
    base: Url,
    mcp: Url,
    data_dir: PathBuf,
    log_path: PathBuf,
    opts: DevOptions,
    _tmp: tempfile::TempDir,
}

impl DevServer {
    /// Spawns `worktruck dev` on free loopback ports with a fresh data directory. Its output
    /// goes to a log file in that directory (shown, redacted, if start-up fails).
    pub fn start(opts: &DevOptions) -> anyhow::Result<DevServer> {
        if !opts.binary.is_file() {
            bail!(
                "no worktruck binary at {} (build it with `cargo build --release`, or pass --worktruck PATH)",
                opts.binary.display()
            );
        }
        let tmp = tempfile::Builder::new()
            .prefix("worktruck-bench-")
            .tempdir()?;
        let data_dir = tmp.path().join("data");
        let log_path = tmp.path().join("worktruck.log");
        let log = std::fs::File::create(&log_path)?;
        let rest = free_loopback_port()?;
        let mcp = free_loopback_port()?;
        let mut cmd = Command::new(&opts.binary);
        cmd.arg("dev")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--rest-addr")
            .arg(rest.to_string())
            .arg("--mcp-addr")
            .arg(mcp.to_string())
            .arg("--admin-addr")
            .arg("127.0.0.1:0");
        if let Some(url) = &opts.database_url {
            cmd.arg("--database-url").arg(url);
        }
        if let Some(url) = &opts.nats_url {
            cmd.arg("--nats-url").arg(url);
        }
        scrub_env(&mut cmd, &opts.env);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", opts.binary.display()))?;
        let base = Url::parse(&format!("http://{rest}/"))?;
        let mcp = Url::parse(&format!("http://{mcp}/mcp/v1"))?;
        Ok(DevServer {
            child,
            base,
            mcp,
            data_dir,
            log_path,
            opts: opts.clone(),
            _tmp: tmp,
        })
    }

    /// The REST base URL (`http://127.0.0.1:PORT/`).
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The MCP endpoint (`http://127.0.0.1:PORT/mcp/v1`).
    pub fn mcp_url(&self) -> &Url {
        &self.mcp
    }

    /// Polls `GET /health` until it answers 200, the process exits, or `timeout` passes.
    pub async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let client = worktruck_kit::http::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let health = self.base.join("health")?;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "worktruck exited ({status}) before it was healthy; its log ends:\n{}",
                    self.log_tail(30)
                );
            }
            if let Ok(resp) = client.get(health.clone()).send().await
                && resp.status().is_success()
            {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                bail!(
                    "worktruck was not healthy after {timeout:?}; its log ends:\n{}",
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates a tenant on the plan `plan` with `worktruck admin create-tenant --json` on the
    /// server's data and returns its API key.
    pub async fn create_tenant(&self, plan: &str) -> anyhow::Result<String> {
        let mut cmd = Command::new(&self.opts.binary);
        cmd.args([
            "admin",
            "create-tenant",
            "--name",
            "loadgen",
            "--plan",
            plan,
            "--json",
            "--data-dir",
        ])
        .arg(&self.data_dir);
        if let Some(url) = &self.opts.database_url {
            cmd.arg("--database-url").arg(url);
        }
        scrub_env(&mut cmd, &self.opts.env);
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .context("worktruck admin create-tenant took over 60 s")??;
        if !out.status.success() {
            bail!(
                "worktruck admin create-tenant failed ({}): {}",
                out.status,
                redact(String::from_utf8_lossy(&out.stderr).trim())
            );
        }
        api_key_from_output(&String::from_utf8_lossy(&out.stdout))
    }

    /// Fails, with the end of the server's log, when the process has exited or no longer
    /// answers `/health`: the load numbers of a server that died mid-run mean nothing.
    pub async fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "worktruck exited ({status}) during the run; its log ends:\n{}",
                self.log_tail(30)
            );
        }
        let client = worktruck_kit::http::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        match client.get(self.base.join("health")?).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => bail!(
                "worktruck /health answered {} after the phase; its log ends:\n{}",
                r.status(),
                self.log_tail(30)
            ),
            Err(e) => bail!(
                "worktruck /health failed after the phase ({e}); its log ends:\n{}",
                self.log_tail(30)
            ),
        }
    }

    /// Asks the server to stop (SIGTERM) and waits up to 10 s, then kills it.
    pub async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            // No signal API without `unsafe` or a new dependency; `kill(1)` is everywhere.
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
            if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        let _ = self.child.kill().await;
    }

    /// Writes the server's whole output, with API keys masked, to `path`.
    pub fn save_log(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, redact(&std::fs::read_to_string(&self.log_path)?))
    }

    /// The last `lines` lines of the server's output, with API keys masked.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = &all[all.len().saturating_sub(lines)..];
        redact(&tail.join("\n"))
    }

    /// Where the server keeps its data (inside the temporary directory).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// Reads `api_key` from the one JSON line `create-tenant --json` prints.
fn api_key_from_output(stdout: &str) -> anyhow::Result<String> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("worktruck admin create-tenant --json printed no JSON line")?;
    let v: serde_json::Value =
        serde_json::from_str(line).context("create-tenant output is not JSON")?;
    match v.get("api_key").and_then(|k| k.as_str()) {
        Some(k) if !k.is_empty() => Ok(k.to_owned()),
        _ => bail!("create-tenant output has no api_key"),
    }
}

/// Drops inherited `WORKTRUCK_…` variables (a developer's config must not leak into a
/// benchmark) and sets `extra`.
fn scrub_env(cmd: &mut Command, extra: &[(String, String)]) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("WORKTRUCK_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
}

/// A loopback port that was free a moment ago (the OS picks; there is a small race).
pub fn free_loopback_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()
}

/// Masks API keys (`bsk_live_…`, `bsk_test_…`) in `text`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("bsk_") {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(tail.len());
        out.push_str("bsk_[redacted]");
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_is_read_from_the_json_line() {
        let out = "{\"tenant\":{\"id\":\"t1\",\"plan\":\"free\"},\"api_key\":\"bsk_live_abc\"}\n";
        assert_eq!(api_key_from_output(out).unwrap(), "bsk_live_abc");
        assert!(api_key_from_output("created tenant\n").is_err());
        assert!(api_key_from_output("{\"api_key\":\"\"}").is_err());
    }

    #[test]
    fn redact_masks_every_key() {
        assert_eq!(
            redact("export WT_KEY=bsk_live_Ab12-x9 and bsk_test_q\nok"),
            "export WT_KEY=bsk_[redacted] and bsk_[redacted]\nok"
        );
        assert_eq!(redact("nothing here"), "nothing here");
    }

    #[test]
    fn free_port_is_loopback() {
        assert!(free_loopback_port().unwrap().ip().is_loopback());
    }
}
