//! The one writer task of a connection: it drains queued frames, coalesces
//! them into few vectored writes, and never copies large payloads.

use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::wire::Frame;

/// Payload tails at least this long are written from their own buffer
/// instead of being copied next to their header.
const COPY_BELOW: usize = 4 << 10;

/// Stop gathering more frames into one write once this much is pending.
const BATCH_BYTES: usize = 256 << 10;

/// At most this many buffers go to one vectored write.
const MAX_SLICES: usize = 64;

/// How many frames may wait for the writer before senders wait too.
pub(crate) const OUTBOX_CAPACITY: usize = 1024;

/// Writes every frame received on `frames` to `io` until the channel closes
/// or a write fails, then shuts the write side down.
///
/// Frames that cannot be encoded (a bug in the caller, or a payload over the
/// peer's limit) are logged and dropped; the connection goes on.
pub(crate) async fn run<W>(mut io: W, mut frames: mpsc::Receiver<Frame>, peer_max_frame_len: u32)
where
    W: AsyncWrite + Unpin,
{
    let mut batch = Batch::default();
    while let Some(frame) = frames.recv().await {
        batch.push(&frame, peer_max_frame_len);
        while batch.pending < BATCH_BYTES {
            match frames.try_recv() {
                Ok(frame) => batch.push(&frame, peer_max_frame_len),
                Err(_) => break,
            }
        }
        if let Err(error) = batch.write_to(&mut io).await {
            tracing::debug!(%error, "connection write failed");
            return;
        }
    }
    let _ = io.shutdown().await;
}

/// Frames encoded and waiting to be written, as a list of buffers.
#[derive(Default)]
struct Batch {
    /// Headers and small frames, encoded back to back.
    scratch: BytesMut,
    /// Buffers to write in order: runs of `scratch`, and large payloads.
    segments: Vec<Bytes>,
    pending: usize,
}

impl Batch {
    fn push(&mut self, frame: &Frame, peer_max_frame_len: u32) {
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

    async fn write_to<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> std::io::Result<()> {
        if !self.scratch.is_empty() {
            let rest = self.scratch.split().freeze();
            self.segments.push(rest);
        }
        let mut segments = std::mem::take(&mut self.segments);
        let mut first = 0;
        while first < segments.len() {
            let slices: Vec<IoSlice<'_>> = segments
                .iter()
                .skip(first)
                .take(MAX_SLICES)
                .map(|segment| IoSlice::new(segment))
                .collect();
            let mut written = io.write_vectored(&slices).await?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            while let Some(segment) = segments.get_mut(first) {
                if written < segment.len() {
                    segment.advance(written);
                    break;
                }
                written -= segment.len();
                first += 1;
            }
        }
        io.flush().await?;
        segments.clear();
        self.segments = segments;
        self.pending = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use tokio_util::codec::FramedRead;

    use super::*;
    use crate::wire::{DEFAULT_MAX_FRAME_LEN, FrameCodec, Message, Ping};

    #[tokio::test]
    async fn writes_frames_in_order_with_large_payloads_uncopied() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
        let writer = tokio::spawn(run(client, rx, DEFAULT_MAX_FRAME_LEN));
        let big = Bytes::from(vec![3u8; 300 << 10]);
        let frames = vec![
            Frame::connection(Message::Ping(Ping { nonce: 1 })),
            Frame::new(1, Message::Chunk(big.clone())),
            Frame::connection(Message::Ping(Ping { nonce: 2 })),
            Frame::new(1, Message::Chunk(Bytes::from_static(b"small"))),
        ];
        for frame in &frames {
            tx.send(frame.clone()).await.unwrap();
        }
        drop(tx);
        let received: Vec<Frame> = FramedRead::new(server, FrameCodec::new())
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(received, frames);
        writer.await.unwrap();
    }
}
