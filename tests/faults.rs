//! The fault suite: the real binary under write load is killed with SIGKILL and restarted,
//! NATS is stopped and restarted (with its storage and without it), and PostgreSQL is stopped
//! and restarted under it. No acknowledged write may be lost, and on NATS every event of an
//! acknowledged write is in the stream exactly once. NATS and PostgreSQL here are the test's
//! own (`kit::testing::{nats, postgres}`), so the shared servers are never touched.
//!
//! Run alone: `cargo test --test faults` (it is part of the default test run).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;
use worktruck_kit::testing::nats::{OwnNats, nats_server_binary};
use worktruck_kit::testing::postgres::OwnPostgres;
use worktruck_kit::testing::{Backend, TempDatabase, TestData, backends, nats_url};

/// `worktruck dev` as a child process.
struct Dev {
    child: Child,
    base: String,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    data_dir: std::path::PathBuf,
    port: u16,
    database_url: Option<String>,
    nats: Option<String>,
}

impl Setup {
    /// Starts the server; returns it and, on the first start, the key it printed.
    async fn start(&self) -> (Dev, Option<String>) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_worktruck"));
        cmd.args(["dev", "--rest-addr", &format!("127.0.0.1:{}", self.port), "--mcp-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--data-dir"])
            .arg(&self.data_dir)
            .env_remove("WORKTRUCK_DATABASE__URL")
            .env_remove("WORKTRUCK_NATS__URL")
            .env("WORKTRUCK_LOG__LEVEL", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(url) = &self.database_url {
            cmd.args(["--database-url", url]);
        }
        if let Some(url) = &self.nats {
            cmd.args(["--nats-url", url]);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(k) = line.trim().strip_prefix("export WT_KEY=") {
                    let _ = tx.send(k.to_owned());
                }
            }
        });
        let dev = Dev { child, base: format!("http://127.0.0.1:{}", self.port) };
        let http = worktruck_kit::http::client();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !http.get(format!("{}/health", dev.base)).send().await.is_ok_and(|r| r.status() == 200) {
            assert!(Instant::now() < deadline, "the server answers /health after a start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (dev, rx.recv_timeout(Duration::from_millis(500)).ok())
    }
}

/// Creates contacts with 8 workers for `for_how_long`; the ids of every acknowledged (201)
/// create go into `acked`. Failures (the server gone, 503 during an outage) are not counted.
async fn load(base: String, key: String, for_how_long: Duration, acked: Arc<Mutex<Vec<String>>>) {
    let mut workers = Vec::new();
    for w in 0..8 {
        let (base, key, acked) = (base.clone(), key.clone(), acked.clone());
        workers.push(tokio::spawn(async move {
            let http = worktruck_kit::http::client();
            let end = Instant::now() + for_how_long;
            let mut i = 0;
            while Instant::now() < end {
                i += 1;
                let r = http
                    .post(format!("{base}/api/v1/contacts"))
                    .bearer_auth(&key)
                    .json(&serde_json::json!({"kind": "person", "display_name": format!("w{w} #{i}")}))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                let Ok(r) = r else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                if r.status() == 201
                    && let Ok(v) = r.json::<serde_json::Value>().await
                    && let Some(id) = v["id"].as_str()
                {
                    acked.lock().unwrap().push(id.to_owned());
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
}

/// Every id in `acked` reads back.
async fn all_readable(base: &str, key: &str, acked: &[String]) {
    let http = worktruck_kit::http::client();
    for chunk in acked.chunks(64) {
        let reads = chunk.iter().map(|id| {
            let http = http.clone();
            async move {
                // A 503 is a database still coming back (slow on a loaded machine), not a lost
                // write: ask again for a while. Only a 404 (or a 503 that never ends) fails.
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                loop {
                    let status = http.get(format!("{base}/api/v1/contacts/{id}")).bearer_auth(key).send().await.map(|r| r.status().as_u16());
                    if status.as_ref().ok() != Some(&503) || std::time::Instant::now() > deadline {
                        return (id.clone(), status);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        });
        for (id, status) in futures::future::join_all(reads).await {
            assert_eq!(status.ok(), Some(200), "acknowledged contact {id} is still there");
        }
    }
}

/// Waits until the JetStream stream holds a `contact.created` event for every id of `ids`, and
/// checks none is there twice.
async fn events_exactly_once(nats: &str, ids: &BTreeSet<String>) {
    let js = async_nats::jetstream::new(async_nats::connect(nats).await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next_seq = 1;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        if let Ok(mut stream) = js.get_stream(worktruck_kit::bus::STREAM).await {
            let last = stream.info().await.map(|i| i.state.last_sequence).unwrap_or(0);
            while next_seq <= last {
                if let Ok(m) = stream.get_raw_message(next_seq).await
                    && m.subject.as_str() == "worktruck.contacts.contact.created.v1"
                {
                    let e = worktruck_proto::common::v1::Event::decode(m.payload).unwrap();
                    *seen.entry(e.entity_id).or_default() += 1;
                }
                next_seq += 1;
            }
        }
        if ids.iter().all(|id| seen.contains_key(id)) {
            break;
        }
        assert!(Instant::now() < deadline, "every acknowledged write's event reaches the stream ({} of {})", ids.iter().filter(|i| seen.contains_key(*i)).count(), ids.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "no event twice: {twice:?}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9_and_nats_outages() {
    let nats_wanted = nats_url().is_some() || nats_server_binary().is_some();
    for backend in backends() {
        let data = TestData::new(backend).await;
        let mut own_nats = match (backend, nats_wanted) {
            (Backend::Postgres, true) => Some(OwnNats::start(&data.path().join("nats")).await),
            _ => None,
        };
        let setup = Setup {
            data_dir: data.path(),
            port: free_port(),
            database_url: data.database_url.clone(),
            nats: own_nats.as_ref().map(OwnNats::url),
        };
        let (mut dev, key) = setup.start().await;
        let key = key.expect("the first start prints a key");
        let acked = Arc::new(Mutex::new(Vec::new()));
        for _ in 0..3 {
            let writer = tokio::spawn(load(dev.base.clone(), key.clone(), Duration::from_millis(1500), acked.clone()));
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let _ = dev.child.kill(); // SIGKILL
            let _ = dev.child.wait();
            writer.await.unwrap();
            dev = setup.start().await.0;
        }
        let ids = acked.lock().unwrap().clone();
        assert!(ids.len() > 30, "{backend:?}: the load ran ({} acknowledged)", ids.len());
        all_readable(&dev.base, &key, &ids).await;
        let Some(nats) = own_nats.as_mut() else { continue };
        events_exactly_once(&nats.url(), &ids.iter().cloned().collect()).await;

        // NATS down under load, back with its storage: writes go on, events follow.
        nats.stop();
        let during = Arc::new(Mutex::new(Vec::new()));
        load(dev.base.clone(), key.clone(), Duration::from_millis(800), during.clone()).await;
        nats.restart().await;
        let during = during.lock().unwrap().clone();
        assert!(!during.is_empty(), "writes are acknowledged while NATS is down");
        events_exactly_once(&nats.url(), &during.iter().cloned().collect()).await;

        // NATS back without its storage (the stream gone): the relay declares it again and
        // the backlog goes into the new stream.
        nats.stop();
        let lost = Arc::new(Mutex::new(Vec::new()));
        load(dev.base.clone(), key.clone(), Duration::from_millis(800), lost.clone()).await;
        nats.restart_with(&data.path().join("nats-fresh"), true).await;
        let lost = lost.lock().unwrap().clone();
        events_exactly_once(&nats.url(), &lost.iter().cloned().collect()).await;
        all_readable(&dev.base, &key, &[ids, during, lost].concat()).await;
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_a_postgres_crash_and_service_recovers_without_a_restart() {
    if !backends().contains(&Backend::Postgres) {
        return;
    }
    let Some(pg) = OwnPostgres::start() else {
        assert!(std::env::var("CI").is_err(), "CI=true: a PostgreSQL server is installed here");
        return;
    };
    let db = TempDatabase::create(&pg.url(), "wt_fault").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup { data_dir: dir.path().to_path_buf(), port: free_port(), database_url: Some(db.url().to_owned()), nats: None };
    let (dev, key) = setup.start().await;
    let key = key.unwrap();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = tokio::spawn(load(dev.base.clone(), key.clone(), Duration::from_millis(4000), acked.clone()));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(pg.stop(), "PostgreSQL stops (immediate: a crash)");
    let before = acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(pg.start_again(), "PostgreSQL starts again");
    writer.await.unwrap();
    // However long recovery took on a busy machine, writes are acknowledged again without a
    // restart of Worktruck.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() <= before {
        assert!(Instant::now() < deadline, "writes are acknowledged again after PostgreSQL returned, with no restart of Worktruck");
        load(dev.base.clone(), key.clone(), Duration::from_millis(500), acked.clone()).await;
    }
    let ids = acked.lock().unwrap().clone();
    all_readable(&dev.base, &key, &ids).await;
    drop(dev);
    drop(db);
}
