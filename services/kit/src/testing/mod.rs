//! Fixtures shared by every crate's tests and the load harness: a fresh SQLite folder or a fresh PostgreSQL
//! database per test, and the NATS URL. Backends come from `DATABASE_URL` / `NATS_URL`; under
//! `CI=true` a missing backend fails the test instead of skipping it.

pub mod issuer;
pub mod nats;
pub mod postgres;
pub mod tls;

use std::path::PathBuf;

use sqlx::{AssertSqlSafe, Connection};
use uuid::Uuid;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL from `DATABASE_URL`.
    Postgres,
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// SQLite always; PostgreSQL when `DATABASE_URL` is set (required under `CI=true`).
pub fn backends() -> Vec<Backend> {
    let mut out = vec![Backend::Sqlite];
    match std::env::var("DATABASE_URL") {
        Ok(u) if !u.is_empty() => out.push(Backend::Postgres),
        _ if ci() => panic!("CI=true but DATABASE_URL is not set: the Postgres half of this test cannot run"),
        _ => eprintln!("DATABASE_URL not set: running on SQLite only"),
    }
    out
}

/// `NATS_URL` (required under `CI=true`), or `None` to skip NATS-only checks locally.
pub fn nats_url() -> Option<String> {
    match std::env::var("NATS_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ if ci() => panic!("CI=true but NATS_URL is not set"),
        _ => {
            eprintln!("NATS_URL not set: skipping the NATS part of this test");
            None
        }
    }
}

/// A PostgreSQL database made for one test or benchmark run, dropped (`WITH (FORCE)`) when this
/// value is dropped.
pub struct TempDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TempDatabase {
    /// Creates `<prefix>_<random>` on the server `admin_url` points at (a role that may create
    /// databases, e.g. `postgres://postgres@127.0.0.1:5432/postgres`).
    pub async fn create(admin_url: &str, prefix: &str) -> Result<TempDatabase, sqlx::Error> {
        let name = format!("{prefix}_{}", Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(admin_url).await?;
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await?;
        let _ = conn.close().await;
        Ok(TempDatabase { url: with_database(admin_url, &name), admin_url: admin_url.to_owned(), name })
    }

    /// The new database's URL (the admin URL with its database replaced).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs outside async; a short-lived thread with its own runtime cleans up.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(rt) = rt {
                rt.block_on(async move {
                    if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                        let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                        if let Err(e) = sqlx::query(AssertSqlSafe(drop)).execute(&mut c).await {
                            eprintln!("could not drop database {name}: {e}");
                        }
                    }
                });
            }
        })
        .join();
    }
}

/// A fresh, isolated place for one test's data; cleaned up on drop.
pub struct TestData {
    /// The backend.
    pub backend: Backend,
    /// A fresh temporary data folder (SQLite files, master key).
    pub dir: tempfile::TempDir,
    /// A fresh PostgreSQL database URL on `Postgres`.
    pub database_url: Option<String>,
    /// Held so the database is dropped with the test data.
    _database: Option<TempDatabase>,
}

impl TestData {
    /// Makes a fresh folder, and on PostgreSQL a fresh database.
    pub async fn new(backend: Backend) -> TestData {
        let dir = tempfile::tempdir().expect("tempdir");
        let database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let admin = std::env::var("DATABASE_URL").expect("DATABASE_URL");
                Some(TempDatabase::create(&admin, "wt_test").await.expect("create a test database on DATABASE_URL"))
            }
        };
        TestData { backend, dir, database_url: database.as_ref().map(|d| d.url().to_owned()), _database: database }
    }

    /// The data folder.
    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Database options for `service` on this backend.
    pub fn db_options(&self, service: &str) -> crate::db::DbOptions {
        crate::db::DbOptions {
            url: self.database_url.clone(),
            data_dir: self.path(),
            service: service.to_owned(),
            max_connections: 5,
            app_role: "worktruck_app".into(),
            acquire_timeout: std::time::Duration::from_millis(crate::config::DatabaseConfig::default().acquire_timeout_ms),
            sqlite_synchronous: crate::config::DatabaseConfig::default().sqlite_synchronous,
        }
    }
}

/// Replaces the database name in a PostgreSQL URL.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Waits out the last seconds of a UTC minute, so that a test's requests fall in one
/// per-minute rate-limit window (one that straddles two sees its count reset).
pub async fn early_in_a_minute() {
    let second = chrono::Utc::now().timestamp().rem_euclid(60);
    if second > 45 {
        tokio::time::sleep(std::time::Duration::from_secs((61 - second) as u64)).await;
    }
}

/// Serves `routes` with [`crate::ops::serve_grpc`] (contexts checked by `verifier`) on a free
/// loopback port until `stop` resolves, and returns a lazy channel to it.
pub async fn serve_grpc_on_loopback(
    routes: tonic::service::Routes,
    service_names: impl Into<Vec<&'static str>>,
    verifier: crate::context::Verifier,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> tonic::transport::Channel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let addr = listener.local_addr().expect("local addr");
    let names: Vec<&'static str> = service_names.into();
    tokio::spawn(async move { crate::ops::serve_grpc(listener, routes, &names, verifier, None, stop).await });
    tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("a loopback URL")
        .connect_lazy()
}

/// The master secret every [`TestService`] is handed, so a test can derive the same keys
/// (`test_secrets().derive(PURPOSE)`).
pub fn test_secrets() -> crate::config::Secrets {
    crate::config::Secrets::from_bytes(vec![7; 32])
}

/// One service of the table under test, the way the binary runs it: its definition builds it
/// on a fresh migrated database (SQLite folder or PostgreSQL database of `data`), with a
/// verifier for [`TestService::signer`], an outbox relay on `bus` (drained by the test, not in
/// the background), the master secret [`test_secrets`], and its gRPC server on a loopback
/// port. Its background tasks run; everything stops when the value is dropped.
pub struct TestService {
    /// A lazy channel to the service's gRPC server.
    pub channel: tonic::transport::Channel,
    /// Signs the contexts the service accepts (the gateway's key).
    pub signer: crate::context::Signer,
    /// The service's outbox relay (call `drain` to publish what it enqueued).
    pub relay: crate::outbox::Relay,
    /// The service's database.
    pub db: crate::db::Db,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl TestService {
    /// Builds `def` on `data` with events to `bus`; `clients` are channels to the services it
    /// calls (by name).
    pub async fn start_with(
        def: &'static crate::service::ServiceDef,
        data: &TestData,
        bus: crate::bus::Bus,
        config: crate::config::Config,
        clients: std::collections::BTreeMap<&'static str, tonic::transport::Channel>,
    ) -> TestService {
        let (pg, sqlite) = (def.migrators)();
        let db = crate::db::Db::connect_and_migrate(&data.db_options(def.name), pg, sqlite).await.expect("migrate");
        let signer = crate::context::Signer::from_seed([9; 32]);
        let relay = crate::outbox::Relay::new(db.clone(), bus.clone());
        let (shutdown, signal) = crate::service::Shutdown::new();
        // Every service it is handed a channel to is a peer too (its link targets unknown
        // here, so links to it take the full `<domain>:<entity>:<id>` form).
        let peers = clients
            .iter()
            .map(|(name, ch)| (*name, crate::links::Peer { channel: ch.clone(), targets: &[] }))
            .collect();
        let ctx = crate::service::ServiceContext::new(
            def,
            std::sync::Arc::new(config),
            db.clone(),
            signer.verifier(),
            relay.clone(),
            bus,
            Some(test_secrets()),
            clients,
            peers,
            signal.clone(),
        );
        let built = crate::service::build(def, ctx).expect("build the service");
        for (_, task) in built.tasks {
            tokio::spawn(task);
        }
        let channel = serve_grpc_on_loopback(built.routes, def.served_services(), signer.verifier(), signal.wait()).await;
        TestService { channel, signer, relay, db, shutdown }
    }

    /// Builds `def` on `data` with events to `bus`, default config and no clients.
    pub async fn start(def: &'static crate::service::ServiceDef, data: &TestData, bus: crate::bus::Bus) -> TestService {
        let config = crate::config::Config { data_dir: data.path(), ..Default::default() };
        Self::start_with(def, data, bus, config, Default::default()).await
    }

    /// `msg` with a signed context of a caller in `tenant` (full access, 365 days' retention).
    pub fn request<T>(&self, tenant: uuid::Uuid, msg: T) -> tonic::Request<T> {
        self.request_as(&crate::context::Ctx::tenant(tenant, "key:test", 365), msg)
    }

    /// `msg` with `ctx`, signed.
    pub fn request_as<T>(&self, ctx: &crate::context::Ctx, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        self.signer.attach(ctx, r.metadata_mut());
        r
    }

    /// Stops the service's server and background tasks.
    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
    }
}

impl Drop for TestService {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_names_are_replaced() {
        assert_eq!(super::with_database("postgres://u@h:5432/postgres", "x"), "postgres://u@h:5432/x");
        assert_eq!(super::with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(super::with_database("postgres://u@h/db?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
    }
}
