//! CRM end to end: the whole system on SQLite and on PostgreSQL + NATS, over REST and over MCP
//! (rmcp's Streamable HTTP client), the CRM service checking contacts with the contacts service.

mod common;

use common::{Stack, error_code, moment, ts};
use reqwest::{Method, StatusCode};
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use worktruck_kit::testing::backends;

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

async fn post(s: &Stack, path: &str, body: Value) -> Value {
    let (st, v) = s.call(Method::POST, path, Some(body)).await;
    assert!(st == StatusCode::CREATED || st == StatusCode::OK, "{path}: {st} {v}");
    v
}

async fn get(s: &Stack, path: &str) -> Value {
    let (st, v) = s.call(Method::GET, path, None).await;
    assert_eq!(st, StatusCode::OK, "{path}: {v}");
    v
}

#[tokio::test]
async fn pipelines_deals_moves_and_analytics_over_rest() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        // The default pipeline appears on first use.
        let list = get(&s, "/api/v1/pipelines").await;
        assert_eq!(list["data"].as_array().unwrap().len(), 1, "{backend:?} {list}");
        assert_eq!(list["data"][0]["is_default"], true);
        assert_eq!(list["data"][0]["stages"][4]["kind"], "won");

        let p = post(
            &s,
            "/api/v1/pipelines",
            json!({"name": "Sales", "currency": "EUR", "stages": [
                {"name": "Lead", "probability": 20},
                {"name": "Proposal", "probability": 60, "rotting_days": 14},
                {"name": "Won", "kind": "won"},
                {"name": "Lost", "kind": "lost"},
            ]}),
        )
        .await;
        let pid = id(&p);
        let stage = |i: usize| p["stages"][i]["id"].as_str().unwrap().to_owned();
        assert_eq!(p["stages"][2]["probability"], 100, "{p}");

        // Reorder: a full permutation or a 400.
        let (st, e) = s
            .call(Method::POST, &format!("/api/v1/pipelines/{pid}/stages/reorder"), Some(json!({"stage_ids": [stage(1), stage(0)]})))
            .await;
        assert_eq!((st, error_code(&e).as_str()), (StatusCode::BAD_REQUEST, "validation_failed"), "{e}");
        let re =
            post(&s, &format!("/api/v1/pipelines/{pid}/stages/reorder"), json!({"stage_ids": [stage(0), stage(1), stage(3), stage(2)]}))
                .await;
        assert_eq!(re["data"][2]["name"], "Lost", "{re}");

        let ana = s.person("Ana").await;
        let (st, acme) = s.call(Method::POST, "/api/v1/contacts", Some(json!({"kind": "organization", "display_name": "Acme"}))).await;
        assert_eq!(st, StatusCode::CREATED);
        let deal = post(
            &s,
            "/api/v1/deals",
            json!({"name": "Acme renewal", "pipeline_id": pid, "amount": "1250.50", "confidence": 70,
                   "value_period": "annual", "expected_close_date": "2027-01-31",
                   "contact_id": ana["id"], "organization_id": acme["id"], "metadata": {"tier": "gold"},
                   "valid_from": ts(chrono::Utc::now() - chrono::Duration::days(10))}),
        )
        .await;
        assert_eq!(deal["amount"], "1250.50", "{deal}");
        assert_eq!(deal["currency"], "EUR");
        assert_eq!(deal["status"], "open");
        assert_eq!(deal["value_period"], "annual");
        let did = id(&deal);

        // Bad input: each a 400 in the envelope, nothing written.
        let all = get(&s, "/api/v1/pipelines").await;
        let other = all["data"].as_array().unwrap().iter().find(|q| q["id"] != pid.as_str()).unwrap()["stages"][0]["id"].clone();
        let stranger_key = s.new_tenant("stranger").await;
        let (_, stranger) =
            s.call_as(&stranger_key, Method::POST, "/api/v1/contacts", Some(json!({"kind": "person", "display_name": "Eve"}))).await;
        for body in [
            json!({"name": "x", "pipeline_id": pid, "amount": "-5"}),
            json!({"name": "x", "pipeline_id": pid, "amount": "lots"}),
            json!({"name": "x", "pipeline_id": pid, "amount": 12.5}),
            json!({"name": "x", "pipeline_id": pid, "amount": "10", "currency": "ABC"}),
            json!({"name": "x", "pipeline_id": pid, "confidence": 101}),
            json!({"name": "x", "pipeline_id": pid, "stage_id": other}),
            json!({"name": "x", "pipeline_id": pid, "contact_id": stranger["id"]}),
        ] {
            let (st, e) = s.call(Method::POST, "/api/v1/deals", Some(body.clone())).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {e}");
            error_code(&e);
        }
        let (_, e) =
            s.call(Method::POST, "/api/v1/deals", Some(json!({"name": "x", "pipeline_id": pid, "contact_id": stranger["id"]}))).await;
        assert!(e["error"]["message"].as_str().unwrap().contains(stranger["id"].as_str().unwrap()), "the 400 names the contact: {e}");
        let (st, e) =
            s.call(Method::POST, &format!("/api/v1/pipelines/{pid}/stages"), Some(json!({"name": "Bad", "probability": 101}))).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
        assert_eq!(get(&s, "/api/v1/deals").await["data"].as_array().unwrap().len(), 1, "nothing half written");

        // Deal contacts, and the deal as one read shows it.
        let (st, dc) = s
            .call(
                Method::POST,
                &format!("/api/v1/deals/{did}/contacts"),
                Some(json!({"contact_id": ana["id"], "role": "champion", "is_primary": true})),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "the reference answers 201: {dc}");
        let (st, e) = s.call(Method::POST, &format!("/api/v1/deals/{did}/contacts"), Some(json!({"contact_id": stranger["id"]}))).await;
        assert_eq!((st, error_code(&e).as_str()), (StatusCode::BAD_REQUEST, "validation_failed"));
        let got = get(&s, &format!("/api/v1/deals/{did}")).await;
        assert_eq!((got["pipeline_name"].as_str(), got["stage_name"].as_str()), (Some("Sales"), Some("Lead")), "{got}");
        assert_eq!(got["contacts"][0]["contact_id"], ana["id"]);
        assert_eq!(got["contacts"][0]["role"], "champion");
        let theirs = get(&s, &format!("/api/v1/contacts/{}/deals", id(&ana))).await;
        assert_eq!(theirs["data"][0]["id"], did.as_str(), "{theirs}");

        // A move recorded after the fact, then a win; the stage-change log and the versions.
        let before_moves = moment().await;
        let earlier = chrono::Utc::now() - chrono::Duration::days(3);
        let moved = post(
            &s,
            &format!("/api/v1/deals/{did}/move"),
            json!({"stage_id": stage(1), "reason": "demo went well", "valid_from": ts(earlier)}),
        )
        .await;
        assert_eq!(moved["stage_id"], stage(1).as_str(), "{moved}");
        let won = post(&s, &format!("/api/v1/deals/{did}/move"), json!({"stage_id": stage(2), "won_reason": "price"})).await;
        assert_eq!((won["status"].as_str(), won["won_reason"].as_str()), (Some("won"), Some("price")));
        assert!(won["closed_at"].is_string());
        let (st, e) = s.call(Method::POST, &format!("/api/v1/deals/{did}/move"), Some(json!({"stage_id": other}))).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "a stage of another pipeline: {e}");
        let log = get(&s, &format!("/api/v1/deals/{did}/history")).await;
        let log = log["data"].as_array().unwrap();
        assert_eq!(log.len(), 3);
        assert_eq!(log[1]["reason"], "demo went well");
        assert_eq!(log[1]["amount"], "1250.50");
        assert_eq!(log[2]["to_kind"], "won");
        let versions = get(&s, &format!("/api/v1/deals/{did}/version-history")).await;
        assert_eq!(versions["data"].as_array().unwrap().len(), 3, "{versions}");
        let diff = get(&s, &format!("/api/v1/deals/{did}/diff?from={}", ts(before_moves))).await;
        assert!(diff["changes"].as_array().unwrap().iter().any(|c| c["field"] == "stage_id"), "{diff}");
        get(&s, &format!("/api/v1/deals/{did}/timeline?fields=stage_id")).await;
        let old = get(&s, &format!("/api/v1/deals/{did}?as_of={}", ts(before_moves))).await;
        assert_eq!(old["stage_id"], stage(0).as_str());
        assert_eq!(old["_temporal"]["capture_reason"], "create");
        let then = get(&s, &format!("/api/v1/deals?as_of={}&stage_id={}", ts(before_moves), stage(0))).await;
        assert_eq!(then["data"].as_array().unwrap().len(), 1);
        let (st, _) = s.call(Method::GET, &format!("/api/v1/deals?as_of={}&q=acme", ts(before_moves)), None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);

        // Analytics: per currency, as known now and as known then.
        let from = chrono::Utc::now() - chrono::Duration::days(30);
        let a = get(&s, &format!("/api/v1/pipelines/{pid}/analytics?from={}", ts(from))).await;
        assert_eq!(a["won"], 1, "{a}");
        assert_eq!(a["win_rate"].as_f64(), Some(1.0));
        assert_eq!(a["won_totals"][0], json!({"currency": "EUR", "count": 1, "amount": "1250.5", "weighted_amount": "1250.5"}));
        let a_then = get(&s, &format!("/api/v1/pipelines/{pid}/analytics?from={}&as_of={}", ts(from), ts(before_moves))).await;
        assert_eq!(a_then["won"], 0, "{a_then}");
        assert_eq!(a_then["stages"][0]["count"], 1);
        assert_eq!(a_then["forecast"][0]["weighted_amount"], "875.35", "1250.50 × 70 %: {a_then}");

        // Stage deletion moves deals only when told where.
        let (st, e) = s.call(Method::DELETE, &format!("/api/v1/pipelines/{pid}/stages/{}", stage(2)), None).await;
        assert_eq!((st, error_code(&e).as_str()), (StatusCode::CONFLICT, "conflict"), "{e}");
        let (st, del) =
            s.call(Method::DELETE, &format!("/api/v1/pipelines/{pid}/stages/{}?move_to_stage_id={}", stage(2), stage(1)), None).await;
        assert_eq!(st, StatusCode::OK, "{del}");
        assert_eq!(del["moved_deals"], 1);

        // Another tenant sees nothing.
        for path in [format!("/api/v1/deals/{did}"), format!("/api/v1/pipelines/{pid}"), format!("/api/v1/pipelines/{pid}/analytics")] {
            let (st, e) = s.call_as(&stranger_key, Method::GET, &path, None).await;
            assert_eq!((st, error_code(&e).as_str()), (StatusCode::NOT_FOUND, "not_found"), "{path}");
        }
        s.stop().await;
    }
}

type Client = RunningService<RoleClient, ClientConfig>;

async fn call(client: &Client, name: &str, args: Value) -> CallToolResult {
    client
        .call_tool(CallToolRequestParams::new(name.to_owned()).with_arguments(args.as_object().cloned().unwrap()))
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn ok(r: &CallToolResult) -> Value {
    assert_ne!(r.is_error, Some(true), "{r:?}");
    r.structured_content.clone().expect("structuredContent")
}

#[tokio::test]
async fn an_agent_works_a_deal_over_mcp() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let ana = s.person("Ana").await;
        let transport = StreamableHttpClientTransport::with_client(
            worktruck_kit::http::client(),
            StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp/v1", s.mcp)).auth_header(s.key.clone()),
        );
        let client = ClientConfig::new(ClientCapabilities::default(), Implementation::new("crm-test", "1.0"))
            .with_protocol_version(ProtocolVersion::V_2025_06_18)
            .serve(transport)
            .await
            .expect("initialize");
        let pipelines = ok(&call(&client, "pipelines_list", json!({})).await);
        let p = &pipelines["data"][0];
        assert_eq!(p["is_default"], true, "{backend:?} {pipelines}");
        let stages: Vec<String> = p["stages"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect();
        let deal = ok(&call(&client, "deals_create", json!({"name": "Pilot", "amount": "900", "currency": "usd"})).await);
        assert_eq!((deal["currency"].as_str(), deal["stage_id"].as_str()), (Some("USD"), Some(stages[0].as_str())), "{deal}");
        let bad = call(&client, "deals_create", json!({"name": "Bad", "amount": "-1", "currency": "USD"})).await;
        assert_eq!(bad.is_error, Some(true));
        ok(&call(&client, "deals_add_contact", json!({"deal_id": deal["id"], "contact_id": ana["id"], "is_primary": true})).await);
        let upd = ok(&call(&client, "deals_update", json!({"id": deal["id"], "next_step": "Call Ana", "confidence": 80})).await);
        assert_eq!(upd["confidence"], 80);
        let moved = ok(&call(&client, "deals_move", json!({"id": deal["id"], "stage_id": stages[4], "reason": "signed"})).await);
        assert_eq!((moved["status"].as_str(), moved["won_reason"].as_str()), (Some("won"), Some("signed")), "{moved}");
        let got = ok(&call(&client, "deals_get", json!({"id": deal["id"]})).await);
        assert_eq!(got["contacts"][0]["contact_id"], ana["id"]);
        assert_eq!(got["stage_name"], "Won");
        let listed = ok(&call(&client, "deals_list", json!({"status": "won"})).await);
        assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
        let a = ok(&call(&client, "pipeline_analytics", json!({"id": p["id"]})).await);
        assert_eq!(a["won"], 1, "{a}");
        assert_eq!(a["won_totals"][0]["currency"], "USD");
        client.cancel().await.unwrap();
        s.stop().await;
    }
}
