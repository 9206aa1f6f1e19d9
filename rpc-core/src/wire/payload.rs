//! The payload that ends the body of `Call`, `Response`, `SendData` and
//! `SendProgram` frames.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The bytes a message carries, either inside its frame or chunked after it.
///
/// On the wire the payload comes last in the body, after the message's
/// postcard-encoded fields:
///
/// ```text
/// Inline:  0x00  payload bytes ... up to the end of the frame
/// Chunked: 0x01  varint(total length)   (the frame ends here)
/// ```
///
/// An inline payload is everything after its tag, so it costs no length
/// prefix, and a receiver hands it on as a slice of the frame without copying.
/// A chunked payload arrives in [`Chunk`](crate::wire::Message::Chunk) frames on the
/// same stream, closed by a [`ChunkEnd`](crate::wire::Message::ChunkEnd) holding its
/// SHA-256; [`ChunkSender`](crate::wire::ChunkSender) and
/// [`ChunkReceiver`](crate::wire::ChunkReceiver) implement both ends.
///
/// ```
/// use bytes::Bytes;
/// use rpc_core::wire::Payload;
///
/// let inline = Payload::from(Bytes::from_static(b"hello"));
/// assert_eq!(inline.len(), 5);
/// assert_eq!(inline.inline(), Some(&Bytes::from_static(b"hello")));
///
/// let chunked = Payload::Chunked { len: 100 << 20 };
/// assert_eq!(chunked.len(), 100 << 20);
/// assert_eq!(chunked.inline(), None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// The payload is the rest of this frame.
    Inline(Bytes),
    /// The payload follows in `Chunk` frames and totals `len` bytes.
    Chunked {
        /// Total length of the payload in bytes.
        len: u64,
    },
}

impl Payload {
    /// An empty inline payload.
    pub const fn empty() -> Payload {
        Payload::Inline(Bytes::new())
    }

    /// The payload's total length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Payload::Inline(bytes) => bytes.len() as u64,
            Payload::Chunked { len } => *len,
        }
    }

    /// Whether the payload has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of an inline payload, or `None` if it is chunked.
    pub fn inline(&self) -> Option<&Bytes> {
        match self {
            Payload::Inline(bytes) => Some(bytes),
            Payload::Chunked { .. } => None,
        }
    }
}

impl Default for Payload {
    fn default() -> Self {
        Payload::empty()
    }
}

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Self {
        Payload::Inline(bytes)
    }
}

/// The tag that starts a payload on the wire; see [`Payload`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum PayloadTag {
    /// The payload is the rest of the frame.
    Inline,
    /// The payload is chunked and totals this many bytes.
    Chunked(u64),
}

impl PayloadTag {
    pub(crate) fn of(payload: &Payload) -> PayloadTag {
        match payload {
            Payload::Inline(_) => PayloadTag::Inline,
            Payload::Chunked { len } => PayloadTag::Chunked(*len),
        }
    }
}
