//! A database that is busy or down answers fast (issue 8 item 8): the pool's acquire timeout
//! comes from config, and while a probe finds the database down every transaction is refused at
//! once with `unavailable` until the database returns, without a restart.

use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::migrate::Migrator;
use sqlx::{AssertSqlSafe, Connection};
use uuid::Uuid;
use worktruck_kit::db::{Db, Scope, now};
use worktruck_kit::store::{Store, Write};
use worktruck_kit::testing::{Backend, TestData, backends};
use worktruck_kit::{ErrorCode, ops};

const THINGS: Store = Store::new("thing");

async fn db(data: &TestData) -> Db {
    Db::connect_and_migrate(&data.db_options("kit_db"), Migrator::with_migrations(vec![]), Migrator::with_migrations(vec![]))
        .await
        .expect("migrate")
}

async fn create(db: &Db, tenant: Uuid) -> worktruck_kit::Result<()> {
    let mut tx = db.begin(Scope::Tenant(tenant), true).await?;
    let w = Write { doc: json!({"name": "x"}), search_text: "x".into(), valid_from: None, actor: "key:test".into() };
    THINGS.create(&mut tx, tenant, Uuid::now_v7(), w, now()).await?;
    tx.commit().await
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn a_saturated_pool_answers_unavailable_after_the_acquire_timeout_and_is_not_an_outage() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let db = db(&data).await;
        let tenant = Uuid::now_v7();
        // Take every connection writers can get: SQLite's one writer, or the whole PostgreSQL pool.
        let held = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => data.db_options("kit_db").max_connections,
        };
        let mut holders = Vec::new();
        for _ in 0..held {
            holders.push(db.begin(Scope::Tenant(tenant), true).await.unwrap());
        }
        // Released well within the old 10 s acquire timeout, so a write that still waited that
        // long would succeed here instead of being refused.
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(holders);
        });
        let started = Instant::now();
        let e = create(&db, tenant).await.expect_err("a write beyond the pool must not wait for minutes");
        eprintln!("{backend:?}: saturated pool answered {} after {:?}", e.code, started.elapsed());
        assert_eq!(e.code, ErrorCode::Unavailable, "{backend:?}: {e}");
        // A busy pool is not a dead database: the probe that refusal started connects on its
        // own and finds the database reachable, so the breaker stays closed (a probe takes at
        // most 0.8 s; the pool stays saturated for about 2 s more).
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!release.is_finished(), "the pool is still saturated");
        assert!(db.available(), "{backend:?}: a saturated pool opened the breaker");
        release.await.unwrap();
        create(&db, tenant).await.unwrap();
    }
}

/// The database name in a PostgreSQL URL.
fn database_name(url: &str) -> String {
    url.rsplit('/').next().unwrap().split('?').next().unwrap().to_owned()
}

#[tokio::test]
async fn a_postgres_outage_is_answered_at_once_and_survived_without_a_restart() {
    if !backends().contains(&Backend::Postgres) {
        return;
    }
    let data = TestData::new(Backend::Postgres).await;
    let db = db(&data).await;
    let tenant = Uuid::now_v7();
    create(&db, tenant).await.unwrap();
    let ready = ops::db_check("database", db.clone());
    assert!((ready.probe)().await);

    // Only this test's own database goes away: new connections are refused and the pool's are
    // cut, as when the server restarts. The shared server keeps running.
    let name = database_name(data.database_url.as_deref().unwrap());
    let mut admin = sqlx::PgConnection::connect(&std::env::var("DATABASE_URL").unwrap()).await.unwrap();
    let allow = |on: bool| AssertSqlSafe(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS {on}"));
    sqlx::query(allow(false)).execute(&mut admin).await.unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
        .bind(&name)
        .execute(&mut admin)
        .await
        .unwrap();

    let started = Instant::now();
    let e = create(&db, tenant).await.expect_err("no database, no write");
    eprintln!("first request in the outage: {} after {:?}", e.code, started.elapsed());
    assert_eq!(e.code, ErrorCode::Unavailable, "{e}");
    until("the breaker is open", || !db.available()).await;

    // Known down: refused without waiting on the pool, and readiness says so.
    let started = Instant::now();
    for _ in 0..20 {
        let e = create(&db, tenant).await.expect_err("still down");
        assert_eq!(e.code, ErrorCode::Unavailable);
    }
    eprintln!("20 requests while known down: {:?}", started.elapsed());
    let started = Instant::now();
    assert!(!(ready.probe)().await, "/ready reports the database failing");
    eprintln!("readiness while down: {:?}", started.elapsed());

    // The database returns: the background probe closes the breaker, no restart needed.
    sqlx::query(allow(true)).execute(&mut admin).await.unwrap();
    let started = Instant::now();
    until("the probe has found the database back", || db.available()).await;
    eprintln!("recovered {:?} after the database returned", started.elapsed());
    create(&db, tenant).await.unwrap();
    assert!((ready.probe)().await);
}
