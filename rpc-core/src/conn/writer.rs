//! The one writer task of a connection: it takes what senders queued in
//! the [`Outbox`](super::Outbox) and writes it with as few system calls as
//! it can, never copying large payloads.

use std::pin::pin;
use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::batch::Batch;
use super::outbox::{Next, Shared};

/// Writes every frame queued in the outbox to `io` until every sender is
/// gone or a write fails, then shuts the write side down. The registrations
/// of each batch go to `register` before the batch is written.
///
/// While the connection is corked (its reader is handling a batch of
/// frames) the writer holds what is queued back, so that the responses to
/// requests that arrived together leave together, unless a full batch is
/// queued.
pub(super) async fn run<W, P>(
    mut io: W,
    outbox: Arc<Shared<P>>,
    mut register: impl FnMut(&mut Vec<P>),
) where
    W: AsyncWrite + Unpin,
{
    let mut batch = Batch::default();
    let mut registrations = Vec::new();
    loop {
        let wake = pin!(outbox.wake_writer.notified());
        match outbox.take(&mut batch, &mut registrations) {
            Next::Write => {
                if !registrations.is_empty() {
                    register(&mut registrations);
                    registrations.clear();
                }
                if let Err(error) = batch.write_to(&mut io).await {
                    tracing::debug!(%error, "connection write failed");
                    outbox.writer_gone();
                    return;
                }
            }
            Next::Wait => {
                wake.await;
                // Whoever woke the writer is often one of many tasks about
                // to queue a frame: let them run first, so their frames go
                // out in one write rather than one write each.
                tokio::task::yield_now().await;
            }
            Next::Finish => break,
        }
    }
    outbox.writer_gone();
    let _ = io.shutdown().await;
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;
    use std::sync::atomic::Ordering;

    use bytes::Bytes;
    use futures_util::StreamExt;
    use tokio_util::codec::FramedRead;

    use super::*;
    use crate::conn::Outbox;
    use crate::wire::{DEFAULT_MAX_FRAME_LEN, Frame, FrameCodec, Message, Ping};

    #[tokio::test]
    async fn writes_frames_in_order_with_large_payloads_uncopied() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (tx, queue) = Outbox::new(DEFAULT_MAX_FRAME_LEN);
        let writer = tokio::spawn(run(client, queue, |_: &mut Vec<()>| {}));
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
        let (tx, queue) = Outbox::new(DEFAULT_MAX_FRAME_LEN);
        let writer = tokio::spawn(run(sink, queue, |_: &mut Vec<()>| {}));
        tx.cork();
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
        tx.uncork();
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
        tx.cork();
        tx.send(Frame::connection(Message::Ping(Ping { nonce: 11 })))
            .await
            .unwrap();
        drop(tx);
        writer.await.unwrap();
        assert_eq!(writes.load(Ordering::SeqCst), 3);
    }
}
