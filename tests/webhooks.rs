//! Webhooks end to end over REST, on SQLite and on PostgreSQL + NATS, against receivers the
//! test runs on 127.0.0.1 (axum): each records every request with its headers and raw body,
//! and can be told to fail (500) for a while. Signatures are checked here with the scheme the
//! README documents (HMAC-SHA256 over `<t>.<body>` under the secret create answered), written
//! independently of the service's own code. The SSRF guard refuses local addresses by default;
//! the stacks that deliver allow `127.0.0.0/8` and plain http in `[outbound]`, as an operator
//! would for an on-premises receiver.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use common::{Stack, error_code};
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use worktruck_kit::config::Config;
use worktruck_kit::testing::backends;

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    delivery_id: String,
    event: String,
    signature: String,
    user_agent: String,
    raw: Vec<u8>,
    body: Value,
    /// Whether the receiver answered 2xx.
    accepted: bool,
}

#[derive(Default)]
struct Receiver {
    got: Mutex<Vec<Received>>,
    failing: AtomicBool,
}

type Shared = Arc<Receiver>;

async fn receive(
    State(r): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (AxumStatus, &'static str) {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let failing = r.failing.load(Ordering::SeqCst);
    assert_eq!(h("content-type"), "application/json");
    r.got.lock().unwrap().push(Received {
        delivery_id: h("worktruck-delivery-id"),
        event: h("worktruck-event"),
        signature: h("worktruck-signature"),
        user_agent: h("user-agent"),
        raw: body.to_vec(),
        body: serde_json::from_slice(&body).unwrap(),
        accepted: !failing,
    });
    if failing {
        (
            AxumStatus::INTERNAL_SERVER_ERROR,
            "receiver down for maintenance",
        )
    } else {
        (AxumStatus::OK, "ok")
    }
}

/// Starts a receiver; returns it and its URL.
async fn receiver() -> (Shared, String) {
    let r: Shared = Arc::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (r, format!("http://127.0.0.1:{port}/hook"))
}

impl Receiver {
    /// What it accepted (answered 2xx), in arrival order.
    fn accepted(&self) -> Vec<Received> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.accepted)
            .cloned()
            .collect()
    }
}

/// The documented check: `t=<unix>,v1=<hex>[,v1=<hex>]`, one `v1` being
/// HMAC-SHA256(secret, "<t>.<body>").
fn verifies(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = Some(v.to_owned()),
            Some(("v1", v)) => sigs.push(v.to_owned()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    let age = chrono::Utc::now().timestamp() - t.parse::<i64>().unwrap();
    assert!(age.abs() < 300, "a fresh timestamp: {header}");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    sigs.iter().any(|s| *s == want)
}

/// Lets the stack reach the test's receivers, with short retries.
fn local(cfg: &mut Config, settings: Value) {
    cfg.outbound.allow_http = true;
    cfg.outbound.allow_ranges = vec!["127.0.0.0/8".into()];
    // Five stacks at once on a small machine: the admin command's own connection to the
    // tenants database (another tenant) may wait longer than the default second for it.
    cfg.database.acquire_timeout_ms = 10_000;
    let mut s = json!({"retry_base_ms": 50, "retry_max_ms": 300, "poll_ms": 50, "attempt_timeout_ms": 2000,
                       "retry_window_seconds": 3600});
    for (k, v) in settings.as_object().unwrap() {
        s[k] = v.clone();
    }
    cfg.settings.insert("webhooks".into(), s);
}

async fn create(s: &Stack, url: &str, types: &[&str]) -> (String, String) {
    let (st, v) = s
        .call(
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({"url": url, "event_types": types})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let secret = v["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{v}");
    (v["webhook"]["id"].as_str().unwrap().to_owned(), secret)
}

/// Waits until `done` holds (at most 30 s).
async fn until<F: FnMut() -> bool>(what: &str, mut done: F) {
    for _ in 0..600 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn deliveries(s: &Stack, hook: &str, query: &str) -> Vec<Value> {
    let (st, v) = s
        .call(
            Method::GET,
            &format!("/api/v1/webhooks/{hook}/deliveries{query}"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["data"].as_array().unwrap().clone()
}

async fn rename(s: &Stack, id: &str, name: &str) {
    let (st, v) = s
        .call(
            Method::PATCH,
            &format!("/api/v1/contacts/{id}"),
            Some(json!({"display_name": name})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
}

/// Per entity, the contact versions received, in arrival order (each delivery once).
fn versions_by_contact(got: &[Received]) -> BTreeMap<String, Vec<i64>> {
    let mut seen = BTreeSet::new();
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in got
        .iter()
        .filter(|r| r.event.starts_with("contacts.contact."))
    {
        if seen.insert(r.delivery_id.clone()) {
            let c = &r.body["data"];
            out.entry(c["id"].as_str().unwrap().to_owned())
                .or_default()
                .push(c["version"].as_i64().unwrap());
        }
    }
    out
}

#[tokio::test]
async fn webhooks_are_validated_kept_per_tenant_and_their_secrets_never_shown_again() {
    for backend in backends() {
        let s = Stack::start_with(backend, |cfg| local(cfg, json!({}))).await;
        let (_r, url) = receiver().await;
        for (body, why) in [
            (json!({"url": url, "event_types": []}), "event_types"),
            (
                json!({"url": url, "event_types": ["Contacts.*"]}),
                "event_types",
            ),
            (
                json!({"url": url, "event_types": ["contacts..x"]}),
                "event_types",
            ),
            (
                json!({"url": "ftp://example.com/hook", "event_types": ["*"]}),
                "url",
            ),
            (json!({"url": "", "event_types": ["*"]}), "url"),
            (
                json!({"url": "http://169.254.169.254/latest", "event_types": ["*"]}),
                "metadata",
            ),
            (
                json!({"url": "http://10.0.0.7/hook", "event_types": ["*"]}),
                "private",
            ),
        ] {
            let (st, e) = s
                .call(Method::POST, "/api/v1/webhooks", Some(body.clone()))
                .await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{backend:?} {body}: {e}");
            assert_eq!(error_code(&e), "validation_failed");
            assert!(
                e["error"]["message"].as_str().unwrap().contains(why),
                "{body}: {e}"
            );
        }
        let (st, v) = s
            .call(
                Method::POST,
                "/api/v1/webhooks",
                Some(json!({"url": url, "event_types": ["contacts.*", "crm.deal.won"], "description": "CRM sync"})),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        let secret = v["secret"].as_str().unwrap().to_owned();
        let id = v["webhook"]["id"].as_str().unwrap().to_owned();
        assert_eq!(v["webhook"]["status"], "active");
        assert_eq!(
            v["webhook"]["event_types"],
            json!(["contacts.*", "crm.deal.won"])
        );
        assert_eq!(
            v["webhook"]["secret_hint"].as_str().unwrap(),
            format!("…{}", &secret[secret.len() - 4..])
        );

        let (st, got) = s
            .call(Method::GET, &format!("/api/v1/webhooks/{id}"), None)
            .await;
        assert_eq!(st, StatusCode::OK);
        assert!(
            got.get("secret").is_none() && !got.to_string().contains(&secret),
            "{got}"
        );
        let (_, list) = s.call(Method::GET, "/api/v1/webhooks", None).await;
        assert_eq!(list["data"].as_array().unwrap().len(), 1);
        assert!(!list.to_string().contains(&secret));

        let (st, p) = s
            .call(
                Method::PATCH,
                &format!("/api/v1/webhooks/{id}"),
                Some(json!({"event_types": ["*"], "description": "all"})),
            )
            .await;
        assert_eq!(
            (st, &p["event_types"], &p["version"]),
            (StatusCode::OK, &json!(["*"]), &json!(2)),
            "{p}"
        );
        let (st, e) = s
            .call(
                Method::PATCH,
                &format!("/api/v1/webhooks/{id}"),
                Some(json!({"url": "http://192.168.1.1/"})),
            )
            .await;
        assert_eq!(
            (st, error_code(&e)),
            (StatusCode::BAD_REQUEST, "validation_failed".into()),
            "{e}"
        );
        let (st, e) = s
            .call(
                Method::PATCH,
                &format!("/api/v1/webhooks/{id}"),
                Some(json!({"expected_version": 1})),
            )
            .await;
        assert_eq!(st, StatusCode::CONFLICT, "{e}");

        let (st, rot) = s
            .call(
                Method::POST,
                &format!("/api/v1/webhooks/{id}/rotate-secret"),
                Some(json!({})),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{rot}");
        let rotated = rot["secret"].as_str().unwrap().to_owned();
        assert_ne!(rotated, secret);
        assert!(
            rot["webhook"]["previous_secret_expires_at"].is_string(),
            "{rot}"
        );
        let (st, e) = s
            .call(
                Method::POST,
                &format!("/api/v1/webhooks/{id}/rotate-secret"),
                Some(json!({"overlap_seconds": 700000})),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");

        // Another tenant sees none of it.
        let other = s.new_tenant("other").await;
        let (_, list) = s
            .call_as(&other, Method::GET, "/api/v1/webhooks", None)
            .await;
        assert_eq!(list["data"].as_array().unwrap().len(), 0, "{list}");
        for path in [
            format!("/api/v1/webhooks/{id}"),
            format!("/api/v1/webhooks/{id}/deliveries"),
        ] {
            let (st, _) = s.call_as(&other, Method::GET, &path, None).await;
            assert_eq!(st, StatusCode::NOT_FOUND, "{path}");
        }
        let (st, _) = s
            .call_as(
                &other,
                Method::DELETE,
                &format!("/api/v1/webhooks/{id}"),
                None,
            )
            .await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (st, _) = s
            .call_as(
                &other,
                Method::POST,
                &format!("/api/v1/webhooks/{id}/test"),
                Some(json!({})),
            )
            .await;
        assert_eq!(st, StatusCode::NOT_FOUND);

        // Neither secret is stored in clear.
        let bytes = s.storage_bytes();
        assert!(
            common::contains(&bytes, "CRM sync") || common::contains(&bytes, "all"),
            "{backend:?}: the dump reads the storage"
        );
        for sec in [&secret, &rotated] {
            assert!(
                !common::contains(&bytes, sec),
                "{backend:?}: a secret is in the storage in clear"
            );
            assert!(
                !common::contains(&bytes, &sec["whsec_".len()..]),
                "{backend:?}: a secret's random part is in the storage"
            );
        }

        let (st, d) = s
            .call(Method::DELETE, &format!("/api/v1/webhooks/{id}"), None)
            .await;
        assert_eq!((st, &d["deleted"]), (StatusCode::OK, &json!(true)), "{d}");
        let (st, _) = s
            .call(Method::GET, &format!("/api/v1/webhooks/{id}"), None)
            .await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        s.stop().await;
    }
}

#[tokio::test]
async fn every_event_is_delivered_signed_in_order_per_entity_and_after_an_outage() {
    for backend in backends() {
        let s = Stack::start_with(backend, |cfg| local(cfg, json!({}))).await;
        let (r, url) = receiver().await;
        let (hook, secret) = create(&s, &url, &["contacts.*"]).await;

        // Three contacts, one of them renamed three times; a note is not a contacts event.
        let mut ids = Vec::new();
        for name in ["Ada", "Grace", "Edsger"] {
            ids.push(s.person(name).await["id"].as_str().unwrap().to_owned());
        }
        for n in 1..=3 {
            rename(&s, &ids[0], &format!("Ada {n}")).await;
        }
        let (st, _) = s
            .call(
                Method::POST,
                "/api/v1/notes",
                Some(json!({"title": "not for the hook"})),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED);
        until("six deliveries", || r.accepted().len() >= 6).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let got = r.accepted();
        assert_eq!(
            got.len(),
            6,
            "{backend:?}: exactly one delivery per event: {got:#?}"
        );
        for g in &got {
            assert!(
                verifies(&secret, &g.signature, &g.raw),
                "{backend:?}: a bad signature: {g:?}"
            );
            assert_eq!(g.body["id"], g.delivery_id.as_str());
            assert_eq!(g.body["type"], g.event.as_str());
            assert!(g.event.starts_with("contacts.contact."), "{g:?}");
            assert!(g.body["tenant_id"].is_string() && g.body["created_at"].is_string());
            assert_eq!(g.user_agent, "Worktruck-Webhooks/1");
        }
        let by = versions_by_contact(&got);
        assert_eq!(
            by[&ids[0]],
            vec![1, 2, 3, 4],
            "{backend:?}: in order per entity"
        );
        assert_eq!(
            (by[&ids[1]].clone(), by[&ids[2]].clone()),
            (vec![1], vec![1])
        );
        assert_eq!(
            got.iter()
                .filter(|g| g.event == "contacts.contact.updated")
                .count(),
            3
        );

        // The receiver fails for a while: events keep coming, then it recovers and gets the
        // missed deliveries, in order.
        r.failing.store(true, Ordering::SeqCst);
        for n in 1..=3 {
            rename(&s, &ids[1], &format!("Grace {n}")).await;
        }
        let late = s.person("Barbara").await["id"].as_str().unwrap().to_owned();
        until("failed attempts", || {
            r.got.lock().unwrap().iter().filter(|g| !g.accepted).count() >= 6
        })
        .await;
        let pending = deliveries(&s, &hook, "?status=pending").await;
        assert!(!pending.is_empty());
        let failing = pending
            .iter()
            .find(|d| d["attempts"].as_i64().unwrap() >= 1)
            .expect("an attempted delivery");
        assert!(
            failing["last_error"]
                .as_str()
                .unwrap()
                .contains("HTTP 500: receiver down"),
            "{failing}"
        );
        assert_eq!(failing["last_status_code"], 500);
        assert!(failing["next_attempt_at"].is_string());
        // Only the first of Grace's renames is being tried: the later ones wait for it.
        let grace_tried: Vec<i64> = r
            .got
            .lock()
            .unwrap()
            .iter()
            .filter(|g| !g.accepted && g.body["data"]["id"] == ids[1].as_str())
            .map(|g| g.body["data"]["version"].as_i64().unwrap())
            .collect();
        assert!(
            !grace_tried.is_empty() && grace_tried.iter().all(|v| *v == 2),
            "{backend:?}: later versions waited: {grace_tried:?}"
        );
        r.failing.store(false, Ordering::SeqCst);
        until("the missed deliveries", || r.accepted().len() >= 10).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let got = r.accepted();
        assert_eq!(got.len(), 10, "{backend:?}: {got:#?}");
        let by = versions_by_contact(&got);
        assert_eq!(
            by[&ids[1]],
            vec![1, 2, 3, 4],
            "{backend:?}: in order after the outage"
        );
        assert_eq!(by[&late], vec![1]);
        assert!(got.iter().all(|g| verifies(&secret, &g.signature, &g.raw)));
        let all = deliveries(&s, &hook, "").await;
        assert_eq!(all.len(), 10);
        assert!(all.iter().all(|d| d["status"] == "delivered"), "{all:#?}");
        let retried: Vec<_> = all
            .iter()
            .filter(|d| d["attempts"].as_i64().unwrap() >= 2)
            .collect();
        assert!(
            !retried.is_empty(),
            "the outage's deliveries took more than one attempt"
        );
        assert!(
            retried
                .iter()
                .all(|d| d["last_error"].is_null() && d["delivered_at"].is_string())
        );
        // Newest first, paginated.
        let (_, page) = s
            .call(
                Method::GET,
                &format!("/api/v1/webhooks/{hook}/deliveries?limit=4"),
                None,
            )
            .await;
        assert_eq!(
            (page["data"].as_array().unwrap().len(), &page["has_more"]),
            (4, &json!(true))
        );
        assert_eq!(page["data"][0]["id"], all[0]["id"]);
        let cursor = page["next_cursor"].as_str().unwrap();
        let (_, next) = s
            .call(
                Method::GET,
                &format!("/api/v1/webhooks/{hook}/deliveries?limit=4&cursor={cursor}"),
                None,
            )
            .await;
        assert_eq!(next["data"][0]["id"], all[4]["id"]);

        // A test delivery, answered once attempted.
        let (st, t) = s
            .call(
                Method::POST,
                &format!("/api/v1/webhooks/{hook}/test"),
                Some(json!({})),
            )
            .await;
        assert_eq!(
            (st, &t["status"], &t["event_type"]),
            (StatusCode::OK, &json!("delivered"), &json!("webhooks.test")),
            "{t}"
        );
        let last = r.accepted().last().cloned().unwrap();
        assert_eq!(
            (last.event.as_str(), last.delivery_id.as_str()),
            ("webhooks.test", t["id"].as_str().unwrap())
        );

        // Redelivery: the same delivery (same id), again.
        let first = all.last().unwrap()["id"].as_str().unwrap().to_owned();
        let (st, again) = s
            .call(
                Method::POST,
                &format!("/api/v1/webhooks/{hook}/deliveries/{first}/redeliver"),
                Some(json!({})),
            )
            .await;
        assert_eq!(
            (st, &again["status"], &again["attempts"]),
            (StatusCode::OK, &json!("delivered"), &json!(1)),
            "{again}"
        );
        assert_eq!(r.accepted().last().unwrap().delivery_id, first);
        let (st, _) = s
            .call(
                Method::POST,
                &format!(
                    "/api/v1/webhooks/{hook}/deliveries/{}/redeliver",
                    uuid_like()
                ),
                Some(json!({})),
            )
            .await;
        assert_eq!(st, StatusCode::NOT_FOUND);

        // Rotation: during the overlap both secrets sign; without one, only the new one.
        let (_, rot) = s
            .call(
                Method::POST,
                &format!("/api/v1/webhooks/{hook}/rotate-secret"),
                Some(json!({"overlap_seconds": 3600})),
            )
            .await;
        let fresh = rot["secret"].as_str().unwrap().to_owned();
        let n = r.accepted().len();
        rename(&s, &ids[2], "Edsger W.").await;
        until("the rotated delivery", || r.accepted().len() > n).await;
        let g = r.accepted().last().cloned().unwrap();
        assert!(
            verifies(&fresh, &g.signature, &g.raw) && verifies(&secret, &g.signature, &g.raw),
            "{g:?}"
        );
        assert_eq!(g.signature.matches("v1=").count(), 2);
        let (_, rot) = s
            .call(
                Method::POST,
                &format!("/api/v1/webhooks/{hook}/rotate-secret"),
                Some(json!({"overlap_seconds": 0})),
            )
            .await;
        let newest = rot["secret"].as_str().unwrap().to_owned();
        assert!(
            rot["webhook"]["previous_secret_expires_at"].is_null(),
            "{rot}"
        );
        let (_, t) = s
            .call(
                Method::POST,
                &format!("/api/v1/webhooks/{hook}/test"),
                Some(json!({})),
            )
            .await;
        assert_eq!(t["status"], "delivered");
        let g = r.accepted().last().cloned().unwrap();
        assert!(verifies(&newest, &g.signature, &g.raw), "{g:?}");
        assert!(
            !verifies(&fresh, &g.signature, &g.raw) && !verifies(&secret, &g.signature, &g.raw)
        );
        s.stop().await;
    }
}

fn uuid_like() -> String {
    "0190c6a1-0000-7000-8000-000000000000".into()
}

#[tokio::test]
async fn a_receiver_that_keeps_failing_is_disabled_with_an_event_and_can_be_enabled_again() {
    for backend in backends() {
        let s = Stack::start_with(backend, |cfg| {
            local(
                cfg,
                json!({"disable_after_failures": 3, "disable_after_seconds": 0}),
            )
        })
        .await;
        let (broken, broken_url) = receiver().await;
        broken.failing.store(true, Ordering::SeqCst);
        let (watcher, watcher_url) = receiver().await;
        let (hook, _) = create(&s, &broken_url, &["contacts.*"]).await;
        let (_, watcher_secret) = create(&s, &watcher_url, &["webhooks.webhook.disabled"]).await;
        let who = s.person("Alan").await["id"].as_str().unwrap().to_owned();
        until("the disabled event", || {
            watcher
                .accepted()
                .iter()
                .any(|g| g.event == "webhooks.webhook.disabled")
        })
        .await;
        let g = watcher
            .accepted()
            .into_iter()
            .find(|g| g.event == "webhooks.webhook.disabled")
            .unwrap();
        assert!(verifies(&watcher_secret, &g.signature, &g.raw));
        assert_eq!(
            g.body["data"]["webhook"]["id"],
            hook.as_str(),
            "{:?}",
            g.body
        );
        assert_eq!(g.body["data"]["webhook"]["status"], "disabled");
        assert!(
            !g.raw.windows(6).any(|w| w == b"whsec_"),
            "no secret in an event"
        );
        let (_, w) = s
            .call(Method::GET, &format!("/api/v1/webhooks/{hook}"), None)
            .await;
        assert_eq!(w["status"], "disabled", "{w}");
        assert!(
            w["disabled_reason"]
                .as_str()
                .unwrap()
                .contains("3 failed attempts"),
            "{w}"
        );
        assert!(w["consecutive_failures"].as_i64().unwrap() >= 3);
        // Disabled: nothing more is attempted, new events make no delivery.
        let attempts = broken.got.lock().unwrap().len();
        s.person("Kurt").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            broken.got.lock().unwrap().len(),
            attempts,
            "{backend:?}: a disabled webhook is left alone"
        );
        assert_eq!(deliveries(&s, &hook, "").await.len(), 1);

        // Enabled again, with the receiver fixed: the waiting delivery goes out.
        broken.failing.store(false, Ordering::SeqCst);
        let (st, w) = s
            .call(
                Method::PATCH,
                &format!("/api/v1/webhooks/{hook}"),
                Some(json!({"status": "active"})),
            )
            .await;
        assert_eq!(
            (st, &w["status"], &w["consecutive_failures"]),
            (StatusCode::OK, &json!("active"), &json!(0)),
            "{w}"
        );
        assert!(w["disabled_reason"].is_null());
        until("the waiting delivery", || !broken.accepted().is_empty()).await;
        assert_eq!(broken.accepted()[0].body["data"]["id"], who.as_str());
        s.stop().await;
    }
}

#[tokio::test]
async fn a_receiver_at_a_private_address_is_refused_unless_the_operator_allows_it() {
    for backend in backends() {
        let (_r, url) = receiver().await;
        // Plain http allowed, but no range: the local receiver is refused for its address.
        let s = Stack::start_with(backend, |cfg| cfg.outbound.allow_http = true).await;
        for (target, why) in [
            (url.clone(), "loopback"),
            ("http://169.254.169.254/".to_owned(), "metadata"),
            ("http://[::1]/hook".to_owned(), "loopback"),
            (
                url.replace("127.0.0.1", "localhost"),
                "localhost resolves to",
            ),
        ] {
            let (st, e) = s
                .call(
                    Method::POST,
                    "/api/v1/webhooks",
                    Some(json!({"url": target, "event_types": ["*"]})),
                )
                .await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{backend:?} {target}: {e}");
            let message = e["error"]["message"].as_str().unwrap();
            assert!(
                message.contains(why) && message.contains("outbound.allow_ranges"),
                "{target}: {message}"
            );
        }
        s.stop().await;
        // By default plain http is refused too.
        let s = Stack::start(backend).await;
        let (st, e) = s
            .call(
                Method::POST,
                "/api/v1/webhooks",
                Some(json!({"url": "http://hooks.example.com/", "event_types": ["*"]})),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains("https"),
            "{e}"
        );
        let (_, list) = s.call(Method::GET, "/api/v1/webhooks", None).await;
        assert_eq!(
            list["data"].as_array().unwrap().len(),
            0,
            "nothing was stored"
        );
        s.stop().await;
        // Allowed: the same receiver is accepted.
        let s = Stack::start_with(backend, |cfg| local(cfg, json!({}))).await;
        create(&s, &url, &["*"]).await;
        s.stop().await;
    }
}

#[tokio::test]
async fn a_pending_delivery_survives_a_restart_and_goes_out_once() {
    for backend in backends() {
        let mut s = Stack::start_with(backend, |cfg| local(cfg, json!({}))).await;
        let (r, url) = receiver().await;
        let (hook, secret) = create(&s, &url, &["contacts.contact.created"]).await;
        r.failing.store(true, Ordering::SeqCst);
        let id = s.person("Hedy").await["id"].as_str().unwrap().to_owned();
        until("a failed attempt", || !r.got.lock().unwrap().is_empty()).await;
        s.restart().await;
        r.failing.store(false, Ordering::SeqCst);
        until("the delivery after the restart", || {
            !r.accepted().is_empty()
        })
        .await;
        let second = s.person("Lise").await["id"].as_str().unwrap().to_owned();
        until("the next event's delivery", || r.accepted().len() >= 2).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let got = r.accepted();
        let ids: Vec<&str> = got
            .iter()
            .map(|g| g.body["data"]["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            vec![id.as_str(), second.as_str()],
            "{backend:?}: each once, in order"
        );
        assert!(got.iter().all(|g| verifies(&secret, &g.signature, &g.raw)));
        let all = deliveries(&s, &hook, "").await;
        assert_eq!(all.len(), 2, "{backend:?}: {all:#?}");
        assert!(all.iter().all(|d| d["status"] == "delivered"));
        s.stop().await;
    }
}
