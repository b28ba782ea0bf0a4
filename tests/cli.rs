//! The real binary, driven as a user would: `worktruck dev` prints a key on first start and
//! serves; `worktruck admin create-tenant --json` makes a key that works at once.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn dev_prints_a_key_and_admin_keys_work_against_the_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let bin = env!("CARGO_BIN_EXE_worktruck");
    let mut child = Command::new(bin)
        .args(["dev", "--rest-addr", &format!("127.0.0.1:{port}"), "--mcp-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("WORKTRUCK_DATABASE__URL")
        .env_remove("WORKTRUCK_NATS__URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(k) = line.trim().strip_prefix("export WT_KEY=") {
                let _ = tx.send(k.to_owned());
            }
        }
    });
    let key = rx.recv_timeout(Duration::from_secs(60)).expect("first start prints a key");
    assert!(key.starts_with("bsk_live_"));

    let http = worktruck_kit::http::client();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(r) = http.get(format!("{base}/health")).send().await
            && r.status() == 200 {
                break;
            }
        assert!(Instant::now() < deadline, "/health answers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = http
        .post(format!("{base}/api/v1/contacts"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"kind": "person", "display_name": "Ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let out = Command::new(bin)
        .args(["admin", "create-tenant", "--name", "Second", "--plan", "pro", "--json", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.trim().lines().count(), 1, "exactly one JSON line: {stdout}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["tenant"]["plan"], "pro");
    let key2 = v["api_key"].as_str().unwrap();
    let t: serde_json::Value = http.get(format!("{base}/api/v1/tenant")).bearer_auth(key2).send().await.unwrap().json().await.unwrap();
    assert_eq!(t["name"], "Second", "{t}");
    assert_eq!(t["id"], v["tenant"]["id"]);
    drop(server);
}

#[tokio::test]
async fn dev_on_postgres_and_nats_keeps_serving() {
    use worktruck_kit::testing::{Backend, TestData, backends, nats_url};
    if !backends().contains(&Backend::Postgres) {
        return;
    }
    let Some(nats) = nats_url() else { return };
    let data = TestData::new(Backend::Postgres).await;
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_worktruck"))
        .args(["dev", "--rest-addr", &format!("127.0.0.1:{port}"), "--mcp-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--nats-url", &nats, "--database-url"])
        .arg(data.database_url.as_ref().unwrap())
        .arg("--data-dir")
        .arg(data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Server(child);
    let http = worktruck_kit::http::client();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(90);
    while !http.get(format!("{base}/health")).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(Instant::now() < deadline, "/health answers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Background work finishing (the JetStream stream declared) must not stop the server.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(server.0.try_wait().unwrap().is_none(), "the server is still running");
    let ready: serde_json::Value = http.get(format!("{base}/ready")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["checks"]["bus"], "ok", "{ready}");
}

#[test]
fn unknown_roles_and_services_are_refused_with_the_real_names() {
    let bin = env!("CARGO_BIN_EXE_worktruck");
    for args in [["serve", "nosuch"], ["migrate", "nosuch"]] {
        let out = Command::new(bin).args(args).env("RUST_BACKTRACE", "0").output().unwrap();
        assert!(!out.status.success(), "{args:?} fails");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for def in worktruck::services::TABLE {
            assert!(stderr.contains(def.name), "{args:?} lists {}: {stderr}", def.name);
        }
        if args[0] == "serve" {
            assert!(stderr.contains("gateway") && stderr.contains("mcp-gateway"), "{stderr}");
        }
    }
    // The library's parser says the same.
    let e = "nosuch".parse::<worktruck::Role>().unwrap_err().to_string();
    let roles = worktruck::role_names().join(", ");
    assert!(e.contains(&roles), "{e}");
    assert_eq!("contacts".parse::<worktruck::Role>().unwrap().name(), "contacts");
    // A service's worker is a role of its own, declared by the service.
    for def in worktruck::services::TABLE {
        for w in def.workers {
            assert!(matches!(w.role.parse::<worktruck::Role>().unwrap(), worktruck::Role::Worker(d, _) if d.name == def.name));
        }
    }
}

#[test]
fn serve_help_lists_every_role_of_the_table() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_worktruck")).args(["serve", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let listed = help.split("[possible values: ").nth(1).and_then(|s| s.split(']').next()).expect("a list of roles");
    let listed: Vec<&str> = listed.split(", ").collect();
    assert_eq!(listed, worktruck::role_names(), "{help}");
    assert!(listed.contains(&"mcp-gateway"), "{help}");
}

#[tokio::test]
async fn admin_rotate_master_key_rewraps_every_services_data_keys() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_worktruck");
    let run = |args: &[&str], envs: &[(&str, String)]| {
        let mut cmd = Command::new(bin);
        cmd.args(args).arg("--data-dir").arg(dir.path()).env_remove("WORKTRUCK_DATABASE__URL").env("RUST_BACKTRACE", "0");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    // A first start's data: the master key file and every service's database.
    let out = run(&["migrate"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A secret sealed in the contacts database under the default key (from the master secret).
    let mut cfg = worktruck_kit::config::Config { data_dir: dir.path().to_owned(), ..Default::default() };
    let secrets = cfg.master_secret().unwrap();
    let contacts = worktruck::services::find("contacts").unwrap();
    let tenant = uuid::Uuid::now_v7();
    let db = worktruck::app::open_service_db(&cfg, contacts).await.unwrap();
    let env = worktruck_kit::envelope::Envelope::new(&cfg, Some(&secrets)).unwrap();
    let mut tx = db.begin(worktruck_kit::db::Scope::Tenant(tenant), true).await.unwrap();
    let sealed = env.seal(&mut tx, tenant, "test.secret", b"the plaintext").await.unwrap();
    tx.commit().await.unwrap();
    db.close().await;

    // A new key, made active: the command re-wraps, naming each service.
    let k2 = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
    let envs = [("WORKTRUCK_ENCRYPTION__MASTER_KEYS__K2", k2.clone()), ("WORKTRUCK_ENCRYPTION__ACTIVE_KEY", "k2".to_owned())];
    let out = run(&["admin", "rotate-master-key"], &envs);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("contacts: 1 data keys re-wrapped under \"k2\", 0 already were"), "{stdout}");
    assert!(stdout.contains("notes: 0 data keys re-wrapped"), "{stdout}");

    // The secret opens under k2 alone, the default key no longer being needed.
    cfg.encryption.master_keys.insert("k2".into(), k2.into());
    cfg.encryption.active_key = "k2".into();
    let env = worktruck_kit::envelope::Envelope::new(&cfg, None).unwrap();
    let db = worktruck::app::open_service_db(&cfg, contacts).await.unwrap();
    let mut tx = db.begin(worktruck_kit::db::Scope::Tenant(tenant), false).await.unwrap();
    assert_eq!(&env.open(&mut tx, tenant, "test.secret", &sealed).await.unwrap()[..], b"the plaintext");
    drop(tx);
    db.close().await;

    // An active key that is not configured is refused before anything is touched.
    let out = run(&["admin", "rotate-master-key"], &[("WORKTRUCK_ENCRYPTION__ACTIVE_KEY", "k9".to_owned())]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not among encryption.master_keys"), "{}", String::from_utf8_lossy(&out.stderr));
}
