//! The reader task of a client connection: it routes responses to the
//! calls waiting for them, enforces deadlines with one timer, and keeps the
//! connection alive with pings.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::time::{Instant, sleep_until};
use tokio_util::codec::FramedRead;

use super::in_flight::{Failed, Waiter};
use super::shared::{ConnectionState, Outbox};
use crate::conn::{self, Reply};
use crate::error::RpcError;
use crate::transfer::ChunkReceiver;
use crate::wire::DecodeError;
use crate::wire::{Frame, FrameCodec, Message, Payload, Ping, Response};

/// A response whose payload is arriving in chunks.
struct Download {
    response: Response,
    receiver: ChunkReceiver,
}

/// Routes responses to their calls until the connection ends, and keeps it
/// alive with pings.
pub(super) async fn read_loop(
    mut reader: FramedRead<conn::ReadHalf, FrameCodec>,
    shared: Arc<ConnectionState>,
    outbox: Outbox,
    keepalive: Option<Duration>,
    max_payload_len: u64,
) {
    // Silence is sampled by a ticker instead of a timer reset per frame.
    let tick = keepalive.unwrap_or(Duration::from_secs(3600));
    let mut ticker = tokio::time::interval_at(Instant::now() + tick, tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard_since_tick = false;
    let mut pinged = false;
    let dropped = shared.dropped.notified();
    tokio::pin!(dropped);
    // One timer enforces every call's deadline: it is set to the earliest.
    let deadline = sleep_until(far_future());
    tokio::pin!(deadline);
    let mut deadline_moved = Box::pin(shared.deadline_moved.notified());
    let mut state = ReaderState {
        shared: Arc::clone(&shared),
        outbox: outbox.clone(),
        downloads: HashMap::new(),
        answers: Answers::default(),
        max_payload_len,
    };
    let reason = loop {
        if !conn::frame_buffered(&reader) {
            state.answers.deliver(&shared);
            // The callers a batch of responses woke mostly send their next
            // calls right away: the writer is held (corked) until they have
            // had their turn, so that those calls leave in one write too.
            if outbox.is_corked() {
                tokio::task::yield_now().await;
                outbox.uncork();
            }
        }
        let frame = tokio::select! {
            frame = reader.next() => frame,
            () = &mut dropped => break "the client no longer uses it".to_owned(),
            () = &mut deadline_moved => {
                deadline_moved.set(shared.deadline_moved.notified());
                let earliest = shared.lock().earliest();
                deadline.as_mut().reset(earliest.unwrap_or_else(far_future));
                continue;
            }
            () = &mut deadline => {
                let expired = shared.lock().take_expired(Instant::now());
                for (id, waiter) in expired {
                    let _ = waiter.send(Err(Failed::processed(RpcError::DeadlineExceeded)));
                    let _ = outbox.send(Frame::new(id, Message::Cancel)).await;
                }
                let earliest = shared.lock().earliest();
                deadline.as_mut().reset(earliest.unwrap_or_else(far_future));
                continue;
            }
            _ = ticker.tick(), if keepalive.is_some() => {
                if heard_since_tick {
                    heard_since_tick = false;
                    pinged = false;
                } else if pinged {
                    break "the server stopped answering pings".to_owned();
                } else {
                    pinged = true;
                    let _ = outbox.send(Frame::connection(Message::Ping(Ping { nonce: 0 }))).await;
                }
                continue;
            }
        };
        heard_since_tick = true;
        // Every whole frame already read is handled before waiting again.
        // Only a batch of several is corked: the answer to a lone call goes
        // to its caller at once, and the caller's next call out at once.
        let mut next = frame;
        let ended = loop {
            if let Err(reason) = state.handle(next).await {
                break Some(reason);
            }
            if !conn::frame_buffered(&reader) {
                break None;
            }
            outbox.cork();
            match reader.next().now_or_never() {
                Some(frame) => next = frame,
                None => break None,
            }
        };
        if let Some(reason) = ended {
            break reason;
        }
    };
    state.answers.deliver(&shared);
    outbox.uncork();
    tracing::debug!(%reason, "connection ended");
    shared.fail_from(0, &reason, false);
}

/// What a connection's reader keeps between frames.
struct ReaderState {
    shared: Arc<ConnectionState>,
    outbox: Outbox,
    /// Responses whose payload is arriving in chunks.
    downloads: HashMap<u64, Download>,
    /// Answers of the frames read so far, handed to their callers together
    /// when no whole frame is left to read: the table of calls in flight is
    /// locked once per batch.
    answers: Answers,
    max_payload_len: u64,
}

impl ReaderState {
    /// Handles one frame, or the end of the stream; `Err` with the reason
    /// when the connection must end.
    async fn handle(&mut self, frame: Option<Result<Frame, DecodeError>>) -> Result<(), String> {
        let frame = match frame {
            None => return Err("the server closed the connection".to_owned()),
            Some(Err(DecodeError::Io(error))) => {
                return Err(format!("the connection failed: {error}"));
            }
            Some(Err(error)) => return Err(format!("the server broke the protocol: {error}")),
            Some(Ok(frame)) => frame,
        };
        let id = frame.stream_id;
        match frame.message {
            Message::Response(response) => match response.payload {
                Payload::Inline(ref payload) => {
                    let reply = Reply {
                        status: response.status,
                        payload: payload.clone(),
                        message: response.message,
                    };
                    self.answers.push(id, Ok(reply));
                }
                Payload::Chunked { len } => match ChunkReceiver::new(len, self.max_payload_len) {
                    Ok(receiver) => {
                        self.downloads.insert(id, Download { response, receiver });
                    }
                    Err(error) => {
                        let error = RpcError::ResourceExhausted(error.to_string());
                        self.answers.push(id, Err(Failed::processed(error)));
                        let _ = self.outbox.send(Frame::new(id, Message::Cancel)).await;
                    }
                },
            },
            Message::Chunk(bytes) => {
                if let Some(download) = self.downloads.get_mut(&id)
                    && let Err(error) = download.receiver.push(bytes)
                {
                    self.downloads.remove(&id);
                    let error = RpcError::Internal(error.to_string());
                    self.answers.push(id, Err(Failed::processed(error)));
                    let _ = self.outbox.send(Frame::new(id, Message::Cancel)).await;
                }
            }
            Message::ChunkEnd(end) => {
                if let Some(download) = self.downloads.remove(&id) {
                    let result = download
                        .receiver
                        .finish(end.hash)
                        .map(|payload| Reply {
                            status: download.response.status,
                            message: download.response.message,
                            payload,
                        })
                        .map_err(|error| Failed::processed(RpcError::Internal(error.to_string())));
                    self.answers.push(id, result);
                }
            }
            Message::Ping(ping) => {
                let pong = Message::Pong(crate::wire::Pong { nonce: ping.nonce });
                let _ = self.outbox.send(Frame::connection(pong)).await;
            }
            Message::Pong(pong) => {
                let waiter = self
                    .shared
                    .pings
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&pong.nonce);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(());
                }
            }
            Message::GoAway(goaway) => {
                tracing::debug!(last = goaway.last_stream_id, "the server is going away");
                // Answers that came before the GoAway stand.
                self.answers.deliver(&self.shared);
                self.shared
                    .fail_from(goaway.last_stream_id, "the server is shutting down", true);
            }
            Message::Error(error) => {
                return Err(format!(
                    "the server closed the connection: {} {}",
                    error.status, error.message
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// Answers waiting to be handed to their callers.
#[derive(Default)]
struct Answers {
    ready: Vec<(u64, Result<Reply, Failed>)>,
    /// The waiters of `ready`, taken under one lock.
    waiters: Vec<(Option<Waiter>, Result<Reply, Failed>)>,
}

impl Answers {
    fn push(&mut self, id: u64, answer: Result<Reply, Failed>) {
        self.ready.push((id, answer));
    }

    /// Hands every ready answer to its caller, if it still waits.
    fn deliver(&mut self, shared: &ConnectionState) {
        if self.ready.is_empty() {
            return;
        }
        {
            let mut in_flight = shared.lock();
            self.waiters.extend(
                self.ready
                    .drain(..)
                    .map(|(id, answer)| (in_flight.take(id), answer)),
            );
        }
        for (waiter, answer) in self.waiters.drain(..) {
            if let Some(waiter) = waiter {
                let _ = waiter.send(answer);
            }
        }
    }
}
