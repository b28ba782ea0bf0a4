//! The ceilings each phase is read against, measured in the same run on the same machine, so a
//! figure means the same on a noisy machine: the server's own `/health` for reads, and for
//! writes the database's own single-row INSERT rate — on PostgreSQL a plain autocommit INSERT
//! on the same server (what `pgbench`'s insert test does), on SQLite a one-row transaction on a
//! scratch file opened by kit exactly as a service opens its own (WAL, the same `synchronous`,
//! one writer connection).

use std::sync::Arc;

use uuid::Uuid;
use worktruck_kit::db::{Db, Scope};
use worktruck_kit::testing::{Backend, TestData};

use crate::load::{Plan, op_phase};
use crate::stats::{Failure, Summary};

/// Where raw inserts go.
pub enum RawStore {
    /// A table in the benchmark's own PostgreSQL database.
    Postgres(sqlx::PgPool),
    /// A scratch SQLite file (kept alive by the [`TestData`]).
    Sqlite(Db, TestData),
}

const INSERT: &str = "INSERT INTO bench_raw_insert (id, tenant_id, doc, created_at) VALUES ($1, $2, $3, $4)";
const CREATE: &str = "CREATE TABLE IF NOT EXISTS bench_raw_insert (id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, doc TEXT NOT NULL, created_at TEXT NOT NULL)";

impl RawStore {
    /// A store on the PostgreSQL database at `url` (the benchmark's temporary one).
    pub async fn postgres(url: &str, connections: u32) -> anyhow::Result<RawStore> {
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(connections).connect(url).await?;
        sqlx::query(CREATE).execute(&pool).await?;
        Ok(RawStore::Postgres(pool))
    }

    /// A store on a fresh SQLite file, opened as a service opens its database.
    pub async fn sqlite() -> anyhow::Result<RawStore> {
        let data = TestData::new(Backend::Sqlite).await;
        let db = Db::connect(&data.db_options("bench_raw"), false).await?;
        let mut tx = db.begin(Scope::System, true).await?;
        worktruck_kit::exec!(&mut tx, sqlx::query(CREATE))?;
        tx.commit().await?;
        Ok(RawStore::Sqlite(db, data))
    }

    async fn insert(&self, n: u64) -> Result<(), Failure> {
        let id = Uuid::now_v7().to_string();
        let doc = format!(r#"{{"kind":"person","display_name":"Raw Person {n}"}}"#);
        let at = chrono::Utc::now().to_rfc3339();
        match self {
            RawStore::Postgres(pool) => {
                sqlx::query(INSERT).bind(&id).bind(&id).bind(&doc).bind(&at).execute(pool).await.map_err(|_| Failure::Transport)?;
            }
            RawStore::Sqlite(db, _) => {
                let mut tx = db.begin(Scope::System, true).await.map_err(|_| Failure::Transport)?;
                worktruck_kit::exec!(&mut tx, sqlx::query(INSERT).bind(&id).bind(&id).bind(&doc).bind(&at)).map_err(|_| Failure::Transport)?;
                tx.commit().await.map_err(|_| Failure::Transport)?;
            }
        }
        Ok(())
    }
}

/// Inserts one row per request into `store`, as the phase `insert_raw`.
pub async fn insert_raw_phase(store: Arc<RawStore>, plan: Plan) -> Summary {
    op_phase(plan, "insert_raw", move |n| {
        let store = Arc::clone(&store);
        async move { store.insert(n).await }
    })
    .await
}

/// A ratio line: `what` = `a` / `b` of a figure of two phases, when both ran.
pub struct Ratio {
    /// What is compared.
    pub what: String,
    /// The value.
    pub value: f64,
    /// The issue's target, if it names one, and whether higher is better.
    pub target: Option<(f64, bool)>,
}

/// The ratios the phases are read by: throughputs against their ceilings, and the latency of
/// deep or long-history reads against their shallow twins.
pub fn ratios(summaries: &[Summary]) -> Vec<Ratio> {
    let find = |name: &str| summaries.iter().find(|s| s.phase == name && s.ok > 0);
    let mut out = Vec::new();
    let mut throughput = |what: &str, a: &str, b: &str, target: Option<f64>| {
        if let (Some(x), Some(y)) = (find(a), find(b))
            && y.throughput_rps > 0.0
        {
            out.push(Ratio { what: format!("{what} ({a}/{b} req/s)"), value: x.throughput_rps / y.throughput_rps, target: target.map(|t| (t, true)) });
        }
    };
    throughput("read vs the same server's /health", "get", "health", Some(0.2));
    throughput("write vs the database's raw INSERT", "create", "insert_raw", Some(0.15));
    let mut p50 = |what: &str, a: &str, b: &str, target: Option<f64>| {
        if let (Some(x), Some(y)) = (find(a), find(b))
            && let (Some(xa), Some(yb)) = (x.p50_ms, y.p50_ms)
            && yb > 0.0
        {
            out.push(Ratio { what: format!("{what} ({a}/{b} p50)"), value: xa / yb, target: target.map(|t| (t, false)) });
        }
    };
    p50("MCP tool call vs its REST twin", "mcp_get", "get", Some(1.25));
    p50("as_of read, 10,000 vs 10 versions", "as_of_10k", "as_of_10", Some(1.2));
    p50("history page, 10,000 vs 10 versions", "history_10k", "history_10", Some(1.2));
    p50("list page, deepest vs first", "list_deep", "list_first", Some(1.2));
    p50("contact with 5 channels, 2 addresses, 3 tags vs a plain one", "get_rich", "get", None);
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::stats::Samples;

    fn phase(name: &str, n: u32, each_ms: u64) -> Summary {
        let mut s = Samples::default();
        for _ in 0..n {
            s.record_ok(Duration::from_millis(each_ms));
        }
        s.summarize(name, Duration::from_secs(1))
    }

    #[test]
    fn ratios_pair_the_phases_that_ran() {
        let r = ratios(&[phase("get", 100, 2), phase("health", 400, 1), phase("as_of_10k", 5, 6), phase("as_of_10", 5, 4)]);
        assert_eq!(r.len(), 2, "only pairs whose both phases ran");
        assert!((r[0].value - 0.25).abs() < 1e-9);
        assert!((r[1].value - 1.5).abs() < 1e-9);
        assert_eq!(r[1].target, Some((1.2, false)));
    }

    #[tokio::test]
    async fn raw_inserts_land_in_sqlite() {
        let store = Arc::new(RawStore::sqlite().await.unwrap());
        let plan = Plan { concurrency: 2, requests: 20, max_duration: Duration::from_secs(10) };
        let s = insert_raw_phase(store, plan).await;
        assert_eq!((s.ok, s.errors), (20, 0));
    }
}
