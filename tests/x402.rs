//! x402 end to end: the whole system with a local fake facilitator (real HTTP, scripted
//! verdicts), on SQLite and on PostgreSQL + NATS.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use worktruck_kit::testing::{TestData, backends};

const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
const WALLET_A: &str = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23";
const WALLET_B: &str = "0x1111111111111111111111111111111111111111";

#[derive(Default)]
struct Facilitator {
    invalid: AtomicBool,
    settle_fails: AtomicBool,
    /// Verify answers valid but names another wallet as the payer.
    lies_about_payer: AtomicBool,
    verifies: AtomicUsize,
    settles: AtomicUsize,
}

async fn start_facilitator() -> (String, Arc<Facilitator>) {
    start_facilitator_on(false).await
}

/// The fake facilitator over plain HTTP, or over HTTPS with a certificate of the test CA.
async fn start_facilitator_on(tls: bool) -> (String, Arc<Facilitator>) {
    let state = Arc::new(Facilitator::default());
    async fn verify(State(f): State<Arc<Facilitator>>, Json(body): Json<Value>) -> Json<Value> {
        f.verifies.fetch_add(1, Ordering::SeqCst);
        let payer = body.pointer("/paymentPayload/payload/authorization/from").cloned().unwrap_or(Value::Null);
        if f.invalid.load(Ordering::SeqCst) {
            Json(json!({"isValid": false, "invalidReason": "invalid_exact_evm_payload_signature", "payer": payer}))
        } else {
            assert_eq!(body["paymentRequirements"]["payTo"], PAY_TO, "our own requirement is sent");
            let payer = if f.lies_about_payer.load(Ordering::SeqCst) { json!(WALLET_B) } else { payer };
            Json(json!({"isValid": true, "payer": payer}))
        }
    }
    async fn settle(State(f): State<Arc<Facilitator>>, Json(body): Json<Value>) -> Json<Value> {
        f.settles.fetch_add(1, Ordering::SeqCst);
        if f.settle_fails.load(Ordering::SeqCst) {
            Json(json!({"success": false, "errorReason": "insufficient_funds", "transaction": "", "network": "eip155:8453"}))
        } else {
            let payer = body.pointer("/paymentPayload/payload/authorization/from").cloned().unwrap_or(Value::Null);
            Json(json!({"success": true, "transaction": "0xabc", "network": "eip155:8453", "payer": payer}))
        }
    }
    let app = axum::Router::new().route("/verify", post(verify)).route("/settle", post(settle)).with_state(state.clone());
    if tls {
        return (worktruck_kit::testing::tls::serve(app).await.base, state);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, state)
}

/// A payment for the requirement a 402 offered, from `wallet`, with a fresh nonce.
fn pay(required_header: &str, wallet: &str) -> String {
    let required: Value = serde_json::from_slice(&B64.decode(required_header).unwrap()).unwrap();
    B64.encode(payment(&required, 0, wallet).to_string())
}

/// A `PaymentPayload` for the `accepts[i]` of a `PaymentRequired`, from `wallet`, with a fresh
/// nonce.
fn payment(required: &Value, i: usize, wallet: &str) -> Value {
    let accepted = required["accepts"][i].clone();
    assert!(accepted.is_object(), "{required}");
    let now = chrono::Utc::now().timestamp();
    json!({
        "x402Version": 2,
        "resource": required["resource"],
        "accepted": accepted,
        "payload": {
            "signature": format!("0x{}", "ab".repeat(65)),
            "authorization": {
                "from": wallet, "to": accepted["payTo"], "value": accepted["amount"],
                "validAfter": (now - 600).to_string(), "validBefore": (now + 60).to_string(),
                "nonce": format!("0x{}", uuid::Uuid::new_v4().simple().to_string().repeat(2)),
            }
        },
        "extensions": {}
    })
}

#[tokio::test]
async fn paid_requests_verify_settle_and_stay_apart_per_wallet() {
    for backend in backends() {
        let (facilitator, f) = start_facilitator().await;
        let data = TestData::new(backend).await;
        let mut cfg = common::config(&data);
        cfg.auth.x402.facilitator_url = facilitator;
        cfg.auth.x402.pay_to = PAY_TO.into();
        let running = worktruck::start_dev(cfg).await.unwrap();
        let base = format!("http://{}", running.rest_addr.unwrap());
        let http = worktruck_kit::http::client();
        let create = json!({"kind": "person", "display_name": "Paid Pat"});

        // No credentials: 402 with requirements, in the header and the body.
        let r = http.post(format!("{base}/api/v1/contacts")).json(&create).send().await.unwrap();
        assert_eq!(r.status(), 402, "{backend:?}");
        let write_req = r.headers()["payment-required"].to_str().unwrap().to_owned();
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "payment_required");
        assert_eq!(body["payment_options"]["x402"]["network"], "eip155:8453");
        let r = http.get(format!("{base}/api/v1/contacts")).send().await.unwrap();
        assert_eq!(r.status(), 402);
        let list_req = r.headers()["payment-required"].to_str().unwrap().to_owned();
        let price = |h: &str| -> u64 {
            let v: Value = serde_json::from_slice(&B64.decode(h).unwrap()).unwrap();
            v["accepts"][0]["amount"].as_str().unwrap().parse().unwrap()
        };
        assert!(price(&write_req) > price(&list_req), "writes cost more than reads");

        // A paid write.
        let payment = pay(&write_req, WALLET_A);
        let r = http
            .post(format!("{base}/api/v1/contacts"))
            .header("PAYMENT-SIGNATURE", &payment)
            .header("Idempotency-Key", "paid-create-1")
            .json(&create)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{backend:?}");
        assert!(r.headers().contains_key("payment-response"));
        let contact: Value = r.json().await.unwrap();
        let id = contact["id"].as_str().unwrap().to_owned();
        assert_eq!(f.settles.load(Ordering::SeqCst), 1);

        // The same payment again: refused, not settled twice.
        let r = http.post(format!("{base}/api/v1/contacts")).header("PAYMENT-SIGNATURE", &payment).json(&create).send().await.unwrap();
        assert_eq!(r.status(), 402);
        assert_eq!(f.settles.load(Ordering::SeqCst), 1, "not settled twice");

        // A retry of the paid write under its idempotency key, with a fresh payment: the kept
        // answer, and the payment is not charged.
        let r = http
            .post(format!("{base}/api/v1/contacts"))
            .header("PAYMENT-SIGNATURE", pay(&write_req, WALLET_A))
            .header("Idempotency-Key", "paid-create-1")
            .json(&create)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["idempotent-replayed"], "true");
        assert!(!r.headers().contains_key("payment-response"), "nothing settled, so no receipt");
        let replayed: Value = r.json().await.unwrap();
        assert_eq!(replayed["id"], contact["id"]);
        assert_eq!(f.settles.load(Ordering::SeqCst), 1, "a replayed paid write is not charged twice");

        // A paid read, as the same wallet's tenant.
        let get_req = {
            let r = http.get(format!("{base}/api/v1/contacts/{id}")).send().await.unwrap();
            r.headers()["payment-required"].to_str().unwrap().to_owned()
        };
        let r = http.get(format!("{base}/api/v1/contacts/{id}")).header("PAYMENT-SIGNATURE", pay(&get_req, WALLET_A)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().contains_key("payment-response"));

        // Another wallet is another tenant.
        let r = http.get(format!("{base}/api/v1/contacts/{id}")).header("PAYMENT-SIGNATURE", pay(&get_req, WALLET_B)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{backend:?}");

        // The facilitator calls a payment invalid: 402.
        f.invalid.store(true, Ordering::SeqCst);
        let r = http.post(format!("{base}/api/v1/contacts")).header("PAYMENT-SIGNATURE", pay(&write_req, WALLET_A)).json(&create).send().await.unwrap();
        assert_eq!(r.status(), 402);
        let v: Value = r.json().await.unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains("invalid_exact_evm_payload_signature"), "{v}");
        f.invalid.store(false, Ordering::SeqCst);

        // Settlement fails on a write: 402, and nothing is written.
        f.settle_fails.store(true, Ordering::SeqCst);
        let r = http
            .post(format!("{base}/api/v1/contacts"))
            .header("PAYMENT-SIGNATURE", pay(&write_req, WALLET_A))
            .json(&json!({"kind": "person", "display_name": "Never Written"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 402);
        let receipt = r.headers()["payment-response"].to_str().unwrap();
        let receipt: Value = serde_json::from_slice(&B64.decode(receipt).unwrap()).unwrap();
        assert_eq!(receipt["success"], false);
        f.settle_fails.store(false, Ordering::SeqCst);
        let r = http.get(format!("{base}/api/v1/contacts")).header("PAYMENT-SIGNATURE", pay(&list_req, WALLET_A)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let list: Value = r.json().await.unwrap();
        let names: Vec<&str> = list["data"].as_array().unwrap().iter().map(|c| c["display_name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Paid Pat"], "{backend:?}: the unsettled write left nothing");

        // A facilitator that names another wallet than the one that signed is not believed:
        // 402, nothing settled, and the caller does not become that wallet's tenant.
        f.lies_about_payer.store(true, Ordering::SeqCst);
        let settles = f.settles.load(Ordering::SeqCst);
        let r = http.get(format!("{base}/api/v1/contacts/{id}")).header("PAYMENT-SIGNATURE", pay(&get_req, WALLET_A)).send().await.unwrap();
        assert_eq!(r.status(), 402, "{backend:?}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains("payer does not match"), "{v}");
        assert_eq!(f.settles.load(Ordering::SeqCst), settles, "nothing settled");
        f.lies_about_payer.store(false, Ordering::SeqCst);

        // A garbage header is a clean 400 envelope.
        let r = http.post(format!("{base}/api/v1/contacts")).header("PAYMENT-SIGNATURE", "%%%not-base64").json(&create).send().await.unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_argument");

        // API keys still work beside x402.
        let key = running.first_key.clone().unwrap();
        let r = http.get(format!("{base}/api/v1/contacts")).bearer_auth(&key).send().await.unwrap();
        assert_eq!(r.status(), 200);
        running.stop().await;
    }
}

#[tokio::test]
async fn an_https_facilitator_is_reached_through_the_configured_ca() {
    let (facilitator, f) = start_facilitator_on(true).await;
    assert!(facilitator.starts_with("https://"));
    let ca = worktruck_kit::testing::tls::ca_file();
    let http = worktruck_kit::http::client();
    for trusted in [true, false] {
        let data = TestData::new(worktruck_kit::testing::Backend::Sqlite).await;
        let mut cfg = common::config(&data);
        cfg.auth.x402.facilitator_url = facilitator.clone();
        cfg.auth.x402.pay_to = PAY_TO.into();
        if trusted {
            cfg.outbound.ca_file = ca.path().to_str().unwrap().into();
        }
        let running = worktruck::start_dev(cfg).await.unwrap();
        let base = format!("http://{}", running.rest_addr.unwrap());
        let r = http.get(format!("{base}/api/v1/contacts")).send().await.unwrap();
        assert_eq!(r.status(), 402);
        let required = r.headers()["payment-required"].to_str().unwrap().to_owned();
        let verifies = f.verifies.load(Ordering::SeqCst);
        let r = http.get(format!("{base}/api/v1/contacts")).header("PAYMENT-SIGNATURE", pay(&required, WALLET_A)).send().await.unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        if trusted {
            assert_eq!(status, 200, "{body}");
            assert_eq!(f.verifies.load(Ordering::SeqCst), verifies + 1);
        } else {
            // The gateway does not trust the facilitator's certificate: no verdict was ever
            // asked for, the request is not served, and the caller is told to retry later.
            assert_eq!(status, 503, "{body}");
            assert_eq!(body["error"]["code"], "unavailable");
            assert_eq!(f.verifies.load(Ordering::SeqCst), verifies, "a verdict was asked over an untrusted channel");
        }
        running.stop().await;
    }
}

/// One MCP request over raw HTTP: status, headers and the JSON-RPC answer (the last `data:` line
/// of an SSE body, or the JSON body).
async fn mcp(
    http: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = http.post(url).header("accept", "application/json, text/event-stream").json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let text = resp.text().await.unwrap();
    let value = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or_else(|| serde_json::from_str(&text).unwrap_or(Value::String(text)));
    (status, headers, value)
}

/// A `tools/call` of `name` with `arguments` and `_meta`.
fn tool_call(id: u64, name: &str, arguments: Value, meta: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": name, "arguments": arguments, "_meta": meta}})
}

/// The `PaymentRequired` a refused paid call carries, checked against its text copy.
fn payment_required_of(result: &Value) -> Value {
    let result = &result["result"];
    assert_eq!(result["isError"], true, "{result}");
    let structured = result["structuredContent"].clone();
    let text: Value = serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(text, structured);
    assert_eq!(structured["x402Version"], 2, "{structured}");
    structured
}

#[tokio::test]
async fn an_mcp_client_opens_a_session_with_a_payment_and_pays_per_tool_call() {
    for backend in backends() {
        let (facilitator, f) = start_facilitator().await;
        let data = TestData::new(backend).await;
        let mut cfg = common::config(&data);
        cfg.auth.x402.facilitator_url = facilitator;
        cfg.auth.x402.pay_to = PAY_TO.into();
        let running = worktruck::start_dev(cfg).await.unwrap();
        let url = format!("http://{}/mcp/v1", running.mcp_addr.unwrap());
        let base = format!("http://{}", running.rest_addr.unwrap());
        let http = worktruck_kit::http::client();
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "payer", "version": "1"}}});

        // No credentials and no payment: 401 with both ways in.
        let (st, h, body) = mcp(&http, &url, &[], init.clone()).await;
        assert_eq!(st, 401, "{backend:?} {body}");
        assert!(h["www-authenticate"].to_str().unwrap().contains("resource_metadata="));
        let required: Value = serde_json::from_slice(&B64.decode(h["payment-required"].to_str().unwrap()).unwrap()).unwrap();
        assert_eq!(required["x402Version"], 2);
        assert!(required["resource"]["url"].as_str().unwrap().ends_with("/mcp/v1"), "{required}");
        assert_eq!(required["accepts"].as_array().unwrap().len(), 4, "one per price class: {required}");

        // A payment opens a session as the wallet; it is verified, not charged.
        let opening = B64.encode(payment(&required, 0, WALLET_A).to_string());
        let (st, h, body) = mcp(&http, &url, &[("payment-signature", &opening)], init.clone()).await;
        assert_eq!(st, 200, "{backend:?} {body}");
        assert_eq!(body["result"]["protocolVersion"], "2025-06-18");
        let session = h["mcp-session-id"].to_str().unwrap().to_owned();
        assert_eq!((f.verifies.load(Ordering::SeqCst), f.settles.load(Ordering::SeqCst)), (1, 0));
        let in_session = [("mcp-session-id", session.as_str()), ("mcp-protocol-version", "2025-06-18")];
        let (st, _, _) = mcp(&http, &url, &in_session, json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
        assert_eq!(st, 202);
        let (st, _, tools) = mcp(&http, &url, &in_session, json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})).await;
        assert_eq!(st, 200);
        assert!(tools["result"]["tools"].as_array().unwrap().iter().any(|t| t["name"] == "contacts_create"));

        // A call without payment: a tool error carrying what to pay.
        let create = json!({"kind": "person", "display_name": "Paid Pat"});
        let (st, _, r) = mcp(&http, &url, &in_session, tool_call(3, "contacts_create", create.clone(), json!({}))).await;
        assert_eq!(st, 200);
        let write_required = payment_required_of(&r);
        assert_eq!(write_required["resource"]["url"], "mcp://tool/contacts_create");
        assert_eq!(write_required["accepts"].as_array().unwrap().len(), 1);
        assert_eq!(write_required["accepts"][0]["amount"], "3000", "a write's price");
        assert_eq!(f.settles.load(Ordering::SeqCst), 0);

        // Paid in _meta: served as the wallet's tenant and settled once, with the receipt.
        let paying = payment(&write_required, 0, WALLET_A);
        let (_, _, r) = mcp(&http, &url, &in_session,
            tool_call(4, "contacts_create", create.clone(), json!({"x402/payment": paying, "idempotency_key": "mcp-paid-1"}))).await;
        assert_eq!(r["result"]["isError"], false, "{backend:?} {r}");
        let contact = r["result"]["structuredContent"].clone();
        let id = contact["id"].as_str().unwrap().to_owned();
        assert_eq!(r["result"]["_meta"]["x402/payment-response"]["success"], true, "{r}");
        assert_eq!(f.settles.load(Ordering::SeqCst), 1);

        // The same payment again is refused and not settled again.
        let (_, _, r) = mcp(&http, &url, &in_session,
            tool_call(5, "contacts_create", create.clone(), json!({"x402/payment": paying}))).await;
        let refused = payment_required_of(&r);
        assert_eq!(refused["error"], "payment already used", "{refused}");
        assert_eq!(f.settles.load(Ordering::SeqCst), 1, "a payment is taken once");

        // A retry under the idempotency key with a fresh payment: the kept answer, not charged.
        let (_, _, r) = mcp(&http, &url, &in_session, tool_call(6, "contacts_create", create.clone(),
            json!({"x402/payment": payment(&write_required, 0, WALLET_A), "idempotency_key": "mcp-paid-1"}))).await;
        assert_eq!(r["result"]["structuredContent"]["id"], contact["id"], "{r}");
        assert_eq!(r["result"]["_meta"]["idempotent_replayed"], true, "{r}");
        assert!(r["result"]["_meta"].get("x402/payment-response").is_none(), "nothing settled: {r}");
        assert_eq!(f.settles.load(Ordering::SeqCst), 1, "a replayed paid write is not charged");

        // A read, paid through the request's PAYMENT-SIGNATURE header instead, at a read's price.
        let (_, _, r) = mcp(&http, &url, &in_session, tool_call(7, "contacts_get", json!({"id": id}), json!({}))).await;
        let read_required = payment_required_of(&r);
        assert_eq!(read_required["accepts"][0]["amount"], "1000");
        let header = B64.encode(payment(&read_required, 0, WALLET_A).to_string());
        let with_header = [in_session[0], in_session[1], ("payment-signature", header.as_str())];
        let (_, _, r) = mcp(&http, &url, &with_header, tool_call(8, "contacts_get", json!({"id": id}), json!({}))).await;
        assert_eq!(r["result"]["structuredContent"]["display_name"], "Paid Pat", "{r}");
        assert_eq!(f.settles.load(Ordering::SeqCst), 2);

        // The REST view of the same wallet's tenant agrees.
        let list_402 = http.get(format!("{base}/api/v1/contacts")).send().await.unwrap();
        let list_req = list_402.headers()["payment-required"].to_str().unwrap().to_owned();
        let listed = |wallet: &'static str| {
            let (http, base, list_req) = (http.clone(), base.clone(), list_req.clone());
            async move {
                let r = http.get(format!("{base}/api/v1/contacts")).header("PAYMENT-SIGNATURE", pay(&list_req, wallet)).send().await.unwrap();
                let v: Value = r.json().await.unwrap();
                v["data"].as_array().unwrap().iter().map(|c| c["display_name"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
            }
        };
        assert_eq!(listed(WALLET_A).await, ["Paid Pat"], "{backend:?}");
        let settles = f.settles.load(Ordering::SeqCst);

        // Another wallet's payment does not pay for this session's calls.
        let (_, _, r) = mcp(&http, &url, &in_session,
            tool_call(9, "contacts_get", json!({"id": id}), json!({"x402/payment": payment(&read_required, 0, WALLET_B)}))).await;
        assert!(payment_required_of(&r)["error"].as_str().unwrap().contains("another wallet"), "{r}");
        assert_eq!(f.settles.load(Ordering::SeqCst), settles);

        // A payment for a read does not pay for a write.
        let (_, _, r) = mcp(&http, &url, &in_session,
            tool_call(10, "contacts_create", create.clone(), json!({"x402/payment": payment(&read_required, 0, WALLET_A)}))).await;
        assert_eq!(payment_required_of(&r)["error"], "No matching payment requirements", "{r}");

        // Settlement fails on a write: the payment is asked for again and nothing is written.
        f.settle_fails.store(true, Ordering::SeqCst);
        let (_, _, r) = mcp(&http, &url, &in_session, tool_call(11, "contacts_create",
            json!({"kind": "person", "display_name": "Never Written"}), json!({"x402/payment": payment(&write_required, 0, WALLET_A)}))).await;
        assert!(payment_required_of(&r)["error"].as_str().unwrap().starts_with("Settlement failed"), "{r}");
        assert_eq!(r["result"]["_meta"]["x402/payment-response"]["success"], false, "{r}");
        // A read whose settlement fails is withheld.
        let (_, _, r) = mcp(&http, &url, &in_session,
            tool_call(12, "contacts_get", json!({"id": id}), json!({"x402/payment": payment(&read_required, 0, WALLET_A)}))).await;
        payment_required_of(&r);
        assert!(!r.to_string().contains("Paid Pat"), "the unpaid read's answer is not shown: {r}");
        f.settle_fails.store(false, Ordering::SeqCst);
        assert_eq!(listed(WALLET_A).await, ["Paid Pat"], "{backend:?}: the unsettled write left nothing");

        // The wallet's session is not served to an API key's caller, nor opened by a bad payment.
        let key = running.first_key.clone().unwrap();
        let bearer = format!("Bearer {key}");
        let (st, _, _) = mcp(&http, &url, &[in_session[0], in_session[1], ("authorization", &bearer)],
            json!({"jsonrpc": "2.0", "id": 13, "method": "tools/list"})).await;
        assert_eq!(st, 404);
        let (st, h, body) = mcp(&http, &url, &[("payment-signature", "%%%")], init.clone()).await;
        assert_eq!(st, 400, "{body}");
        assert!(h.contains_key("payment-required"));
        f.invalid.store(true, Ordering::SeqCst);
        let (st, _, body) = mcp(&http, &url, &[("payment-signature", &B64.encode(payment(&required, 0, WALLET_A).to_string()))], init.clone()).await;
        assert_eq!(st, 402, "{body}");
        assert_eq!(body["error"]["code"], "payment_required");
        f.invalid.store(false, Ordering::SeqCst);

        // API keys still open sessions beside x402, and their calls are not charged.
        let (st, _, body) = mcp(&http, &url, &[("authorization", &bearer)], init.clone()).await;
        assert_eq!(st, 200, "{body}");
        running.stop().await;
    }
}
