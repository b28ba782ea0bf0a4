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
