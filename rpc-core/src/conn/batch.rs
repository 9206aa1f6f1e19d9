//! Frames encoded and waiting to be written, as a list of buffers: small
//! frames copied back to back, large payloads kept where they are.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWrite;

use crate::wire::Frame;

/// Payload tails at least this long are written from their own buffer
/// instead of being copied next to their header.
const COPY_BELOW: usize = 4 << 10;

/// A batch this large is written even while the connection is corked: about
/// a hundred small responses. Larger batches save system calls; smaller ones
/// let the peer start on the first responses while the rest are made. On
/// loopback (`cargo bench -p rpc-core --bench rpc`), 8 KiB did better than
/// 4 KiB with four busy connections and better than 16 KiB with one.
pub(crate) const BATCH_BYTES: usize = 8 << 10;

/// At most this many buffers go to one vectored write.
const MAX_SLICES: usize = 64;

/// Encoded frames waiting for one vectored write.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Headers and small frames, encoded back to back.
    scratch: BytesMut,
    /// Buffers to write before `scratch`'s contents: earlier runs of
    /// `scratch`, and large payloads.
    segments: Vec<Bytes>,
    /// How many of `segments` are written.
    written: usize,
    pending: usize,
}

impl Batch {
    /// Whether no frame is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// How many bytes are waiting.
    pub(crate) fn pending(&self) -> usize {
        self.pending
    }

    /// Encodes `frame` at the end of the batch. A frame that cannot be
    /// encoded (a bug in the caller, or a frame over the peer's limit) is
    /// logged and dropped.
    pub(crate) fn push(&mut self, frame: &Frame, peer_max_frame_len: u32) {
        let before = self.scratch.len();
        match frame.encode_head(&mut self.scratch, peer_max_frame_len) {
            Ok(Some(tail)) if tail.len() >= COPY_BELOW => {
                self.pending += self.scratch.len() - before + tail.len();
                let head = self.scratch.split().freeze();
                self.segments.push(head);
                self.segments.push(tail);
            }
            Ok(tail) => {
                if let Some(tail) = tail {
                    self.scratch.extend_from_slice(&tail);
                }
                self.pending += self.scratch.len() - before;
            }
            Err(error) => {
                tracing::error!(%error, kind = %frame.kind(), stream = frame.stream_id, "frame not sent");
            }
        }
    }

    /// Writes what is left of the batch to `io`, then flushes it. When this
    /// returns `Ready(Ok(()))` the batch is empty (its buffers kept for
    /// reuse); `Pending` keeps what is left for the next call.
    pub(crate) fn poll_write_to<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.scratch.is_empty() {
            let rest = self.scratch.split().freeze();
            self.segments.push(rest);
        }
        while self.written < self.segments.len() {
            let mut written = {
                let first = self.written;
                let slices: [IoSlice<'_>; MAX_SLICES] = std::array::from_fn(|index| {
                    self.segments
                        .get(first + index)
                        .map_or(IoSlice::new(&[]), |segment| IoSlice::new(segment))
                });
                let count = (self.segments.len() - first).min(MAX_SLICES);
                let slices = slices.get(..count).unwrap_or_default();
                ready!(Pin::new(&mut *io).poll_write_vectored(cx, slices))?
            };
            if written == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            while let Some(segment) = self.segments.get_mut(self.written) {
                if written < segment.len() {
                    segment.advance(written);
                    break;
                }
                written -= segment.len();
                self.written += 1;
            }
        }
        ready!(Pin::new(&mut *io).poll_flush(cx))?;
        self.segments.clear();
        self.written = 0;
        self.pending = 0;
        Poll::Ready(Ok(()))
    }
}
