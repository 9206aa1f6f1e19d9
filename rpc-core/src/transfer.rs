//! Chunked transfer: payloads larger than a frame, sent as a run of `Chunk`
//! frames closed by a `ChunkEnd` that may carry their SHA-256.
//!
//! ```text
//! stream 5:  SendData { name, payload: Chunked { len: 600 KiB } }
//! stream 5:  Chunk (256 KiB)
//! stream 5:  Chunk (256 KiB)
//! stream 5:  Chunk ( 88 KiB)
//! stream 5:  ChunkEnd { hash: none, or SHA-256 of the 600 KiB }
//! stream 5:  <- Response { status: 200 }
//! ```

mod buffers;

use bytes::Bytes;

use crate::wire::TransferError;
use crate::wire::{ChunkEnd, ContentHash, Frame, HEADER_LEN, Hasher, Message};

/// The default size of one chunk: 256 KiB.
///
/// Large enough that per-frame costs vanish (12 header bytes per 256 KiB), small
/// enough that a chunk holds up the other streams sharing the connection for
/// only a couple of milliseconds on a gigabit link.
pub const DEFAULT_CHUNK_LEN: usize = 256 << 10;

/// The chunk size to use towards a peer that accepts frames of up to
/// `peer_max_frame_len` bytes: [`DEFAULT_CHUNK_LEN`], or less if the peer's
/// frames are smaller.
///
/// ```
/// use rpc_core::wire::{DEFAULT_CHUNK_LEN, chunk_len_for};
///
/// assert_eq!(chunk_len_for(1 << 20), DEFAULT_CHUNK_LEN);
/// assert_eq!(chunk_len_for(16 << 10), (16 << 10) - 12);
/// ```
pub fn chunk_len_for(peer_max_frame_len: u32) -> usize {
    (peer_max_frame_len as usize)
        .saturating_sub(HEADER_LEN)
        .clamp(1, DEFAULT_CHUNK_LEN)
}

/// Produces the `Chunk` and `ChunkEnd` frames of one chunked payload.
///
/// By default the `ChunkEnd` carries no digest: TCP and TLS already guard the
/// bytes, and hashing costs more than sending them. Call
/// [`with_digest`](Self::with_digest) (or [`ChunkFrames::with_digest`]) to
/// hash as the chunks go and send the SHA-256 for an end-to-end check.
///
/// Announce the length first, in the message that opens the stream (its
/// payload is [`Payload::Chunked`](crate::wire::Payload::Chunked)), then send the
/// frames this returns. For a payload already in memory,
/// [`ChunkSender::frames`] does it all without copying; for one read
/// piece by piece (a file, a socket), call [`chunk`](Self::chunk) per piece
/// and [`finish`](Self::finish) at the end.
///
/// ```
/// use bytes::Bytes;
/// use rpc_core::wire::{ChunkReceiver, ChunkSender, Message};
///
/// let blob = Bytes::from(vec![7u8; 1000]);
/// let mut receiver = ChunkReceiver::new(1000, 1 << 20)?;
/// let mut end = None;
/// for frame in ChunkSender::frames(3, blob.clone(), 300).with_digest() {
///     match frame.message {
///         Message::Chunk(bytes) => receiver.push(bytes)?,
///         Message::ChunkEnd(chunk_end) => end = Some(chunk_end),
///         _ => unreachable!("only chunks and an end"),
///     }
/// }
/// let end = end.expect("the last frame is a ChunkEnd");
/// assert_eq!(receiver.finish(end.hash)?, blob);
/// # Ok::<(), rpc_core::wire::TransferError>(())
/// ```
#[derive(Clone, Debug)]
pub struct ChunkSender {
    stream_id: u64,
    announced: u64,
    sent: u64,
    hasher: Option<Hasher>,
}

impl ChunkSender {
    /// Starts a transfer of `len` bytes on stream `stream_id`, closed by a
    /// `ChunkEnd` without a digest.
    pub fn new(stream_id: u64, len: u64) -> ChunkSender {
        ChunkSender {
            stream_id,
            announced: len,
            sent: 0,
            hasher: None,
        }
    }

    /// Hashes the chunks as they go, so that the `ChunkEnd` carries their
    /// SHA-256 and the receiver checks it. Call before the first chunk.
    #[must_use]
    pub fn with_digest(mut self) -> ChunkSender {
        self.hasher = Some(Hasher::default());
        self
    }

    /// All the frames for `payload`, in chunks of at most `chunk_len` bytes
    /// (at least 1), each sharing `payload`'s memory.
    pub fn frames(stream_id: u64, payload: Bytes, chunk_len: usize) -> ChunkFrames {
        ChunkFrames {
            sender: Some(ChunkSender::new(stream_id, payload.len() as u64)),
            rest: payload,
            chunk_len: chunk_len.max(1),
        }
    }

    /// The `Chunk` frame for the next `bytes` of the payload.
    ///
    /// # Errors
    ///
    /// [`TransferError::Overflow`] if `bytes` would take the payload past its
    /// announced length; nothing is counted then.
    pub fn chunk(&mut self, bytes: Bytes) -> Result<Frame, TransferError> {
        let sent = self.sent.saturating_add(bytes.len() as u64);
        if sent > self.announced {
            return Err(TransferError::Overflow {
                received: sent,
                announced: self.announced,
            });
        }
        self.sent = sent;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&bytes);
        }
        Ok(Frame::new(self.stream_id, Message::Chunk(bytes)))
    }

    /// The `ChunkEnd` frame that closes the payload.
    ///
    /// # Errors
    ///
    /// [`TransferError::Truncated`] if fewer bytes than announced were sent.
    pub fn finish(self) -> Result<Frame, TransferError> {
        if self.sent != self.announced {
            return Err(TransferError::Truncated {
                received: self.sent,
                announced: self.announced,
            });
        }
        let end = ChunkEnd {
            hash: self.hasher.map(Hasher::finish),
        };
        Ok(Frame::new(self.stream_id, Message::ChunkEnd(end)))
    }
}

/// The frames of a payload in memory; see [`ChunkSender::frames`].
#[derive(Debug)]
pub struct ChunkFrames {
    sender: Option<ChunkSender>,
    rest: Bytes,
    chunk_len: usize,
}

impl ChunkFrames {
    /// Sends the payload's SHA-256 in the `ChunkEnd`; see
    /// [`ChunkSender::with_digest`]. Call before taking the first frame.
    #[must_use]
    pub fn with_digest(mut self) -> ChunkFrames {
        self.sender = self.sender.map(ChunkSender::with_digest);
        self
    }
}

impl Iterator for ChunkFrames {
    type Item = Frame;

    fn next(&mut self) -> Option<Frame> {
        let sender = self.sender.as_mut()?;
        if self.rest.is_empty() {
            // The sender announced exactly the bytes it was given.
            return self.sender.take().and_then(|sender| sender.finish().ok());
        }
        let piece = self.rest.split_to(self.chunk_len.min(self.rest.len()));
        sender.chunk(piece).ok()
    }
}

/// Receives one chunked payload: checks the announced length against a limit
/// before anything arrives, each chunk against the announced length, and the
/// whole against the SHA-256 in `ChunkEnd` when it carries one.
///
/// Each chunk is copied into the payload's buffer as it arrives, while it
/// is still in the cache, and the read buffer it came in is free again at
/// once. The buffer is taken at the first chunk, so a peer that announces a
/// payload and sends nothing pins no memory.
#[derive(Debug)]
pub struct ChunkReceiver {
    announced: u64,
    received: u64,
    buffer: Option<buffers::Buffer>,
}

impl ChunkReceiver {
    /// Prepares to receive a payload announced as `len` bytes, if `len` is at
    /// most `max_len`.
    ///
    /// # Errors
    ///
    /// [`TransferError::TooLarge`] if `len` exceeds `max_len`.
    pub fn new(len: u64, max_len: u64) -> Result<ChunkReceiver, TransferError> {
        // A length this machine cannot address is too large whatever the
        // limit says.
        if len > max_len || usize::try_from(len).is_err() {
            return Err(TransferError::TooLarge { len, max: max_len });
        }
        Ok(ChunkReceiver {
            announced: len,
            received: 0,
            buffer: None,
        })
    }

    /// The announced length.
    pub fn announced(&self) -> u64 {
        self.announced
    }

    /// The number of bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Takes the next chunk.
    ///
    /// # Errors
    ///
    /// [`TransferError::Overflow`] if the chunk takes the payload past its
    /// announced length; the transfer must then be abandoned.
    pub fn push(&mut self, chunk: Bytes) -> Result<(), TransferError> {
        let received = self.received.saturating_add(chunk.len() as u64);
        if received > self.announced {
            return Err(TransferError::Overflow {
                received,
                announced: self.announced,
            });
        }
        self.received = received;
        if !chunk.is_empty() {
            // `new` checked that the announced length fits.
            let announced = usize::try_from(self.announced).unwrap_or(usize::MAX);
            self.buffer
                .get_or_insert_with(|| buffers::buffer(announced, chunk.len()))
                .extend_from_slice(&chunk);
        }
        Ok(())
    }

    /// Ends the transfer with the digest from its `ChunkEnd` (if any),
    /// returning the payload.
    ///
    /// # Errors
    ///
    /// [`TransferError::Truncated`] if fewer bytes than announced arrived, and
    /// [`TransferError::HashMismatch`] if a digest was sent and the bytes do
    /// not hash to it.
    pub fn finish(self, hash: Option<ContentHash>) -> Result<Bytes, TransferError> {
        if self.received != self.announced {
            return Err(TransferError::Truncated {
                received: self.received,
                announced: self.announced,
            });
        }
        let payload = self.buffer.map(buffers::Buffer::freeze).unwrap_or_default();
        if let Some(expected) = hash {
            let actual = ContentHash::of(&payload);
            if actual != expected {
                return Err(TransferError::HashMismatch {
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(payload: &[u8], chunk_len: usize) -> Vec<Frame> {
        ChunkSender::frames(9, Bytes::copy_from_slice(payload), chunk_len)
            .with_digest()
            .collect()
    }

    #[test]
    fn splits_into_chunks_then_an_end() {
        let payload: Vec<u8> = (0..=255).cycle().take(1000).collect();
        let frames = run(&payload, 300);
        let sizes: Vec<_> = frames
            .iter()
            .map(|frame| match &frame.message {
                Message::Chunk(bytes) => bytes.len(),
                Message::ChunkEnd(end) => {
                    assert_eq!(end.hash, Some(ContentHash::of(&payload)));
                    0
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(sizes, [300, 300, 300, 100, 0]);
        assert!(frames.iter().all(|frame| frame.stream_id == 9));
    }

    #[test]
    fn empty_payload_is_just_an_end() {
        let frames = run(b"", 300);
        assert_eq!(frames.len(), 1);
        assert!(matches!(frames[0].message, Message::ChunkEnd(_)));
    }

    #[test]
    fn chunks_share_the_payload_memory() {
        let payload = Bytes::from(vec![1u8; 4096]);
        let first = ChunkSender::frames(1, payload.clone(), 1024)
            .next()
            .unwrap();
        let Message::Chunk(chunk) = first.message else {
            panic!("expected a chunk");
        };
        assert_eq!(chunk.as_ptr(), payload.as_ptr());
    }

    #[test]
    fn receiver_reassembles() {
        let payload: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let mut receiver = ChunkReceiver::new(5000, 5000).unwrap();
        let mut hash = None;
        for frame in run(&payload, 777) {
            match frame.message {
                Message::Chunk(bytes) => receiver.push(bytes).unwrap(),
                Message::ChunkEnd(end) => hash = Some(end.hash),
                _ => unreachable!(),
            }
        }
        assert_eq!(receiver.received(), 5000);
        assert_eq!(receiver.finish(hash.unwrap()).unwrap(), payload);
    }

    #[test]
    fn without_a_digest_the_end_carries_none_and_the_bytes_still_arrive() {
        let payload = Bytes::from(vec![4u8; 1000]);
        let mut receiver = ChunkReceiver::new(1000, 1000).unwrap();
        let mut end = None;
        for frame in ChunkSender::frames(1, payload.clone(), 256) {
            match frame.message {
                Message::Chunk(bytes) => receiver.push(bytes).unwrap(),
                Message::ChunkEnd(chunk_end) => end = Some(chunk_end),
                _ => unreachable!(),
            }
        }
        assert_eq!(end, Some(ChunkEnd { hash: None }));
        assert_eq!(receiver.finish(None).unwrap(), payload);
    }

    #[test]
    fn announced_length_over_the_limit_is_refused_up_front() {
        let error = ChunkReceiver::new(1 << 40, 64 << 20).unwrap_err();
        assert_eq!(
            error,
            TransferError::TooLarge {
                len: 1 << 40,
                max: 64 << 20
            }
        );
        assert_eq!(
            error.to_string(),
            "payload of 1099511627776 bytes exceeds the limit of 67108864"
        );
    }

    #[test]
    fn chunks_beyond_the_announced_length_are_refused() {
        let mut receiver = ChunkReceiver::new(10, 100).unwrap();
        receiver.push(Bytes::from_static(b"12345678")).unwrap();
        let error = receiver.push(Bytes::from_static(b"9ab")).unwrap_err();
        assert_eq!(
            error,
            TransferError::Overflow {
                received: 11,
                announced: 10
            }
        );
        assert_eq!(receiver.received(), 8, "the offending chunk is not counted");
    }

    #[test]
    fn a_short_transfer_is_refused() {
        let mut receiver = ChunkReceiver::new(10, 100).unwrap();
        receiver.push(Bytes::from_static(b"12345")).unwrap();
        let error = receiver
            .finish(Some(ContentHash::of(b"12345")))
            .unwrap_err();
        assert_eq!(
            error,
            TransferError::Truncated {
                received: 5,
                announced: 10
            }
        );
    }

    #[test]
    fn a_wrong_hash_is_refused() {
        let mut receiver = ChunkReceiver::new(5, 100).unwrap();
        receiver.push(Bytes::from_static(b"hello")).unwrap();
        let error = receiver
            .finish(Some(ContentHash::of(b"HELLO")))
            .unwrap_err();
        let TransferError::HashMismatch { expected, actual } = &error else {
            panic!("expected a hash mismatch, got {error:?}");
        };
        assert_eq!(expected, &ContentHash::of(b"HELLO").to_string());
        assert_eq!(actual, &ContentHash::of(b"hello").to_string());
        assert_eq!(error.status(), crate::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn sender_checks_its_own_length() {
        let mut sender = ChunkSender::new(1, 4);
        assert!(matches!(
            sender.chunk(Bytes::from_static(b"12345")),
            Err(TransferError::Overflow { .. })
        ));
        sender.chunk(Bytes::from_static(b"12")).unwrap();
        assert!(matches!(
            sender.finish(),
            Err(TransferError::Truncated {
                received: 2,
                announced: 4
            })
        ));
    }
}
