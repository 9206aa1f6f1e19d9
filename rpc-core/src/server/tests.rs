//! The server's connection state machine, driven frame by frame over an
//! in-memory pipe: the handshake and each way it refuses, the limits on
//! streams and payloads, cancellation, chunked uploads that break their
//! length, the peer's `GoAway`, and shutdown with and without grace left.
//! Each test names the protocol rule it checks; the end-to-end tests over
//! TCP live in `tests/all`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_util::codec::Framed;

use super::secure::Secured;
use super::{ServerBuilder, ServerConfig, connection};
use crate::wire::{
    Call, DecodeError, Frame, FrameCodec, GoAway, Hello, Limits, Message, Payload, PeerRole, Ping,
    Response, StatusCode,
};

/// Bounds every wait: a state machine that stops answering fails the test
/// instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(10);

/// The client's end of a connection to a server running in a task.
struct Peer {
    framed: Framed<DuplexStream, FrameCodec>,
    shutdown: watch::Sender<Option<Instant>>,
    server: JoinHandle<()>,
}

impl Peer {
    /// A connection to `builder`'s server, before any frame.
    fn open(builder: ServerBuilder) -> Peer {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (state, _tls) = builder.into_state(SocketAddr::from(([127, 0, 0, 1], 0)));
        let (shutdown, watcher) = watch::channel(None);
        let server = tokio::spawn(async move {
            let secured = Secured {
                io: Box::new(server),
                certified: None,
            };
            if let Some(opened) = connection::handshake(secured, None, &state).await {
                connection::serve(opened, state, watcher).await;
            }
        });
        Peer {
            framed: Framed::new(client, FrameCodec::new()),
            shutdown,
            server,
        }
    }

    /// A connection whose `hello` was welcomed.
    async fn welcomed(builder: ServerBuilder, hello: Hello) -> Peer {
        let mut peer = Peer::open(builder);
        peer.send(0, Message::Hello(hello)).await;
        match peer.next().await {
            Some(Message::Welcome(_)) => peer,
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    async fn send(&mut self, stream_id: u64, message: Message) {
        self.framed
            .send(Frame::new(stream_id, message))
            .await
            .expect("the pipe takes the frame");
    }

    /// The next frame's message, `None` once the server closed.
    async fn next(&mut self) -> Option<Message> {
        self.next_frame().await.map(|frame| frame.message)
    }

    async fn next_frame(&mut self) -> Option<Frame> {
        match timeout(PATIENCE, self.framed.next()).await {
            Ok(Some(Ok(frame))) => Some(frame),
            Ok(Some(Err(DecodeError::Io(_))) | None) => None,
            Ok(Some(Err(error))) => panic!("the server sent an undecodable frame: {error}"),
            Err(_) => panic!("the server said nothing for {PATIENCE:?}"),
        }
    }

    /// The next response, with its stream id, skipping pings.
    async fn response(&mut self) -> (u64, Response) {
        loop {
            match self.next_frame().await {
                Some(Frame {
                    stream_id,
                    message: Message::Response(response),
                }) => return (stream_id, response),
                Some(Frame {
                    message: Message::Ping(_),
                    ..
                }) => {}
                other => panic!("expected a Response, got {other:?}"),
            }
        }
    }

    /// Sends a ping and waits for its pong: everything the server sent
    /// before it has arrived by then.
    async fn round_trip(&mut self, nonce: u64) -> Vec<Message> {
        self.send(0, Message::Ping(Ping { nonce })).await;
        let mut before = Vec::new();
        loop {
            match self.next().await {
                Some(Message::Pong(pong)) if pong.nonce == nonce => return before,
                Some(other) => before.push(other),
                None => panic!("closed before the pong; got {before:?}"),
            }
        }
    }

    /// Every message until the server closes the connection, and that the
    /// server's task ended.
    async fn until_closed(mut self) -> Vec<Message> {
        let mut messages = Vec::new();
        while let Some(message) = self.next().await {
            messages.push(message);
        }
        timeout(PATIENCE, self.server)
            .await
            .expect("the connection's task ends")
            .expect("without panicking");
        messages
    }
}

fn hello(token: Option<&str>) -> Hello {
    Hello {
        peer_name: "unit".into(),
        role: PeerRole::Client,
        token: token.map(Into::into),
        limits: Limits::default(),
    }
}

fn call(method: &str, args: &impl serde::Serialize) -> Message {
    Message::Call(Call {
        method: method.into(),
        timeout_ms: None,
        idempotency_key: None,
        schema_hash: None,
        payload: Payload::from(Bytes::from(postcard::to_allocvec(args).expect("encodes"))),
    })
}

fn error_status(message: Option<Message>) -> StatusCode {
    match message {
        Some(Message::Error(error)) => error.status,
        other => panic!("expected an Error, got {other:?}"),
    }
}

/// A server with `double` and a function that waits until `release` is
/// notified, flagging `dropped` if its future is dropped first.
fn server(release: &Arc<Notify>, dropped: &Arc<AtomicBool>) -> ServerBuilder {
    let (release, dropped) = (Arc::clone(release), Arc::clone(dropped));
    ServerBuilder::new()
        .function("double", |x: u32| async move { Ok::<_, ()>(x * 2) })
        .function("wait", move |(): ()| {
            let (release, dropped) = (Arc::clone(&release), Arc::clone(&dropped));
            async move {
                struct Flag(Arc<AtomicBool>);
                impl Drop for Flag {
                    fn drop(&mut self) {
                        self.0.store(true, Ordering::SeqCst);
                    }
                }
                let flag = Flag(dropped);
                release.notified().await;
                std::mem::forget(flag);
                Ok::<_, ()>(())
            }
        })
}

fn plain() -> ServerBuilder {
    server(&Arc::new(Notify::new()), &Arc::new(AtomicBool::new(false)))
}

// The handshake (PROTOCOL.md section 8).

#[tokio::test]
async fn a_hello_is_welcomed_with_the_servers_role_limits_and_the_tokens_role() {
    let builder = plain()
        .token("s3cret", "admin")
        .role(PeerRole::Worker)
        .config(ServerConfig {
            max_in_flight: 7,
            ..ServerConfig::default()
        });
    let mut peer = Peer::open(builder);
    peer.send(0, Message::Hello(hello(Some("s3cret")))).await;
    let Some(Message::Welcome(welcome)) = peer.next().await else {
        panic!("expected Welcome")
    };
    assert_eq!(welcome.role, PeerRole::Worker);
    assert_eq!(welcome.access_role.as_deref(), Some("admin"));
    assert_eq!(welcome.limits.max_streams, 7);
    peer.send(1, call("double", &21u32)).await;
    let (id, response) = peer.response().await;
    assert_eq!((id, response.status), (1, StatusCode::OK));
    assert_eq!(
        response.payload.inline().map(|b| b.to_vec()),
        Some(vec![42])
    );
}

#[tokio::test]
async fn a_first_frame_that_is_not_a_hello_is_refused_400_and_the_connection_closed() {
    let mut peer = Peer::open(plain());
    peer.send(1, call("double", &1u32)).await;
    let messages = peer.until_closed().await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(
        error_status(messages.into_iter().next()),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn a_wrong_token_is_refused_403() {
    let mut peer = Peer::open(plain().token("s3cret", "admin"));
    peer.send(0, Message::Hello(hello(Some("guess")))).await;
    assert_eq!(error_status(peer.next().await), StatusCode::FORBIDDEN);
    assert!(peer.until_closed().await.is_empty());
}

#[tokio::test]
async fn a_malformed_hello_is_refused_for_its_fields_before_its_token_is_looked_at() {
    let mut peer = Peer::open(plain().token("s3cret", "admin"));
    // Limits below the floor, and a wrong token: the limits are named.
    let mut frame = bytes::BytesMut::new();
    tokio_util::codec::Encoder::encode(
        &mut FrameCodec::new(),
        Frame::connection(Message::Hello(hello(Some("guess")))),
        &mut frame,
    )
    .expect("encodes");
    // The limits are the body's last 10 bytes; the first, max_frame_len,
    // is 1048576 (`80 80 40`). Rewrite it as 1024 in three bytes
    // (`80 08 00`): below the 16 KiB floor.
    let limits_at = frame.len() - 10;
    assert_eq!(&frame[limits_at..limits_at + 3], &[0x80, 0x80, 0x40]);
    frame[limits_at + 1] = 0x08;
    frame[limits_at + 2] = 0x00;
    let io = peer.framed.get_mut();
    io.write_all(&frame).await.expect("written");
    let status = error_status(peer.next().await);
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_unknown_version_gets_version_mismatch_and_a_close() {
    let mut peer = Peer::open(plain());
    // A Ping frame of version 2.
    let io = peer.framed.get_mut();
    io.write_all(&[0, 0, 0, 13, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 42])
        .await
        .expect("written");
    let messages = peer.until_closed().await;
    assert!(
        matches!(messages.as_slice(), [Message::VersionMismatch(v)] if v.min_version == 1 && v.max_version == 1),
        "{messages:?}"
    );
}

// Streams (section 4) and limits (section 11).

#[tokio::test]
async fn calls_past_max_in_flight_are_answered_429_and_the_others_still_run() {
    let release = Arc::new(Notify::new());
    let dropped = Arc::new(AtomicBool::new(false));
    let builder = server(&release, &dropped).config(ServerConfig {
        max_in_flight: 2,
        ..ServerConfig::default()
    });
    let mut peer = Peer::welcomed(builder, hello(None)).await;
    for id in [1, 3, 5] {
        peer.send(id, call("wait", &())).await;
    }
    let (id, response) = peer.response().await;
    assert_eq!((id, response.status), (5, StatusCode::RESOURCE_EXHAUSTED));
    release.notify_waiters();
    let mut done = [peer.response().await, peer.response().await];
    done.sort_by_key(|(id, _)| *id);
    assert_eq!(
        done.map(|(id, response)| (id, response.status)),
        [(1, StatusCode::OK), (3, StatusCode::OK)]
    );
}

#[tokio::test]
async fn a_stream_id_that_does_not_increase_is_fatal() {
    let mut peer = Peer::welcomed(plain(), hello(None)).await;
    peer.send(5, call("double", &1u32)).await;
    assert_eq!(peer.response().await.0, 5);
    peer.send(3, call("double", &1u32)).await;
    let messages = peer.until_closed().await;
    assert_eq!(
        error_status(messages.into_iter().last()),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn a_stream_id_of_the_servers_parity_is_fatal() {
    let mut peer = Peer::welcomed(plain(), hello(None)).await;
    peer.send(2, call("double", &1u32)).await;
    let messages = peer.until_closed().await;
    assert_eq!(
        error_status(messages.into_iter().last()),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn a_chunked_payload_over_the_limit_is_answered_429_before_any_chunk() {
    let builder = plain().config(ServerConfig {
        max_payload_len: 1024,
        ..ServerConfig::default()
    });
    let mut peer = Peer::welcomed(builder, hello(None)).await;
    let Message::Call(mut big) = call("double", &1u32) else {
        unreachable!()
    };
    big.payload = Payload::Chunked { len: 4096 };
    peer.send(1, Message::Call(big)).await;
    let (id, response) = peer.response().await;
    assert_eq!((id, response.status), (1, StatusCode::RESOURCE_EXHAUSTED));
}

#[tokio::test]
async fn chunks_past_the_announced_length_fail_their_stream_only() {
    let mut peer = Peer::welcomed(plain(), hello(None)).await;
    let Message::Call(mut upload) = call("double", &1u32) else {
        unreachable!()
    };
    upload.payload = Payload::Chunked { len: 4 };
    peer.send(1, Message::Call(upload)).await;
    peer.send(1, Message::Chunk(Bytes::from_static(&[0; 8])))
        .await;
    let (id, response) = peer.response().await;
    assert_eq!((id, response.status), (1, StatusCode::BAD_REQUEST));
    // Late chunks of the failed stream are ignored; the connection serves.
    peer.send(1, Message::Chunk(Bytes::from_static(&[0; 8])))
        .await;
    peer.send(3, call("double", &4u32)).await;
    let (id, response) = peer.response().await;
    assert_eq!((id, response.status), (3, StatusCode::OK));
}

// Cancellation (section 6).

#[tokio::test]
async fn a_cancelled_call_stops_its_function_and_gets_no_response() {
    let release = Arc::new(Notify::new());
    let dropped = Arc::new(AtomicBool::new(false));
    let mut peer = Peer::welcomed(server(&release, &dropped), hello(None)).await;
    peer.send(1, call("wait", &())).await;
    // The call is running once a later ping is answered.
    assert!(peer.round_trip(1).await.is_empty());
    peer.send(1, Message::Cancel).await;
    let before = peer.round_trip(2).await;
    assert!(
        before.is_empty(),
        "a cancelled call was answered: {before:?}"
    );
    assert!(
        dropped.load(Ordering::SeqCst),
        "the function's future was dropped"
    );
}

#[tokio::test]
async fn cancels_and_chunks_for_streams_nobody_opened_are_ignored() {
    let mut peer = Peer::welcomed(plain(), hello(None)).await;
    peer.send(99, Message::Cancel).await;
    peer.send(101, Message::Chunk(Bytes::from_static(b"stray")))
        .await;
    peer.send(103, call("double", &5u32)).await;
    let (id, response) = peer.response().await;
    assert_eq!((id, response.status), (103, StatusCode::OK));
}

// Shutdown (section 8).

#[tokio::test]
async fn shutdown_sends_goaway_lets_running_calls_answer_then_closes() {
    let release = Arc::new(Notify::new());
    let dropped = Arc::new(AtomicBool::new(false));
    let mut peer = Peer::welcomed(server(&release, &dropped), hello(None)).await;
    peer.send(1, call("wait", &())).await;
    assert!(peer.round_trip(1).await.is_empty());
    peer.shutdown.send_replace(Some(Instant::now() + PATIENCE));
    let Some(Message::GoAway(GoAway { last_stream_id, .. })) = peer.next().await else {
        panic!("expected GoAway")
    };
    assert_eq!(last_stream_id, 1);
    release.notify_waiters();
    let messages = peer.until_closed().await;
    assert!(
        matches!(messages.as_slice(), [Message::Response(r)] if r.status == StatusCode::OK),
        "{messages:?}"
    );
}

#[tokio::test]
async fn a_call_still_running_when_the_grace_ends_is_answered_503() {
    let release = Arc::new(Notify::new());
    let dropped = Arc::new(AtomicBool::new(false));
    let mut peer = Peer::welcomed(server(&release, &dropped), hello(None)).await;
    peer.send(1, call("wait", &())).await;
    assert!(peer.round_trip(1).await.is_empty());
    peer.shutdown
        .send_replace(Some(Instant::now() + Duration::from_millis(50)));
    let messages = peer.until_closed().await;
    assert!(
        matches!(messages.as_slice(), [Message::GoAway(_), Message::Response(r)] if r.status == StatusCode::UNAVAILABLE),
        "{messages:?}"
    );
}

#[tokio::test]
async fn after_the_peers_goaway_the_server_finishes_its_calls_and_closes() {
    let release = Arc::new(Notify::new());
    let dropped = Arc::new(AtomicBool::new(false));
    let mut peer = Peer::welcomed(server(&release, &dropped), hello(None)).await;
    peer.send(1, call("wait", &())).await;
    assert!(peer.round_trip(1).await.is_empty());
    peer.send(
        0,
        Message::GoAway(GoAway {
            last_stream_id: 0,
            status: StatusCode::UNAVAILABLE,
            message: "leaving".into(),
        }),
    )
    .await;
    release.notify_waiters();
    let messages = peer.until_closed().await;
    assert!(
        matches!(messages.as_slice(), [Message::Response(r)] if r.status == StatusCode::OK),
        "{messages:?}"
    );
}
