//! The tenants service: tenants (plan, retention window) and their API keys, and API-key
//! authentication for the gateways (`AuthenticateApiKey`).
//!
//! It owns the `tenants` schema (or `tenants.db`) and nothing else; secrets are stored only as
//! keyed hashes and never logged.

pub mod idempotency;
pub mod keys;
mod service;
pub mod store;

use sqlx::migrate::Migrator;
use worktruck_kit::service::{Built, ServiceContext, ServiceDef};
use worktruck_proto::tenants::v1::tenants_service_server::TenantsServiceServer;

pub use service::{Tenants, create_tenant, parse_plan, plan_str};

/// The service's name: its schema, database file and role.
pub const SERVICE: &str = "tenants";

/// The gRPC service name, for health checking.
pub const GRPC_NAME: &str = "worktruck.tenants.v1.TenantsService";

/// The service's migrations: (PostgreSQL, SQLite).
pub fn migrators() -> (Migrator, Migrator) {
    (sqlx::migrate!("migrations/postgres"), sqlx::migrate!("migrations/sqlite"))
}

/// The purpose under which the API-key pepper derives from the master secret.
pub const PEPPER_PURPOSE: &str = "worktruck/api-key-pepper/v1";

/// The tenants service, for the binary's table of services.
pub static DEFINITION: ServiceDef = ServiceDef {
    name: SERVICE,
    grpc_services: &[GRPC_NAME],
    calls: &[],
    link_targets: &[],
    migrators,
    build,
    workers: &[],
};

fn build(ctx: ServiceContext) -> anyhow::Result<Built> {
    // API keys are stored as HMACs under this pepper: every process that writes or checks keys
    // must derive the same one, so it comes from the master secret and never from a default.
    let pepper = ctx.derived_key(PEPPER_PURPOSE)?;
    let retention = ctx.config.tenants.default_retention_days;
    let svc = Tenants::new(ctx.db, ctx.verifier, pepper, retention, ctx.relay);
    Ok(Built::new(tonic::service::Routes::new(TenantsServiceServer::new(svc))))
}
