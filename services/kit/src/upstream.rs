//! The services behind a caller (the gateways, the agents worker) and the generic unary call
//! to them: request and response travel as already-encoded protobuf bytes, so no per-service
//! client code exists.

use tracing::Instrument as _;
use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// A channel per gRPC service full name, e.g. `worktruck.contacts.v1.ContactsService`.
#[derive(Debug, Clone, Default)]
pub struct Upstreams {
    channels: HashMap<String, Channel>,
}

impl Upstreams {
    /// No upstreams yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the channel of a service.
    pub fn with(mut self, service: impl Into<String>, channel: Channel) -> Self {
        self.channels.insert(service.into(), channel);
        self
    }

    /// Adds (or replaces) the channel of a service.
    pub fn insert(&mut self, service: impl Into<String>, channel: Channel) {
        self.channels.insert(service.into(), channel);
    }

    /// The channel of a service.
    pub fn get(&self, service: &str) -> Option<&Channel> {
        self.channels.get(service)
    }
}

impl FromIterator<(String, Channel)> for Upstreams {
    fn from_iter<I: IntoIterator<Item = (String, Channel)>>(iter: I) -> Self {
        Self {
            channels: iter.into_iter().collect(),
        }
    }
}

/// The largest message to or from a service (`rest.upload_limit_bytes` is at most 1 GiB).
const MAX_MESSAGE: usize = (1 << 30) + (1 << 20);

/// Calls one unary RPC with an encoded request and returns the encoded response.
pub async fn unary(
    channel: Channel,
    path: PathAndQuery,
    body: Bytes,
    metadata: MetadataMap,
) -> Result<Bytes, Status> {
    // Raw bodies (uploads, downloads) may exceed tonic's 4 MiB default; the REST body limits
    // and each service's own bound them.
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("upstream not ready: {e}")))?;
    let span = crate::telemetry::client_span(path.as_str());
    let mut request = Request::new(body);
    *request.metadata_mut() = metadata;
    // The call's trace context is the client span's, so the server's span is its child.
    span.in_scope(|| crate::telemetry::inject(request.metadata_mut()));
    let started = std::time::Instant::now();
    let answer = grpc
        .unary(request, path.clone(), RawCodec)
        .instrument(span.clone())
        .await
        .map(tonic::Response::into_inner);
    let code = answer.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok);
    crate::telemetry::record_grpc_code(&span, code, false);
    crate::telemetry::record_client_call(path.as_str(), code, started.elapsed());
    answer
}

/// A failure status from a service as callers show it: statuses without details come from the
/// transport, and their text (addresses, OS errors) is not for callers; internal ones are logged.
pub fn status_error(path: &str, status: &Status) -> crate::Error {
    let mut error = crate::Error::from_status(status);
    if status.details().is_empty() && error.code == crate::ErrorCode::Unavailable {
        tracing::warn!(grpc = %path, error = %status.message(), "upstream unavailable");
        error.message = "a service is unavailable; retry later".to_owned();
    } else if error.code == crate::ErrorCode::Internal {
        tracing::error!(grpc = %path, code = ?status.code(), error = %status.message(), "upstream failed");
    }
    error
}

/// Calls `rpc` at `path` with a JSON request in the API's conventions (`proto::json`: what an
/// MCP tool or an agent's tool call sends) and answers the response as JSON: the one generic
/// JSON call, shared by the MCP gateway and the agents worker.
pub async fn call_json(
    channel: Channel,
    path: PathAndQuery,
    rpc: &prost_reflect::MethodDescriptor,
    arguments: serde_json::Value,
    metadata: MetadataMap,
) -> Result<serde_json::Value, crate::Error> {
    use prost::Message as _;
    let message = worktruck_proto::json::from_value(&rpc.input(), arguments).map_err(|e| crate::Error::invalid(e.to_string()))?;
    let reply = unary(channel, path.clone(), message.encode_to_vec().into(), metadata)
        .await
        .map_err(|status| status_error(path.as_str(), &status))?;
    let response = prost_reflect::DynamicMessage::decode(rpc.output(), reply)
        .map_err(|e| crate::Error::internal(format!("undecodable response from {path}: {e}")))?;
    worktruck_proto::json::to_value(&response).map_err(crate::Error::internal)
}

/// A pass-through codec: prost-reflect does the encoding on both sides of it.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
