//! `/health`, `/ready` and `/metrics` of the all-in-one process.

mod common;

use common::Stack;
use reqwest::Method;
use worktruck_kit::testing::backends;

#[tokio::test]
async fn health_readiness_and_metrics_answer_without_credentials() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let health = s.http.get(format!("{}/health", s.base)).send().await.unwrap();
        assert_eq!(health.status(), 200);
        let ready = s.http.get(format!("{}/ready", s.base)).send().await.unwrap();
        assert_eq!(ready.status(), 200);
        let body: serde_json::Value = ready.json().await.unwrap();
        assert_eq!(body["checks"]["tenants.database"], "ok", "{body}");
        assert_eq!(body["checks"]["contacts.database"], "ok", "{body}");
        assert_eq!(body["checks"]["bus"], "ok", "{backend:?}: {body}");

        s.call(Method::GET, "/api/v1/contacts", None).await;
        let metrics = s.http.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("worktruck_http_requests_total"), "{metrics}");
        s.stop().await;
    }
}
