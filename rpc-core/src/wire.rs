//! The wire protocol: frames, headers, messages and status codes.
//!
//! PROTOCOL.md at the repository root is the normative description; this
//! module implements it.

mod codec;
mod depth;
mod describe;
mod errors;
mod frame;
mod hash;
mod header;
mod message;
mod payload;
mod status;

pub use codec::{DEFAULT_MAX_FRAME_LEN, FrameCodec, MIN_MAX_FRAME_LEN};
pub use depth::DEFAULT_MAX_DECODE_DEPTH;
pub use describe::{DESCRIBE_METHOD, FunctionInfo};
pub use errors::{DecodeError, EncodeError, TransferError};
pub use frame::Frame;
pub(crate) use hash::Hasher;
pub use hash::{ContentHash, ParseHashError};
pub use header::{
    HEADER_LEN, Kind, LENGTH_PREFIX_LEN, MAX_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
};
pub use message::{
    Call, ChunkEnd, DEFAULT_MAX_PAYLOAD_LEN, DEFAULT_MAX_STREAMS, ErrorMessage, GoAway, Hello,
    Join, Limits, MAX_NAME_LEN, Message, OfferProgram, PeerRole, Ping, Pong, RequestData, Response,
    Route, SendData, SendProgram, TICKET_LEN, VersionMismatch, Welcome,
};
pub use payload::Payload;
pub use status::StatusCode;

pub use crate::transfer::{
    ChunkFrames, ChunkReceiver, ChunkSender, DEFAULT_CHUNK_LEN, chunk_len_for,
};

use bytes::Bytes;

/// Encodes `value` with postcard into a buffer of exactly its size: one
/// allocation, no regrowth, and a `Bytes` that needs no second allocation
/// for its reference count. Measuring the size walks the value once more,
/// which costs less than either.
pub(crate) fn encode_value<T: serde::Serialize + ?Sized>(value: &T) -> postcard::Result<Bytes> {
    let len = postcard::experimental::serialized_size(value)?;
    postcard::to_io(value, Vec::with_capacity(len)).map(Bytes::from)
}

/// Decodes exactly one `T` from `bytes` with postcard, nested at most
/// [`DEFAULT_MAX_DECODE_DEPTH`] levels: unlike `postcard::from_bytes`,
/// leftover bytes are an error, since they mean the bytes were not what the
/// reader expected.
pub(crate) fn decode_exact<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ValueError> {
    decode_limited(bytes, DEFAULT_MAX_DECODE_DEPTH)
}

/// Decodes exactly one `T` from `bytes`, refusing values nested more than
/// `max_depth` levels deep (which would otherwise recurse until the stack
/// overflows and the process aborts).
pub(crate) fn decode_limited<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    max_depth: u32,
) -> Result<T, ValueError> {
    let depth = depth::Depth::new(max_depth);
    let mut deserializer = postcard::Deserializer::from_bytes(bytes);
    let value = T::deserialize(depth::Limited {
        inner: &mut deserializer,
        depth: &depth,
    });
    if depth.exceeded() {
        return Err(ValueError::TooDeep { max: max_depth });
    }
    let value = value.map_err(ValueError::Malformed)?;
    match deserializer.finalize().map_err(ValueError::Malformed)? {
        [] => Ok(value),
        rest => Err(ValueError::Leftover(rest.len())),
    }
}

/// Decodes exactly one `T` from postcard `bytes`, as arguments and results
/// are decoded: nested at most [`DEFAULT_MAX_DECODE_DEPTH`] levels, with no
/// bytes left over. For values from peers that are not trusted to keep
/// their nesting shallow (a guest's output, say).
///
/// ```
/// let bytes = postcard::to_allocvec(&(7u8, Some("seven"))).unwrap();
/// let value: (u8, Option<String>) = rpc_core::wire::decode_value(&bytes)?;
/// assert_eq!(value, (7, Some("seven".to_owned())));
/// assert!(rpc_core::wire::decode_value::<u8>(&bytes).is_err(), "bytes left over");
/// # Ok::<(), rpc_core::wire::ValueError>(())
/// ```
///
/// # Errors
///
/// [`ValueError`] saying why the bytes are not one `T`.
pub fn decode_value<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ValueError> {
    decode_exact(bytes)
}

/// Bytes are not exactly one value of the expected type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// Postcard could not decode them as the type.
    #[error("{0}")]
    Malformed(postcard::Error),
    /// Bytes are left over after the value.
    #[error("{0} bytes are left over after the value")]
    Leftover(usize),
    /// The value is nested deeper than the limit.
    #[error("the value is nested more than {max} levels deep")]
    TooDeep {
        /// The limit.
        max: u32,
    },
}

impl From<ValueError> for postcard::Error {
    fn from(error: ValueError) -> postcard::Error {
        match error {
            ValueError::Malformed(error) => error,
            ValueError::Leftover(_) | ValueError::TooDeep { .. } => {
                postcard::Error::DeserializeBadEncoding
            }
        }
    }
}
