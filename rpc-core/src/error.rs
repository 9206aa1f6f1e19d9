//! Errors of the wire protocol and of chunked transfers.

use std::io;

use crate::wire::{
    ErrorMessage, Kind, MAX_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION, Message, StatusCode,
    VersionMismatch,
};

/// A received frame broke the protocol.
///
/// The connection cannot be trusted to stay in sync after this and should be
/// closed, after telling the peer why with an
/// [`Error`](crate::Message::Error) frame carrying [`Self::status`]. Converted
/// to an [`io::Error`], it becomes [`io::ErrorKind::InvalidData`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length prefix announces more bytes than the receiver accepts.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// The announced (or, when encoding, the actual) frame length.
        len: u64,
        /// The largest frame length allowed.
        max: u32,
    },
    /// The length prefix announces fewer bytes than a header needs.
    #[error("frame of {len} bytes is shorter than the {min}-byte header")]
    FrameTooShort {
        /// The announced frame length.
        len: u32,
        /// The header length.
        min: usize,
    },
    /// The byte stream ended in the middle of a frame.
    #[error(
        "connection closed in the middle of a frame ({received} of at least {expected} bytes arrived)"
    )]
    Truncated {
        /// Bytes of the incomplete frame that arrived.
        received: usize,
        /// Bytes the frame needs: its length prefix plus the announced length,
        /// or just the prefix if that did not arrive whole.
        expected: u64,
    },
    /// The frame's version byte is not one this peer speaks.
    #[error(
        "protocol version {version} is not supported (this peer speaks {}..={})",
        crate::wire::MIN_PROTOCOL_VERSION,
        crate::wire::MAX_PROTOCOL_VERSION
    )]
    UnsupportedVersion {
        /// The version byte received.
        version: u8,
    },
    /// The frame's kind byte names no message of this version.
    #[error("unknown message kind 0x{kind:02x}")]
    UnknownKind {
        /// The kind byte received.
        kind: u8,
    },
    /// The flags or reserved byte of the header is not zero.
    #[error("reserved header bits are set (flags 0x{flags:02x}, reserved 0x{reserved:02x})")]
    ReservedBits {
        /// The flags byte received.
        flags: u8,
        /// The reserved byte received.
        reserved: u8,
    },
    /// A connection message on a non-zero stream, or a stream message on
    /// stream 0.
    #[error("{kind} may not travel on stream {stream_id}")]
    WrongStream {
        /// The message kind.
        kind: Kind,
        /// The stream id it carried.
        stream_id: u64,
    },
    /// The body is not a valid postcard encoding of the kind's fields.
    #[error("malformed {kind} body")]
    MalformedBody {
        /// The message kind.
        kind: Kind,
        /// What postcard found wrong.
        #[source]
        source: postcard::Error,
    },
    /// Bytes follow a body that has no payload.
    #[error("{kind} body is followed by unexpected bytes ({count})")]
    TrailingBytes {
        /// The message kind.
        kind: Kind,
        /// How many bytes were left over.
        count: usize,
    },
    /// A field decoded but breaks a rule of the protocol.
    #[error("invalid {field} in {kind}: {reason}")]
    InvalidField {
        /// The message kind.
        kind: Kind,
        /// The field's name as PROTOCOL.md spells it.
        field: &'static str,
        /// The rule that was broken.
        reason: &'static str,
    },
    /// Reading from or writing to the transport failed.
    #[error("connection i/o failed")]
    Io(#[from] io::Error),
}

impl DecodeError {
    /// The status to report to the peer for this error.
    ///
    /// Every decoding error is the peer's fault and maps to
    /// [`StatusCode::BAD_REQUEST`], except an oversized frame, which is
    /// [`StatusCode::RESOURCE_EXHAUSTED`]. I/O failures are
    /// [`StatusCode::UNAVAILABLE`].
    pub fn status(&self) -> StatusCode {
        match self {
            DecodeError::FrameTooLarge { .. } => StatusCode::RESOURCE_EXHAUSTED,
            DecodeError::Io(_) => StatusCode::UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl DecodeError {
    /// The frame a peer sends before closing the connection over this
    /// error: `VersionMismatch` for a version it does not speak, `Error`
    /// with the status and description otherwise.
    pub(crate) fn report(&self) -> Message {
        match self {
            DecodeError::UnsupportedVersion { .. } => Message::VersionMismatch(VersionMismatch {
                min_version: MIN_PROTOCOL_VERSION,
                max_version: MAX_PROTOCOL_VERSION,
            }),
            error => Message::Error(ErrorMessage {
                status: error.status(),
                message: error.to_string(),
            }),
        }
    }
}

impl From<DecodeError> for io::Error {
    fn from(error: DecodeError) -> io::Error {
        match error {
            DecodeError::Io(error) => error,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// A frame could not be encoded because it breaks the protocol or the peer's
/// limits.
///
/// Nothing was written. Converted to an [`io::Error`], it becomes
/// [`io::ErrorKind::InvalidInput`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded frame is larger than the peer accepts. Send the payload
    /// chunked instead (see [`ChunkSender`](crate::ChunkSender)).
    #[error("frame of {len} bytes exceeds the peer's limit of {max}; send the payload chunked")]
    FrameTooLarge {
        /// The encoded frame length.
        len: u64,
        /// The peer's largest frame length.
        max: u32,
    },
    /// A connection message on a non-zero stream, or a stream message on
    /// stream 0.
    #[error("{kind} may not travel on stream {stream_id}")]
    WrongStream {
        /// The message kind.
        kind: Kind,
        /// The stream id it was given.
        stream_id: u64,
    },
    /// A field breaks a rule of the protocol.
    #[error("invalid {field} in {kind}: {reason}")]
    InvalidField {
        /// The message kind.
        kind: Kind,
        /// The field's name as PROTOCOL.md spells it.
        field: &'static str,
        /// The rule that was broken.
        reason: &'static str,
    },
    /// postcard could not serialize the body.
    #[error("could not serialize the {kind} body")]
    Serialize {
        /// The message kind.
        kind: Kind,
        /// What postcard reported.
        #[source]
        source: postcard::Error,
    },
    /// Writing to the transport failed.
    #[error("connection i/o failed")]
    Io(#[from] io::Error),
}

impl From<EncodeError> for io::Error {
    fn from(error: EncodeError) -> io::Error {
        match error {
            EncodeError::Io(error) => error,
            other => io::Error::new(io::ErrorKind::InvalidInput, other),
        }
    }
}

/// A chunked transfer broke its announced length or hash.
///
/// Reported by [`ChunkReceiver`](crate::ChunkReceiver). The transfer's bytes
/// must be discarded; the stream should be answered with [`Self::status`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransferError {
    /// The announced length is larger than the receiver accepts.
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The largest payload allowed.
        max: u64,
    },
    /// A chunk brought the payload past its announced length.
    #[error("chunks carry at least {received} bytes, more than the announced {announced}")]
    Overflow {
        /// Bytes received including the offending chunk.
        received: u64,
        /// The announced length.
        announced: u64,
    },
    /// The transfer ended before its announced length arrived.
    #[error("transfer ended after {received} of the announced {announced} bytes")]
    Truncated {
        /// Bytes received.
        received: u64,
        /// The announced length.
        announced: u64,
    },
    /// The bytes received do not have the SHA-256 the sender announced.
    #[error("content hash mismatch: expected {expected}, received bytes hash to {actual}")]
    HashMismatch {
        /// The announced SHA-256, in lowercase hex.
        expected: String,
        /// The SHA-256 of the bytes received, in lowercase hex.
        actual: String,
    },
}

impl TransferError {
    /// The status to answer the stream with: [`StatusCode::RESOURCE_EXHAUSTED`]
    /// for an oversized payload, [`StatusCode::BAD_REQUEST`] otherwise.
    pub fn status(&self) -> StatusCode {
        match self {
            TransferError::TooLarge { .. } => StatusCode::RESOURCE_EXHAUSTED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Why a function registered with
/// [`Server::function_with_status`](crate::Server::function_with_status)
/// has no result: its own error, answered `422` with the error encoded as
/// for any function, or a protocol status with a message, for conditions
/// that are the server's and not the call's (busy, unavailable), which
/// callers and pools handle as they do the server's own.
///
/// `?` turns the function's own error into a `Failure`.
///
/// ```
/// use rpc_core::{Failure, StatusCode};
///
/// fn check(queue: usize) -> Result<(), Failure<String>> {
///     if queue > 100 {
///         return Err(Failure::Status(StatusCode::RESOURCE_EXHAUSTED, "busy".into()));
///     }
///     Err("not today".to_owned())?
/// }
/// assert!(matches!(check(200), Err(Failure::Status(..))));
/// assert_eq!(check(1), Err(Failure::Error("not today".to_owned())));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure<E> {
    /// The function's own error (`422`).
    Error(E),
    /// A status other than `200` and `422`, with its message.
    Status(StatusCode, String),
}

impl<E> From<E> for Failure<E> {
    fn from(error: E) -> Failure<E> {
        Failure::Error(error)
    }
}

/// The undecoded error a remote function returned (status `422`): decode it
/// with [`RemoteError::decode`] into the function's error type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteError(pub bytes::Bytes);

impl RemoteError {
    /// Decodes the error as `E`, the function's error type.
    ///
    /// # Errors
    ///
    /// The postcard error if the bytes are not exactly one `E`.
    pub fn decode<E: serde::de::DeserializeOwned>(&self) -> Result<E, postcard::Error> {
        crate::wire::decode_exact(&self.0).map_err(Into::into)
    }
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes of encoded error", self.0.len())
    }
}

/// Why a remote call failed.
///
/// Each variant but `Application` corresponds to a status code (see
/// [`RpcError::status`]); `Application` holds the function's own error,
/// decoded as `E` (or left encoded, as [`RemoteError`], by
/// [`Client::call`](crate::Client::call)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError<E = RemoteError> {
    /// The function ran and returned its own error, which this variant
    /// holds.
    #[error("the remote function returned its own error")]
    Application(E),
    /// No function has that name (`404`).
    #[error("not found: {0}")]
    NotFound(String),
    /// The caller's token or role may not make this call (`403`).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The arguments did not decode, or the request broke the protocol
    /// (`400`).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Caller and callee were built with different types for the function
    /// (`409`).
    #[error("incompatible: {0}")]
    Incompatible(String),
    /// The deadline passed before the call completed (`504`).
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The call was cancelled (`499`).
    #[error("cancelled")]
    Cancelled,
    /// The server could not be reached, went away, or is shutting down
    /// (`503`); retrying later or elsewhere may work.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The connection could not be secured, or would not have been: the
    /// server's certificate is not trusted, names another host or has
    /// expired; the server refused this client's certificate or wants one;
    /// one side speaks TLS and the other does not; or a token would have
    /// crossed a network in plaintext. The message says which and what to
    /// change; retrying without changing it fails the same way. Never sent
    /// on the wire; its [`status`](Self::status) is `503`, as for a server
    /// that cannot be reached.
    #[error("not secure: {0}")]
    Tls(String),
    /// A limit was hit: too many calls in flight, a payload too large (`429`).
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// The server failed (`500`), or answered something this client cannot
    /// read.
    #[error("internal error: {0}")]
    Internal(String),
    /// A status this version does not name.
    #[error("{status}: {message}")]
    Other {
        /// The status received.
        status: StatusCode,
        /// The server's explanation.
        message: String,
    },
}

impl<E> RpcError<E> {
    /// The error for a response with `status` (not `200` nor `422`).
    pub fn from_status(status: StatusCode, message: String) -> RpcError<E> {
        match status {
            StatusCode::NOT_FOUND => RpcError::NotFound(message),
            StatusCode::FORBIDDEN => RpcError::Forbidden(message),
            StatusCode::BAD_REQUEST => RpcError::BadRequest(message),
            StatusCode::INCOMPATIBLE => RpcError::Incompatible(message),
            StatusCode::DEADLINE_EXCEEDED => RpcError::DeadlineExceeded,
            StatusCode::CANCELLED => RpcError::Cancelled,
            StatusCode::UNAVAILABLE => RpcError::Unavailable(message),
            StatusCode::RESOURCE_EXHAUSTED => RpcError::ResourceExhausted(message),
            StatusCode::INTERNAL => RpcError::Internal(message),
            status => RpcError::Other { status, message },
        }
    }

    /// The status code this error corresponds to.
    pub fn status(&self) -> StatusCode {
        match self {
            RpcError::Application(_) => StatusCode::APPLICATION_ERROR,
            RpcError::NotFound(_) => StatusCode::NOT_FOUND,
            RpcError::Forbidden(_) => StatusCode::FORBIDDEN,
            RpcError::BadRequest(_) => StatusCode::BAD_REQUEST,
            RpcError::Incompatible(_) => StatusCode::INCOMPATIBLE,
            RpcError::DeadlineExceeded => StatusCode::DEADLINE_EXCEEDED,
            RpcError::Cancelled => StatusCode::CANCELLED,
            RpcError::Unavailable(_) | RpcError::Tls(_) => StatusCode::UNAVAILABLE,
            RpcError::ResourceExhausted(_) => StatusCode::RESOURCE_EXHAUSTED,
            RpcError::Internal(_) => StatusCode::INTERNAL,
            RpcError::Other { status, .. } => *status,
        }
    }

    /// Replaces the application error, keeping every other variant.
    pub fn map_application<F>(self, map: impl FnOnce(E) -> RpcError<F>) -> RpcError<F> {
        match self {
            RpcError::Application(error) => map(error),
            RpcError::NotFound(message) => RpcError::NotFound(message),
            RpcError::Forbidden(message) => RpcError::Forbidden(message),
            RpcError::BadRequest(message) => RpcError::BadRequest(message),
            RpcError::Incompatible(message) => RpcError::Incompatible(message),
            RpcError::DeadlineExceeded => RpcError::DeadlineExceeded,
            RpcError::Cancelled => RpcError::Cancelled,
            RpcError::Unavailable(message) => RpcError::Unavailable(message),
            RpcError::Tls(message) => RpcError::Tls(message),
            RpcError::ResourceExhausted(message) => RpcError::ResourceExhausted(message),
            RpcError::Internal(message) => RpcError::Internal(message),
            RpcError::Other { status, message } => RpcError::Other { status, message },
        }
    }
}

/// A server could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A configuration value is out of range.
    #[error("invalid server configuration: {field} {reason}")]
    InvalidConfig {
        /// The [`ServerConfig`](crate::ServerConfig) field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The listening address could not be bound.
    #[error("could not listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// Why binding failed.
        #[source]
        source: io::Error,
    },
}
