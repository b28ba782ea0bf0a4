//! The `worktruck` binary's library: builds the roles of brief §2 from configuration. `main`
//! parses the command line and calls into here; tests call the same functions on port 0.
//!
//! Nothing domain-specific lives here: it wires kit, the services and the gateways together.

pub mod admin;
pub mod app;
pub mod services;

pub use app::{Role, Running, role_names, start_dev, start_dev_with, start_role};
