//! The contacts tools over MCP (rmcp's Streamable HTTP client), on SQLite and on
//! PostgreSQL + NATS: channels, lookups, interactions, relationships, cadences, duplicates and
//! merges, with the annotations the reference names.

mod common;

use common::Stack;
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use worktruck_kit::testing::backends;

type Client = RunningService<RoleClient, ClientConfig>;

async fn connect(url: &str, key: &str) -> Client {
    let transport = StreamableHttpClientTransport::with_client(
        worktruck_kit::http::client(),
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(key.to_owned()),
    );
    ClientConfig::new(ClientCapabilities::default(), Implementation::new("worktruck-test", "1.0"))
        .with_protocol_version(ProtocolVersion::V_2025_06_18)
        .serve(transport)
        .await
        .expect("initialize")
}

async fn call(client: &Client, name: &str, args: Value) -> CallToolResult {
    let args = args.as_object().cloned().unwrap();
    client
        .call_tool(CallToolRequestParams::new(name.to_owned()).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("{name} failed at the protocol level: {e}"))
}

/// The structured result of a successful call (checked against its text copy).
fn ok(result: &CallToolResult) -> Value {
    assert_ne!(result.is_error, Some(true), "{result:?}");
    let structured = result.structured_content.clone().expect("structuredContent");
    let text = result.content[0].as_text().expect("a text block").text.clone();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), structured);
    structured
}

/// The `error.code` of a failed call, whose text is the REST envelope.
fn tool_error(result: &CallToolResult) -> String {
    assert_eq!(result.is_error, Some(true), "{result:?}");
    let text = &result.content[0].as_text().expect("a text block").text;
    let v: Value = serde_json::from_str(text).unwrap();
    common::error_code(&v)
}

#[tokio::test]
async fn an_agent_keeps_contacts_through_the_tools() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let client = connect(&format!("{}/mcp/v1", s.mcp), &s.key).await;
        let tools: Vec<Value> = client.list_all_tools().await.unwrap().into_iter().map(|t| serde_json::to_value(t).unwrap()).collect();
        let tool = |n: &str| tools.iter().find(|t| t["name"] == n).unwrap_or_else(|| panic!("{n} missing")).clone();
        assert_eq!(tool("contacts_merge")["annotations"]["destructiveHint"], true);
        assert_eq!(tool("contacts_find_duplicates")["annotations"]["readOnlyHint"], true);
        assert_eq!(tool("contacts_add_channel")["inputSchema"]["properties"]["type"]["type"], "string");

        let mk = |name: &str| json!({"kind": "person", "display_name": name});
        let ada = ok(&call(&client, "contacts_create", mk("Ada Lovelace")).await);
        let twin = ok(&call(&client, "contacts_create", mk("Ada Lovelace")).await);
        let byron = ok(&call(&client, "contacts_create", mk("Lord Byron")).await);
        let (a, t, b) = (ada["id"].as_str().unwrap(), twin["id"].as_str().unwrap(), byron["id"].as_str().unwrap());

        let ch = ok(&call(&client, "contacts_add_channel", json!({"contact_id": a, "type": "phone", "value": "+1 (415) 555-0100"})).await);
        assert_eq!(ch["canonical_value"], "+14155550100", "{backend:?}");
        let r = call(&client, "contacts_add_channel", json!({"contact_id": a, "type": "phone", "value": "555-0100"})).await;
        assert_eq!(tool_error(&r), "validation_failed");
        let found = ok(&call(&client, "contacts_find_by_channel", json!({"type": "phone", "value": "+14155550100"})).await);
        assert_eq!(found["id"], a);

        let (st, _) = s
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/contacts/{b}/relationships"),
                Some(json!({"related_contact_id": a, "type": "parent"})),
            )
            .await;
        assert!(st.is_success());
        let rels = ok(&call(&client, "contacts_list_relationships", json!({"contact_id": a})).await);
        assert_eq!(rels["data"][0]["type"], "child");
        assert_eq!(rels["data"][0]["related_display_name"], "Lord Byron");

        let (st, _) = s.call(reqwest::Method::PATCH, &format!("/api/v1/contacts/{b}"), Some(json!({"stay_in_touch_days": 14}))).await;
        assert!(st.is_success());
        let due = ok(&call(&client, "contacts_due_for_contact", json!({})).await);
        assert_eq!(due["data"][0]["contact"]["id"], b);
        let logged = ok(&call(&client, "contacts_log_interaction", json!({"contact_id": b, "type": "call", "summary": "Poetry"})).await);
        assert_eq!(logged["type"], "call");
        assert!(ok(&call(&client, "contacts_due_for_contact", json!({})).await)["data"].as_array().unwrap().is_empty());

        let dups = ok(&call(&client, "contacts_find_duplicates", json!({})).await);
        assert_eq!(dups["data"][0]["contacts"].as_array().unwrap().len(), 2, "{dups}");
        let preview = ok(&call(&client, "contacts_merge_preview", json!({"survivor_id": a, "merged_ids": [t]})).await);
        assert_eq!(preview["contact"]["channels"].as_array().unwrap().len(), 1);
        let merged = ok(&call(&client, "contacts_merge", json!({"survivor_id": a, "merged_ids": [t]})).await);
        assert!(merged["merge_id"].is_string());
        let r = call(&client, "contacts_get", json!({"id": t})).await;
        assert_eq!(tool_error(&r), "not_found");
        client.cancel().await.unwrap();
        s.stop().await;
    }
}
