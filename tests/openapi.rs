//! `/docs/openapi.json` describes exactly the routes that exist.

mod common;

use common::Stack;
use worktruck_kit::testing::Backend;
use worktruck_proto::registry::Registry;

#[tokio::test]
async fn openapi_describes_every_route_with_schemas() {
    let s = Stack::start(Backend::Sqlite).await;
    let resp = s.http.get(format!("{}/docs/openapi.json", s.base)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let doc: serde_json::Value = resp.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let registry = Registry::load(worktruck_proto::DESCRIPTOR_SET).unwrap();
    let routes = registry.routes();
    assert!(routes.len() >= 14, "contacts and tenants routes are registered");
    let mut described = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) || path == "/docs/openapi.json" {
                continue;
            }
            described += 1;
            // A JSON schema, or binary for the routes whose body is not JSON (google.api.HttpBody).
            let described_body = |content: &serde_json::Value| {
                content["application/json"]["schema"].is_object() || content["*/*"]["schema"]["format"] == "binary"
            };
            let ok = op["responses"].as_object().unwrap().iter().any(|(code, r)| code.starts_with('2') && described_body(&r["content"]));
            assert!(ok, "{method} {path} has a success schema");
            if method == "post" || method == "patch" {
                assert!(described_body(&op["requestBody"]["content"]), "{method} {path} has a request schema");
            }
        }
    }
    assert_eq!(described, routes.len(), "every route, and nothing else");
    for r in routes {
        let path = r.path.as_str();
        let method = r.method.as_str().to_lowercase();
        assert!(doc["paths"][path][&method].is_object(), "{method} {path} described");
    }
    s.stop().await;
}

/// The document passes `redocly lint` (the recommended rules, with `gateway/redocly.yaml`): no
/// error and no warning. CI installs the linter (`.ci/run`); elsewhere the test needs it on the
/// PATH (`npm install -g @redocly/cli`) and says so when it is not.
#[tokio::test]
async fn the_document_passes_redocly_lint() {
    let installed = std::process::Command::new("redocly").arg("--version").output().is_ok_and(|o| o.status.success());
    if !installed {
        assert!(std::env::var("CI").is_err(), "CI must have redocly on the PATH (.ci/run installs it)");
        eprintln!("redocly is not installed: npm install -g @redocly/cli");
        return;
    }
    let s = Stack::start(Backend::Sqlite).await;
    let doc = s.http.get(format!("{}/docs/openapi.json", s.base)).send().await.unwrap().text().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, doc).unwrap();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway/redocly.yaml");
    let out = std::process::Command::new("redocly")
        .args(["lint", "--format=json", "--config", config])
        .arg(&file)
        .env("REDOCLY_TELEMETRY", "off")
        .env("REDOCLY_SUPPRESS_UPDATE_NOTICE", "true")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("redocly's JSON report ({e}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    let problems: Vec<String> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{} {}: {}", p["severity"], p["ruleId"], p["message"]))
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(out.status.success());
    s.stop().await;
}

/// Real answers validate against the schemas the document gives them, `required` lists and all:
/// a generated client that trusts them does not break on what the API sends.
#[tokio::test]
async fn answers_match_their_documented_schemas() {
    use reqwest::Method;
    use serde_json::json;
    let s = Stack::start(Backend::Sqlite).await;
    let doc: serde_json::Value = s.http.get(format!("{}/docs/openapi.json", s.base)).send().await.unwrap().json().await.unwrap();
    let check = |method: &str, path: &str, status: u16, body: &serde_json::Value| {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is documented");
        let mut response = op["responses"][status.to_string()].clone();
        if let Some(r) = response["$ref"].as_str() {
            response = doc["components"]["responses"][r.rsplit('/').next().unwrap()].clone();
        }
        let schema = &response["content"]["application/json"]["schema"];
        assert!(schema.is_object(), "{method} {path} documents {status}");
        let root = json!({"$ref": "#/x", "x": schema, "components": doc["components"]});
        let validator = jsonschema::options().should_validate_formats(true).build(&root).unwrap();
        let errors: Vec<String> = validator.iter_errors(body).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{method} {path} {status}: {errors:#?}\n{body}");
    };
    let (st, contact) = s
        .call(
            Method::POST,
            "/api/v1/contacts",
            Some(json!({"kind": "person", "display_name": "Ada", "metadata": {"team": "core"}})),
        )
        .await;
    assert_eq!(st.as_u16(), 201, "{contact}");
    check("post", "/api/v1/contacts", st.as_u16(), &contact);
    let id = contact["id"].as_str().unwrap();
    let (st, channel) = s
        .call(Method::POST, &format!("/api/v1/contacts/{id}/channels"), Some(json!({"type": "email", "value": "ada@example.com"})))
        .await;
    check("post", "/api/v1/contacts/{contact_id}/channels", st.as_u16(), &channel);
    let (st, got) = s.call(Method::GET, &format!("/api/v1/contacts/{id}"), None).await;
    check("get", "/api/v1/contacts/{id}", st.as_u16(), &got);
    let (st, list) = s.call(Method::GET, "/api/v1/contacts", None).await;
    check("get", "/api/v1/contacts", st.as_u16(), &list);
    let (st, history) = s.call(Method::GET, &format!("/api/v1/contacts/{id}/history"), None).await;
    check("get", "/api/v1/contacts/{id}/history", st.as_u16(), &history);
    let (st, missing) = s.call(Method::GET, &format!("/api/v1/contacts/{}", uuid::Uuid::now_v7()), None).await;
    check("get", "/api/v1/contacts/{id}", st.as_u16(), &missing);
    let (st, cal) = s.call(Method::POST, "/api/v1/calendars", Some(json!({"name": "Work", "timezone": "Europe/Oslo"}))).await;
    check("post", "/api/v1/calendars", st.as_u16(), &cal);
    let event = json!({"title": "Review", "start_at": "2027-01-04T09:00:00Z", "end_at": "2027-01-04T10:00:00Z", "rrule": "FREQ=WEEKLY"});
    let (st, ev) = s.call(Method::POST, "/api/v1/events", Some(event)).await;
    check("post", "/api/v1/events", st.as_u16(), &ev);
    let path = "/api/v1/events?from=2027-01-01T00:00:00Z&to=2027-02-01T00:00:00Z&expand=true";
    let (st, expanded) = s.call(Method::GET, path, None).await;
    check("get", "/api/v1/events", st.as_u16(), &expanded);
    let (st, tenant) = s.call(Method::GET, "/api/v1/tenant", None).await;
    check("get", "/api/v1/tenant", st.as_u16(), &tenant);
    let (st, bad) = s.call(Method::POST, "/api/v1/contacts", Some(json!({"kind": "person"}))).await;
    check("post", "/api/v1/contacts", st.as_u16(), &bad);
    // Names are readable.
    for name in ["Contact", "CalendarEvent", "Temporal", "Error"] {
        assert!(doc["components"]["schemas"][name].is_object(), "{name}");
    }
    s.stop().await;
}

/// A client generated from the document (openapi-python-client, as a Python integrator would
/// make one) works against the server and tells a 404 from a 409 by type: both are its `Error`
/// model, with the typed code `ErrorErrorCode.NOT_FOUND` or `ErrorErrorCode.CONFLICT`, and a
/// success is the entity's own model. CI installs the generator (`.ci/run`); elsewhere the test
/// needs it on the PATH (`pip install openapi-python-client`) and says so when it is not.
#[tokio::test]
async fn a_generated_client_tells_a_404_from_a_409_by_type() {
    use reqwest::Method;
    use serde_json::json;
    let installed = std::process::Command::new("openapi-python-client").arg("--version").output().is_ok_and(|o| o.status.success());
    if !installed {
        assert!(std::env::var("CI").is_err(), "CI must have openapi-python-client on the PATH (.ci/run installs it)");
        eprintln!("openapi-python-client is not installed: pip install openapi-python-client");
        return;
    }
    let s = Stack::start(Backend::Sqlite).await;
    let doc = s.http.get(format!("{}/docs/openapi.json", s.base)).send().await.unwrap().text().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("openapi.json"), doc).unwrap();
    let out = std::process::Command::new("openapi-python-client")
        .args(["generate", "--path", "openapi.json", "--output-path", "client", "--meta", "none"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("Unable to process"), "every schema generates: {said}");
    // What the Python side uses: a contact, and a calendar that holds an event (its delete is a 409).
    let (_, contact) = s.call(Method::POST, "/api/v1/contacts", Some(json!({"kind": "person", "display_name": "Ada"}))).await;
    let (_, cal) = s.call(Method::POST, "/api/v1/calendars", Some(json!({"name": "Work", "timezone": "Europe/Oslo"}))).await;
    let event = json!({"calendar_id": cal["id"], "title": "Review", "start_at": "2027-01-04T09:00:00Z", "end_at": "2027-01-04T10:00:00Z"});
    let (st, _) = s.call(Method::POST, "/api/v1/events", Some(event)).await;
    assert_eq!(st.as_u16(), 201);
    let script = r#"
import sys
from client import AuthenticatedClient
from client.api.contacts_service import contacts_service_get_contact
from client.api.calendar_service import calendar_service_delete_calendar
from client.models import Contact, Error, ErrorErrorCode

base, token, contact, calendar, missing = sys.argv[1:6]
c = AuthenticatedClient(base_url=base, token=token)
got = contacts_service_get_contact.sync_detailed(id=contact, client=c)
assert got.status_code == 200 and isinstance(got.parsed, Contact), got
assert got.parsed.display_name == "Ada", got.parsed
gone = contacts_service_get_contact.sync_detailed(id=missing, client=c)
assert gone.status_code == 404 and isinstance(gone.parsed, Error), gone
assert gone.parsed.error.code == ErrorErrorCode.NOT_FOUND, gone.parsed
held = calendar_service_delete_calendar.sync_detailed(id=calendar, client=c)
assert held.status_code == 409 and isinstance(held.parsed, Error), held
assert held.parsed.error.code == ErrorErrorCode.CONFLICT, held.parsed
print("ok")
"#;
    std::fs::write(dir.path().join("check.py"), script).unwrap();
    // Off the test's runtime, which also runs the server the script calls.
    let args = [s.base.clone(), s.key.clone(), contact["id"].as_str().unwrap().to_owned(), cal["id"].as_str().unwrap().to_owned(), uuid::Uuid::now_v7().to_string()];
    let cwd = dir.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3").arg("check.py").args(args).current_dir(cwd).output().unwrap()
    })
    .await
    .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim_end().ends_with("ok"), "{said}");
    s.stop().await;
}
