//! Load harness for Worktruck (brief §14): starts (or targets) a server, drives its REST API
//! with concurrent workers over loopback, and reports throughput and latency percentiles.
//!
//! Owns measuring only: it must not link the server crates (it runs the real `worktruck`
//! binary as a child process, the way an operator would) and it asserts nothing about speed.

pub mod agents;
pub mod ceiling;
pub mod load;
pub mod report;
pub mod server;
pub mod stats;
