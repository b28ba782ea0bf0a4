//! The system as separate role processes of the real binary, wired by configuration alone (as
//! in Kubernetes): one process per service of the table (or a chosen subset), the REST gateway
//! and, when asked, the MCP gateway.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use worktruck_kit::testing::{Backend, TestData};

/// A role process, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `n` distinct free ports: all are held at once while chosen, so none comes back twice (a port
/// chosen and released one at a time can be handed out again before its role binds it).
fn ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// A started split deployment.
pub struct Split {
    /// The backend.
    pub backend: Backend,
    /// The REST gateway's base URL.
    pub base: String,
    /// The MCP gateway's base URL, when started.
    pub mcp: Option<String>,
    /// The roles started, in order.
    pub roles: Vec<String>,
    env: Vec<(String, String)>,
    procs: Vec<(String, Proc)>,
    logs: tempfile::TempDir,
    data: TestData,
}

const SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMyYnk="; // 32 bytes, base64

impl Split {
    /// Starts one process per service named in `services` (empty: every service of the
    /// table), the REST gateway and, with `mcp`, the MCP gateway; waits until every gateway is
    /// ready.
    pub async fn start(backend: Backend, services: &[&str], mcp: bool) -> Split {
        Split::start_with_nats(backend, services, mcp, None).await
    }

    /// [`Split::start`] with every role on the NATS server at `nats` (without it, each role
    /// has its own in-process bus, so no event crosses between them).
    pub async fn start_with_nats(
        backend: Backend,
        services: &[&str],
        mcp: bool,
        nats: Option<String>,
    ) -> Split {
        Split::start_with_env(backend, services, mcp, nats, Vec::new()).await
    }

    /// [`Split::start_with_nats`] with `extra` variables set for every role (settings).
    pub async fn start_with_env(
        backend: Backend,
        services: &[&str],
        mcp: bool,
        nats: Option<String>,
        extra: Vec<(String, String)>,
    ) -> Split {
        let data = TestData::new(backend).await;
        let defs: Vec<_> = worktruck::services::TABLE
            .iter()
            .copied()
            .filter(|d| services.is_empty() || services.contains(&d.name))
            .collect();
        // Per service: gRPC and admin; per gateway: its listener and admin.
        let ports = ports(defs.len() * 2 + 4);
        let mut env: Vec<(String, String)> = vec![
            ("WORKTRUCK_SECRET_KEY".into(), SECRET.into()),
            (
                "WORKTRUCK_DATA_DIR".into(),
                data.path().display().to_string(),
            ),
        ];
        if backend == Backend::Postgres {
            env.push((
                "WORKTRUCK_DATABASE__URL".into(),
                data.database_url.clone().unwrap(),
            ));
        }
        if let Some(url) = nats {
            env.push(("WORKTRUCK_NATS__URL".into(), url));
        }
        env.extend(extra);
        if !services.is_empty() {
            let names: Vec<&str> = defs.iter().map(|d| d.name).collect();
            env.push((
                "WORKTRUCK_ENABLED_SERVICES".into(),
                format!("[{}]", names.join(",")),
            ));
        }
        for (i, def) in defs.iter().enumerate() {
            env.push((
                def.address_variable(),
                format!("http://127.0.0.1:{}", ports[2 * i]),
            ));
        }
        let (rest, mcp_port, mcp_admin) = (
            ports[defs.len() * 2],
            ports[defs.len() * 2 + 1],
            ports[defs.len() * 2 + 2],
        );
        let logs = tempfile::tempdir().unwrap();
        let mut split = Split {
            backend,
            base: format!("http://127.0.0.1:{rest}"),
            mcp: mcp.then(|| format!("http://127.0.0.1:{mcp_port}")),
            roles: Vec::new(),
            env,
            procs: Vec::new(),
            logs,
            data,
        };
        for (i, def) in defs.iter().enumerate() {
            split.spawn(
                def.name,
                &[
                    (
                        "WORKTRUCK_GRPC__ADDR",
                        format!("127.0.0.1:{}", ports[2 * i]),
                    ),
                    (
                        "WORKTRUCK_ADMIN__ADDR",
                        format!("127.0.0.1:{}", ports[2 * i + 1]),
                    ),
                ],
            );
        }
        split.spawn(
            "gateway",
            &[
                ("WORKTRUCK_REST__ADDR", format!("127.0.0.1:{rest}")),
                (
                    "WORKTRUCK_ADMIN__ADDR",
                    format!("127.0.0.1:{}", ports[defs.len() * 2 + 3]),
                ),
            ],
        );
        let mut ready = vec![format!("{}/ready", split.base)];
        if mcp {
            split.spawn(
                "mcp-gateway",
                &[
                    ("WORKTRUCK_MCP__ADDR", format!("127.0.0.1:{mcp_port}")),
                    ("WORKTRUCK_ADMIN__ADDR", format!("127.0.0.1:{mcp_admin}")),
                ],
            );
            ready.push(format!("http://127.0.0.1:{mcp_admin}/ready"));
        }
        for url in ready {
            split.wait_ready(&url).await;
        }
        split
    }

    fn spawn(&mut self, role: &str, own: &[(&str, String)]) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_worktruck"));
        cmd.args(["serve", role])
            .env_remove("WORKTRUCK_NATS__URL")
            .stdout(Stdio::null());
        for (k, v) in self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .chain(own.iter().map(|(k, v)| (*k, v)))
        {
            cmd.env(k, v);
        }
        // Each role's log, shown if the test fails.
        let log = std::fs::File::create(self.logs.path().join(format!("{role}.log"))).unwrap();
        cmd.stderr(log);
        self.procs
            .push((role.to_owned(), Proc(cmd.spawn().unwrap())));
        self.roles.push(role.to_owned());
    }

    /// Starts one more process of `role` (a worker role, say) with `own` variables; waits until
    /// its `/ready` on `admin` (its `WORKTRUCK_ADMIN__ADDR`) answers 200.
    pub async fn spawn_role(&mut self, role: &str, admin: std::net::SocketAddr) {
        self.spawn(role, &[("WORKTRUCK_ADMIN__ADDR", admin.to_string())]);
        self.wait_ready(&format!("http://{admin}/ready")).await;
    }

    /// Kills the newest process of `role` with SIGKILL (no shutdown of any kind) and reaps it.
    pub fn kill(&mut self, role: &str) {
        let i = self
            .procs
            .iter()
            .rposition(|(r, _)| r == role)
            .expect("a process of the role");
        let (_, mut proc) = self.procs.remove(i);
        let _ = proc.0.kill();
        let _ = proc.0.wait();
    }

    async fn wait_ready(&mut self, url: &str) {
        let http = worktruck_kit::http::client();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last: String;
        loop {
            match http.get(url).send().await {
                Ok(r) if r.status() == 200 => return,
                Ok(r) => last = format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => last = e.to_string(),
            }
            let exited = self.procs.iter_mut().find_map(|(role, proc)| {
                proc.0
                    .try_wait()
                    .ok()
                    .flatten()
                    .map(|status| format!("the {role} role exited ({status})"))
            });
            if let Some(exited) = exited {
                panic!("{:?}: {exited}\n{}", self.backend, self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "{:?}: {url} becomes ready once its services serve; last answer: {last}\n{}",
                self.backend,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The last lines of every role's log.
    pub fn logs(&self) -> String {
        self.roles
            .iter()
            .map(|role| {
                let text = std::fs::read_to_string(self.logs.path().join(format!("{role}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- {role}:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Creates a tenant with `worktruck admin create-tenant --json` on the same data, as an
    /// operator does; returns its API key.
    pub fn create_tenant(&self, name: &str) -> String {
        self.create_tenant_on(name, "free")
    }

    /// [`Split::create_tenant`] on `plan` (`free` allows 30 requests a minute: a test that polls
    /// needs more).
    pub fn create_tenant_on(&self, name: &str, plan: &str) -> String {
        let mut admin = Command::new(env!("CARGO_BIN_EXE_worktruck"));
        admin
            .args(["admin", "create-tenant", "--name", name, "--plan", plan, "--json"])
            .env_remove("WORKTRUCK_NATS__URL");
        for (k, v) in &self.env {
            admin.env(k, v);
        }
        let out = admin
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["api_key"].as_str().unwrap().to_owned()
    }

    /// The data folder and database the roles share.
    pub fn data(&self) -> &TestData {
        &self.data
    }
}
