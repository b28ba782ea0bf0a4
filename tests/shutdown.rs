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
        let answers = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for w in 0..8 {
            let (base, key, http, answers) = (base.clone(), key.clone(), http.clone(), answers.clone());
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
                        Ok(r) => {
                            statuses.push(r.status().as_u16());
                            answers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        // Not accepted any more (or cut while the gateway had not read it yet).
                        Err(_) => break,
                    }
                }
                statuses
            }));
        }
        // Stop in the middle of a running load: once it has been answered a few times (how long
        // that takes depends on the machine), whatever it has in flight then.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while answers.load(std::sync::atomic::Ordering::Relaxed) < 16 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stack.stop().await;
        let mut answered = 0;
        for w in workers {
            let statuses = w.await.unwrap();
            answered += statuses.len();
            assert!(statuses.iter().all(|s| *s == 201), "{backend:?}: every answered request succeeded: {statuses:?}");
        }
        assert!(answered >= 16, "{backend:?}: the load ran before the stop ({answered} answers)");
    }
}
