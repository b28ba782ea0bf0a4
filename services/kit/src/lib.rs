//! The shared runtime of every Worktruck service: typed config, the database layer (Postgres and
//! SQLite), the generic bitemporal store, opaque cursors, the error-code table, the outbox and
//! event bus, cross-domain links, the signed internal context, outbound HTTPS clients, telemetry, and
//! health/readiness/metrics, the generic unary gRPC call by path (`upstream`), and the definition every service exports (`service`).
//!
//! Domain rules live in the services; this crate must stay free of any one domain.

pub mod blobs;
pub mod bus;
pub mod config;
pub mod context;
pub mod cursor;
pub mod check;
pub mod db;
pub mod envelope;
pub mod error;
pub mod http;
pub mod idempotency;
pub mod links;
pub mod ops;
pub mod outbox;
pub mod pbjson;
pub mod rpc;
pub mod scopes;
pub mod serve;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod upstream;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::{Error, ErrorCode, Result};
