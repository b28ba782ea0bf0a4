//! The apps service: MCP servers a tenant registers (Streamable HTTP). Every URL passes kit's
//! SSRF guard (`kit::http::Guard`) when registered and again on every connection; the server
//! is probed as a real MCP client (rmcp: `initialize`, then `tools/list` page by page within
//! page, byte and time bounds) and its catalog mirrored — `stale` when a tool disappears,
//! `changed` (and out of `enabled_tools`) when an approved tool's description or schema
//! changes —; a periodic, jittered re-probe counts consecutive failures (`unhealthy` after
//! `unhealthy_after`, `active` again on success). The secret of an app's auth is sealed under
//! the tenant's key and never answered, logged or stored in clear. Changes are announced as
//! `worktruck.apps.app.{created,updated,deleted,probed}.v1`.
//!
//! It owns the `apps` schema (or `apps.db`) and makes no outbound call except through
//! `kit::http::guarded`.

mod catalog;
mod domain;
mod probe;
mod queries;
mod reprobe;
mod secrets;
mod service;

use std::time::Duration;

use serde::Deserialize;
use sqlx::migrate::Migrator;
use worktruck_kit::service::{Built, ServiceContext, ServiceDef};
use worktruck_proto::apps::v1::apps_service_server::AppsServiceServer;

pub use service::Apps;

/// The service's name: its schema and database file.
pub const SERVICE: &str = "apps";

/// The gRPC service name, for health checking.
pub const GRPC_NAME: &str = "worktruck.apps.v1.AppsService";

/// The service's migrations: (PostgreSQL, SQLite).
pub fn migrators() -> (Migrator, Migrator) {
    (
        sqlx::migrate!("migrations/postgres"),
        sqlx::migrate!("migrations/sqlite"),
    )
}

/// The apps service, for the binary's table of services.
pub static DEFINITION: ServiceDef = ServiceDef {
    name: SERVICE,
    grpc_services: &[GRPC_NAME],
    calls: &[],
    link_targets: &[],
    migrators,
    build,
    workers: &[],
};

/// `[settings.apps]`: the probe's bounds and the re-probe schedule.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The whole probe (connect, `initialize`, every `tools/list` page) ends after this.
    pub probe_deadline_ms: u64,
    /// Connecting (TCP + TLS) to a server.
    pub connect_timeout_ms: u64,
    /// At most this many `tools/list` pages.
    pub max_pages: usize,
    /// At most this many tools.
    pub max_tools: usize,
    /// At most this many bytes of `tools/list` answers in all (and per answer).
    pub max_bytes: usize,
    /// The mean time between two periodic probes of an app (each is jittered by ±25 %).
    pub reprobe_interval_seconds: u64,
    /// Failed probes in a row that make an app `unhealthy`.
    pub unhealthy_after: i32,
    /// Apps probed at once by the periodic re-probe.
    pub reprobe_concurrency: usize,
    /// A `CallAppTool` (its own `initialize` and `tools/call`) ends after this.
    pub call_timeout_ms: u64,
    /// The largest `arguments` of a call, as JSON.
    pub max_argument_bytes: usize,
    /// The largest answer of a call.
    pub max_result_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            probe_deadline_ms: 20_000,
            connect_timeout_ms: 5_000,
            max_pages: 50,
            max_tools: 500,
            max_bytes: 4 * 1024 * 1024,
            reprobe_interval_seconds: 300,
            unhealthy_after: 3,
            reprobe_concurrency: 4,
            call_timeout_ms: 30_000,
            max_argument_bytes: 256 * 1024,
            max_result_bytes: 1024 * 1024,
        }
    }
}

impl Settings {
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.probe_deadline_ms >= 100,
            "settings.apps.probe_deadline_ms must be at least 100"
        );
        anyhow::ensure!(
            self.connect_timeout_ms >= 100,
            "settings.apps.connect_timeout_ms must be at least 100"
        );
        anyhow::ensure!(
            (1..=1000).contains(&self.max_pages),
            "settings.apps.max_pages must be 1 to 1000"
        );
        anyhow::ensure!(
            (1..=10_000).contains(&self.max_tools),
            "settings.apps.max_tools must be 1 to 10000"
        );
        anyhow::ensure!(
            (64 * 1024..=64 * 1024 * 1024).contains(&self.max_bytes),
            "settings.apps.max_bytes must be 64 KiB to 64 MiB"
        );
        anyhow::ensure!(
            self.reprobe_interval_seconds >= 1,
            "settings.apps.reprobe_interval_seconds must be at least 1"
        );
        anyhow::ensure!(
            (1..=100).contains(&self.unhealthy_after),
            "settings.apps.unhealthy_after must be 1 to 100"
        );
        anyhow::ensure!(
            (1..=64).contains(&self.reprobe_concurrency),
            "settings.apps.reprobe_concurrency must be 1 to 64"
        );
        anyhow::ensure!(
            self.call_timeout_ms >= 100,
            "settings.apps.call_timeout_ms must be at least 100"
        );
        anyhow::ensure!(
            (1024..=16 * 1024 * 1024).contains(&self.max_argument_bytes),
            "settings.apps.max_argument_bytes must be 1 KiB to 16 MiB"
        );
        anyhow::ensure!(
            (1024..=64 * 1024 * 1024).contains(&self.max_result_bytes),
            "settings.apps.max_result_bytes must be 1 KiB to 64 MiB"
        );
        Ok(())
    }

    fn deadline(&self) -> Duration {
        Duration::from_millis(self.probe_deadline_ms)
    }
}

fn build(ctx: ServiceContext) -> anyhow::Result<Built> {
    let settings: Settings = ctx.settings()?;
    settings.check()?;
    let guard = worktruck_kit::http::Guard::from_config(&ctx.config.outbound)?;
    let sealer = secrets::Sealer::new(&ctx)?;
    let prober = probe::Prober::new(ctx.config.outbound.clone(), guard, settings.clone());
    let svc = Apps::new(
        ctx.db.clone(),
        ctx.verifier,
        ctx.relay.clone(),
        prober,
        sealer,
        settings,
    );
    let task = reprobe::run(svc.clone(), ctx.shutdown.clone());
    Ok(
        Built::new(tonic::service::Routes::new(AppsServiceServer::new(svc)))
            .task("apps-reprobe", task),
    )
}
