//! Test fixtures shared by every crate's tests: a fresh SQLite folder or a fresh PostgreSQL
//! database per test, and the NATS URL. Backends come from `DATABASE_URL` / `NATS_URL`; under
//! `CI=true` a missing backend fails the test instead of skipping it.

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

/// A fresh, isolated place for one test's data; cleaned up on drop.
pub struct TestData {
    /// The backend.
    pub backend: Backend,
    /// A fresh temporary data folder (SQLite files, master key).
    pub dir: tempfile::TempDir,
    /// A fresh PostgreSQL database URL on `Postgres`.
    pub database_url: Option<String>,
    admin_url: Option<String>,
    db_name: Option<String>,
}

impl TestData {
    /// Makes a fresh folder, and on PostgreSQL a fresh database.
    pub async fn new(backend: Backend) -> TestData {
        let dir = tempfile::tempdir().expect("tempdir");
        let (database_url, admin_url, db_name) = match backend {
            Backend::Sqlite => (None, None, None),
            Backend::Postgres => {
                let admin = std::env::var("DATABASE_URL").expect("DATABASE_URL");
                let name = format!("wt_test_{}", Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect to DATABASE_URL");
                sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let _ = conn.close().await;
                (Some(with_database(&admin, &name)), Some(admin), Some(name))
            }
        };
        TestData { backend, dir, database_url, admin_url, db_name }
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
        }
    }
}

impl Drop for TestData {
    fn drop(&mut self) {
        if let (Some(admin), Some(name)) = (self.admin_url.take(), self.db_name.take()) {
            // Drop runs outside async; a short-lived thread with its own runtime cleans up.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
                if let Ok(rt) = rt {
                    rt.block_on(async move {
                        if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                            let _ = sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                                .execute(&mut c)
                                .await;
                        }
                    });
                }
            })
            .join();
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

#[cfg(test)]
mod tests {
    #[test]
    fn database_names_are_replaced() {
        assert_eq!(super::with_database("postgres://u@h:5432/postgres", "x"), "postgres://u@h:5432/x");
        assert_eq!(super::with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(super::with_database("postgres://u@h/db?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
    }
}
