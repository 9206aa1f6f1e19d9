//! What goes wrong with bytes on the wire: a frame that breaks the protocol
//! ([`DecodeError`]), one that cannot be sent ([`EncodeError`]), and a
//! chunked payload that breaks its announced length or hash
//! ([`TransferError`]).

use std::io;

use super::{
    ErrorMessage, Kind, MAX_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION, Message, StatusCode,
    VersionMismatch,
};

/// A received frame broke the protocol.
///
/// The connection cannot be trusted to stay in sync after this and should be
/// closed, after telling the peer why with an
/// [`Error`](crate::wire::Message::Error) frame carrying [`Self::status`]. Converted
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
    /// chunked instead (see [`ChunkSender`](crate::wire::ChunkSender)).
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
/// Reported by [`ChunkReceiver`](crate::wire::ChunkReceiver). The transfer's bytes
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
