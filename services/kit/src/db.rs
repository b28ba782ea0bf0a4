//! The database layer: one enum over PostgreSQL and SQLite pools, tenant-scoped transactions,
//! migrations per backend, and the few places where the dialects differ.
//!
//! PostgreSQL: one schema per service (`search_path` pinned to it), migrations run as the
//! connecting (owner) role, runtime connections `SET ROLE` to an unprivileged application role so
//! row-level security applies, and every transaction sets `worktruck.tenant_id`.
//! SQLite: one WAL file per service; every write transaction is `BEGIN IMMEDIATE`.
//!
//! Both: a short pool acquire timeout and a breaker. When beginning a transaction fails, a
//! background probe checks the database; while the probe finds it down, every transaction is
//! refused at once with `unavailable` (no request waits on a dead database), and the first
//! probe that succeeds closes the breaker again.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Connection as _, Postgres, Sqlite, Transaction};
use uuid::Uuid;

use crate::config::SqliteSynchronous as Synchronous;
use crate::error::{Error, ErrorCode, Result};

/// Runs one body on whichever backend a [`Tx`] holds; `$c` is the connection.
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, $c:ident => $body:expr) => {
        match $tx {
            $crate::db::Tx::Pg(t, _) => {
                let $c = &mut **t;
                $body
            }
            $crate::db::Tx::Sqlite(t, _) => {
                let $c = &mut **t;
                $body
            }
        }
    };
}

/// Executes a query on a [`Tx`] and returns the number of affected rows.
#[macro_export]
macro_rules! exec {
    ($tx:expr, $q:expr) => {
        $crate::on_tx!($tx, c => $q.execute(c).await.map(|r| r.rows_affected()))
    };
}

/// Which SQL dialect a pool speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL 15+.
    Postgres,
    /// SQLite 3.45+.
    Sqlite,
}

/// A service's database: its pools and the breaker that refuses work at once while the
/// database is known to be down.
#[derive(Debug, Clone)]
pub struct Db {
    pool: Pool,
    health: Arc<Health>,
    /// The service, as metrics label the pool.
    name: Arc<str>,
}

/// How a probe opens a connection of its own, outside the pool: a saturated pool is not a
/// database that is down.
#[derive(Debug, Clone)]
enum Fresh {
    Pg(PgConnectOptions),
    Sqlite(SqliteConnectOptions),
}

#[derive(Debug, Clone)]
enum Pool {
    /// PostgreSQL, in the service's own schema.
    Pg(PgPool),
    /// SQLite, one file per service.
    Sqlite(SqliteDb),
}

/// The breaker's state, shared by every clone of a [`Db`].
#[derive(Debug)]
struct Health {
    /// A probe found the database unreachable and none has reached it since.
    down: AtomicBool,
    /// A background probe is running (at most one per database).
    probing: AtomicBool,
    /// How long a probe waits for the database.
    probe_timeout: Duration,
    /// Where a probe connects.
    fresh: Fresh,
}

impl Health {
    fn new(acquire_timeout: Duration, fresh: Fresh) -> Arc<Health> {
        // A probe must answer within `/ready`'s budget of a second, whatever the pool allows.
        let probe_timeout = acquire_timeout.min(Duration::from_millis(800));
        Arc::new(Health { down: AtomicBool::new(false), probing: AtomicBool::new(false), probe_timeout, fresh })
    }
}

/// How often a background probe retries a database that is down.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// SQLite's two pools on one file: readers in parallel (WAL), writers through a single
/// connection, so they queue fairly in the pool instead of in SQLite's sleeping busy handler
/// (which gave multi-hundred-millisecond tails under concurrent writes).
#[derive(Debug, Clone)]
pub struct SqliteDb {
    read: SqlitePool,
    write: SqlitePool,
}

/// An open transaction; dropped without [`Tx::commit`], it rolls back.
pub enum Tx {
    /// On PostgreSQL, with the transaction's span.
    Pg(Transaction<'static, Postgres>, tracing::Span),
    /// On SQLite, with the transaction's span.
    Sqlite(Transaction<'static, Sqlite>, tracing::Span),
}

/// Whose rows a transaction may see.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// One tenant's rows (RLS on PostgreSQL; `tenant_id = $1` in every query on both).
    Tenant(Uuid),
    /// Rows of every tenant: API-key lookup, the outbox relay, master-key rotation and the
    /// apps re-probe's claim of due apps (ids only) — never on a request's behalf.
    System,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// `postgres://…` URL; `None` for SQLite.
    pub url: Option<String>,
    /// The folder holding SQLite files.
    pub data_dir: std::path::PathBuf,
    /// The service name: the PostgreSQL schema and the SQLite file stem.
    pub service: String,
    /// Pool size.
    pub max_connections: u32,
    /// The prefix of the PostgreSQL roles runtime connections switch to, so RLS applies: each
    /// service gets `<app_role>_<service>`, granted its own schema only. Empty to stay the owner.
    pub app_role: String,
    /// How long beginning a transaction waits for a pooled connection
    /// (`database.acquire_timeout_ms`).
    pub acquire_timeout: Duration,
    /// SQLite's `synchronous` pragma (`database.sqlite_synchronous`).
    pub sqlite_synchronous: Synchronous,
}

impl DbOptions {
    /// The role this service's runtime connections `SET ROLE` to, if any.
    pub fn runtime_role(&self) -> Option<String> {
        (!self.app_role.is_empty()).then(|| format!("{}_{}", self.app_role, self.service))
    }
}

impl Tx {
    /// The dialect of this transaction.
    pub fn dialect(&self) -> Dialect {
        match self {
            Tx::Pg(..) => Dialect::Postgres,
            Tx::Sqlite(..) => Dialect::Sqlite,
        }
    }

    /// Picks the statement for this dialect.
    pub fn sql(&self, pg: &'static str, sqlite: &'static str) -> &'static str {
        match self {
            Tx::Pg(..) => pg,
            Tx::Sqlite(..) => sqlite,
        }
    }

    /// Commits.
    pub async fn commit(self) -> Result<()> {
        let (committed, span) = match self {
            Tx::Pg(t, span) => (t.commit().await, span),
            Tx::Sqlite(t, span) => (t.commit().await, span),
        };
        if committed.is_err() {
            span.record("otel.status_code", "error");
        }
        committed?;
        Ok(())
    }
}

impl Db {
    /// Connects (creating the SQLite file or PostgreSQL schema as needed) without migrating.
    pub async fn connect(opts: &DbOptions, runtime: bool) -> Result<Db> {
        match &opts.url {
            Some(url) => {
                let schema = opts.service.clone();
                let co = PgConnectOptions::from_str(url)
                    .map_err(|e| Error::invalid(format!("bad database url: {e}")))?
                    .options([("search_path", schema.as_str())]);
                let mut po = PgPoolOptions::new()
                    .max_connections(opts.max_connections.max(1))
                    .acquire_timeout(opts.acquire_timeout);
                if let Some(role) = opts.runtime_role().filter(|_| runtime) {
                    let stmt = format!("SET ROLE {}", quote_ident(&role));
                    po = po.after_connect(move |conn, _| {
                        let stmt = stmt.clone();
                        Box::pin(async move {
                            sqlx::query(AssertSqlSafe(stmt)).execute(conn).await.map(|_| ())
                        })
                    });
                }
                let fresh = Fresh::Pg(co.clone());
                Ok(Db::new(Pool::Pg(po.connect_with(co).await?), fresh, opts))
            }
            None => {
                std::fs::create_dir_all(&opts.data_dir).map_err(Error::internal)?;
                let path = opts.data_dir.join(format!("{}.db", opts.service));
                let write = sqlite_pool(&path, 1, opts).await?;
                let read = sqlite_pool(&path, opts.max_connections, opts).await?;
                let fresh = Fresh::Sqlite(SqliteConnectOptions::new().filename(&path).read_only(true));
                Ok(Db::new(Pool::Sqlite(SqliteDb { read, write }), fresh, opts))
            }
        }
    }

    fn new(pool: Pool, fresh: Fresh, opts: &DbOptions) -> Db {
        Db { pool, health: Health::new(opts.acquire_timeout, fresh), name: opts.service.as_str().into() }
    }

    /// Connects as the owner, applies kit's and the service's migrations, grants the app role,
    /// and returns a runtime pool.
    pub async fn connect_and_migrate(
        opts: &DbOptions,
        pg: Migrator,
        sqlite: Migrator,
    ) -> Result<Db> {
        let owner = Db::connect(opts, false).await?;
        owner.migrate(opts, pg, sqlite).await?;
        if owner.dialect() == Dialect::Postgres {
            owner.close().await;
            Db::connect(opts, true).await
        } else {
            Ok(owner)
        }
    }

    /// Applies kit's shared tables and the service's own migrations, then refreshes the
    /// planner's statistics ([`Db::analyze`]).
    pub async fn migrate(&self, opts: &DbOptions, mut pg: Migrator, mut sqlite: Migrator) -> Result<()> {
        let mig = |e: sqlx::migrate::MigrateError| Error::internal(format!("migration failed: {e}"));
        match &self.pool {
            Pool::Pg(pool) => {
                let schema = opts.service.clone();
                let mut kit = sqlx::migrate!("migrations/postgres");
                kit.create_schema(schema.clone());
                kit.dangerous_set_table_name("_kit_migrations");
                kit.run(pool).await.map_err(mig)?;
                pg.create_schema(schema.clone());
                pg.run(pool).await.map_err(mig)?;
                if let Some(role) = opts.runtime_role() {
                    grant_app_role(pool, &schema, &role).await?;
                }
            }
            Pool::Sqlite(SqliteDb { write: pool, .. }) => {
                let mut kit = sqlx::migrate!("migrations/sqlite");
                kit.dangerous_set_table_name("_kit_migrations");
                kit.run(pool).await.map_err(mig)?;
                sqlite.set_locking(false);
                sqlite.run(pool).await.map_err(mig)?;
            }
        }
        self.analyze().await
    }

    /// Refreshes the query planner's statistics of this service's tables. Migrations call it;
    /// call it after a bulk import too. Temporal queries are written so their plans do not
    /// depend on statistics, but other filters' plans do. On PostgreSQL it must run as the
    /// tables' owner (the migrating role): for the runtime role PostgreSQL skips them with a
    /// warning, and autovacuum's own ANALYZE remains.
    pub async fn analyze(&self) -> Result<()> {
        match &self.pool {
            Pool::Pg(pool) => {
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables \
                     WHERE schemaname = current_schema()",
                )
                .fetch_all(pool)
                .await?;
                for t in tables {
                    sqlx::query(AssertSqlSafe(format!("ANALYZE {t}"))).execute(pool).await?;
                }
            }
            Pool::Sqlite(p) => {
                // A bounded sample per index keeps this fast on a large file.
                sqlx::query("PRAGMA analysis_limit = 1000").execute(&p.write).await?;
                sqlx::query("ANALYZE").execute(&p.write).await?;
            }
        }
        Ok(())
    }

    /// The dialect of this database.
    pub fn dialect(&self) -> Dialect {
        match &self.pool {
            Pool::Pg(_) => Dialect::Postgres,
            Pool::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// Begins a transaction scoped to `scope`. `write` takes SQLite's write lock up front.
    ///
    /// While the database is known to be down this fails at once with `unavailable`; a failure
    /// to begin (no connection within the acquire timeout, a broken connection) is answered
    /// `unavailable` and starts a background probe that decides whether it is down.
    pub async fn begin(&self, scope: Scope, write: bool) -> Result<Tx> {
        if self.health.down.load(Ordering::Acquire) {
            return Err(unavailable());
        }
        match self.begin_now(scope, write).await {
            Ok(t) => Ok(t),
            Err(sqlx::Error::PoolClosed) => Err(unavailable()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot begin a database transaction");
                self.suspect();
                Err(unavailable())
            }
        }
    }

    async fn begin_now(&self, scope: Scope, write: bool) -> sqlx::Result<Tx> {
        let span = self.transaction_span();
        let started = std::time::Instant::now();
        let begun = self.begin_in(scope, write, span).await;
        self.pool_metrics(started.elapsed());
        begun
    }

    /// The pool's gauges as they are now, and how long a begin took
    /// ([`crate::telemetry::families::DB_CONNECTIONS`], `DB_ACQUIRE`).
    fn pool_metrics(&self, acquire: Duration) {
        use crate::telemetry::families::{DB_ACQUIRE, DB_CONNECTIONS};
        let (size, idle) = match &self.pool {
            Pool::Pg(p) => (p.size(), p.num_idle()),
            // sqlx's counts are read from atomics one by one and may be momentarily inconsistent
            // (an idle count above the size): saturate and clamp rather than trust them.
            Pool::Sqlite(p) => (p.read.size().saturating_add(p.write.size()), p.read.num_idle().saturating_add(p.write.num_idle())),
        };
        let idle = u32::try_from(idle).unwrap_or(u32::MAX).min(size);
        let db = self.name.to_string();
        metrics::gauge!(DB_CONNECTIONS, "db" => db.clone(), "state" => "in_use").set(f64::from(size.saturating_sub(idle)));
        metrics::gauge!(DB_CONNECTIONS, "db" => db.clone(), "state" => "idle").set(f64::from(idle));
        metrics::histogram!(DB_ACQUIRE, "db" => db).record(acquire.as_secs_f64());
    }

    async fn begin_in(&self, scope: Scope, write: bool, span: tracing::Span) -> sqlx::Result<Tx> {
        match &self.pool {
            Pool::Pg(pool) => {
                let mut t = pool.begin().await?;
                let (tenant, system) = match scope {
                    Scope::Tenant(id) => (id.to_string(), ""),
                    Scope::System => (String::new(), "on"),
                };
                sqlx::query(
                    "SELECT set_config('worktruck.tenant_id', $1, true), set_config('worktruck.system', $2, true)",
                )
                .bind(tenant)
                .bind(system)
                .execute(&mut *t)
                .await?;
                Ok(Tx::Pg(t, span))
            }
            Pool::Sqlite(p) => {
                let t = if write { p.write.begin_with("BEGIN IMMEDIATE").await? } else { p.read.begin().await? };
                Ok(Tx::Sqlite(t, span))
            }
        }
    }

    /// The span of a transaction begun now, for as long as it is open (`CLIENT`, `db.system.name`):
    /// inside a traced request only, so that background loops polling the database make no
    /// spans of their own.
    fn transaction_span(&self) -> tracing::Span {
        if tracing::Span::current().is_none() {
            return tracing::Span::none();
        }
        let system = match &self.pool {
            Pool::Pg(_) => "postgresql",
            Pool::Sqlite(_) => "sqlite",
        };
        tracing::info_span!(
            "db_transaction",
            otel.name = "transaction",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            db.system.name = system,
        )
    }

    /// Records `fingerprint` (of the master secret, [`crate::config::Secrets::fingerprint`])
    /// as this database's on first use, and returns the one recorded: a caller whose own
    /// differs must not start, since what it signs or hashes no other process would accept.
    pub async fn master_fingerprint(&self, fingerprint: &str) -> Result<String> {
        let mut tx = self.begin(Scope::System, true).await?;
        let q = "INSERT INTO master_key (id, fingerprint, recorded_at) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING";
        let t = now();
        crate::exec!(&mut tx, sqlx::query(q).bind(fingerprint).bind(t))?;
        let recorded: String =
            crate::on_tx!(&mut tx, c => sqlx::query_scalar("SELECT fingerprint FROM master_key WHERE id = 1").fetch_one(c).await)?;
        tx.commit().await?;
        Ok(recorded)
    }

    /// True when the database answers, within a second: false at once while the breaker is
    /// open, and a failed ping opens it (through the background probe).
    pub async fn ping(&self) -> bool {
        if self.health.down.load(Ordering::Acquire) {
            return false;
        }
        if self.probe().await {
            true
        } else {
            self.suspect();
            false
        }
    }

    /// False while the database is known to be down (a probe failed and none succeeded since).
    pub fn available(&self) -> bool {
        !self.health.down.load(Ordering::Acquire)
    }

    /// True when the database answers `SELECT 1` within the probe timeout, through the pool
    /// or through a connection of the probe's own, whichever answers first: a saturated pool
    /// (its own connection answers) and a server out of connection slots (the pool's answer)
    /// are not outages; only both failing is.
    async fn probe(&self) -> bool {
        let pooled = async {
            match &self.pool {
                Pool::Pg(p) => sqlx::query("SELECT 1").execute(p).await.is_ok(),
                Pool::Sqlite(p) => sqlx::query("SELECT 1").execute(&p.read).await.is_ok(),
            }
        };
        let fresh = async {
            match &self.health.fresh {
                Fresh::Pg(co) => match sqlx::PgConnection::connect_with(co).await {
                    Ok(mut c) => {
                        let ok = sqlx::query("SELECT 1").execute(&mut c).await.is_ok();
                        let _ = sqlx::Connection::close(c).await;
                        ok
                    }
                    Err(_) => false,
                },
                Fresh::Sqlite(co) => match sqlx::SqliteConnection::connect_with(co).await {
                    Ok(mut c) => {
                        let ok = sqlx::query("SELECT 1").execute(&mut c).await.is_ok();
                        let _ = sqlx::Connection::close(c).await;
                        ok
                    }
                    Err(_) => false,
                },
            }
        };
        let either = async {
            tokio::pin!(pooled, fresh);
            tokio::select! {
                ok = &mut pooled => ok || fresh.await,
                ok = &mut fresh => ok || pooled.await,
            }
        };
        tokio::time::timeout(self.health.probe_timeout, either).await.unwrap_or(false)
    }

    fn is_closed(&self) -> bool {
        match &self.pool {
            Pool::Pg(p) => p.is_closed(),
            Pool::Sqlite(p) => p.read.is_closed() || p.write.is_closed(),
        }
    }

    /// Starts the background probe unless one runs: it marks the database down while probes
    /// fail (so transactions are refused at once), and up again at the first that succeeds.
    /// A false alarm (a pool merely busy) costs one probe and never opens the breaker.
    fn suspect(&self) {
        if self.health.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let db = self.clone();
        tokio::spawn(async move {
            loop {
                if db.probe().await {
                    if db.health.down.swap(false, Ordering::AcqRel) {
                        tracing::info!("database reachable again; accepting work");
                    }
                    break;
                }
                if db.is_closed() {
                    break;
                }
                if !db.health.down.swap(true, Ordering::AcqRel) {
                    tracing::warn!("database unreachable; answering unavailable at once until it returns");
                }
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
            db.health.probing.store(false, Ordering::Release);
        });
    }

    /// Closes the pool.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Pg(p) => p.close().await,
            Pool::Sqlite(p) => {
                p.write.close().await;
                p.read.close().await;
            }
        }
    }
}

fn unavailable() -> Error {
    Error::new(ErrorCode::Unavailable, "database unavailable; retry later")
}

async fn sqlite_pool(path: &Path, max: u32, opts: &DbOptions) -> Result<SqlitePool> {
    let synchronous = match opts.sqlite_synchronous {
        Synchronous::Off => SqliteSynchronous::Off,
        Synchronous::Normal => SqliteSynchronous::Normal,
        Synchronous::Full => SqliteSynchronous::Full,
        Synchronous::Extra => SqliteSynchronous::Extra,
    };
    let co = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(synchronous)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    Ok(SqlitePoolOptions::new()
        .max_connections(max.max(1))
        .acquire_timeout(opts.acquire_timeout)
        .connect_with(co)
        .await?)
}

/// Creates the service's application role if needed and grants it DML on the service's schema
/// (and nothing else, so one service's connections cannot read another's tables). Serialised
/// by an advisory lock because role DDL is cluster-wide and races between services.
async fn grant_app_role(pool: &PgPool, schema: &str, role: &str) -> Result<()> {
    let role_q = quote_ident(role);
    let schema_q = quote_ident(schema);
    let mut t = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(7283451)").execute(&mut *t).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(role)
        .fetch_one(&mut *t)
        .await?;
    if !exists {
        // Advisory locks are per database, and services may live in different databases of one
        // cluster, so a concurrent creator can still win: tolerate that.
        let create = format!(
            "DO $$ BEGIN CREATE ROLE {role_q} NOLOGIN; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        );
        sqlx::query(AssertSqlSafe(create)).execute(&mut *t).await?;
    }
    let is_super: bool = sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        .fetch_one(&mut *t)
        .await?;
    if !is_super {
        sqlx::query(AssertSqlSafe(format!("GRANT {role_q} TO current_user"))).execute(&mut *t).await?;
    }
    for stmt in [
        format!("GRANT USAGE ON SCHEMA {schema_q} TO {role_q}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema_q} TO {role_q}"),
        format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema_q} TO {role_q}"),
    ] {
        sqlx::query(AssertSqlSafe(stmt)).execute(&mut *t).await?;
    }
    t.commit().await?;
    Ok(())
}

/// Quotes a PostgreSQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The application clock: UTC, truncated to microseconds so both backends store the same instant.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}
