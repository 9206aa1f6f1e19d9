//! The queue between whoever produces frames on a connection and its one
//! writer task.
//!
//! Frames are encoded by the sender, straight into the batch the writer
//! will write next, under a lock held only for the encoding: no channel, no
//! allocation per frame, and the writer's job is just the system call.
//! Small frames are copied next to each other; large payloads are kept as
//! their own buffers and written from where they are.
//!
//! While a connection's reader handles frames that arrived together it
//! corks the outbox; releasing the cork writes what the batch produced from
//! the reader's own task when the socket takes it at once, and leaves the
//! writer task only what would block.
//!
//! A frame may carry a registration (`P`, the client's waiter for a call's
//! response): the writer hands the registrations of a batch over together,
//! just before writing it, so that callers never touch the table of calls
//! in flight and the table is locked once per batch, not once per call.

use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

use super::batch::{BATCH_BYTES, Batch};
use super::writer::{Drained, Register, Sink, WriteState};
use crate::wire::Frame;

/// Senders wait for the writer once this many bytes are queued.
pub(crate) const QUEUE_BYTES: usize = 1 << 20;

/// The connection's writer is gone (the peer went away or a write failed):
/// nothing more can be sent.
#[derive(Debug)]
pub(crate) struct Closed;

/// Queues frames for the connection's writer task. Sending waits when
/// [`QUEUE_BYTES`] are already queued: backpressure from a slow peer reaches
/// whoever produces. When the last `Outbox` is dropped, the writer writes
/// what is queued and closes the connection's write side.
#[derive(Debug)]
pub(crate) struct Outbox<P = ()> {
    shared: Arc<OutboxState<P>>,
}

/// What the senders and the writer share.
#[derive(Debug)]
pub(crate) struct OutboxState<P = ()> {
    queue: Mutex<Queue<P>>,
    /// The write side; locked while a batch is written (never across an
    /// await), with the queue's lock taken inside it, never around it.
    write: Mutex<WriteState<P>>,
    /// Wakes the writer: frames were queued, the cork was released, or the
    /// last sender left.
    pub(super) wake_writer: Notify,
    /// Wakes senders waiting for room.
    room: Notify,
    senders: AtomicUsize,
    corked: AtomicBool,
    peer_max_frame_len: u32,
}

#[derive(Debug)]
struct Queue<P> {
    batch: Batch,
    /// The registrations of the frames in `batch`.
    registrations: Vec<P>,
    /// The writer has stopped: sending fails.
    writer_gone: bool,
    /// Every sender has been dropped: the writer finishes.
    senders_gone: bool,
    /// A sender waits for room.
    waiting_for_room: bool,
}

impl<P> Default for Queue<P> {
    fn default() -> Self {
        Queue {
            batch: Batch::default(),
            registrations: Vec::new(),
            writer_gone: false,
            senders_gone: false,
            waiting_for_room: false,
        }
    }
}

/// The future of a send: already done, or waiting for room in the queue.
pub(crate) enum Sending<'a, R> {
    Done(Option<Result<R, Closed>>),
    Waiting(Pin<Box<dyn Future<Output = Result<R, Closed>> + Send + 'a>>),
}

// Nothing in a `Send` is pinned in place: the waiting future is boxed.
impl<R> Unpin for Sending<'_, R> {}

impl<R> Future for Sending<'_, R> {
    type Output = Result<R, Closed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Sending::Done(sent) => Poll::Ready(sent.take().unwrap_or(Err(Closed))),
            Sending::Waiting(waiting) => waiting.as_mut().poll(cx),
        }
    }
}

impl<R> std::fmt::Debug for Sending<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sending::Done(_) => "Sending::Done",
            Sending::Waiting(_) => "Sending::Waiting",
        })
    }
}

/// Who writes a frame queued outside a cork.
#[derive(Clone, Copy, Debug)]
enum Writes {
    /// The writer task, woken for it, gathering other tasks' frames too.
    Writer,
    /// The task that queued it, right away.
    Caller,
}

/// What the writer should do next.
pub(super) enum Next {
    /// Write this batch (the queue holds an empty one in its place).
    Write,
    /// Wait for a wake-up.
    Wait,
    /// Nothing is left and no sender remains: close.
    Finish,
}

impl<P> Outbox<P> {
    /// A new outbox writing to `io`, for a peer that accepts frames up to
    /// `peer_max_frame_len`, and the state its writer drains. `register`
    /// gets the registrations of each batch before the batch is written.
    pub(super) fn new(
        peer_max_frame_len: u32,
        io: Sink,
        register: Register<P>,
    ) -> (Outbox<P>, Arc<OutboxState<P>>) {
        let shared = Arc::new(OutboxState {
            queue: Mutex::new(Queue::default()),
            write: Mutex::new(WriteState::new(io, register)),
            wake_writer: Notify::new(),
            room: Notify::new(),
            senders: AtomicUsize::new(1),
            corked: AtomicBool::new(false),
            peer_max_frame_len,
        });
        let outbox = Outbox {
            shared: Arc::clone(&shared),
        };
        (outbox, shared)
    }

    /// Queues `frame`, waiting for room if the queue is full.
    ///
    /// A frame that cannot be encoded (a bug in the caller, or a frame over
    /// the peer's limit) is logged and dropped; the connection goes on.
    ///
    /// # Errors
    ///
    /// [`Closed`] if the writer is gone.
    pub(crate) fn send(&self, frame: Frame) -> Sending<'_, ()>
    where
        P: Send,
    {
        self.send_registered(move || (frame, None, ()))
    }

    /// Queues the frame `make` builds, with its registration if any (the
    /// writer hands it over before the frame is written), once there is
    /// room. `make` runs under the queue's lock, so frames built this way
    /// are written in the order they were built (which is how stream ids
    /// stay increasing on the wire). Returns what `make` returned beside the
    /// frame. `make` must not block or lock the outbox.
    ///
    /// # Errors
    ///
    /// [`Closed`] if the writer is gone; `make` was not called.
    ///
    /// The frame is queued right away when there is room, before the
    /// returned future is first polled; the future then only hands back the
    /// result. Only a send that must wait for room carries a (boxed) future
    /// that waits: every send's future stays a few words long.
    pub(crate) fn send_registered<'a, R, M>(&'a self, make: M) -> Sending<'a, R>
    where
        M: FnOnce() -> (Frame, Option<P>, R) + Send + 'a,
        R: Send + 'a,
        P: Send,
    {
        self.send_registered_by(Writes::Writer, make)
    }

    /// Like [`send_registered`](Self::send_registered), for a frame that is
    /// likely to go out alone (its connection was idle): it is written from
    /// the calling task when the socket takes it at once, which saves waking
    /// the writer task, instead of waiting for the frames of other tasks to
    /// join it.
    pub(crate) fn send_registered_alone<'a, R, M>(&'a self, make: M) -> Sending<'a, R>
    where
        M: FnOnce() -> (Frame, Option<P>, R) + Send + 'a,
        R: Send + 'a,
        P: Send,
    {
        self.send_registered_by(Writes::Caller, make)
    }

    fn send_registered_by<'a, R, M>(&'a self, writes: Writes, make: M) -> Sending<'a, R>
    where
        M: FnOnce() -> (Frame, Option<P>, R) + Send + 'a,
        R: Send + 'a,
        P: Send,
    {
        match self.try_send_registered(writes, make) {
            Ok(sent) => Sending::Done(Some(sent)),
            Err(make) => Sending::Waiting(Box::pin(self.send_when_room(make))),
        }
    }

    /// Queues the frame `make` builds if there is room now; gives `make`
    /// back if not.
    fn try_send_registered<R, M>(&self, writes: Writes, make: M) -> Result<Result<R, Closed>, M>
    where
        M: FnOnce() -> (Frame, Option<P>, R),
    {
        let mut queue = self.shared.lock();
        if queue.writer_gone {
            return Ok(Err(Closed));
        }
        if queue.batch.pending() >= QUEUE_BYTES {
            return Err(make);
        }
        let (frame, registration, made) = make();
        queue.registrations.extend(registration);
        match writes {
            Writes::Writer => self.push(queue, &frame),
            Writes::Caller => {
                queue.batch.push(&frame, self.shared.peer_max_frame_len);
                drop(queue);
                // Held back while corked: releasing the cork writes it.
                if !self.is_corked() {
                    self.shared.write_now();
                }
            }
        }
        Ok(Ok(made))
    }

    async fn send_when_room<R, M>(&self, make: M) -> Result<R, Closed>
    where
        M: FnOnce() -> (Frame, Option<P>, R),
    {
        let mut make = Some(make);
        loop {
            let room = pin!(self.shared.room.notified());
            {
                let mut queue = self.shared.lock();
                if queue.writer_gone {
                    return Err(Closed);
                }
                if queue.batch.pending() < QUEUE_BYTES
                    && let Some(make) = make.take()
                {
                    let (frame, registration, made) = make();
                    queue.registrations.extend(registration);
                    self.push(queue, &frame);
                    return Ok(made);
                }
                queue.waiting_for_room = true;
            }
            room.await;
        }
    }

    /// Queues `frame` without waiting for room: for small control frames
    /// (a cancel from a destructor) whose number is bounded by the streams
    /// in flight.
    ///
    /// # Errors
    ///
    /// [`Closed`] if the writer is gone.
    pub(crate) fn send_now(&self, frame: &Frame) -> Result<(), Closed> {
        let queue = self.shared.lock();
        if queue.writer_gone {
            return Err(Closed);
        }
        self.push(queue, frame);
        Ok(())
    }

    /// Encodes `frame` into the queued batch and wakes the writer if this
    /// gives it something to do: the first frame while uncorked, or a full
    /// batch while corked.
    fn push(&self, mut queue: MutexGuard<'_, Queue<P>>, frame: &Frame) {
        let before = queue.batch.pending();
        let was_empty = queue.batch.is_empty();
        queue.batch.push(frame, self.shared.peer_max_frame_len);
        let filled = before < BATCH_BYTES && queue.batch.pending() >= BATCH_BYTES;
        drop(queue);
        if filled || (was_empty && !self.shared.corked.load(Ordering::Acquire)) {
            self.shared.wake_writer.notify_one();
        }
    }

    /// Holds writes back while the connection's reader handles frames that
    /// arrived together, so that what they produce leaves in one write. The
    /// writer still writes once it holds a full batch.
    pub(crate) fn cork(&self) {
        self.shared.corked.store(true, Ordering::Release);
    }

    /// Lets writes go. What was held back is written right here if the
    /// socket takes it without waiting and no one else is writing, which
    /// saves handing it to the writer task; otherwise the writer task is
    /// woken to write it.
    pub(crate) fn uncork(&self) {
        if self.shared.corked.swap(false, Ordering::AcqRel) {
            self.shared.write_now();
        }
    }

    /// Whether writes are held back.
    pub(crate) fn is_corked(&self) -> bool {
        self.shared.corked.load(Ordering::Acquire)
    }
}

impl<P> Clone for Outbox<P> {
    fn clone(&self) -> Outbox<P> {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Outbox {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<P> Drop for Outbox<P> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.lock().senders_gone = true;
            self.shared.wake_writer.notify_one();
        }
    }
}

impl<P> OutboxState<P> {
    fn lock(&self) -> MutexGuard<'_, Queue<P>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The write side, for the writer task.
    pub(super) fn lock_write(&self) -> MutexGuard<'_, WriteState<P>> {
        self.write.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes what is queued from the calling task, as far as the socket
    /// takes it without waiting; leaves the rest, and any writing already
    /// under way elsewhere, to the writer task. A socket that would block
    /// is the writer task's to wait for: its waker must stay registered.
    fn write_now(&self) {
        let done = match self.write.try_lock() {
            Ok(state) if state.is_blocked() => false,
            Ok(mut state) => {
                let mut cx = Context::from_waker(Waker::noop());
                matches!(
                    state.poll_drain(self, &mut cx),
                    Poll::Ready(Ok(Drained::Idle))
                )
            }
            Err(_) => false,
        };
        if !done {
            self.wake_writer.notify_one();
        }
    }

    /// Swaps the queued frames into `batch` and their registrations into
    /// `registrations` (both empty) when they should be written now: the
    /// connection is not corked, a full batch ([`BATCH_BYTES`]) is queued,
    /// or no sender is left.
    pub(super) fn take(&self, batch: &mut Batch, registrations: &mut Vec<P>) -> Next {
        let mut queue = self.lock();
        if queue.batch.is_empty() {
            return if queue.senders_gone {
                Next::Finish
            } else {
                Next::Wait
            };
        }
        let corked = self.corked.load(Ordering::Acquire);
        if corked && queue.batch.pending() < BATCH_BYTES && !queue.senders_gone {
            return Next::Wait;
        }
        std::mem::swap(&mut queue.batch, batch);
        std::mem::swap(&mut queue.registrations, registrations);
        let waiting = std::mem::take(&mut queue.waiting_for_room);
        drop(queue);
        if waiting {
            self.room.notify_waiters();
        }
        Next::Write
    }

    /// Marks the writer gone: senders fail from now on.
    ///
    /// The registrations of frames still queued are dropped: those frames
    /// will never be written, and whoever waits on a registration (a
    /// client's call, on its oneshot) learns it at once instead of waiting
    /// for an answer that cannot come.
    pub(super) fn writer_gone(&self) {
        let abandoned = {
            let mut queue = self.lock();
            queue.writer_gone = true;
            std::mem::take(&mut queue.registrations)
        };
        drop(abandoned);
        self.room.notify_waiters();
    }
}
