//! Gateways keep verified API keys (issue: no authentication round trip per request), and a
//! revoked or rotated key still stops working on every replica: within a second through the
//! tenants service's events on NATS, and within `auth.principal_cache_seconds` while NATS is
//! down. Services and two gateway replicas run as separate roles (`start_role`) on a NATS of
//! the test's own, so it can be stopped.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use worktruck::{Role, Running};
use worktruck_kit::config::Config;
use worktruck_kit::testing::nats::{OwnNats, nats_server_binary};
use worktruck_kit::testing::{Backend, TestData, nats_url};

const SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMyYnk=";
const BOUND: u64 = 3;

fn base_config(data: &TestData, nats: &str) -> Config {
    let mut cfg = Config { data_dir: data.path(), ..Config::default() };
    cfg.secret_key = Some(SECRET.to_owned().into());
    cfg.nats.url = nats.to_owned();
    cfg.grpc.addr = "127.0.0.1:0".parse().unwrap();
    cfg.admin.addr = "127.0.0.1:0".parse().unwrap();
    cfg.rest.addr = "127.0.0.1:0".parse().unwrap();
    cfg.auth.principal_cache_seconds = BOUND;
    cfg
}

struct Gateway {
    base: String,
    http: reqwest::Client,
}

impl Gateway {
    async fn call(&self, key: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Makes a key through this gateway: (id, secret).
    async fn new_key(&self, admin_key: &str, name: &str) -> (String, String) {
        let (st, k) = self.call(admin_key, reqwest::Method::POST, "/api/v1/api-keys", Some(json!({"name": name}))).await;
        assert_eq!(st, StatusCode::CREATED, "{k}");
        (k["id"].as_str().unwrap().to_owned(), k["key"].as_str().unwrap().to_owned())
    }

    async fn status(&self, key: &str) -> StatusCode {
        self.call(key, reqwest::Method::GET, "/api/v1/tenant", None).await.0
    }

    /// How long until `key` is refused here, polling every 20 ms for at most `within`.
    async fn refused_within(&self, key: &str, within: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.status(key).await == StatusCode::UNAUTHORIZED {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

#[tokio::test]
async fn revoked_and_rotated_keys_are_refused_on_every_gateway_replica() {
    if nats_url().is_none() && nats_server_binary().is_none() {
        return;
    }
    let data = TestData::new(Backend::Sqlite).await;
    let mut nats = OwnNats::start(&data.path().join("nats")).await;
    let cfg = base_config(&data, &nats.url());
    let mut roles: Vec<Running> = Vec::new();
    let mut with_services = cfg.clone();
    for def in worktruck::services::TABLE {
        // Each service is given the addresses of those started before it (the CRM calls contacts).
        let running = worktruck::start_role(with_services.clone(), Role::Service(def)).await.unwrap();
        with_services.services.insert(def.name.to_owned(), format!("http://{}", running.grpc_addr.unwrap()));
        roles.push(running);
    }
    let out = worktruck::admin::create_tenant(&with_services, "replicas", "enterprise").await.unwrap();
    let admin_key = out["api_key"].as_str().unwrap().to_owned();
    let mut gateways = Vec::new();
    for _ in 0..2 {
        let running = worktruck::start_role(with_services.clone(), Role::Gateway).await.unwrap();
        gateways.push(Gateway { base: format!("http://{}", running.rest_addr.unwrap()), http: worktruck_kit::http::client() });
        roles.push(running);
    }
    let (a, b) = (&gateways[0], &gateways[1]);

    // Revoked through A: refused on A at once and on B within a second.
    let (id, key) = a.new_key(&admin_key, "revoked").await;
    assert_eq!(a.status(&key).await, StatusCode::OK);
    assert_eq!(b.status(&key).await, StatusCode::OK, "B now keeps the key");
    let (st, _) = a.call(&admin_key, reqwest::Method::DELETE, &format!("/api/v1/api-keys/{id}"), None).await;
    assert!(st.is_success(), "{st}");
    assert_eq!(a.status(&key).await, StatusCode::UNAUTHORIZED, "the revoking gateway refuses it at once");
    let took = b.refused_within(&key, Duration::from_secs(1)).await;
    assert!(took.is_some(), "the other replica refuses a revoked key within a second");

    // Rotated through A: the old secret is refused on B within a second, the new one works.
    let (id, old) = a.new_key(&admin_key, "rotated").await;
    assert_eq!(b.status(&old).await, StatusCode::OK);
    let (st, rotated) = a.call(&admin_key, reqwest::Method::POST, &format!("/api/v1/api-keys/{id}/rotate"), None).await;
    assert_eq!(st, StatusCode::OK, "{rotated}");
    assert!(b.refused_within(&old, Duration::from_secs(1)).await.is_some(), "the old secret is refused within a second");
    assert_eq!(b.status(rotated["key"].as_str().unwrap()).await, StatusCode::OK);

    // With the bus down, B cannot hear of a revocation: its cache bound still holds.
    let (id, key) = a.new_key(&admin_key, "revoked-offline").await;
    assert_eq!(b.status(&key).await, StatusCode::OK);
    let cached_at = Instant::now();
    nats.stop();
    let (st, _) = a.call(&admin_key, reqwest::Method::DELETE, &format!("/api/v1/api-keys/{id}"), None).await;
    assert!(st.is_success(), "revoking needs no bus: {st}");
    let refused = b.refused_within(&key, Duration::from_secs(BOUND + 2)).await;
    assert!(refused.is_some(), "refused within the cache bound while the bus is down");
    assert!(cached_at.elapsed() <= Duration::from_secs(BOUND + 1), "within {BOUND} s of being cached (+1 s to poll)");

    for r in roles {
        r.stop().await;
    }
}
