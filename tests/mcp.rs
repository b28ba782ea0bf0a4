//! The MCP gateway end to end: the whole system in-process (SQLite, and PostgreSQL + NATS when
//! configured), driven by rmcp's Streamable HTTP client and by raw HTTP where exact statuses and
//! headers matter.

mod common;

use common::Stack;
use reqwest::StatusCode;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
    ProtocolVersion,
};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Map, Value, json};
use worktruck_kit::testing::backends;

type Client = RunningService<RoleClient, ClientConfig>;

async fn connect(url: &str, key: &str) -> Client {
    let transport = StreamableHttpClientTransport::with_client(
        worktruck_kit::http::client(),
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(key.to_owned()),
    );
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("worktruck-test", "1.0"),
    )
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
    let structured = result
        .structured_content
        .clone()
        .expect("structuredContent");
    let text = result.content[0]
        .as_text()
        .expect("a text block")
        .text
        .clone();
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

fn endpoint(s: &Stack) -> String {
    format!("{}/mcp/v1", s.mcp)
}

#[tokio::test]
async fn tools_from_the_registry_over_streamable_http() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let client = connect(&endpoint(&s), &s.key).await;
        assert_eq!(
            client.peer_info().unwrap().protocol_version,
            ProtocolVersion::V_2025_06_18
        );

        let tools: Vec<Value> = client
            .list_all_tools()
            .await
            .unwrap()
            .into_iter()
            .map(|t| serde_json::to_value(t).unwrap())
            .collect();
        let by_name = |n: &str| {
            tools
                .iter()
                .find(|t| t["name"] == n)
                .unwrap_or_else(|| panic!("{n} missing"))
                .clone()
        };
        let mut names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "agents_enqueue_run",
                "agents_get_run",
                "agents_list_runs",
                "apps_list",
                "apps_probe",
                "contacts_add_channel",
                "contacts_create",
                "contacts_delete",
                "contacts_due_for_contact",
                "contacts_find_by_channel",
                "contacts_find_duplicates",
                "contacts_get",
                "contacts_list_relationships",
                "contacts_log_interaction",
                "contacts_merge",
                "contacts_merge_preview",
                "contacts_search",
                "contacts_update",
                "deals_add_contact",
                "deals_create",
                "deals_get",
                "deals_list",
                "deals_move",
                "deals_update",
                "events_check_availability",
                "events_create",
                "events_delete",
                "events_get",
                "events_list",
                "events_search",
                "events_update",
                "links_list",
                "notes_create",
                "notes_delete",
                "notes_get",
                "notes_list_backlinks",
                "notes_search",
                "notes_update",
                "pipeline_analytics",
                "pipelines_list",
                "projects_list",
                "tasks_add_comment",
                "tasks_add_dependency",
                "tasks_complete",
                "tasks_create",
                "tasks_delete",
                "tasks_get",
                "tasks_list",
                "tasks_list_overdue",
                "tasks_search",
                "tasks_update"
            ]
        );
        let get = by_name("contacts_get");
        assert_eq!(get["annotations"]["readOnlyHint"], true, "{get}");
        assert_eq!(get["annotations"]["idempotentHint"], true);
        assert_eq!(get["annotations"]["title"], "Get a contact");
        assert_eq!(get["title"], "Get a contact");
        assert!(
            get["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{get}"
        );
        assert_eq!(get["inputSchema"]["required"], json!(["id"]));
        assert_eq!(get["outputSchema"]["type"], "object");
        let delete = by_name("contacts_delete");
        assert_eq!(delete["annotations"]["destructiveHint"], true, "{delete}");
        let create = by_name("contacts_create");
        assert_eq!(
            create["inputSchema"]["properties"]["kind"]["type"],
            "string"
        );
        assert_eq!(create["annotations"]["readOnlyHint"], false);

        // Create, get, search, delete.
        let c = ok(&call(
            &client,
            "contacts_create",
            json!({"kind": "person", "display_name": "Ada Lovelace"}),
        )
        .await);
        assert_eq!(c["display_name"], "Ada Lovelace", "{backend:?}");
        assert_eq!(c["kind"], "person");
        let id = c["id"].as_str().unwrap().to_owned();
        let got = ok(&call(&client, "contacts_get", json!({"id": id})).await);
        assert_eq!(got["id"], id.as_str());
        // Visible through REST too: one system behind both surfaces.
        let (st, rest) = s
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/contacts/{id}"),
                None,
            )
            .await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(rest, got);
        // A field mask trims a read tool's answer (of each item, for a list), as `fields=` does
        // REST's; an unknown field is a tool error; a write tool takes no mask.
        assert_eq!(get["inputSchema"]["properties"]["fields"]["type"], "string", "{get}");
        assert!(create["inputSchema"]["properties"].get("fields").is_none(), "{create}");
        let trimmed = ok(&call(&client, "contacts_get", json!({"id": id, "fields": "id,display_name"})).await);
        assert_eq!(trimmed, json!({"id": id, "display_name": "Ada Lovelace"}));
        let page = ok(&call(&client, "contacts_search", json!({"q": "lovelace", "fields": "id"})).await);
        assert!(page["data"].as_array().unwrap().iter().all(|x| x.as_object().unwrap().len() == 1), "{page}");
        let r = call(&client, "contacts_get", json!({"id": id, "fields": "id,nope"})).await;
        assert_eq!(tool_error(&r), "invalid_argument");
        let found = ok(&call(&client, "contacts_search", json!({"q": "lovelace"})).await);
        assert!(
            found["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["id"] == id.as_str()),
            "{found}"
        );

        // Invalid arguments are tool errors with REST's code, and the session survives them.
        let r = call(
            &client,
            "contacts_create",
            json!({"kind": "person", "display_name": "X", "nope": 1}),
        )
        .await;
        assert_eq!(tool_error(&r), "invalid_argument");
        let r = call(
            &client,
            "contacts_create",
            json!({"kind": "dragon", "display_name": "X"}),
        )
        .await;
        assert_eq!(tool_error(&r), "invalid_argument");
        let r = call(
            &client,
            "contacts_get",
            json!({"id": "00000000-0000-7000-8000-000000000000"}),
        )
        .await;
        assert_eq!(tool_error(&r), "not_found");
        assert!(
            client
                .call_tool(CallToolRequestParams::new("no_such_tool"))
                .await
                .is_err()
        );

        // Another tenant cannot read the contact.
        let other_key = s.new_tenant("other").await;
        let other = connect(&endpoint(&s), &other_key).await;
        let r = call(&other, "contacts_get", json!({"id": id})).await;
        assert_eq!(tool_error(&r), "not_found");
        other.cancel().await.unwrap();

        let deleted = ok(&call(&client, "contacts_delete", json!({"id": id})).await);
        assert_eq!(deleted["deleted"], true);
        let r = call(&client, "contacts_get", json!({"id": id})).await;
        assert_eq!(tool_error(&r), "not_found");
        client.cancel().await.unwrap();

        // Toolsets narrow the list.
        let narrowed = connect(&format!("{}?toolsets=contacts", endpoint(&s)), &s.key).await;
        assert_eq!(narrowed.list_all_tools().await.unwrap().len(), 13);
        narrowed.cancel().await.unwrap();
        let none = connect(&format!("{}?toolsets=nothing", endpoint(&s)), &s.key).await;
        assert!(none.list_all_tools().await.unwrap().is_empty());
        let r = none
            .call_tool(CallToolRequestParams::new("contacts_search").with_arguments(Map::new()))
            .await;
        assert!(r.is_err(), "a tool outside the toolsets is unknown");
        none.cancel().await.unwrap();
        s.stop().await;
    }
}

/// Example arguments for a schema: every required property (or, with `all`, every property)
/// with a value of its type, following `$ref`s into the root's `$defs` (at most `depth` deep, so
/// recursive messages end).
fn example(schema: &Value, root: &Value, all: bool, depth: usize) -> Value {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.strip_prefix("#/$defs/").expect("local $ref");
        if depth == 0 {
            return Value::Null;
        }
        return example(&root["$defs"][name], root, all, depth - 1);
    }
    for combinator in ["anyOf", "oneOf"] {
        if let Some(first) = schema.get(combinator).and_then(|v| v.get(0)) {
            return example(first, root, all, depth);
        }
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values.last().unwrap().clone();
    }
    let ty = match schema.get("type") {
        Some(Value::Array(types)) => types.iter().find(|t| *t != "null").and_then(Value::as_str),
        Some(t) => t.as_str(),
        None => None,
    };
    match ty {
        Some("object") => {
            let mut out = Map::new();
            let names: Vec<String> = if all && depth > 0 {
                schema
                    .get("properties")
                    .and_then(Value::as_object)
                    .map(|p| p.keys().cloned().collect())
                    .unwrap_or_default()
            } else {
                schema
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|n| n.as_str().unwrap().to_owned())
                    .collect()
            };
            for name in names {
                let value = example(&schema["properties"][&name], root, all, depth.saturating_sub(1));
                if !value.is_null() {
                    out.insert(name, value);
                }
            }
            Value::Object(out)
        }
        Some("array") if all && depth > 0 => {
            let item = example(&schema["items"], root, all, depth - 1);
            if item.is_null() { json!([]) } else { json!([item]) }
        }
        Some("array") => json!([]),
        Some("string") => match schema.get("format").and_then(Value::as_str) {
            Some("date-time") => json!("2020-01-01T00:00:00Z"),
            Some("uuid") => json!(uuid::Uuid::new_v4().to_string()),
            _ if schema.get("contentEncoding") == Some(&json!("base64")) => json!("AAAA"),
            _ if schema.get("pattern").is_some() => json!("1s"),
            _ => json!("example"),
        },
        Some("integer") => json!(1),
        Some("number") => json!(1.5),
        Some("boolean") => json!(true),
        Some("null") => Value::Null,
        _ => json!({}),
    }
}

/// Checks a tool's input schema against the JSON Schema 2020-12 meta-schema and returns a
/// validator for it (formats asserted, so a `date-time` must be one).
fn validator(name: &str, schema: &Value) -> jsonschema::Validator {
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema", "{name}");
    assert_eq!(schema["type"], "object", "{name}: MCP input schemas are objects");
    if let Err(e) = jsonschema::draft202012::meta::validate(schema) {
        panic!("{name}: not a valid JSON Schema: {e} at {}", e.instance_path());
    }
    jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("{name}: schema does not compile: {e}"))
}

fn violations(validator: &jsonschema::Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}

#[tokio::test]
async fn every_schema_is_valid_and_its_example_call_is_served() {
    let backend = backends()[0];
    let s = Stack::start(backend).await;
    let client = connect(&endpoint(&s), &s.key).await;
    let tools = client.list_all_tools().await.unwrap();
    assert!(!tools.is_empty());
    for tool in tools {
        let tool = serde_json::to_value(tool).unwrap();
        let name = tool["name"].as_str().unwrap().to_owned();
        let schema = &tool["inputSchema"];
        let input = validator(&name, schema);
        // A wrong shape is what the schema exists to refuse.
        // The gateway refuses unknown fields, and the schema says so.
        assert_eq!(schema["additionalProperties"], false, "{name}");
        assert!(!input.is_valid(&json!({"no_such_field": 1})), "{name}");
        assert!(!input.is_valid(&json!([])), "{name}: an array passes as the arguments");
        let output = tool.get("outputSchema").map(|o| {
            jsonschema::draft202012::meta::validate(o)
                .unwrap_or_else(|e| panic!("{name} output schema: {e}"));
            jsonschema::options().should_validate_formats(true).build(o).unwrap()
        });
        // The least call (required properties) and the fullest (every property, nested).
        for all in [false, true] {
            let mut args = example(schema, schema, all, 4);
            // A field mask's valid values depend on the answer: `fields` has its own test.
            args.as_object_mut().unwrap().remove("fields");
            let errors = violations(&input, &args);
            assert!(errors.is_empty(), "{name} {args}: {errors:?}");
            // The call may fail on the service's rules (no such id), never on its shape, and
            // never at the protocol level.
            let result = call(&client, &name, args.clone()).await;
            if result.is_error == Some(true) {
                tool_error(&result);
                let text = &result.content[0].as_text().unwrap().text;
                for shape_error in [
                    "unknown field",
                    "invalid value for field",
                    "expected a JSON object",
                    "malformed JSON",
                ] {
                    assert!(
                        !text.contains(shape_error),
                        "{name}: example arguments {args} refused: {text}"
                    );
                }
            } else if let Some(output) = &output {
                let errors = violations(output, &ok(&result));
                assert!(errors.is_empty(), "{name} output: {errors:?}");
            }
        }
    }
    client.cancel().await.unwrap();
    s.stop().await;
}

/// A raw POST to the MCP endpoint; returns status, headers and the JSON-RPC message (the last
/// `data:` line of an SSE body, or the JSON body).
async fn post(
    s: &Stack,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: Value,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = s
        .http
        .post(endpoint(s))
        .header("accept", "application/json, text/event-stream")
        .json(&body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (status, headers, text) = send(req).await;
    let value = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or_else(|| serde_json::from_str(&text).unwrap_or(Value::String(text)));
    (status, headers, value)
}

fn initialize(version: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
           "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}})
}

#[tokio::test]
async fn http_level_rules_auth_versions_sessions_and_metadata() {
    for backend in backends() {
        let s = Stack::start(backend).await;

        // A newer revision is answered with ours.
        let (st, h, init) = post(&s, Some(&s.key), &[("x-request-id", "req-mcp-1")], initialize("2099-01-01")).await;
        assert_eq!(st, StatusCode::OK, "{init}");
        assert_eq!(h["x-request-id"], "req-mcp-1", "the caller's request id is echoed");
        assert_eq!(init["result"]["protocolVersion"], "2025-06-18", "{init}");
        let session = h
            .get("mcp-session-id")
            .expect("a session id")
            .to_str()
            .unwrap()
            .to_owned();
        let v = [
            ("mcp-session-id", session.as_str()),
            ("mcp-protocol-version", "2025-06-18"),
        ];
        let (st, _, _) = post(
            &s,
            Some(&s.key),
            &v,
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        )
        .await;
        assert_eq!(st, StatusCode::ACCEPTED);
        let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
        let (st, _, tools) = post(&s, Some(&s.key), &v, list.clone()).await;
        assert_eq!(st, StatusCode::OK, "{tools}");
        // Every tool of the registry, no more.
        let registered = worktruck_proto::registry::Registry::embedded().unwrap().tools().len();
        assert_eq!(tools["result"]["tools"].as_array().unwrap().len(), registered);

        // The session is not served to another tenant's key.
        let other = s.new_tenant("thief").await;
        let (st, _, body) = post(&s, Some(&other), &v, list.clone()).await;
        assert!(matches!(st.as_u16(), 401 | 403 | 404), "{st} {body}");
        assert!(body.get("result").is_none(), "{body}");

        // An unsupported MCP-Protocol-Version header is 400, even one rmcp knows.
        for bad in ["1999-01-01", "2025-11-25"] {
            let h = [
                ("mcp-session-id", session.as_str()),
                ("mcp-protocol-version", bad),
            ];
            let (st, h, body) = post(&s, Some(&s.key), &h, list.clone()).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {body}");
            assert!(h.contains_key("x-ratelimit-remaining"), "{bad}: refusals carry the limit headers");
        }

        // No credentials: 401 pointing at the metadata, with the error envelope.
        let (st, h, body) = post(&s, None, &[], initialize("2025-06-18")).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        let prm_url = format!("{}/.well-known/oauth-protected-resource/mcp/v1", s.mcp);
        assert_eq!(
            h.get("www-authenticate").unwrap().to_str().unwrap(),
            format!("Bearer resource_metadata=\"{prm_url}\"")
        );
        assert_eq!(common::error_code(&body), "unauthenticated");
        let (st, h, _) = post(
            &s,
            Some("bsk_test_not_a_key"),
            &[],
            initialize("2025-06-18"),
        )
        .await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        assert!(
            h.get("www-authenticate")
                .unwrap()
                .to_str()
                .unwrap()
                .contains("error=\"invalid_token\"")
        );

        // The protected-resource metadata, public, at both locations.
        for url in [
            prm_url.clone(),
            format!("{}/.well-known/oauth-protected-resource", s.mcp),
        ] {
            let resp = s.http.get(&url).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{url}");
            let doc: Value = resp.json().await.unwrap();
            assert_eq!(doc["resource"], endpoint(&s), "{doc}");
            assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
            let scopes = doc["scopes_supported"].as_array().unwrap();
            assert!(
                scopes.contains(&json!("contacts:read"))
                    && scopes.contains(&json!("contacts:write")),
                "{doc}"
            );
            assert!(
                doc.get("authorization_servers").is_none(),
                "no issuer configured: {doc}"
            );
        }
        s.stop().await;
    }
}

/// Sends a request; status, headers and body text.
async fn send(req: reqwest::RequestBuilder) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

/// A raw request to the MCP endpoint with exactly these headers; status, headers, JSON body.
async fn raw(
    s: &Stack,
    method: reqwest::Method,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = s.http.request(method, endpoint(s)).bearer_auth(&s.key).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (status, headers, text) = send(req).await;
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: not JSON: {text:?}"));
    (status, headers, body)
}

#[tokio::test]
async fn one_caller_holds_a_bounded_number_of_sessions() {
    let s = Stack::start(backends()[0]).await;
    let mut sessions = Vec::new();
    for _ in 0..64 {
        let (st, h, v) = post(&s, Some(&s.key), &[], initialize("2025-06-18")).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        sessions.push(h["mcp-session-id"].to_str().unwrap().to_owned());
    }
    let (st, h, v) = post(&s, Some(&s.key), &[], initialize("2025-06-18")).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(common::error_code(&v), "rate_limited");
    assert!(h.contains_key("retry-after"));
    // Another caller is not affected.
    let other = s.new_tenant("other").await;
    let (st, _, v) = post(&s, Some(&other), &[], initialize("2025-06-18")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // Ending a session makes room for a new one.
    let end = s
        .http
        .delete(endpoint(&s))
        .bearer_auth(&s.key)
        .header("mcp-session-id", &sessions[0])
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    // 204, not rmcp's 202 (which the Python SDK reports as a failed termination).
    assert_eq!(end.status(), StatusCode::NO_CONTENT);
    assert!(end.text().await.unwrap().is_empty());
    let (st, _, v) = post(&s, Some(&s.key), &[], initialize("2025-06-18")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    s.stop().await;
}

#[tokio::test]
async fn transport_refusals_use_the_error_envelope() {
    let s = Stack::start(backends()[0]).await;
    let init = initialize("2025-06-18").to_string();
    let both = ("accept", "application/json, text/event-stream");
    let json_body = ("content-type", "application/json");
    type Case<'a> = (&'a str, reqwest::Method, Vec<(&'a str, &'a str)>, String, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("no Accept", reqwest::Method::POST, vec![json_body], init.clone(), 406, "not_acceptable"),
        ("a text body", reqwest::Method::POST, vec![both, ("content-type", "text/plain")], init.clone(), 415, "unsupported_media_type"),
        ("malformed JSON", reqwest::Method::POST, vec![both, json_body], "{nope".into(), 400, "invalid_argument"),
        ("an empty body", reqwest::Method::POST, vec![both, json_body], String::new(), 400, "invalid_argument"),
        ("PUT", reqwest::Method::PUT, vec![both, json_body], init.clone(), 405, "method_not_allowed"),
        // A JSON document over the 1 MiB limit (mcp.body_limit_bytes).
        ("a huge body", reqwest::Method::POST, vec![both, json_body], format!("[\"{}\"]", "x".repeat(1024 * 1024 + 1)), 413, "payload_too_large"),
    ];
    for (what, method, headers, body, status, code) in cases {
        let (st, h, v) = raw(&s, method, &headers, body).await;
        assert_eq!(st.as_u16(), status, "{what}: {v}");
        assert_eq!(common::error_code(&v), code, "{what}: {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {v}");
        assert!(h.contains_key("x-ratelimit-remaining"), "{what}: rate-limit headers");
        if status == 405 {
            assert!(h.contains_key("allow"), "{what}: Allow is kept");
        }
        if what == "malformed JSON" {
            assert!(v["error"]["message"].as_str().unwrap().contains("malformed JSON"), "{v}");
        }
    }
    // The same endpoint still works for a well-formed request.
    let (st, _, v) = post(&s, Some(&s.key), &[], initialize("2025-06-18")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["result"]["protocolVersion"], "2025-06-18", "{v}");
    s.stop().await;
}

#[tokio::test]
async fn scopes_apply_per_tool_as_over_rest() {
    let s = Stack::start(worktruck_kit::testing::Backend::Sqlite).await;
    let c = s.person("Scoped").await;
    let (_, k) = s
        .call(
            reqwest::Method::POST,
            "/api/v1/api-keys",
            Some(json!({"name": "reader", "scopes": ["contacts:read"]})),
        )
        .await;
    let reader = connect(&endpoint(&s), k["key"].as_str().unwrap()).await;
    let got = ok(&call(&reader, "contacts_get", json!({"id": c["id"]})).await);
    assert_eq!(got["display_name"], "Scoped");
    let r = call(
        &reader,
        "contacts_create",
        json!({"kind": "person", "display_name": "x"}),
    )
    .await;
    assert_eq!(tool_error(&r), "insufficient_scope");
    let r = call(&reader, "contacts_delete", json!({"id": c["id"]})).await;
    assert_eq!(tool_error(&r), "insufficient_scope");
    reader.cancel().await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn mcp_requests_count_against_the_same_plan_limits_as_rest() {
    let s = Stack::start(worktruck_kit::testing::Backend::Sqlite).await;
    let free = s.new_tenant("free mcp").await;
    worktruck_kit::testing::early_in_a_minute().await;
    // REST and MCP share one limiter: 20 REST requests, then 10 MCP ones, then the 31st is refused.
    for _ in 0..20 {
        let (st, _) = s.call_as(&free, reqwest::Method::GET, "/api/v1/contacts", None).await;
        assert_eq!(st, StatusCode::OK);
    }
    for i in 0..10 {
        let (st, h, _) = post(&s, Some(&free), &[], initialize("2025-06-18")).await;
        assert_eq!(st, StatusCode::OK, "request {i}");
        assert_eq!(h["x-ratelimit-limit"], "30");
    }
    let (st, h, body) = post(&s, Some(&free), &[], initialize("2025-06-18")).await;
    assert_eq!(st.as_u16(), 429, "{body}");
    assert!(h.contains_key("retry-after"));
    assert_eq!(body["error"]["code"], "rate_limited");
    // The operator's tenant is not slowed.
    let (st, _, _) = post(&s, Some(&s.key), &[], initialize("2025-06-18")).await;
    assert_eq!(st, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn a_configured_host_is_served_and_any_other_refused() {
    for backend in backends() {
        // As in a cluster: clients reach the gateway through its Service name.
        let s = Stack::start_with(backend, |cfg| {
            cfg.mcp.allowed_hosts = vec!["worktruck-mcp-gateway".into(), "mcp.internal:8443".into()];
        })
        .await;
        let port = s.mcp.rsplit(':').next().unwrap().to_owned();
        let cases = [
            (format!("worktruck-mcp-gateway:{port}"), 200),
            ("worktruck-mcp-gateway".to_owned(), 200),
            ("mcp.internal:8443".to_owned(), 200),
            (format!("127.0.0.1:{port}"), 200),
            // Only the configured port of a name given with one.
            ("mcp.internal:9999".to_owned(), 403),
            (format!("evil.example:{port}"), 403),
            ("worktruck-mcp-gateway.evil.example".to_owned(), 403),
        ];
        for (host, want) in cases {
            let (st, h, v) = post(&s, Some(&s.key), &[("host", host.as_str())], initialize("2025-06-18")).await;
            assert_eq!(st.as_u16(), want, "Host: {host}: {v}");
            assert!(h.contains_key("x-request-id"), "{host}: MCP answers echo X-Request-Id");
            if want == 200 {
                assert_eq!(v["result"]["protocolVersion"], "2025-06-18", "{host}: {v}");
                let session = h["mcp-session-id"].to_str().unwrap();
                let end = s
                    .http
                    .delete(endpoint(&s))
                    .bearer_auth(&s.key)
                    .header("host", host.as_str())
                    .header("mcp-session-id", session)
                    .header("mcp-protocol-version", "2025-06-18")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(end.status(), StatusCode::NO_CONTENT, "{host}");
            } else {
                assert_eq!(common::error_code(&v), "permission_denied", "{host}: {v}");
                assert!(h.contains_key("x-ratelimit-remaining"), "{host}: an admitted caller's refusal");
            }
        }
        s.stop().await;
    }
}
