//! The tasks service: projects with identifier prefixes (`API-42`), custom status workflows,
//! sections, milestones and members; tasks with subtasks at any depth, dependencies (with cycle
//! refusal), labels, comments, URL links and RFC 5545 recurrence in the task's time zone.
//! Every change to a task is kept as a bitemporal version (kit's store) and announced as
//! `worktruck.tasks.{task,project,label,comment,dependency,settings}.*.v1`.
//!
//! It owns the `tasks` schema (or `tasks.db`); other services reach tasks only over gRPC or
//! events. Links to other domains (contacts, events, notes, deals) are kit's cross-domain
//! links, not built here.

mod domain;
mod queries;
pub mod recur;
mod service;

use sqlx::migrate::Migrator;
use worktruck_kit::links::LinkTarget;
use worktruck_kit::service::{Built, ServiceContext, ServiceDef};
use worktruck_proto::tasks::v1::tasks_service_server::TasksServiceServer;

pub use domain::TaskDoc;
pub use service::{COMMENTS, LABELS, PROJECTS, TASKS, Tasks};

/// The service's name: its schema and database file.
pub const SERVICE: &str = "tasks";

/// The gRPC service name, for health checking.
pub const GRPC_NAME: &str = "worktruck.tasks.v1.TasksService";

/// The service's migrations: (PostgreSQL, SQLite).
pub fn migrators() -> (Migrator, Migrator) {
    (sqlx::migrate!("migrations/postgres"), sqlx::migrate!("migrations/sqlite"))
}

/// The tasks service, for the binary's table of services.
pub static DEFINITION: ServiceDef = ServiceDef {
    name: SERVICE,
    grpc_services: &[GRPC_NAME],
    calls: &[],
    // `[[task:API-42]]` names a task by its identifier as well as by its id.
    link_targets: &[
        LinkTarget { entity: "task", title: &["title"], key: Some("identifier") },
        LinkTarget { entity: "project", title: &["name"], key: None },
    ],
    migrators,
    build,
    workers: &[],
};

fn build(ctx: ServiceContext) -> anyhow::Result<Built> {
    let links = ctx.links();
    let svc = Tasks::new(ctx.db, ctx.verifier, ctx.relay, links);
    Ok(Built::new(tonic::service::Routes::new(TasksServiceServer::new(svc))))
}
