//! The master key trap: on PostgreSQL, where several processes share one database, a process
//! run without the server's key (another folder, so another `master.key`) must refuse to start
//! or to mint an API key, and say how to pass the right one.

mod common;

use worktruck_kit::testing::{Backend, TestData, backends};

#[tokio::test]
async fn a_process_with_another_master_key_refuses_to_start_or_mint_keys() {
    if !backends().contains(&Backend::Postgres) {
        return;
    }
    let data = TestData::new(Backend::Postgres).await;
    let cfg = common::config(&data);
    let running = worktruck::start_dev(cfg.clone()).await.expect("first start records the key");
    let server_key = std::fs::read_to_string(data.path().join("master.key")).unwrap();

    // The operator runs the admin command from another folder.
    let elsewhere = tempfile::tempdir().unwrap();
    let mut other = cfg.clone();
    other.data_dir = elsewhere.path().to_path_buf();
    let e = worktruck::admin::create_tenant(&other, "lost", "free").await.unwrap_err().to_string();
    assert!(e.contains("WORKTRUCK_SECRET_KEY") && e.contains("--data-dir"), "{e}");
    assert!(e.contains("master.key"), "the message says where this process's key came from: {e}");
    assert!(!elsewhere.path().join("master.key").exists(), "the key file it just made is removed again");

    // So does a whole second server.
    let mut second = other.clone();
    second.rest.addr = "127.0.0.1:0".parse().unwrap();
    second.mcp.addr = "127.0.0.1:0".parse().unwrap();
    let e = worktruck::start_dev(second).await.err().expect("a second server with another key does not start").to_string();
    assert!(e.contains("fingerprint"), "{e}");

    // With the server's key passed explicitly, the same command works, and its key is accepted.
    other.secret_key = Some(server_key.trim().to_owned().into());
    let out = worktruck::admin::create_tenant(&other, "found", "free").await.expect("the right key works from anywhere");
    let key = out["api_key"].as_str().unwrap();
    let base = format!("http://{}", running.rest_addr.unwrap());
    let r = worktruck_kit::http::client().get(format!("{base}/api/v1/tenant")).bearer_auth(key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    running.stop().await;
}
