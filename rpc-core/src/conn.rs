//! Connection plumbing shared by clients and servers: splitting a framed
//! transport into a reader and a writer task, and sending responses.

mod batch;
mod outbox;
mod writer;

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::{Framed, FramedRead};

use crate::transfer::ChunkSender;
use crate::wire::{Frame, FrameCodec, Message, Payload, Response, StatusCode};
pub(crate) use outbox::Outbox;

/// A response's content: its status, message and payload.
#[derive(Clone, Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) payload: Bytes,
}

/// A byte stream a connection runs on: TCP, TLS over TCP, or a test pipe.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// The read side of a connection: first the bytes the handshake read ahead,
/// then the socket.
pub(crate) type ReadHalf =
    tokio::io::Chain<std::io::Cursor<bytes::BytesMut>, tokio::io::ReadHalf<Box<dyn Io>>>;

/// The parts of a connection after its handshake.
pub(crate) struct Split<P = ()> {
    /// Reads frames, starting with those the handshake read ahead.
    pub(crate) reader: FramedRead<ReadHalf, FrameCodec>,
    /// Queues frames for the writer, and holds it back (corks it) while the
    /// reader handles a batch.
    pub(crate) outbox: Outbox<P>,
    /// The writer task draining the outbox.
    pub(crate) writer: JoinHandle<()>,
}

/// Splits a framed transport (after its handshake) into a frame reader, an
/// outbox, and the writer task draining the outbox, which hands the
/// registrations of each batch to `register` before writing it.
pub(crate) fn split<T: Io, P: Send + 'static>(
    framed: Framed<T, FrameCodec>,
    register: impl FnMut(&mut Vec<P>) + Send + 'static,
) -> Split<P> {
    let peer_max_frame_len = framed.codec().peer_max_frame_len();
    let parts = framed.into_parts();
    let io: Box<dyn Io> = Box::new(parts.io);
    let (read, write) = tokio::io::split(io);
    // Bytes read ahead (a request sent in the same write as the `Hello`)
    // are read again through the reader, which decodes them at once: put in
    // its buffer instead, they would wait for the socket's next bytes.
    let read_ahead = std::io::Cursor::new(parts.read_buf);
    let reader = FramedRead::new(
        tokio::io::AsyncReadExt::chain(read_ahead, read),
        parts.codec,
    );
    let (outbox, queue) = Outbox::new(peer_max_frame_len, Box::new(write), Box::new(register));
    let writer = tokio::spawn(writer::run(queue));
    Split {
        reader,
        outbox,
        writer,
    }
}

/// Whether `reader` holds a whole frame it has not yet handed out: one more
/// `next()` will not wait for the socket.
pub(crate) fn frame_buffered(reader: &FramedRead<ReadHalf, FrameCodec>) -> bool {
    let buffered = reader.read_buffer();
    match buffered.first_chunk::<4>() {
        Some(prefix) => {
            let len = u32::from_be_bytes(*prefix) as usize;
            buffered.len() - 4 >= len
        }
        None => false,
    }
}

/// When a request arrived, by both clocks: the monotonic one times the
/// request, the wall clock dates its response. Read once for a batch of
/// frames that arrived together.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Arrival {
    pub(crate) at: Instant,
    unix_ms: u64,
}

impl Arrival {
    /// Now.
    pub(crate) fn now() -> Arrival {
        Arrival {
            at: Instant::now(),
            unix_ms: unix_time_ms(),
        }
    }
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub(crate) fn unix_time_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// Sends `reply` as the `Response` of stream `id`: inline when it fits in
/// `chunk_len`, chunked otherwise, or `429` if it is larger than the peer
/// accepts.
pub(crate) async fn send_reply(
    outbox: &Outbox,
    id: u64,
    reply: Reply,
    received_at: Arrival,
    chunk_len: usize,
    peer_max_payload_len: u64,
) {
    let Reply {
        mut status,
        mut message,
        mut payload,
    } = reply;
    if payload.len() as u64 > peer_max_payload_len {
        status = StatusCode::RESOURCE_EXHAUSTED;
        message = format!(
            "the result of {} bytes is more than the caller's limit of {peer_max_payload_len}",
            payload.len()
        );
        payload = Bytes::new();
    }
    let elapsed = received_at.at.elapsed();
    let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    let _ = send_with_payload(outbox, id, payload, chunk_len, |payload| {
        Message::Response(Response {
            status,
            server_time_ms: received_at.unix_ms.saturating_add(elapsed_ms),
            elapsed_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            message,
            payload,
        })
    })
    .await;
}

/// Sends the message `build` makes around `payload` on stream `id`, inline
/// if the payload fits in `chunk_len`, chunked otherwise.
///
/// # Errors
///
/// `Err(())` if the connection's writer is gone.
pub(crate) async fn send_with_payload(
    outbox: &Outbox,
    id: u64,
    payload: Bytes,
    chunk_len: usize,
    build: impl FnOnce(Payload) -> Message,
) -> Result<(), ()> {
    if payload.len() <= chunk_len {
        let message = build(Payload::Inline(payload));
        return outbox.send(Frame::new(id, message)).await.map_err(drop);
    }
    let message = build(Payload::Chunked {
        len: payload.len() as u64,
    });
    outbox.send(Frame::new(id, message)).await.map_err(drop)?;
    for frame in ChunkSender::frames(id, payload, chunk_len) {
        outbox.send(frame).await.map_err(drop)?;
    }
    Ok(())
}
