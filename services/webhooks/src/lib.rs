//! The webhooks service: URLs a tenant registers to receive its events. A bus consumer
//! (`consumer.rs`, a durable JetStream consumer on NATS) matches every event of a tenant
//! against that tenant's active webhooks and records one delivery per match (unique per
//! webhook and event, so a redelivered bus message makes none twice), then acknowledges the
//! message; the delivery loop (`deliver.rs`) claims due deliveries with a lease (so replicas
//! never send one at once), sends each one in event order per entity, signed with
//! HMAC-SHA256 under the webhook's secret (`sign.rs`), through kit's SSRF-guarded client, and
//! retries with exponential backoff and jitter for the retry window; a webhook that keeps
//! failing is disabled, with an event. Secrets are sealed under the tenant's key and shown
//! only when made. Changes are announced as
//! `worktruck.webhooks.webhook.{created,updated,deleted,disabled}.v1`.
//!
//! It owns the `webhooks` schema (or `webhooks.db`) and makes no outbound call except through
//! `kit::http::guarded`.

mod consumer;
mod deliver;
mod domain;
mod queries;
mod service;
mod sign;

use std::time::Duration;

use serde::Deserialize;
use sqlx::migrate::Migrator;
use worktruck_kit::service::{Built, ServiceContext, ServiceDef};
use worktruck_proto::webhooks::v1::webhooks_service_server::WebhooksServiceServer;

pub use service::Webhooks;
pub use sign::{signature_header, verify};

/// The service's name: its schema and database file.
pub const SERVICE: &str = "webhooks";

/// The gRPC service name, for health checking.
pub const GRPC_NAME: &str = "worktruck.webhooks.v1.WebhooksService";

/// The service's migrations: (PostgreSQL, SQLite).
pub fn migrators() -> (Migrator, Migrator) {
    (
        sqlx::migrate!("migrations/postgres"),
        sqlx::migrate!("migrations/sqlite"),
    )
}

/// The webhooks service, for the binary's table of services.
pub static DEFINITION: ServiceDef = ServiceDef {
    name: SERVICE,
    grpc_services: &[GRPC_NAME],
    calls: &[],
    link_targets: &[],
    migrators,
    build,
    workers: &[],
};

/// `[settings.webhooks]`: retries, timeouts and when a failing webhook is disabled.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The delay before the first retry; each further retry doubles it (jittered ±20 %).
    pub retry_base_ms: u64,
    /// The longest delay between two attempts.
    pub retry_max_ms: u64,
    /// How long a delivery is retried after it was made (or redelivered); then `failed`.
    pub retry_window_seconds: u64,
    /// One attempt (connect, send, the answer) ends after this.
    pub attempt_timeout_ms: u64,
    /// How often the delivery loop looks for due deliveries (new events wake it at once).
    pub poll_ms: u64,
    /// Deliveries attempted at once by one process.
    pub concurrency: usize,
    /// A webhook is disabled once it has failed this many attempts in a row …
    pub disable_after_failures: i32,
    /// … and its failures have lasted at least this long.
    pub disable_after_seconds: u64,
    /// Delivered and failed deliveries are deleted this many days after they were made.
    pub keep_days: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            retry_base_ms: 30_000,
            retry_max_ms: 3_600_000,
            retry_window_seconds: 86_400,
            attempt_timeout_ms: 10_000,
            poll_ms: 1_000,
            concurrency: 8,
            disable_after_failures: 20,
            disable_after_seconds: 86_400,
            keep_days: 30,
        }
    }
}

impl Settings {
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.retry_base_ms >= 10,
            "settings.webhooks.retry_base_ms must be at least 10"
        );
        anyhow::ensure!(
            self.retry_max_ms >= self.retry_base_ms,
            "settings.webhooks.retry_max_ms must be at least retry_base_ms"
        );
        anyhow::ensure!(
            self.retry_window_seconds >= 1,
            "settings.webhooks.retry_window_seconds must be at least 1"
        );
        anyhow::ensure!(
            (100..=60_000).contains(&self.attempt_timeout_ms),
            "settings.webhooks.attempt_timeout_ms must be 100 to 60000"
        );
        anyhow::ensure!(
            (10..=60_000).contains(&self.poll_ms),
            "settings.webhooks.poll_ms must be 10 to 60000"
        );
        anyhow::ensure!(
            (1..=256).contains(&self.concurrency),
            "settings.webhooks.concurrency must be 1 to 256"
        );
        anyhow::ensure!(
            (1..=100_000).contains(&self.disable_after_failures),
            "settings.webhooks.disable_after_failures must be 1 to 100000"
        );
        anyhow::ensure!(
            (1..=3650).contains(&self.keep_days),
            "settings.webhooks.keep_days must be 1 to 3650"
        );
        Ok(())
    }

    fn attempt_timeout(&self) -> Duration {
        Duration::from_millis(self.attempt_timeout_ms)
    }
}

fn build(ctx: ServiceContext) -> anyhow::Result<Built> {
    let settings: Settings = ctx.settings()?;
    settings.check()?;
    let guard = worktruck_kit::http::Guard::from_config(&ctx.config.outbound)?;
    let client = worktruck_kit::http::guarded(
        &ctx.config.outbound,
        guard.clone(),
        worktruck_kit::http::Timeouts {
            connect: settings.attempt_timeout().min(Duration::from_secs(5)),
            total: settings.attempt_timeout(),
        },
    )?;
    let envelope = ctx.envelope()?;
    let svc = Webhooks::new(
        ctx.db.clone(),
        ctx.verifier,
        ctx.relay.clone(),
        guard,
        client,
        envelope,
        settings,
    );
    let consume = consumer::run(svc.clone(), ctx.bus.clone(), ctx.shutdown.clone());
    let deliver = deliver::run(svc.clone(), ctx.shutdown.clone());
    Ok(
        Built::new(tonic::service::Routes::new(WebhooksServiceServer::new(svc)))
            .task("webhooks-consumer", consume)
            .task("webhooks-delivery", deliver),
    )
}
