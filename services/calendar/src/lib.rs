//! The calendar service: calendars (one primary per tenant) and events — timed in an IANA time
//! zone or all-day — with RFC 5545 recurrence (RRULE, EXDATE, RDATE, through the `rrule` crate)
//! expanded server-side in the event's time zone, per-instance exceptions, the edit scopes
//! `this`, `this_and_following` and `all`, and full-text search. Every change to an event is
//! kept as a bitemporal version (kit's store) and announced as
//! `worktruck.calendar.{calendar,event}.*.v1`.
//!
//! It owns the `calendar` schema (or `calendar.db`); other services reach it only over gRPC or
//! events. Links to other domains are kit's cross-domain links.

mod availability;
mod domain;
pub mod expand;
mod ics;
mod ics_import;
mod queries;
mod service;

use sqlx::migrate::Migrator;
use worktruck_kit::links::LinkTarget;
use worktruck_kit::service::{Built, ServiceContext, ServiceDef};
use worktruck_proto::calendar::v1::calendar_service_server::CalendarServiceServer;
use worktruck_proto::contacts::v1::contacts_service_client::ContactsServiceClient;

pub use service::{CALENDARS, Calendar, EVENTS};

/// The service's name: its schema and database file.
pub const SERVICE: &str = "calendar";

/// The gRPC service name, for health checking.
pub const GRPC_NAME: &str = "worktruck.calendar.v1.CalendarService";

/// The service's migrations: (PostgreSQL, SQLite).
pub fn migrators() -> (Migrator, Migrator) {
    (sqlx::migrate!("migrations/postgres"), sqlx::migrate!("migrations/sqlite"))
}

/// The calendar service, for the binary's table of services.
pub static DEFINITION: ServiceDef = ServiceDef {
    name: SERVICE,
    grpc_services: &[GRPC_NAME],
    // Contact attendees are checked against the contacts service.
    calls: &["contacts"],
    link_targets: &[
        LinkTarget { entity: "event", title: &["title"], key: None },
        LinkTarget { entity: "calendar", title: &["name"], key: None },
    ],
    migrators,
    build,
    workers: &[],
};

fn build(ctx: ServiceContext) -> anyhow::Result<Built> {
    let links = ctx.links();
    let contacts = ContactsServiceClient::new(ctx.client("contacts")?);
    let svc = Calendar::new(ctx.db, ctx.verifier, ctx.relay, links, contacts);
    Ok(Built::new(tonic::service::Routes::new(CalendarServiceServer::new(svc))))
}
