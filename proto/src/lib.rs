//! Every Worktruck proto, compiled: tonic/prost types per package, the encoded descriptor set,
//! and the [`registry`] that REST routes, MCP tools and OpenAPI are derived from at run time.
//!
//! This crate owns the wire contract. It must not know about storage, transport or auth.

#![allow(clippy::all)]

pub mod codec;
pub mod json;
pub mod registry;
pub mod schema;
pub mod text;

/// The encoded `FileDescriptorSet` of every proto, imports and source info included.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

/// Generated code for `worktruck.common.v1`.
pub mod common {
    #[allow(missing_docs)]
    pub mod v1 {
        tonic::include_proto!("worktruck.common.v1");
    }
}

/// Generated code for `worktruck.tenants.v1`.
pub mod tenants {
    #[allow(missing_docs)]
    pub mod v1 {
        tonic::include_proto!("worktruck.tenants.v1");
    }
}

/// Generated code for `worktruck.contacts.v1`.
pub mod contacts {
    #[allow(missing_docs)]
    pub mod v1 {
        tonic::include_proto!("worktruck.contacts.v1");
    }
}

/// Generated code for `worktruck.notes.v1`.
pub mod notes {
    #[allow(missing_docs)]
    pub mod v1 {
        tonic::include_proto!("worktruck.notes.v1");
    }
}

/// Generated code for `worktruck.tasks.v1`.
pub mod tasks {
    #[allow(missing_docs)]
    pub mod v1 {
        tonic::include_proto!("worktruck.tasks.v1");
    }
}
