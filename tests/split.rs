//! `worktruck serve <role>`: every service of the table, the REST gateway and the MCP gateway as
//! separate processes of the real binary, wired by configuration alone (as in Kubernetes), on
//! SQLite and on PostgreSQL.

mod common;

use common::split::Split;
use worktruck_kit::testing::backends;

#[tokio::test]
async fn every_role_in_its_own_process_serves_the_api() {
    for backend in backends() {
        let split = Split::start(backend, &[], true).await;
        let mut expected: Vec<String> = worktruck::services::TABLE.iter().map(|d| d.name.to_owned()).collect();
        expected.extend(["gateway".into(), "mcp-gateway".into()]);
        assert_eq!(split.roles, expected, "one process per role of the table");
        let key = split.create_tenant("split");

        let http = worktruck_kit::http::client();
        let base = &split.base;
        let r = http
            .post(format!("{base}/api/v1/contacts"))
            .bearer_auth(&key)
            .json(&serde_json::json!({"kind": "group", "display_name": "Split crew"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{backend:?}\n{}", split.logs());
        let c: serde_json::Value = r.json().await.unwrap();
        let r = http.get(format!("{base}/api/v1/contacts/{}", c["id"].as_str().unwrap())).bearer_auth(&key).send().await.unwrap();
        assert_eq!(r.status(), 200);
        // The CRM role checks a deal's contact with the contacts role, over the network, as the caller.
        let deal = |contact: &str| serde_json::json!({"name": "Split deal", "contact_id": contact});
        let r = http.post(format!("{base}/api/v1/deals")).bearer_auth(&key).json(&deal(c["id"].as_str().unwrap())).send().await.unwrap();
        assert_eq!(r.status(), 201, "{}", split.logs());
        let missing = uuid::Uuid::now_v7().to_string();
        let r = http.post(format!("{base}/api/v1/deals")).bearer_auth(&key).json(&deal(&missing)).send().await.unwrap();
        assert_eq!(r.status(), 400);
    }
}

#[tokio::test]
async fn a_subset_of_services_routes_only_their_operations() {
    let backend = backends()[0];
    let split = Split::start(backend, &["tenants"], false).await;
    assert_eq!(split.roles, ["tenants", "gateway"]);
    let key = split.create_tenant("subset");
    let http = worktruck_kit::http::client();
    let r = http.get(format!("{}/api/v1/tenant", split.base)).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", split.logs());
    let r = http.get(format!("{}/api/v1/contacts", split.base)).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status(), 404, "contacts is not enabled, so it has no route");
    let doc: serde_json::Value =
        http.get(format!("{}/docs/openapi.json", split.base)).send().await.unwrap().json().await.unwrap();
    assert!(doc["paths"].get("/api/v1/contacts").is_none(), "nor an OpenAPI path");
}
