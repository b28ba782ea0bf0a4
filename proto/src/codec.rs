//! The gRPC codec every generated server and client uses (`codec_path` in `build.rs`): prost,
//! plus, for every message some RPC takes as its request, the rules of [`crate::text`]. A
//! service therefore refuses NUL, control characters in single-line fields and documents too
//! deep to read back whoever calls it (the gateways check the same rules first, with better
//! messages), and a message prost cannot decode is the caller's `INVALID_ARGUMENT`, not the
//! `INTERNAL` tonic would answer.

use std::collections::HashSet;
use std::marker::PhantomData;
use std::sync::OnceLock;

use bytes::Buf;
use prost::{Message, Name};
use prost_reflect::{DescriptorPool, DynamicMessage};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// Longest error message put in a `grpc-message` header.
const MAX_MESSAGE_BYTES: usize = 1024;

/// [`tonic_prost::ProstCodec`] with the request rules of [`crate::text`] on decoding.
#[derive(Debug, Clone)]
pub struct Checked<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for Checked<T, U> {
    fn default() -> Self {
        Self { _pd: PhantomData }
    }
}

impl<T, U> Codec for Checked<T, U>
where
    T: Message + Send + 'static,
    U: Message + Name + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = CheckedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(Default::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        CheckedDecoder { _pd: PhantomData }
    }
}

/// Decodes with prost, then checks request messages (see the module doc).
#[derive(Debug)]
pub struct CheckedDecoder<U> {
    _pd: PhantomData<U>,
}

impl<U: Message + Name + Default> Decoder for CheckedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        let item = U::decode(bytes.clone()).map_err(|e| invalid(&format!("undecodable message: {e}")))?;
        check(&U::full_name(), &bytes)?;
        Ok(Some(item))
    }
}

/// The embedded descriptors and the names of the messages RPCs take as requests. Responses are
/// not checked: a client reads what a service wrote.
fn requests() -> &'static (DescriptorPool, HashSet<String>) {
    static POOL: OnceLock<(DescriptorPool, HashSet<String>)> = OnceLock::new();
    POOL.get_or_init(|| {
        let pool = DescriptorPool::decode(crate::DESCRIPTOR_SET).expect("the embedded descriptor set decodes");
        let inputs = pool
            .services()
            .flat_map(|s| s.methods().map(|m| m.input().full_name().to_owned()).collect::<Vec<_>>())
            .collect();
        (pool, inputs)
    })
}

/// Checks the encoded message `name` when it is a request type.
pub fn check(name: &str, bytes: &[u8]) -> Result<(), Status> {
    let (pool, inputs) = requests();
    if !inputs.contains(name) {
        return Ok(());
    }
    let Some(desc) = pool.get_message_by_name(name) else {
        return Ok(());
    };
    let msg = DynamicMessage::decode(desc, bytes).map_err(|e| invalid(&format!("undecodable message: {e}")))?;
    crate::text::check_message(&msg).map_err(|v| {
        invalid(&if v.field.is_empty() { v.reason } else { format!("{} {}", v.field, v.reason) })
    })
}

fn invalid(message: &str) -> Status {
    Status::invalid_argument(crate::text::bounded(message, MAX_MESSAGE_BYTES))
}
