//! The one writer task of a connection: it drains queued frames, coalesces
//! them into few vectored writes, and never copies large payloads.

use std::io::IoSlice;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};

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

/// Holds the writer back while the connection's reader still has frames
/// to handle, so that the responses to a batch of requests that arrived
/// together leave together, in one write, instead of one write each.
///
/// The reader corks before handling a frame and uncorks when no whole frame
/// is left in its buffer, before it waits for the socket. While corked the
/// writer keeps gathering frames, and writes anyway once it holds
/// [`BATCH_BYTES`].
#[derive(Debug, Default)]
pub(crate) struct Cork {
    corked: AtomicBool,
    uncorked: Notify,
}

impl Cork {
    /// Holds writes back.
    pub(crate) fn cork(&self) {
        self.corked.store(true, Ordering::Relaxed);
    }

    /// Lets writes go, waking the writer if it waits.
    pub(crate) fn uncork(&self) {
        if self.corked.swap(false, Ordering::AcqRel) {
            self.uncorked.notify_one();
        }
    }

    /// Whether writes are held back.
    pub(crate) fn is_corked(&self) -> bool {
        self.corked.load(Ordering::Acquire)
    }
}

/// Writes every frame received on `frames` to `io` until the channel closes
/// or a write fails, then shuts the write side down.
///
/// Frames that cannot be encoded (a bug in the caller, or a payload over the
/// peer's limit) are logged and dropped; the connection goes on.
pub(crate) async fn run<W>(
    mut io: W,
    mut frames: mpsc::Receiver<Frame>,
    peer_max_frame_len: u32,
    cork: Arc<Cork>,
) where
    W: AsyncWrite + Unpin,
{
    let mut batch = Batch::default();
    while let Some(frame) = frames.recv().await {
        batch.push(&frame, peer_max_frame_len);
        let mut closed = false;
        loop {
            while batch.pending < BATCH_BYTES {
                match frames.try_recv() {
                    Ok(frame) => batch.push(&frame, peer_max_frame_len),
                    Err(_) => break,
                }
            }
            if closed || batch.pending >= BATCH_BYTES || !cork.is_corked() {
                break;
            }
            tokio::select! {
                biased;
                () = cork.uncorked.notified() => {}
                frame = frames.recv() => match frame {
                    Some(frame) => batch.push(&frame, peer_max_frame_len),
                    None => closed = true,
                },
            }
        }
        if let Err(error) = batch.write_to(&mut io).await {
            tracing::debug!(%error, "connection write failed");
            return;
        }
        if closed {
            break;
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
        let writer = tokio::spawn(run(client, rx, DEFAULT_MAX_FRAME_LEN, Arc::default()));
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

    /// Counts the writes it is asked to make.
    #[derive(Default)]
    struct CountingSink {
        writes: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl AsyncWrite for CountingSink {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            std::task::Poll::Ready(Ok(buf.len()))
        }

        fn poll_write_vectored(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            std::task::Poll::Ready(Ok(bufs.iter().map(|buf| buf.len()).sum()))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_cork_holds_frames_back_until_released_then_writes_them_at_once() {
        let sink = CountingSink::default();
        let writes = Arc::clone(&sink.writes);
        let cork = Arc::new(Cork::default());
        let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
        let writer = tokio::spawn(run(sink, rx, DEFAULT_MAX_FRAME_LEN, Arc::clone(&cork)));
        cork.cork();
        for nonce in 0..10 {
            tx.send(Frame::connection(Message::Ping(Ping { nonce })))
                .await
                .unwrap();
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(
            writes.load(Ordering::SeqCst),
            0,
            "nothing leaves while corked"
        );
        cork.uncork();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(
            writes.load(Ordering::SeqCst),
            1,
            "all ten frames in one write"
        );

        // Uncorked, a frame leaves without waiting; a closed outbox flushes
        // even while corked.
        tx.send(Frame::connection(Message::Ping(Ping { nonce: 10 })))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(writes.load(Ordering::SeqCst), 2);
        cork.cork();
        tx.send(Frame::connection(Message::Ping(Ping { nonce: 11 })))
            .await
            .unwrap();
        drop(tx);
        writer.await.unwrap();
        assert_eq!(writes.load(Ordering::SeqCst), 3);
    }
}
