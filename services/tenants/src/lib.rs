//! The tenants service: tenants (plan, retention window) and their API keys, and API-key
//! authentication for the gateways (`AuthenticateApiKey`).
//!
//! It owns the `tenants` schema (or `tenants.db`) and nothing else; secrets are stored only as
//! keyed hashes and never logged.

pub mod keys;
mod service;
pub mod store;

use sqlx::migrate::Migrator;

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
