//! Integration keys end to end, on SQLite and on PostgreSQL + NATS, against a local fake of the
//! five providers' APIs (an axum server standing for Cloudflare, GitHub, Postmark and a tenant's
//! Netdata, and for Anthropic's `/v1/models` so a BYOK key can be stored; Outstand's base URL is
//! a port nobody listens on): store, replace (the prior key revoked in the same transaction),
//! masked everywhere (no answer and no byte of the storage holds a key), the 400s of bad input
//! (an unknown provider, a short key, cloudflare without `account_id`, netdata with a base URL
//! the SSRF guard refuses), verify (valid, refused, provider unavailable, each provider's own
//! header), revoke, another tenant's view, and `/me/integrations` with a BYOK row.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::StatusCode as AxumStatus;
use axum::response::IntoResponse;
use common::{Stack, error_code};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use worktruck_kit::testing::{Backend, backends, nats_url};

const GITHUB_BAD: &str = "ghp-refused-token-0000wxyz";
const GITHUB_GOOD: &str = "ghp-good-token-7f3a9c2e41b8";
const CLOUDFLARE_GOOD: &str = "cf-good-token-5d1e8b7a90c4";
const CLOUDFLARE_DISABLED: &str = "cf-disabled-token-3b6c0e1f";
const POSTMARK_GOOD: &str = "pm-good-server-token-a41c97e2";
const NETDATA_GOOD: &str = "nd-good-bearer-token-58e0b3d1";
const OUTSTAND_KEY: &str = "os-unverifiable-key-c0ffee12";
/// The tenant's own Anthropic key (BYOK), which the fake's `/v1/models` accepts.
const ANTHROPIC_KEY: &str = "sk-ant-tenant-own-key-2b7d4e9f";

const ALL_KEYS: [&str; 8] = [
    GITHUB_BAD,
    GITHUB_GOOD,
    CLOUDFLARE_GOOD,
    CLOUDFLARE_DISABLED,
    POSTMARK_GOOD,
    NETDATA_GOOD,
    OUTSTAND_KEY,
    ANTHROPIC_KEY,
];

/// The fake providers.
#[derive(Default)]
struct Fake {
    /// Answer 503 to everything.
    down: AtomicBool,
    /// `(path, the credential sent, user agent, accept)` of every request.
    seen: Mutex<Vec<(String, String, String, String)>>,
}

async fn answer(State(fake): State<Arc<Fake>>, req: Request) -> impl IntoResponse {
    let h = req.headers();
    let get = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let path = req.uri().path().to_owned();
    let bearer = get("authorization")
        .strip_prefix("Bearer ")
        .unwrap_or_default()
        .to_owned();
    let credential = match path.as_str() {
        "/server" => get("x-postmark-server-token"),
        "/v1/models" => get("x-api-key"),
        _ => bearer,
    };
    fake.seen.lock().unwrap().push((
        path.clone(),
        credential.clone(),
        get("user-agent"),
        get("accept"),
    ));
    if fake.down.load(Ordering::SeqCst) {
        return (
            AxumStatus::SERVICE_UNAVAILABLE,
            axum::Json(json!({"message": "down"})),
        );
    }
    let ok = |v: Value| (AxumStatus::OK, axum::Json(v));
    let refused = || {
        (
            AxumStatus::UNAUTHORIZED,
            axum::Json(json!({"success": false, "message": "bad credentials"})),
        )
    };
    match (path.as_str(), credential.as_str()) {
        ("/client/v4/user/tokens/verify", CLOUDFLARE_GOOD) => {
            ok(json!({"success": true, "result": {"id": "t1", "status": "active"}}))
        }
        ("/client/v4/user/tokens/verify", CLOUDFLARE_DISABLED) => {
            ok(json!({"success": true, "result": {"id": "t2", "status": "disabled"}}))
        }
        ("/user", GITHUB_GOOD) => ok(json!({"login": "octo"})),
        ("/server", POSTMARK_GOOD) => ok(json!({"ID": 1, "Name": "srv"})),
        ("/api/v1/info", NETDATA_GOOD) => ok(json!({"version": "v2"})),
        ("/v1/models", ANTHROPIC_KEY) => ok(json!({"data": [], "has_more": false})),
        _ => refused(),
    }
}

impl Fake {
    async fn start() -> (Arc<Fake>, String) {
        let fake = Arc::new(Fake::default());
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (fake, url)
    }

    fn seen(&self, path: &str) -> Vec<(String, String, String)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.0 == path)
            .map(|s| (s.1.clone(), s.2.clone(), s.3.clone()))
            .collect()
    }
}

/// A loopback port nobody listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn stack(backend: Backend, url: &str) -> Stack {
    if backend == Backend::Postgres {
        // Under CI=true a missing NATS fails the test rather than running on the in-process bus.
        nats_url();
    }
    let settings = json!({
        "anthropic_base_url": url,
        "cloudflare_base_url": url,
        "github_base_url": format!("{url}/"),
        "postmark_base_url": url,
        "outstand_base_url": format!("http://127.0.0.1:{}", closed_port()),
        "verify_timeout_seconds": 5,
    });
    Stack::start_with(backend, move |cfg| {
        cfg.settings.insert("agents".into(), settings);
        cfg.outbound.allow_http = true;
        cfg.outbound.allow_ranges = vec!["127.0.0.0/8".into()];
    })
    .await
}

/// The stack's calls, every answer kept to check that none shows a key.
struct Client<'a> {
    s: &'a Stack,
    answers: Mutex<Vec<String>>,
}

impl Client<'_> {
    async fn call_as(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (st, v) = self.s.call_as(key, method, path, body).await;
        self.answers.lock().unwrap().push(v.to_string());
        (st, v)
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_as(&self.s.key.clone(), method, path, body).await
    }

    async fn store(&self, body: Value) -> Value {
        let (st, v) = self
            .call(Method::POST, "/api/v1/integration-keys", Some(body))
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        v
    }

    async fn verify(&self, provider: &str) -> Value {
        let (st, v) = self
            .call(
                Method::POST,
                &format!("/api/v1/integration-keys/{provider}/verify"),
                Some(json!({})),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{provider}: {v}");
        v
    }

    async fn get(&self, provider: &str) -> (StatusCode, Value) {
        self.call(
            Method::GET,
            &format!("/api/v1/integration-keys/{provider}"),
            None,
        )
        .await
    }
}

#[tokio::test]
async fn integration_keys_are_stored_sealed_verified_revoked_and_shown_masked() {
    for backend in backends() {
        let (fake, url) = Fake::start().await;
        let s = stack(backend, &url).await;
        let c = Client {
            s: &s,
            answers: Mutex::default(),
        };

        // Bad input is a 400 and stores nothing.
        let guard_refused = json!({"provider": "netdata", "key": NETDATA_GOOD,
            "metadata": {"base_url": "https://169.254.169.254"}});
        for (body, why) in [
            (json!({"provider": "gitlab", "key": GITHUB_GOOD}), "gitlab"),
            (json!({"provider": "github", "key": "short"}), "8 to 512"),
            (
                json!({"provider": "cloudflare", "key": CLOUDFLARE_GOOD}),
                "metadata.account_id",
            ),
            (
                json!({"provider": "cloudflare", "key": CLOUDFLARE_GOOD, "metadata": {"account_id": ""}}),
                "metadata.account_id",
            ),
            (
                json!({"provider": "netdata", "key": NETDATA_GOOD}),
                "metadata.base_url",
            ),
            (guard_refused, "cloud metadata address"),
            (
                json!({"provider": "netdata", "key": NETDATA_GOOD, "metadata": {"base_url": "ftp://127.0.0.1/"}}),
                "metadata.base_url",
            ),
        ] {
            let (st, e) = c
                .call(Method::POST, "/api/v1/integration-keys", Some(body.clone()))
                .await;
            assert_eq!(
                (st, error_code(&e).as_str()),
                (StatusCode::BAD_REQUEST, "validation_failed"),
                "{body}: {e}"
            );
            assert!(
                e["error"]["message"].as_str().unwrap().contains(why),
                "{body}: {e}"
            );
        }
        let (st, list) = c.call(Method::GET, "/api/v1/integration-keys", None).await;
        assert_eq!(st, StatusCode::OK, "{list}");
        assert_eq!(list["data"], json!([]), "{list}");

        // A first key: stored, masked.
        let first = c
            .store(json!({"provider": "github", "key": GITHUB_BAD}))
            .await;
        assert_eq!(
            (
                first["provider"].as_str(),
                first["status"].as_str(),
                first["key_hint"].as_str()
            ),
            (Some("github"), Some("active"), Some("…wxyz")),
            "{first}"
        );
        assert!(first["last_verified_at"].is_null(), "{first}");
        assert!(first.get("key").is_none(), "{first}");

        // Refused by GitHub: auth_failed, the key invalid (still the live one).
        let v = c.verify("github").await;
        assert_eq!(
            (v["valid"].as_bool(), v["reason"].as_str()),
            (Some(false), Some("auth_failed")),
            "{v}"
        );
        assert!(v["last_verified_at"].is_string(), "{v}");
        let (st, got) = c.get("github").await;
        assert_eq!(st, StatusCode::OK, "{got}");
        assert_eq!(
            (got["id"].as_str(), got["status"].as_str()),
            (first["id"].as_str(), Some("invalid")),
            "{got}"
        );
        assert_eq!(got["last_verified_at"], v["last_verified_at"], "{got}");

        // Replaced: the prior key is revoked in the same write; the list shows both.
        let second = c
            .store(json!({"provider": "github", "key": GITHUB_GOOD, "label": "ci bot"}))
            .await;
        assert_ne!(second["id"], first["id"]);
        assert_eq!(
            (
                second["status"].as_str(),
                second["label"].as_str(),
                second["key_hint"].as_str()
            ),
            (Some("active"), Some("ci bot"), Some("…41b8")),
            "{second}"
        );
        let (_, list) = c.call(Method::GET, "/api/v1/integration-keys", None).await;
        let rows = list["data"].as_array().unwrap();
        assert_eq!(rows.len(), 2, "{list}");
        assert_eq!(rows[0]["id"], second["id"], "newest first: {list}");
        assert_eq!(
            (rows[1]["id"].as_str(), rows[1]["status"].as_str()),
            (first["id"].as_str(), Some("revoked")),
            "{list}"
        );
        assert!(rows[1]["revoked_at"].is_string(), "{list}");
        let (_, got) = c.get("github").await;
        assert_eq!(got["id"], second["id"], "{got}");

        // Accepted: active, verified now; GitHub was asked with its headers.
        let v = c.verify("github").await;
        assert_eq!(v["valid"], true, "{v}");
        assert!(v.get("reason").is_none(), "{v}");
        let verified_at = v["last_verified_at"].clone();
        assert!(verified_at.is_string(), "{v}");
        let (_, got) = c.get("github").await;
        assert_eq!(
            (got["status"].as_str(), &got["last_verified_at"]),
            (Some("active"), &verified_at),
            "{got}"
        );
        let asked = fake.seen("/user");
        assert_eq!(
            asked.iter().map(|a| a.0.as_str()).collect::<Vec<_>>(),
            [GITHUB_BAD, GITHUB_GOOD],
            "each verify sent the stored key"
        );
        assert!(
            asked
                .iter()
                .all(|a| a.1.starts_with("worktruck/") && a.2 == "application/vnd.github+json"),
            "{asked:?}"
        );

        // The provider down (503): provider_unavailable, nothing changes.
        fake.down.store(true, Ordering::SeqCst);
        let v = c.verify("github").await;
        assert_eq!(
            (v["valid"].as_bool(), v["reason"].as_str()),
            (Some(false), Some("provider_unavailable")),
            "{v}"
        );
        let (_, got) = c.get("github").await;
        assert_eq!(
            (got["status"].as_str(), &got["last_verified_at"]),
            (Some("active"), &verified_at),
            "{got}"
        );
        fake.down.store(false, Ordering::SeqCst);

        // The other providers, each with its own way of sending the key.
        let cf = c
            .store(json!({"provider": "cloudflare", "key": CLOUDFLARE_DISABLED,
                "metadata": {"account_id": "acc-7d1f09"}}))
            .await;
        assert_eq!(cf["metadata"]["account_id"], "acc-7d1f09", "{cf}");
        let v = c.verify("cloudflare").await;
        assert_eq!(
            (v["valid"].as_bool(), v["reason"].as_str()),
            (Some(false), Some("auth_failed")),
            "a token Cloudflare knows but reports disabled: {v}"
        );
        let cf = c
            .store(json!({"provider": "cloudflare", "key": CLOUDFLARE_GOOD,
                "metadata": {"account_id": "acc-7d1f09"}}))
            .await;
        assert_eq!(c.verify("cloudflare").await["valid"], true);
        let pm = c
            .store(json!({"provider": "postmark", "key": POSTMARK_GOOD}))
            .await;
        assert_eq!(c.verify("postmark").await["valid"], true);
        assert_eq!(
            fake.seen("/server")[0].0,
            POSTMARK_GOOD,
            "in its own header"
        );
        assert_eq!(fake.seen("/server")[0].2, "application/json");
        let nd = c
            .store(
                json!({"provider": "netdata", "key": NETDATA_GOOD, "label": "edge",
                "metadata": {"base_url": format!("{url}/")}}),
            )
            .await;
        assert_eq!(c.verify("netdata").await["valid"], true);
        assert_eq!(fake.seen("/api/v1/info")[0].0, NETDATA_GOOD);
        c.store(json!({"provider": "outstand", "key": OUTSTAND_KEY}))
            .await;
        let v = c.verify("outstand").await;
        assert_eq!(
            (v["valid"].as_bool(), v["reason"].as_str()),
            (Some(false), Some("provider_unavailable")),
            "nobody listens: {v}"
        );
        let (_, got) = c.get("outstand").await;
        assert_eq!(got["status"], "active", "unchanged: {got}");
        assert!(got["last_verified_at"].is_null(), "{got}");

        // Revoked: the ciphertext is wiped; then nothing is left to revoke, get or verify.
        let (st, r) = c
            .call(Method::DELETE, "/api/v1/integration-keys/github", None)
            .await;
        assert_eq!(st, StatusCode::OK, "{r}");
        assert_eq!(
            (r["id"].as_str(), r["message"].as_str()),
            (second["id"].as_str(), Some("Key revoked")),
            "{r}"
        );
        let (st, e) = c
            .call(Method::DELETE, "/api/v1/integration-keys/github", None)
            .await;
        assert_eq!(
            (st, error_code(&e).as_str()),
            (StatusCode::NOT_FOUND, "not_found"),
            "{e}"
        );
        let (st, _) = c
            .call(
                Method::POST,
                "/api/v1/integration-keys/github/verify",
                Some(json!({})),
            )
            .await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (st, _) = c.get("github").await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (st, _) = c.get("gitlab").await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (_, list) = c.call(Method::GET, "/api/v1/integration-keys", None).await;
        let statuses: Vec<(&str, &str)> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["provider"].as_str().unwrap(),
                    k["status"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            statuses,
            [
                ("outstand", "active"),
                ("netdata", "active"),
                ("postmark", "active"),
                ("cloudflare", "active"),
                ("cloudflare", "revoked"),
                ("github", "revoked"),
                ("github", "revoked"),
            ],
            "{list}"
        );

        // Another tenant sees none of it and can touch none of it.
        let other = s.new_tenant("other").await;
        let (st, list) = c
            .call_as(&other, Method::GET, "/api/v1/integration-keys", None)
            .await;
        assert_eq!((st, &list["data"]), (StatusCode::OK, &json!([])), "{list}");
        for (method, path) in [
            (Method::GET, "/api/v1/integration-keys/cloudflare"),
            (Method::POST, "/api/v1/integration-keys/cloudflare/verify"),
            (Method::DELETE, "/api/v1/integration-keys/cloudflare"),
        ] {
            let body = (method == Method::POST).then(|| json!({}));
            let (st, e) = c.call_as(&other, method.clone(), path, body).await;
            assert_eq!(st, StatusCode::NOT_FOUND, "{method} {path}: {e}");
        }
        let path = format!(
            "/api/v1/me/integrations/integration_key/{}",
            cf["id"].as_str().unwrap()
        );
        let (st, _) = c.call_as(&other, Method::DELETE, &path, None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (_, mine) = c
            .call_as(&other, Method::GET, "/api/v1/me/integrations", None)
            .await;
        assert_eq!(mine["data"], json!([]), "{mine}");

        // The unified view: the keys and the BYOK key, newest first.
        let (st, cfg) = c
            .call(
                Method::PUT,
                "/api/v1/agent-configs/site_health/byok-key",
                Some(json!({"api_key": ANTHROPIC_KEY})),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{cfg}");
        let (st, mine) = c.call(Method::GET, "/api/v1/me/integrations", None).await;
        assert_eq!(st, StatusCode::OK, "{mine}");
        let items = mine["data"].as_array().unwrap();
        assert_eq!(items.len(), 8, "{mine}");
        assert_eq!(
            (
                items[0]["kind"].as_str(),
                items[0]["provider"].as_str(),
                items[0]["display_name"].as_str(),
                items[0]["status"].as_str(),
                items[0]["id"].as_str()
            ),
            (
                Some("agent_config_byok"),
                Some("anthropic"),
                Some("site_health"),
                Some("active"),
                cfg["id"].as_str()
            ),
            "{mine}"
        );
        let created: Vec<chrono::DateTime<chrono::Utc>> = items
            .iter()
            .map(|i| i["created_at"].as_str().unwrap().parse().unwrap())
            .collect();
        let mut sorted = created.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(created, sorted, "newest first: {mine}");
        let names: Vec<(&str, &str)> = items[1..]
            .iter()
            .map(|i| {
                assert_eq!(i["kind"], "integration_key", "{i}");
                (
                    i["display_name"].as_str().unwrap(),
                    i["status"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("outstand", "active"),
                ("edge", "active"),
                ("postmark", "active"),
                ("cloudflare", "active"),
                ("cloudflare", "revoked"),
                ("ci bot", "revoked"),
                ("github", "revoked"),
            ],
            "{mine}"
        );

        // Revoking from the view: the BYOK key (the config says so) and an integration key.
        let path = format!(
            "/api/v1/me/integrations/agent_config_byok/{}",
            cfg["id"].as_str().unwrap()
        );
        let (st, r) = c.call(Method::DELETE, &path, None).await;
        assert_eq!(st, StatusCode::OK, "{r}");
        assert_eq!(r["status"], "revoked", "{r}");
        let (st, _) = c.call(Method::DELETE, &path, None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "nothing left to revoke");
        let (_, configs) = c.call(Method::GET, "/api/v1/agent-configs", None).await;
        assert_eq!(configs["data"][1]["byok_status"], "revoked", "{configs}");
        let path = format!(
            "/api/v1/me/integrations/integration_key/{}",
            nd["id"].as_str().unwrap()
        );
        let (st, _) = c.call(Method::DELETE, &path, None).await;
        assert_eq!(st, StatusCode::OK);
        let (st, _) = c.get("netdata").await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (st, e) = c
            .call(
                Method::DELETE,
                "/api/v1/me/integrations/oauth_connection/x",
                None,
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
        let (_, mine) = c.call(Method::GET, "/api/v1/me/integrations", None).await;
        assert_eq!(mine["data"][0]["status"], "revoked", "{mine}");
        assert_eq!(
            mine["data"].as_array().unwrap().len(),
            8,
            "revoked rows stay: {mine}"
        );
        let _ = pm;

        // No answer ever showed a key; the storage holds only ciphertext.
        let answers = c.answers.lock().unwrap().join("\n");
        for key in ALL_KEYS {
            assert!(!answers.contains(key), "{backend:?}: an answer shows {key}");
        }
        let bytes = s.storage_bytes();
        assert!(
            common::contains(&bytes, "acc-7d1f09"),
            "{backend:?}: the search reads the storage (a key's metadata is there)"
        );
        for key in ALL_KEYS {
            assert!(
                !common::contains(&bytes, key),
                "{backend:?}: the storage holds {key} in plaintext"
            );
        }
        s.stop().await;
    }
}
