//! The wire protocol: frames, headers, messages and status codes.
//!
//! PROTOCOL.md at the repository root is the normative description; this
//! module implements it.

mod codec;
mod frame;
mod hash;
mod header;
mod message;
mod payload;
mod status;

pub use codec::{DEFAULT_MAX_FRAME_LEN, FrameCodec, MIN_MAX_FRAME_LEN};
pub use frame::Frame;
pub(crate) use hash::Hasher;
pub use hash::{ContentHash, ParseHashError};
pub use header::{
    HEADER_LEN, Kind, LENGTH_PREFIX_LEN, MAX_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
};
pub use message::{
    Call, ChunkEnd, DEFAULT_MAX_PAYLOAD_LEN, DEFAULT_MAX_STREAMS, ErrorMessage, GoAway, Hello,
    Limits, MAX_NAME_LEN, Message, OfferProgram, PeerRole, Ping, Pong, RequestData, Response,
    SendData, SendProgram, VersionMismatch, Welcome,
};
pub use payload::Payload;
pub use status::StatusCode;

use bytes::Bytes;

/// Encodes `value` with postcard into a buffer of exactly its size: one
/// allocation, no regrowth, and a `Bytes` that needs no second allocation
/// for its reference count. Measuring the size walks the value once more,
/// which costs less than either.
pub(crate) fn encode_value<T: serde::Serialize + ?Sized>(value: &T) -> postcard::Result<Bytes> {
    let len = postcard::experimental::serialized_size(value)?;
    postcard::to_io(value, Vec::with_capacity(len)).map(Bytes::from)
}

/// Decodes exactly one `T` from `bytes` with postcard: unlike
/// `postcard::from_bytes`, leftover bytes are an error, since they mean the
/// bytes were not what the reader expected.
pub(crate) fn decode_exact<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ValueError> {
    match postcard::take_from_bytes(bytes).map_err(ValueError::Malformed)? {
        (value, []) => Ok(value),
        (_, rest) => Err(ValueError::Leftover(rest.len())),
    }
}

/// Bytes are not exactly one value of the expected type.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ValueError {
    #[error("{0}")]
    Malformed(postcard::Error),
    #[error("{0} bytes are left over after the value")]
    Leftover(usize),
}

impl From<ValueError> for postcard::Error {
    fn from(error: ValueError) -> postcard::Error {
        match error {
            ValueError::Malformed(error) => error,
            ValueError::Leftover(_) => postcard::Error::DeserializeBadEncoding,
        }
    }
}
