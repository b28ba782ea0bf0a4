//! `worktruck serve <role>`: tenants, contacts and the gateway as three processes of the real
//! binary, wired by configuration alone (as in Kubernetes), on SQLite and on PostgreSQL.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use worktruck_kit::testing::{Backend, TestData, backends};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `N` distinct free ports: all are held at once while chosen, so none comes back twice (a port
/// chosen and released one at a time can be handed out again before its role binds it).
fn ports<const N: usize>() -> [u16; N] {
    let held: Vec<std::net::TcpListener> =
        (0..N).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

#[tokio::test]
async fn three_roles_in_three_processes_serve_the_api() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let bin = env!("CARGO_BIN_EXE_worktruck");
        let secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMyYnk="; // 32 bytes, base64
        let [tenants_grpc, contacts_grpc, rest, tenants_admin, contacts_admin, gateway_admin] = ports();
        let logs = tempfile::tempdir().unwrap();
        let common = |cmd: &mut Command| {
            cmd.env("WORKTRUCK_SECRET_KEY", secret)
                .env("WORKTRUCK_DATA_DIR", data.path())
                .env_remove("WORKTRUCK_NATS__URL")
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if backend == Backend::Postgres {
                cmd.env("WORKTRUCK_DATABASE__URL", data.database_url.as_ref().unwrap());
            }
        };
        let spawn = |role: &str, grpc: u16, admin: u16| {
            let mut cmd = Command::new(bin);
            cmd.args(["serve", role])
                .env("WORKTRUCK_GRPC__ADDR", format!("127.0.0.1:{grpc}"))
                .env("WORKTRUCK_ADMIN__ADDR", format!("127.0.0.1:{admin}"))
                .env("WORKTRUCK_REST__ADDR", format!("127.0.0.1:{rest}"))
                .env("WORKTRUCK_SERVICES__TENANTS", format!("http://127.0.0.1:{tenants_grpc}"))
                .env("WORKTRUCK_SERVICES__CONTACTS", format!("http://127.0.0.1:{contacts_grpc}"));
            common(&mut cmd);
            // Each role's log, shown if the test fails.
            let log = std::fs::File::create(logs.path().join(format!("{role}.log"))).unwrap();
            cmd.stderr(log);
            Proc(cmd.spawn().unwrap())
        };
        let show_logs = || {
            ["tenants", "contacts", "gateway"]
                .iter()
                .map(|role| {
                    let text = std::fs::read_to_string(logs.path().join(format!("{role}.log"))).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(15).collect();
                    format!("--- {role}:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let mut roles = [
            ("tenants", spawn("tenants", tenants_grpc, tenants_admin)),
            ("contacts", spawn("contacts", contacts_grpc, contacts_admin)),
            ("gateway", spawn("gateway", 0, gateway_admin)),
        ];

        let http = worktruck_kit::http::client();
        let base = format!("http://127.0.0.1:{rest}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last: String;
        loop {
            match http.get(format!("{base}/ready")).send().await {
                Ok(r) if r.status() == 200 => break,
                Ok(r) => last = format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => last = e.to_string(),
            }
            for (role, proc) in &mut roles {
                if let Ok(Some(status)) = proc.0.try_wait() {
                    panic!("{backend:?}: the {role} role exited ({status})\n{}", show_logs());
                }
            }
            assert!(
                Instant::now() < deadline,
                "{backend:?}: the gateway becomes ready once both services serve; last /ready: {last}\n{}",
                show_logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        let mut admin = Command::new(bin);
        admin.args(["admin", "create-tenant", "--name", "split", "--json"]);
        common(&mut admin);
        let out = admin.stdout(Stdio::piped()).output().unwrap();
        assert!(out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let key = v["api_key"].as_str().unwrap();

        let r = http
            .post(format!("{base}/api/v1/contacts"))
            .bearer_auth(key)
            .json(&serde_json::json!({"kind": "group", "display_name": "Split crew"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{backend:?}");
        let c: serde_json::Value = r.json().await.unwrap();
        let r = http.get(format!("{base}/api/v1/contacts/{}", c["id"].as_str().unwrap())).bearer_auth(key).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
}
