//! Every Worktruck proto, compiled: tonic/prost types per package, the encoded descriptor set,
//! and the [`registry`] that REST routes, MCP tools and OpenAPI are derived from at run time.
//!
//! This crate owns the wire contract. It must not know about storage, transport or auth.

#![allow(clippy::all)]

pub mod app_tools;
pub mod codec;
pub mod json;
pub mod mask;
pub mod registry;
pub mod schema;
pub mod text;

/// The encoded `FileDescriptorSet` of every proto, imports and source info included.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

/// `google.api.HttpBody` (`google/api/httpbody.proto`): a body that is not JSON. Written
/// here rather than generated, because generated code reaches another package by relative
/// paths that assume one module per package segment (`build.rs` maps `.google.api` here).
pub mod google {
    /// `google.api`.
    pub mod api {
        /// An arbitrary HTTP body and its content type.
        #[derive(Clone, PartialEq, ::prost::Message)]
        pub struct HttpBody {
            /// The `Content-Type` of the body.
            #[prost(string, tag = "1")]
            pub content_type: ::prost::alloc::string::String,
            /// The body's bytes.
            #[prost(bytes = "vec", tag = "2")]
            pub data: ::prost::alloc::vec::Vec<u8>,
            /// Application-specific metadata (`worktruck.common.v1.BodyHeaders`).
            #[prost(message, repeated, tag = "3")]
            pub extensions: ::prost::alloc::vec::Vec<::prost_types::Any>,
        }

        impl ::prost::Name for HttpBody {
            const NAME: &'static str = "HttpBody";
            const PACKAGE: &'static str = "google.api";
            fn full_name() -> ::prost::alloc::string::String {
                "google.api.HttpBody".into()
            }
            fn type_url() -> ::prost::alloc::string::String {
                "type.googleapis.com/google.api.HttpBody".into()
            }
        }
    }
}

/// The full name of `google.api.HttpBody`: as a route's body field, the raw request body; as
/// its response, the raw response.
pub const HTTP_BODY: &str = "google.api.HttpBody";

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

/// Generated code for `worktruck.crm.v1`.
pub mod crm {
    #[allow(missing_docs)]
    pub mod v1 {
        tonic::include_proto!("worktruck.crm.v1");
    }
}

/// Generated code for `worktruck.tasks.v1`.
pub mod tasks {
    #[allow(missing_docs)]
    pub mod v1 {
        tonic::include_proto!("worktruck.tasks.v1");
    }
}

/// Generated code for `worktruck.calendar.v1`.
pub mod calendar {
    #[allow(missing_docs)]
    pub mod v1 {
        tonic::include_proto!("worktruck.calendar.v1");
    }
}

/// Generated code for `worktruck.agents.v1`.
pub mod agents {
    #[allow(missing_docs)]
    pub mod v1 {
        tonic::include_proto!("worktruck.agents.v1");
    }
}

/// Generated code for `worktruck.apps.v1`.
pub mod apps {
    #[allow(missing_docs)]
    pub mod v1 {
        tonic::include_proto!("worktruck.apps.v1");
    }
}

/// Generated code for `worktruck.webhooks.v1`.
pub mod webhooks {
    #[allow(missing_docs)]
    pub mod v1 {
        tonic::include_proto!("worktruck.webhooks.v1");
    }
}
