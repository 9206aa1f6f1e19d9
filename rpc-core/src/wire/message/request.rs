//! Stream messages: calls, data, programs and their responses.

use serde::{Deserialize, Serialize};

use crate::wire::{ContentHash, Payload, StatusCode};

/// Calls a named function; answered by a [`Response`] on the same stream.
///
/// Many calls may be in flight on one connection, each on its own stream, and
/// their responses may come back in any order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// The function's name; 1 to [`MAX_NAME_LEN`](crate::wire::MAX_NAME_LEN) bytes.
    pub method: String,
    /// How long, in milliseconds from when the callee receives this frame, the
    /// caller will wait; past it the callee stops working and answers
    /// `504 deadline exceeded`. `None` means no deadline.
    pub timeout_ms: Option<u64>,
    /// Set by a caller that may retry this call: a callee that has seen the
    /// key recently answers with the first call's response instead of running
    /// the function again. Random, unique per logical call.
    pub idempotency_key: Option<[u8; 16]>,
    /// The hash of the function's name and argument and result types as the
    /// caller was built; a callee whose hash differs answers `409
    /// incompatible` instead of decoding the arguments.
    pub schema_hash: Option<u64>,
    /// The encoded arguments.
    #[serde(skip)]
    pub payload: Payload,
}

/// Answers the request that opened its stream, and ends the stream.
///
/// A response answers a [`Call`] (the payload is the encoded result, or for
/// `422` the function's own encoded error), a [`SendData`] (empty payload), a
/// [`RequestData`] (the value), an [`OfferProgram`] (`200`: already held,
/// `404`: send it) or a [`SendProgram`] (`200`: stored).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The outcome.
    pub status: StatusCode,
    /// The responder's clock when it answered, in milliseconds since the Unix
    /// epoch.
    pub server_time_ms: u64,
    /// How long the responder worked on the request, in microseconds.
    pub elapsed_us: u64,
    /// A human-readable explanation when the status is not `200`; may be
    /// empty. It never carries internals such as paths.
    pub message: String,
    /// The result.
    #[serde(skip)]
    pub payload: Payload,
}

/// Pushes a named value to the peer, which stores it under that name (an
/// existing value is replaced); answered by a [`Response`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendData {
    /// The value's name; 1 to [`MAX_NAME_LEN`](crate::wire::MAX_NAME_LEN) bytes.
    pub name: String,
    /// The value.
    #[serde(skip)]
    pub payload: Payload,
}

/// Asks the peer for a named value; answered by a [`Response`] whose payload
/// is the value, or `404` if there is none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestData {
    /// The value's name; 1 to [`MAX_NAME_LEN`](crate::wire::MAX_NAME_LEN) bytes.
    pub name: String,
}

/// Asks whether the peer already holds a program; answered by a [`Response`]:
/// `200` if it does (nothing more to send), `404` if it wants the bytes (send
/// them with [`SendProgram`] on a new stream), `429` if `len` is more than it
/// accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferProgram {
    /// The SHA-256 of the program's bytes, which is its identity.
    pub hash: ContentHash,
    /// The program's size in bytes.
    pub len: u64,
}

/// Uploads a program (a WebAssembly module); answered by a [`Response`]:
/// `200` once its SHA-256 is verified and it is stored, `400` if the bytes do
/// not hash to `hash` or are not a valid program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendProgram {
    /// The SHA-256 of the program's bytes.
    pub hash: ContentHash,
    /// The program's bytes.
    #[serde(skip)]
    pub payload: Payload,
}

/// Ends a chunked payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkEnd {
    /// The SHA-256 of all the payload's bytes, in order, if the sender chose
    /// to send one; the receiver must then check it.
    ///
    /// The transport (TCP checksums, TLS records) already guards the bytes
    /// in transit, and a program's hash is checked against its
    /// [`SendProgram::hash`] anyway, so the Rust runtime sends none: hashing
    /// would cost more than moving the bytes. It is there for senders that
    /// want an end-to-end check, such as a relay passing bytes on.
    pub hash: Option<ContentHash>,
}
