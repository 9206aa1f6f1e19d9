//! Writing a connection's queued frames: by its writer task, or directly
//! by the reader that releases the cork (see [`Outbox::uncork`]), with as
//! few system calls as it can and without copying large payloads.
//!
//! [`Outbox::uncork`]: super::Outbox::uncork
//!
//! This file and [`super::outbox`] import each other, the one loop left in
//! the crate's imports, on purpose: they are the two halves of one lock.
//! The queue (`outbox`) owns the write state so that whoever uncorks can
//! write straight from it while holding the lock, and the writer (here)
//! takes the next batch from the queue under the same lock. Splitting them
//! into a third file would only move the shared lock there and make both
//! halves reach into it; keeping the write path in one file and the
//! queueing in the other keeps each readable.

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::AsyncWrite;

use super::batch::Batch;
use super::outbox::{Next, OutboxState};

/// The write side of a connection.
pub(crate) type Sink = Box<dyn AsyncWrite + Send + Unpin>;

/// Hands the registrations of a batch over before the batch is written.
pub(crate) type Register<P> = Box<dyn FnMut(&mut Vec<P>) + Send>;

/// The write side of a connection and the batch being written to it. Held
/// under a lock by whoever writes: the writer task, or a reader writing
/// directly.
pub(crate) struct WriteState<P> {
    io: Sink,
    batch: Batch,
    registrations: Vec<P>,
    register: Register<P>,
    /// The last write would have blocked: the socket holds the waker of
    /// whoever tried, and only the writer task may try again (a direct write
    /// would put a waker that does nothing in the place of the task's).
    blocked: bool,
}

impl<P> std::fmt::Debug for WriteState<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteState")
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

/// How a drain of the queue ended.
pub(super) enum Drained {
    /// Everything queued is written; wait for more.
    Idle,
    /// Everything is written and no sender is left.
    Finished,
}

impl<P> WriteState<P> {
    pub(super) fn new(io: Sink, register: Register<P>) -> WriteState<P> {
        WriteState {
            io,
            batch: Batch::default(),
            registrations: Vec::new(),
            register,
            blocked: false,
        }
    }

    /// Whether the last write would have blocked; see [`Self::poll_drain`].
    pub(super) fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// Writes what is left of the current batch, then every batch the queue
    /// hands over, until it has none to give. `Pending` means the socket
    /// would block and holds `cx`'s waker: the state is then blocked until
    /// the next call makes progress.
    pub(super) fn poll_drain(
        &mut self,
        queue: &OutboxState<P>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<Drained>> {
        let drained = self.poll_drain_inner(queue, cx);
        self.blocked = drained.is_pending();
        drained
    }

    fn poll_drain_inner(
        &mut self,
        queue: &OutboxState<P>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<Drained>> {
        loop {
            if self.batch.is_empty() {
                match queue.take(&mut self.batch, &mut self.registrations) {
                    Next::Write => {
                        if !self.registrations.is_empty() {
                            (self.register)(&mut self.registrations);
                            self.registrations.clear();
                        }
                    }
                    Next::Wait => return Poll::Ready(Ok(Drained::Idle)),
                    Next::Finish => return Poll::Ready(Ok(Drained::Finished)),
                }
            }
            ready!(self.batch.poll_write_to(&mut self.io, cx))?;
        }
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Writes every frame queued in the outbox until every sender is gone or a
/// write fails, then shuts the write side down.
///
/// While the connection is corked (its reader is handling a batch of
/// frames) what is queued is held back, so that the responses to requests
/// that arrived together leave together, unless a full batch is queued.
pub(super) async fn run<P>(outbox: Arc<OutboxState<P>>) {
    loop {
        let wake = pin!(outbox.wake_writer.notified());
        let drained = poll_fn(|cx| outbox.lock_write().poll_drain(&outbox, cx)).await;
        match drained {
            Ok(Drained::Idle) => {
                wake.await;
                // Whoever woke the writer is often one of many tasks about
                // to queue a frame: let them run first, so their frames go
                // out in one write rather than one write each.
                tokio::task::yield_now().await;
            }
            Ok(Drained::Finished) => break,
            Err(error) => {
                tracing::debug!(%error, "connection write failed");
                outbox.writer_gone();
                return;
            }
        }
    }
    outbox.writer_gone();
    let _ = poll_fn(|cx| outbox.lock_write().poll_shutdown(cx)).await;
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use bytes::Bytes;
    use futures_util::{FutureExt, StreamExt};
    use tokio_util::codec::FramedRead;

    use super::*;
    use crate::conn::Outbox;
    use crate::wire::{DEFAULT_MAX_FRAME_LEN, Frame, FrameCodec, Message, Ping};

    /// Every frame `io` carries until it closes.
    async fn read_all(io: impl tokio::io::AsyncRead + Unpin) -> Vec<Frame> {
        FramedRead::new(io, FrameCodec::new())
            .map(Result::unwrap)
            .collect()
            .await
    }

    /// An outbox writing to `io`, without registrations, and its queue.
    fn outbox(io: impl AsyncWrite + Send + Unpin + 'static) -> (Outbox, Arc<OutboxState>) {
        Outbox::new(DEFAULT_MAX_FRAME_LEN, Box::new(io), Box::new(|_| {}))
    }

    #[tokio::test]
    async fn writes_frames_in_order_with_large_payloads_uncopied() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (tx, queue) = outbox(client);
        let writer = tokio::spawn(run(queue));
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
        assert_eq!(read_all(server).await, frames);
        writer.await.unwrap();
    }

    /// Counts the writes it is asked to make.
    #[derive(Default)]
    struct CountingSink {
        writes: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl AsyncWrite for CountingSink {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            Poll::Ready(Ok(bufs.iter().map(|buf| buf.len()).sum()))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_cork_holds_frames_back_until_released_then_writes_them_at_once() {
        let sink = CountingSink::default();
        let writes = Arc::clone(&sink.writes);
        let (tx, queue) = outbox(sink);
        let writer = tokio::spawn(run(queue));
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

    #[test]
    fn releasing_the_cork_writes_from_the_caller_without_the_writer_task() {
        let sink = CountingSink::default();
        let writes = Arc::clone(&sink.writes);
        // No writer task: only the direct write can reach the sink.
        let (tx, _queue) = outbox(sink);
        tx.cork();
        for nonce in 0..10 {
            tx.send_now(&Frame::connection(Message::Ping(Ping { nonce })))
                .unwrap();
        }
        assert_eq!(writes.load(Ordering::SeqCst), 0);
        tx.uncork();
        assert_eq!(
            writes.load(Ordering::SeqCst),
            1,
            "ten frames, one write, right away"
        );
    }

    #[tokio::test]
    async fn what_a_direct_write_cannot_write_at_once_the_writer_task_finishes() {
        // A pipe that takes 100 bytes at a time: the direct write stops early.
        let (client, server) = tokio::io::duplex(100);
        let (tx, queue) = outbox(client);
        let writer = tokio::spawn(run(queue));
        let frames: Vec<Frame> = (0..200)
            .map(|nonce| Frame::connection(Message::Ping(Ping { nonce })))
            .collect();
        tx.cork();
        for frame in &frames {
            tx.send_now(frame).unwrap();
        }
        tx.uncork();
        drop(tx);
        assert_eq!(read_all(server).await, frames);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_full_queue_makes_senders_wait_until_the_peer_reads() {
        let (client, server) = tokio::io::duplex(4 << 10);
        let (tx, queue) = outbox(client);
        let writer = tokio::spawn(run(queue));
        // Four times what the queue holds, in frames of 64 KiB.
        let chunk = Bytes::from(vec![1u8; 64 << 10]);
        let count = 4 * crate::conn::outbox::QUEUE_BYTES / chunk.len();
        let frames: Vec<Frame> = (0..count)
            .map(|_| Frame::new(1, Message::Chunk(chunk.clone())))
            .collect();
        let sender = {
            let frames = frames.clone();
            tokio::spawn(async move {
                for frame in frames {
                    tx.send(frame).await.unwrap();
                }
            })
        };
        // Nobody reads: the sender must be held back, not buffer it all.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!sender.is_finished(), "the sender waits for room");
        assert_eq!(read_all(server).await, frames);
        sender.await.unwrap();
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_frame_sent_alone_is_written_by_its_sender() {
        let sink = CountingSink::default();
        let writes = Arc::clone(&sink.writes);
        // No writer task: only the sender can write.
        let (tx, _queue) = outbox(sink);
        let ping = || {
            (
                Frame::connection(Message::Ping(Ping { nonce: 1 })),
                None,
                (),
            )
        };
        tx.send_registered_alone(ping).await.unwrap();
        assert_eq!(writes.load(Ordering::SeqCst), 1, "written at once");

        // Corked, it waits for the cork like any frame.
        tx.cork();
        tx.send_registered_alone(ping).await.unwrap();
        assert_eq!(writes.load(Ordering::SeqCst), 1);
        tx.uncork();
        assert_eq!(writes.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn when_the_writer_gives_up_the_registrations_still_queued_are_let_go() {
        let (tx, queue) = Outbox::<tokio::sync::oneshot::Sender<()>>::new(
            DEFAULT_MAX_FRAME_LEN,
            Box::new(tokio::io::sink()),
            Box::new(|_| {}),
        );
        // Corked, so that the frame and its registration stay queued.
        tx.cork();
        let (waiter, answer) = tokio::sync::oneshot::channel();
        let ping = Frame::connection(Message::Ping(Ping { nonce: 1 }));
        tx.send_registered(move || (ping, Some(waiter), ()))
            .await
            .unwrap();
        // As after a failed write.
        queue.writer_gone();
        assert!(
            answer
                .now_or_never()
                .expect("the waiter is let go at once")
                .is_err(),
            "nobody answers a frame that will never be written"
        );
        let ping = Frame::connection(Message::Ping(Ping { nonce: 2 }));
        assert!(tx.send_now(&ping).is_err(), "nothing more is queued");
    }
}
