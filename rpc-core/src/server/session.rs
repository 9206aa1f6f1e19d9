//! The frame loop of an established server connection: requests in,
//! responses out through the connection's writer.

mod calls;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::{Instant, sleep_until};
use tokio_util::codec::FramedRead;

use crate::conn::{self, Arrival, Outbox};
use crate::server::budget::Held;
use crate::server::dedup::{Reply, Waiters};
use crate::server::registry::PeerInfo;
use crate::server::shared::ServerState;
use crate::transfer::ChunkReceiver;
use crate::wire::DecodeError;
use crate::wire::{
    ContentHash, ErrorMessage, Frame, FrameCodec, GoAway, Limits, Message, Payload, Ping, Pong,
    StatusCode,
};

/// A request whose payload is still arriving in chunks.
struct Upload {
    request: AwaitingPayload,
    receiver: ChunkReceiver,
    /// The announced bytes, taken from the server's request budget.
    held: Held,
}

/// A request that carries a payload, waiting for it.
enum AwaitingPayload {
    /// A call that may run, without its arguments.
    Call(calls::Admitted),
    SendData(String),
    SendProgram(ContentHash),
}

/// Why the session loop stopped.
enum Ending {
    /// The peer closed the connection or it failed.
    PeerLeft,
    /// Idleness, or shutdown once every call is done: close quietly.
    Quiet,
    /// Shutdown's grace period ran out with requests still open: each gets
    /// a `503` response, then the connection closes.
    GraceOver,
    /// The peer broke the protocol: send it this, then close.
    Fatal(Message),
}

/// A protocol violation: the status and message of the `Error` to send
/// before closing.
type Violation = (StatusCode, String);

pub(crate) struct Session {
    shared: Arc<ServerState>,
    peer: Arc<PeerInfo>,
    peer_limits: Limits,
    outbox: Outbox,
    /// Running calls report their stream id here when done.
    done: mpsc::UnboundedSender<u64>,
    running: HashMap<u64, AbortHandle>,
    /// Running calls that carry an idempotency key (the first of their
    /// key), with who waits for them. They outlive a lost connection for a
    /// while, so that the caller's retry gets their response instead of
    /// running them again.
    keyed: HashMap<u64, Waiters>,
    uploads: HashMap<u64, Upload>,
    /// The highest stream id the peer opened.
    last_stream_id: u64,
    /// The peer sent `GoAway`: finish what runs, then close.
    peer_going_away: bool,
    /// When the frames being handled arrived: read once per batch of frames
    /// that came in together, not once per frame.
    arrived: Arrival,
}

impl Session {
    /// A session, and the receiver its [`run`](Self::run) loop needs.
    pub(crate) fn new(
        shared: Arc<ServerState>,
        peer: Arc<PeerInfo>,
        peer_limits: Limits,
        outbox: Outbox,
    ) -> (Session, mpsc::UnboundedReceiver<u64>) {
        let (done, finished) = mpsc::unbounded_channel();
        let session = Session {
            shared,
            peer,
            peer_limits,
            outbox,
            done,
            running: HashMap::new(),
            keyed: HashMap::new(),
            uploads: HashMap::new(),
            last_stream_id: 0,
            peer_going_away: false,
            arrived: Arrival::now(),
        };
        (session, finished)
    }

    pub(crate) async fn run(
        mut self,
        mut reader: FramedRead<conn::ReadHalf, FrameCodec>,
        mut shutdown: watch::Receiver<Option<Instant>>,
        mut done: mpsc::UnboundedReceiver<u64>,
    ) {
        // Idleness is sampled by a ticker at a quarter of the timeout rather
        // than by a timer reset on every frame, which would cost a timer
        // registration per frame.
        let idle = self.shared.config.idle_timeout;
        let tick = idle.map_or(Duration::from_secs(3600), |idle| {
            (idle / 4).max(Duration::from_millis(1))
        });
        let mut ticker = tokio::time::interval_at(Instant::now() + tick, tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut frames_since_tick = 0u64;
        let mut quiet_ticks = 0u32;
        // Keepalive: a peer that announced an idle timeout gets a Ping at
        // half of it, so that it never closes a connection this side keeps
        // quiet on (PROTOCOL.md section 8). A Ping whatever else was sent
        // costs a dozen bytes per half-timeout, and no bookkeeping per frame.
        let keepalive = self
            .peer_limits
            .idle_timeout_ms
            .map(|ms| (Duration::from_millis(u64::from(ms)) / 2).max(Duration::from_millis(1)));
        let ping_every = keepalive.unwrap_or(Duration::from_secs(3600));
        let mut pinger = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        pinger.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pings = 0u64;
        let shutdown_signal = async move {
            match shutdown.changed().await {
                Ok(()) => *shutdown.borrow(),
                Err(_) => Some(Instant::now()),
            }
        };
        tokio::pin!(shutdown_signal);
        let grace = sleep_until(far_future());
        tokio::pin!(grace);
        // Set once draining: by shutdown (with a grace deadline) or by the
        // peer's GoAway.
        let mut draining = false;
        let ending = loop {
            if draining && self.running.is_empty() && self.uploads.is_empty() {
                break Ending::Quiet;
            }
            tokio::select! {
                frame = reader.next() => {
                    // A Pong answers our keepalive: it is not the peer using
                    // the connection, so it does not keep it from idling.
                    let pong = matches!(&frame, Some(Ok(Frame { message: Message::Pong(_), .. })));
                    frames_since_tick += u64::from(!pong);
                    let batch = self.handle_batch(frame, &mut reader, &mut done, &mut draining);
                    if let Err(ending) = batch.await {
                        break ending;
                    }
                }
                Some(id) = done.recv() => {
                    self.forget(id);
                    self.reap(&mut done);
                }
                deadline = &mut shutdown_signal, if !draining => {
                    let goaway = GoAway {
                        last_stream_id: self.last_stream_id,
                        status: StatusCode::UNAVAILABLE,
                        message: "the server is shutting down".into(),
                    };
                    let _ = self.outbox.send(Frame::connection(Message::GoAway(goaway))).await;
                    grace.as_mut().reset(deadline.unwrap_or_else(Instant::now));
                    draining = true;
                }
                () = &mut grace => {
                    tracing::debug!(left = self.running.len(), "shutdown grace over; cancelling calls");
                    break Ending::GraceOver;
                }
                _ = pinger.tick(), if keepalive.is_some() => {
                    pings += 1;
                    let ping = Message::Ping(Ping { nonce: pings });
                    let _ = self.outbox.send(Frame::connection(ping)).await;
                }
                _ = ticker.tick(), if idle.is_some() => {
                    quiet_ticks = if frames_since_tick == 0 && self.running.is_empty() { quiet_ticks + 1 } else { 0 };
                    frames_since_tick = 0;
                    if quiet_ticks >= 4 {
                        tracing::debug!("idle; closing");
                        // Say so first, so that a request crossing the close
                        // is known to be unprocessed and safe to send again.
                        let goaway = GoAway {
                            last_stream_id: self.last_stream_id,
                            status: StatusCode::UNAVAILABLE,
                            message: "the connection was idle".into(),
                        };
                        let _ = self.outbox.send(Frame::connection(Message::GoAway(goaway))).await;
                        break Ending::Quiet;
                    }
                }
            }
        };
        self.outbox.uncork();
        // Whatever still runs is cancelled: the peer left, broke the
        // protocol, or the grace period is over. Only calls a lost peer may
        // retry (those with an idempotency key) go on, while a retry may
        // still claim them.
        let keep_keyed = matches!(ending, Ending::PeerLeft);
        let grace_over = matches!(ending, Ending::GraceOver);
        if grace_over {
            // Calls that finished are sending their own answers.
            self.reap(&mut done);
        }
        let mut unanswered: Vec<u64> = Vec::new();
        for (id, task) in self.running.drain() {
            match self.keyed.remove(&id) {
                Some(waiters) if keep_keyed => {
                    linger(task, waiters, self.shared.config.dedup_linger);
                }
                _ => {
                    task.abort();
                    unanswered.push(id);
                }
            }
        }
        if grace_over {
            // Every stream still open gets an answer before the close: the
            // peer knows each was not completed, and may send it again.
            unanswered.extend(self.uploads.keys().copied());
            unanswered.sort_unstable();
            for id in unanswered {
                self.respond_status(
                    id,
                    StatusCode::UNAVAILABLE,
                    "the server shut down before this request finished".into(),
                    self.arrived,
                )
                .await;
            }
            self.outbox.uncork();
        }
        if let Ending::Fatal(report) = ending {
            tracing::debug!(?report, "protocol error; closing");
            let _ = self.outbox.send(Frame::connection(report)).await;
        }
    }
}

impl Session {
    /// Handles `first` and every whole frame already read behind it, in a
    /// tight loop, then lets the writer go: the responses to frames that
    /// arrived together leave together.
    async fn handle_batch(
        &mut self,
        first: Option<Result<Frame, DecodeError>>,
        reader: &mut FramedRead<conn::ReadHalf, FrameCodec>,
        done: &mut mpsc::UnboundedReceiver<u64>,
        draining: &mut bool,
    ) -> Result<(), Ending> {
        self.arrived = Arrival::now();
        self.outbox.cork();
        let mut next = first;
        let result = loop {
            let frame = match next {
                None => break Err(Ending::PeerLeft),
                Some(Err(DecodeError::Io(error))) => {
                    tracing::debug!(%error, "read failed");
                    break Err(Ending::PeerLeft);
                }
                Some(Err(error)) => break Err(Ending::Fatal(error.report())),
                Some(Ok(frame)) => frame,
            };
            // Calls that finished meanwhile no longer count against the
            // limit of calls in flight.
            self.reap(done);
            if let Err((status, message)) = self.handle(frame, !*draining).await {
                let error = ErrorMessage { status, message };
                break Err(Ending::Fatal(Message::Error(error)));
            }
            *draining |= self.peer_going_away;
            if !conn::frame_buffered(reader) {
                break Ok(());
            }
            // A whole frame is buffered: decoding it does not wait.
            next = match reader.next().now_or_never() {
                Some(frame) => frame,
                None => break Ok(()),
            };
        };
        self.outbox.uncork();
        result
    }
}

impl Session {
    /// Forgets a call whose task has finished.
    fn forget(&mut self, id: u64) {
        self.running.remove(&id);
        self.keyed.remove(&id);
    }

    /// Forgets every call whose task has reported that it finished.
    fn reap(&mut self, done: &mut mpsc::UnboundedReceiver<u64>) {
        while let Ok(id) = done.try_recv() {
            self.forget(id);
        }
    }
}

/// Lets a call whose caller left run for `grace`, then stops it as soon as
/// no retry waits for its response.
fn linger(task: AbortHandle, waiters: Waiters, grace: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        waiters.none_left().await;
        if !task.is_finished() {
            tracing::debug!("no retry claimed a call whose caller left; stopping it");
            task.abort();
        }
    });
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

impl Session {
    /// Handles one frame. New requests are served only while `accepting`;
    /// during shutdown they are ignored, as the `GoAway` announced.
    async fn handle(&mut self, frame: Frame, accepting: bool) -> Result<(), Violation> {
        let id = frame.stream_id;
        let received_at = self.arrived;
        match frame.message {
            Message::Ping(ping) => {
                let pong = Message::Pong(Pong { nonce: ping.nonce });
                self.send(Frame::connection(pong)).await;
            }
            Message::Pong(_) => {}
            Message::GoAway(_) => self.peer_going_away = true,
            Message::Cancel => {
                if let Some(task) = self.running.remove(&id) {
                    task.abort();
                }
                self.keyed.remove(&id);
                self.uploads.remove(&id);
            }
            Message::Chunk(bytes) => self.chunk(id, bytes).await,
            Message::ChunkEnd(end) => {
                if let Some(upload) = self.uploads.remove(&id) {
                    match upload.receiver.finish(end.hash) {
                        Ok(payload) => {
                            let held = Some(upload.held);
                            self.dispatch(id, upload.request, payload, end.hash, held)
                                .await;
                        }
                        Err(error) => {
                            self.respond_status(id, error.status(), error.to_string(), received_at)
                                .await;
                        }
                    }
                }
            }
            message @ (Message::Call(_)
            | Message::SendData(_)
            | Message::RequestData(_)
            | Message::OfferProgram(_)
            | Message::SendProgram(_)) => {
                self.open_stream(id)?;
                if accepting {
                    self.request(id, message, received_at).await;
                }
            }
            other => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    format!("{} is not expected from a client", other.kind()),
                ));
            }
        }
        Ok(())
    }

    /// Checks that a request opens a new stream: odd, as the opener's ids
    /// are, and above every id the peer used before.
    fn open_stream(&mut self, id: u64) -> Result<(), Violation> {
        if id.is_multiple_of(2) || id <= self.last_stream_id {
            return Err((
                StatusCode::BAD_REQUEST,
                format!(
                    "stream {id} is not a new stream of the connection's opener (last was {})",
                    self.last_stream_id
                ),
            ));
        }
        self.last_stream_id = id;
        Ok(())
    }

    /// Starts serving a request, or starts receiving its chunked payload.
    async fn request(&mut self, id: u64, message: Message, received_at: Arrival) {
        let busy = self.running.len() + self.uploads.len();
        if busy >= self.shared.config.max_in_flight as usize {
            let message =
                format!("{busy} requests are already in flight on this connection, the limit");
            self.respond_status(id, StatusCode::RESOURCE_EXHAUSTED, message, received_at)
                .await;
            return;
        }
        let (request, payload) = match message {
            Message::Call(call) => {
                let payload = call.payload;
                let admitted = match self.admit(&call.method, call.schema_hash) {
                    Ok(function) => calls::Admitted {
                        function,
                        timeout_ms: call.timeout_ms,
                        idempotency_key: call.idempotency_key,
                        received_at,
                    },
                    Err((status, message)) => {
                        self.respond_status(id, status, message, received_at).await;
                        return;
                    }
                };
                (AwaitingPayload::Call(admitted), payload)
            }
            Message::SendData(_) | Message::RequestData(_)
                if !self.peer.may(self.shared.access.data.as_deref()) =>
            {
                let message = "the caller's role may not use the data store".to_owned();
                self.respond_status(id, StatusCode::FORBIDDEN, message, received_at)
                    .await;
                return;
            }
            Message::OfferProgram(_) | Message::SendProgram(_)
                if !self.peer.may(self.shared.access.programs.as_deref()) =>
            {
                let message = "the caller's role may not ship programs".to_owned();
                self.respond_status(id, StatusCode::FORBIDDEN, message, received_at)
                    .await;
                return;
            }
            Message::SendData(send) => (AwaitingPayload::SendData(send.name), send.payload),
            Message::SendProgram(send) => {
                // Refuse a program the store would not take before buffering
                // any of it.
                if let Err(rejected) = self.shared.programs.accepts(send.payload.len()) {
                    let message = rejected.message().to_owned();
                    self.respond_status(id, rejected.status(), message, received_at)
                        .await;
                    return;
                }
                (AwaitingPayload::SendProgram(send.hash), send.payload)
            }
            Message::RequestData(request) => {
                match self.shared.data.get(&request.name) {
                    Some(value) => {
                        let reply = Reply {
                            status: StatusCode::OK,
                            message: String::new(),
                            payload: value,
                        };
                        self.respond(id, reply, received_at).await;
                    }
                    None => {
                        let message = format!("no value named {:?}", request.name);
                        self.respond_status(id, StatusCode::NOT_FOUND, message, received_at)
                            .await;
                    }
                }
                return;
            }
            Message::OfferProgram(offer) => {
                let (status, message) = if self.shared.programs.contains(&offer.hash) {
                    (StatusCode::OK, String::new())
                } else if offer.len > self.shared.config.max_payload_len {
                    let message = format!(
                        "a program of {} bytes is more than the {} this server accepts",
                        offer.len, self.shared.config.max_payload_len
                    );
                    (StatusCode::RESOURCE_EXHAUSTED, message)
                } else if let Err(rejected) = self.shared.programs.accepts(offer.len) {
                    (rejected.status(), rejected.message().to_owned())
                } else {
                    (StatusCode::NOT_FOUND, "send the program".into())
                };
                self.respond_status(id, status, message, received_at).await;
                return;
            }
            _ => return,
        };
        match payload {
            Payload::Inline(bytes) => self.dispatch(id, request, bytes, None, None).await,
            Payload::Chunked { len } => {
                // All uploads in progress on a connection together may hold
                // at most one maximal payload, however many streams are open.
                let max = self.shared.config.max_payload_len;
                let held: u64 = self
                    .uploads
                    .values()
                    .map(|upload| upload.receiver.announced())
                    .sum();
                if held.saturating_add(len) > max && !self.uploads.is_empty() {
                    let message = format!(
                        "uploads in progress on this connection already announce {held} bytes of the {max} allowed"
                    );
                    self.respond_status(id, StatusCode::RESOURCE_EXHAUSTED, message, received_at)
                        .await;
                    return;
                }
                let receiver = match ChunkReceiver::new(len, max) {
                    Ok(receiver) => receiver,
                    Err(error) => {
                        self.respond_status(id, error.status(), error.to_string(), received_at)
                            .await;
                        return;
                    }
                };
                // Uploads over every connection together stay within the
                // server's budget, counted from the announcement on.
                match self.shared.requests.try_take(len) {
                    Ok(held) => {
                        let upload = Upload {
                            request,
                            receiver,
                            held,
                        };
                        self.uploads.insert(id, upload);
                    }
                    Err(exhausted) => {
                        let message = exhausted.to_string();
                        self.respond_status(
                            id,
                            StatusCode::RESOURCE_EXHAUSTED,
                            message,
                            received_at,
                        )
                        .await;
                    }
                }
            }
        }
    }

    /// Serves a request whose payload has fully arrived.
    /// `hashed` is the payload's SHA-256 when a chunked transfer already
    /// verified it, so it is not computed twice; `held` is the payload's
    /// share of the request budget, if taken, kept until it is served.
    async fn dispatch(
        &mut self,
        id: u64,
        request: AwaitingPayload,
        payload: Bytes,
        hashed: Option<ContentHash>,
        held: Option<Held>,
    ) {
        match request {
            AwaitingPayload::Call(admitted) => self.start_call(id, admitted, payload, held).await,
            AwaitingPayload::SendData(name) => {
                let received_at = Arrival::now();
                let (status, message) = match self.shared.data.insert(name, payload) {
                    Ok(()) => (StatusCode::OK, String::new()),
                    Err(full) => (
                        StatusCode::RESOURCE_EXHAUSTED,
                        format!(
                            "the data store has {} bytes free, {} needed",
                            full.free, full.len
                        ),
                    ),
                };
                self.respond_status(id, status, message, received_at).await;
            }
            AwaitingPayload::SendProgram(hash) => {
                let received_at = Arrival::now();
                let actual = hashed.unwrap_or_else(|| ContentHash::of(&payload));
                if actual != hash {
                    let message = format!("the program's bytes hash to {actual}, not {hash}");
                    self.respond_status(id, StatusCode::BAD_REQUEST, message, received_at)
                        .await;
                    return;
                }
                // The store may validate or write the program: give it its
                // own task so the connection keeps serving meanwhile.
                let stored = self.shared.programs.insert(hash, payload);
                let outbox = self.outbox.clone();
                let chunk_len = crate::transfer::chunk_len_for(self.peer_limits.max_frame_len);
                let max_payload = self.peer_limits.max_payload_len;
                tokio::spawn(async move {
                    let _held = held;
                    let (status, message) = match stored.await {
                        Ok(()) => (StatusCode::OK, String::new()),
                        Err(rejected) => (rejected.status(), rejected.message().to_owned()),
                    };
                    let reply = Reply {
                        status,
                        message,
                        payload: Bytes::new(),
                    };
                    conn::send_reply(&outbox, id, reply, received_at, chunk_len, max_payload).await;
                });
            }
        }
    }

    /// Adds a chunk to the stream's upload; chunks of streams not uploading
    /// (cancelled, failed, unknown) are ignored.
    async fn chunk(&mut self, id: u64, bytes: Bytes) {
        let Some(upload) = self.uploads.get_mut(&id) else {
            return;
        };
        if let Err(error) = upload.receiver.push(bytes) {
            self.uploads.remove(&id);
            self.respond_status(id, error.status(), error.to_string(), Arrival::now())
                .await;
        }
    }

    async fn respond_status(
        &self,
        id: u64,
        status: StatusCode,
        message: String,
        received_at: Arrival,
    ) {
        let reply = Reply {
            status,
            message,
            payload: Bytes::new(),
        };
        self.respond(id, reply, received_at).await;
    }

    pub(super) async fn respond(&self, id: u64, reply: Reply, received_at: Arrival) {
        let chunk_len = crate::transfer::chunk_len_for(self.peer_limits.max_frame_len);
        conn::send_reply(
            &self.outbox,
            id,
            reply,
            received_at,
            chunk_len,
            self.peer_limits.max_payload_len,
        )
        .await;
    }

    async fn send(&self, frame: Frame) {
        let _ = self.outbox.send(frame).await;
    }
}
