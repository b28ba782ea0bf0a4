//! The notes service: notebooks (nested, no cycles), markdown notes with YAML frontmatter,
//! `[[wikilinks]]` resolved by title with backlinks and unlinked mentions, and tag definitions.
//! Every change to a note is kept as a bitemporal version (kit's store) and announced as
//! `worktruck.notes.{note,notebook,tag}.*.v1`.
//!
//! It owns the `notes` schema (or `notes.db`); other services reach notes only over gRPC or
//! events. Markdown is parsed here (`markdown`), never in kit.

mod attachments;
mod domain;
mod links;
pub mod markdown;
mod queries;
mod service;

use sqlx::migrate::Migrator;
use worktruck_kit::links::LinkTarget;
use worktruck_kit::service::{Built, ServiceContext, ServiceDef};
use worktruck_proto::notes::v1::notes_service_server::NotesServiceServer;

pub use domain::NoteDoc;
pub use service::{NOTEBOOKS, NOTES, Notes, TAGS};

/// The service's name: its schema and database file.
pub const SERVICE: &str = "notes";

/// The gRPC service name, for health checking.
pub const GRPC_NAME: &str = "worktruck.notes.v1.NotesService";

/// The service's migrations: (PostgreSQL, SQLite).
pub fn migrators() -> (Migrator, Migrator) {
    (sqlx::migrate!("migrations/postgres"), sqlx::migrate!("migrations/sqlite"))
}

/// The notes service, for the binary's table of services.
pub static DEFINITION: ServiceDef = ServiceDef {
    name: SERVICE,
    grpc_services: &[GRPC_NAME],
    calls: &[],
    link_targets: &[
        LinkTarget { entity: "note", title: &["title"], key: None },
        LinkTarget { entity: "notebook", title: &["name"], key: None },
    ],
    migrators,
    build,
    workers: &[],
};

fn build(ctx: ServiceContext) -> anyhow::Result<Built> {
    let links = ctx.links();
    let settings: attachments::Settings = ctx.settings()?;
    let blobs = worktruck_kit::blobs::Blobs::from_config(&ctx.config, SERVICE)?;
    // An upload arrives whole in one message: as large as the gateway lets through, so the
    // service itself answers a file over its own limit (413), not the transport.
    let max_message = ctx.config.rest.upload_limit_bytes.max(settings.attachment_max_bytes) + (1 << 20);
    let svc = Notes::new(ctx.db, ctx.verifier, ctx.relay, links, blobs, settings);
    let server = NotesServiceServer::new(svc).max_decoding_message_size(max_message).max_encoding_message_size(max_message);
    Ok(Built::new(tonic::service::Routes::new(server)))
}
