//! The outbox relay against a private NATS server that restarts without its storage or without
//! JetStream, on SQLite and PostgreSQL (issue 8 item 4).

use std::time::Duration;

use sqlx::migrate::Migrator;
use uuid::Uuid;
use worktruck_kit::bus::{Bus, STREAM};
use worktruck_kit::db::{Db, Scope, now};
use worktruck_kit::ops;
use worktruck_kit::outbox::{self, Relay};
use worktruck_kit::testing::nats::{OwnNats, nats_server_binary};
use worktruck_kit::testing::{TestData, backends, nats_url};

async fn enqueue(db: &Db, tenant: Uuid, n: usize) {
    let mut tx = db.begin(Scope::Tenant(tenant), true).await.unwrap();
    for _ in 0..n {
        let any = prost_types::Any { type_url: "type.googleapis.com/test.Thing".into(), value: vec![1, 2, 3] };
        outbox::enqueue(&mut tx, tenant, "worktruck.test.thing.created.v1", Uuid::now_v7(), 1, "key:test", any, now())
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

async fn until_connected(bus: &Bus) {
    for _ in 0..200 {
        if bus.connected() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the bus did not reconnect to the private nats-server");
}

async fn stream_messages(url: &str) -> u64 {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    js.get_stream(STREAM).await.unwrap().info().await.unwrap().state.messages
}

#[tokio::test]
async fn the_relay_declares_a_lost_stream_again_and_readiness_reports_a_bus_that_cannot_publish() {
    if nats_url().is_none() && nats_server_binary().is_none() {
        return;
    }
    for backend in backends() {
        let data = TestData::new(backend).await;
        let db = Db::connect_and_migrate(
            &data.db_options("kit_bus"),
            Migrator::with_migrations(vec![]),
            Migrator::with_migrations(vec![]),
        )
        .await
        .unwrap();
        let tenant = Uuid::now_v7();
        let mut nats = OwnNats::start(&data.path().join("nats-1")).await;
        let bus = Bus::nats(&nats.url()).await.unwrap();
        bus.ensure_stream().await.unwrap();
        let relay = Relay::new(db.clone(), bus.clone());
        let ready = ops::bus_check(bus.clone());

        enqueue(&db, tenant, 1).await;
        assert_eq!(relay.drain().await.unwrap(), 1, "{backend:?}");
        assert!((ready.probe)().await);

        // NATS comes back with an empty store: no WORKTRUCK stream. The relay declares it again
        // instead of failing with "no stream found" forever.
        nats.restart_with(&data.path().join("nats-2"), true).await;
        until_connected(&bus).await;
        enqueue(&db, tenant, 3).await;
        let sent = relay.drain().await.unwrap_or_else(|e| panic!("{backend:?}: relay after storage loss: {e}"));
        assert_eq!(sent, 3, "{backend:?}");
        assert_eq!(relay.pending().await.unwrap(), 0);
        assert_eq!(stream_messages(&nats.url()).await, 3, "{backend:?}: the new stream holds the backlog");
        assert!((ready.probe)().await, "{backend:?}: publishing again");

        // A connected broker that cannot take events (no JetStream): readiness says so, although
        // the connection is up, and the events wait.
        nats.restart_with(&data.path().join("nats-3"), false).await;
        until_connected(&bus).await;
        enqueue(&db, tenant, 2).await;
        assert!(relay.drain().await.is_err(), "{backend:?}: no JetStream, no publish");
        assert!(bus.connected());
        assert!(!(ready.probe)().await, "{backend:?}: /ready reports the relay that cannot publish");
        assert_eq!(relay.pending().await.unwrap(), 2);

        // JetStream returns: the next drain publishes and readiness recovers.
        nats.restart_with(&data.path().join("nats-3"), true).await;
        until_connected(&bus).await;
        assert_eq!(relay.drain().await.unwrap(), 2, "{backend:?}");
        assert!((ready.probe)().await, "{backend:?}");
    }
}
