//! The agents service: one agent config per (tenant, blueprint), and durable runs of a
//! blueprint's agent — a loop of LLM turns through the Anthropic Messages API and calls of the
//! PIM tools (the registry's MCP tools, over the same signed gRPC path as the gateways) —
//! journaled step by step with tokens and cost, so a run resumed after a crash never repeats a
//! completed step.
//!
//! The service serves the API (configs, enqueue, runs, cancel, events); the `agent-worker`
//! role ([`worker`]) runs the runs: it claims a run with a lease in the database (the claim is
//! a compare-and-set on the run's row, exact across replicas), heartbeats, and a lapsed lease
//! lets another worker take the run over. The bus only wakes workers; the database is the truth.
//! Every worker also runs a scheduler (`schedule.rs`): a config's cron schedule enqueues a run
//! per tick, each tick claimed once in the database in the transaction that inserts its run.
//! It also keeps the tenant's integration keys (`integrations/`: cloudflare, github, netdata,
//! postmark, outstand), sealed like the BYOK key and verified against each provider's API.
//!
//! It owns the `agents` schema (or `agents.db`); the PIM data its runs touch belongs to the
//! other services, reached over gRPC only.

pub mod anthropic;
pub mod blueprints;
mod integrations;
pub(crate) mod schedule;
mod principal;
mod service;
pub mod settings;
mod store;
mod tools;
pub mod worker;

use sqlx::migrate::Migrator;
use worktruck_kit::service::{Built, ServiceContext, ServiceDef, WorkerDef};
use worktruck_proto::agents::v1::agents_service_server::AgentsServiceServer;

pub use service::Agents;

/// The service's name: its schema and database file.
pub const SERVICE: &str = "agents";

/// The gRPC service name, for health checking.
pub const GRPC_NAME: &str = "worktruck.agents.v1.AgentsService";

/// The worker role that runs the runs.
pub const WORKER_ROLE: &str = "agent-worker";

/// The service's migrations: (PostgreSQL, SQLite).
pub fn migrators() -> (Migrator, Migrator) {
    (
        sqlx::migrate!("migrations/postgres"),
        sqlx::migrate!("migrations/sqlite"),
    )
}

/// The agents service, for the binary's table of services.
pub static DEFINITION: ServiceDef = ServiceDef {
    name: SERVICE,
    grpc_services: &[GRPC_NAME],
    calls: &[],
    link_targets: &[],
    migrators,
    build,
    workers: &[WorkerDef {
        role: WORKER_ROLE,
        build: worker::build,
    }],
};

fn build(ctx: ServiceContext) -> anyhow::Result<Built> {
    let settings: settings::Settings = ctx.settings()?;
    settings.check()?;
    let envelope = ctx.envelope()?;
    let anthropic = anthropic::Client::new(&settings, &ctx.config.outbound)?;
    let svc = Agents::new(
        ctx.db,
        ctx.verifier,
        ctx.relay,
        settings,
        anthropic,
        envelope,
        &ctx.config.outbound,
    )?;
    Ok(Built::new(tonic::service::Routes::new(
        AgentsServiceServer::new(svc),
    )))
}
