//! The CRM service: pipelines with ordered stages (open, won, lost; probability; rotting), deals
//! with an exact decimal value in an ISO 4217 currency, deal contacts checked against the
//! contacts service over gRPC, every stage transition kept in an append-only stage-change log,
//! every change to a deal kept as a bitemporal version (kit's store), and pipeline analytics
//! computed from the log "as known then". Events: `worktruck.crm.{pipeline,stage}.*.v1`,
//! `worktruck.crm.deal.{created,updated,deleted,stage_changed,won,lost,contact_added,
//! contact_removed}.v1`.
//!
//! It owns the `crm` schema (or `crm.db`); it reaches contacts only through the contacts
//! service's gRPC API, with the caller's own signed context.

mod analytics;
mod domain;
mod queries;
mod service;

use sqlx::migrate::Migrator;
use worktruck_kit::links::LinkTarget;
use worktruck_kit::service::{Built, ServiceContext, ServiceDef};
use worktruck_proto::contacts::v1::contacts_service_client::ContactsServiceClient;
use worktruck_proto::crm::v1::crm_service_server::CrmServiceServer;

pub use domain::{DealDoc, Kind, PipelineDoc, StageDoc};
pub use service::{Crm, DEALS, PIPELINES, STAGES, Settings};

/// The service's name: its schema and database file.
pub const SERVICE: &str = "crm";

/// The gRPC service name, for health checking.
pub const GRPC_NAME: &str = "worktruck.crm.v1.CrmService";

/// The service's migrations: (PostgreSQL, SQLite).
pub fn migrators() -> (Migrator, Migrator) {
    (sqlx::migrate!("migrations/postgres"), sqlx::migrate!("migrations/sqlite"))
}

/// The CRM service, for the binary's table of services. It calls the contacts service to check
/// the contacts deals name.
pub static DEFINITION: ServiceDef = ServiceDef {
    name: SERVICE,
    grpc_services: &[GRPC_NAME],
    calls: &["contacts"],
    link_targets: &[
        LinkTarget { entity: "deal", title: &["name"], key: None },
        LinkTarget { entity: "pipeline", title: &["name"], key: None },
    ],
    migrators,
    build,
    workers: &[],
};

fn build(ctx: ServiceContext) -> anyhow::Result<Built> {
    let settings: Settings = ctx.settings()?;
    let contacts = ContactsServiceClient::new(ctx.client("contacts")?);
    let links = ctx.links();
    let svc = Crm::new(ctx.db, ctx.verifier, ctx.relay, contacts, settings, links);
    Ok(Built::new(tonic::service::Routes::new(CrmServiceServer::new(svc))))
}
