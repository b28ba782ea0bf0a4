//! The contacts service: people, organizations and groups, every change kept as a bitemporal
//! version (kit's store), every change announced as `worktruck.contacts.contact.*.v1`.
//!
//! It owns the `contacts` schema (or `contacts.db`); other services reach contacts only over
//! gRPC or events.

mod children;
mod domain;
mod import;
mod lookup;
mod merge;
pub mod vcard;
mod service;

use sqlx::migrate::Migrator;
use worktruck_kit::links::LinkTarget;
use worktruck_kit::service::{Built, ServiceContext, ServiceDef};
use worktruck_proto::contacts::v1::contacts_service_server::ContactsServiceServer;

pub use domain::ContactDoc;
pub use service::{CONTACTS, Contacts};

/// The service's name: its schema and database file.
pub const SERVICE: &str = "contacts";

/// The gRPC service name, for health checking.
pub const GRPC_NAME: &str = "worktruck.contacts.v1.ContactsService";

/// The service's migrations: (PostgreSQL, SQLite).
pub fn migrators() -> (Migrator, Migrator) {
    (sqlx::migrate!("migrations/postgres"), sqlx::migrate!("migrations/sqlite"))
}

/// The contacts service, for the binary's table of services.
pub static DEFINITION: ServiceDef = ServiceDef {
    name: SERVICE,
    grpc_services: &[GRPC_NAME],
    calls: &[],
    link_targets: &[LinkTarget { entity: "contact", title: &["display_name"], key: None }],
    migrators,
    build,
    workers: &[],
};

fn build(ctx: ServiceContext) -> anyhow::Result<Built> {
    let links = ctx.links();
    let svc = Contacts::new(ctx.db, ctx.verifier, ctx.relay, links);
    Ok(Built::new(tonic::service::Routes::new(ContactsServiceServer::new(svc))))
}
