//! Graceful shutdown in order: the gateways stop accepting and finish what they hold before the
//! services stop, so no request that was let in is answered 503 because its service went first.

mod common;

use std::time::Duration;

use serde_json::json;
use worktruck_kit::testing::backends;

#[tokio::test]
async fn requests_in_flight_at_shutdown_are_answered_not_refused() {
    for backend in backends() {
        let stack = common::Stack::start(backend).await;
        let (base, key, http) = (stack.base.clone(), stack.key.clone(), stack.http.clone());
        let mut workers = Vec::new();
        for w in 0..8 {
            let (base, key, http) = (base.clone(), key.clone(), http.clone());
            workers.push(tokio::spawn(async move {
                let mut statuses = Vec::new();
                for i in 0..10_000 {
                    let r = http
                        .post(format!("{base}/api/v1/contacts"))
                        .bearer_auth(&key)
                        .json(&json!({"kind": "person", "display_name": format!("w{w} #{i}")}))
                        .send()
                        .await;
                    match r {
                        Ok(r) => statuses.push(r.status().as_u16()),
                        // Not accepted any more (or cut while the gateway had not read it yet).
                        Err(_) => break,
                    }
                }
                statuses
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        stack.stop().await;
        let mut answered = 0;
        for w in workers {
            let statuses = w.await.unwrap();
            answered += statuses.len();
            assert!(statuses.iter().all(|s| *s == 201), "{backend:?}: every answered request succeeded: {statuses:?}");
        }
        assert!(answered > 8, "{backend:?}: the load ran before the stop ({answered} answers)");
    }
}
