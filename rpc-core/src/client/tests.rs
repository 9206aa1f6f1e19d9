//! The client connection's state machine against a scripted server over an
//! in-memory pipe: the handshake and each refusal, responses matched to
//! their callers whatever their order, cancellation of abandoned calls,
//! deadlines, keepalive, the server's `GoAway` and a connection lost
//! mid-call.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::DuplexStream;
use tokio::time::{Instant, timeout};
use tokio_util::codec::Framed;

use super::ClientConfig;
use super::connection::Connection;
use super::in_flight::Failed;
use crate::error::RpcError;
use crate::wire::{
    ErrorMessage, Frame, FrameCodec, GoAway, Limits, Message, Payload, PeerRole, Ping, Response,
    StatusCode, VersionMismatch, Welcome,
};

const PATIENCE: Duration = Duration::from_secs(10);

/// The server's end of the pipe, driven by the test.
struct Script(Framed<DuplexStream, FrameCodec>);

impl Script {
    async fn next(&mut self) -> Frame {
        match timeout(PATIENCE, self.0.next()).await {
            Ok(Some(Ok(frame))) => frame,
            other => panic!("expected a frame from the client, got {other:?}"),
        }
    }

    async fn send(&mut self, stream_id: u64, message: Message) {
        self.0
            .send(Frame::new(stream_id, message))
            .await
            .expect("the pipe takes the frame");
    }

    async fn respond(&mut self, stream_id: u64, status: StatusCode, payload: &'static [u8]) {
        let response = Response {
            status,
            server_time_ms: 0,
            elapsed_us: 1,
            message: String::new(),
            payload: Payload::from(Bytes::from_static(payload)),
        };
        self.send(stream_id, Message::Response(response)).await;
    }

    /// The next call's stream id and method.
    async fn call(&mut self) -> (u64, String) {
        let frame = self.next().await;
        match frame.message {
            Message::Call(call) => (frame.stream_id, call.method),
            other => panic!("expected a Call, got {other:?}"),
        }
    }
}

fn welcome() -> Message {
    Message::Welcome(Welcome {
        peer_name: "script".into(),
        role: PeerRole::Server,
        access_role: Some("client".into()),
        limits: Limits::default(),
        server_time_ms: 0,
    })
}

/// Starts a handshake with `config`, answers it with `answer`, and returns
/// what the client made of it, with the server's end and the `Hello`.
async fn handshake(
    config: ClientConfig,
    answer: Message,
) -> (Result<Connection, RpcError>, Script, Frame) {
    let (client, server) = tokio::io::duplex(1 << 20);
    let mut script = Script(Framed::new(server, FrameCodec::new()));
    let connecting = tokio::spawn(async move {
        Connection::handshake(Box::new(client), "script", "script", &config).await
    });
    let hello = script.next().await;
    script.send(0, answer).await;
    let connection = timeout(PATIENCE, connecting)
        .await
        .expect("the handshake ends")
        .expect("without panicking");
    (connection, script, hello)
}

async fn connected() -> (Connection, Script) {
    let (connection, script, _) = handshake(ClientConfig::default(), welcome()).await;
    (connection.expect("welcomed"), script)
}

fn no_deadline() -> (Instant, Option<Instant>) {
    (Instant::now(), None)
}

#[tokio::test]
async fn the_hello_carries_the_token_and_the_limits_and_a_welcome_opens_the_connection() {
    let config = ClientConfig {
        token: Some("s3cret".into()),
        max_frame_len: 1 << 18,
        ..ClientConfig::default()
    };
    let (connection, _script, hello) = handshake(config, welcome()).await;
    assert_eq!(hello.stream_id, 0);
    let Message::Hello(hello) = hello.message else {
        panic!("the first frame is a Hello")
    };
    assert_eq!(hello.token.as_deref(), Some("s3cret"));
    assert_eq!(hello.limits.max_frame_len, 1 << 18);
    assert!(connection.expect("welcomed").is_open());
}

#[tokio::test]
async fn a_refused_handshake_is_an_error_with_the_servers_status_and_reason() {
    let refusal = Message::Error(ErrorMessage {
        status: StatusCode::FORBIDDEN,
        message: "invalid token".into(),
    });
    let (connection, _, _) = handshake(ClientConfig::default(), refusal).await;
    assert!(
        matches!(&connection, Err(RpcError::Forbidden(reason)) if reason == "invalid token"),
        "{connection:?}"
    );
    let mismatch = Message::VersionMismatch(VersionMismatch {
        min_version: 2,
        max_version: 3,
    });
    let (connection, _, _) = handshake(ClientConfig::default(), mismatch).await;
    assert!(
        matches!(&connection, Err(RpcError::Unavailable(reason)) if reason.contains("2..=3")),
        "{connection:?}"
    );
}

#[tokio::test]
async fn responses_reach_their_callers_whatever_their_order() {
    let (connection, mut script) = connected().await;
    let first = connection.call("a", Bytes::new(), no_deadline(), None, None);
    let second = connection.call("b", Bytes::new(), no_deadline(), None, None);
    let server = async {
        let calls = [script.call().await, script.call().await];
        assert_eq!(calls[0].0 % 2, 1, "the opener's ids are odd");
        assert!(calls[0].0 < calls[1].0, "and increase");
        // The second call is answered first.
        for (id, method) in calls.iter().rev() {
            let payload: &'static [u8] = if method == "a" { b"A" } else { b"B" };
            script.respond(*id, StatusCode::OK, payload).await;
        }
    };
    let (first, second, ()) = tokio::join!(first, second, server);
    assert_eq!(first.expect("answered"), &b"A"[..]);
    assert_eq!(second.expect("answered"), &b"B"[..]);
}

#[tokio::test]
async fn a_status_becomes_the_matching_error_and_422_carries_the_payload() {
    let (connection, mut script) = connected().await;
    let call = connection.call("a", Bytes::new(), no_deadline(), None, None);
    let server = async {
        let (id, _) = script.call().await;
        script
            .respond(id, StatusCode::APPLICATION_ERROR, b"oops")
            .await;
    };
    let (result, ()) = tokio::join!(call, server);
    match result {
        Err(Failed {
            error: RpcError::Application(error),
            unprocessed: false,
        }) => assert_eq!(error.0, &b"oops"[..]),
        other => panic!("expected an application error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_abandoned_call_is_cancelled_on_its_stream() {
    let (connection, mut script) = connected().await;
    let call = connection.call("slow", Bytes::new(), no_deadline(), None, None);
    let abandoned = timeout(Duration::from_millis(50), call);
    let (result, (id, _)) = tokio::join!(abandoned, script.call());
    assert!(result.is_err(), "the call was still waiting");
    let frame = script.next().await;
    assert_eq!(frame.stream_id, id);
    assert!(matches!(frame.message, Message::Cancel), "{frame:?}");
    // A late response for it is ignored; the connection serves on.
    script.respond(id, StatusCode::OK, b"late").await;
    let next = connection.call("b", Bytes::new(), no_deadline(), None, None);
    let server = async {
        let (id, _) = script.call().await;
        script.respond(id, StatusCode::OK, b"B").await;
    };
    let (next, ()) = tokio::join!(next, server);
    assert_eq!(next.expect("answered"), &b"B"[..]);
}

#[tokio::test]
async fn a_deadline_that_passes_fails_the_call_and_cancels_it() {
    let (connection, mut script) = connected().await;
    let now = Instant::now();
    let deadline = now + Duration::from_millis(50);
    let call = connection.call("slow", Bytes::new(), (now, Some(deadline)), None, None);
    let server = async {
        let frame = script.next().await;
        let Message::Call(call) = frame.message else {
            panic!("expected a Call")
        };
        assert!(call.timeout_ms.is_some_and(|ms| ms <= 50), "{call:?}");
        script.next().await
    };
    let (result, cancel) = tokio::join!(call, server);
    assert!(
        matches!(
            result,
            Err(Failed {
                error: RpcError::DeadlineExceeded,
                ..
            })
        ),
        "{result:?}"
    );
    assert!(matches!(cancel.message, Message::Cancel), "{cancel:?}");
}

#[tokio::test]
async fn the_servers_ping_is_answered_with_its_nonce() {
    let (_connection, mut script) = connected().await;
    script.send(0, Message::Ping(Ping { nonce: 77 })).await;
    let frame = script.next().await;
    assert!(
        matches!(frame.message, Message::Pong(pong) if pong.nonce == 77),
        "{frame:?}"
    );
}

#[tokio::test]
async fn calls_above_the_goaways_last_stream_fail_as_unprocessed_and_the_connection_closes_to_new_ones()
 {
    let (connection, mut script) = connected().await;
    let kept = connection.call("kept", Bytes::new(), no_deadline(), None, None);
    let dropped = connection.call("dropped", Bytes::new(), no_deadline(), None, None);
    let server = async {
        let (kept_id, _) = script.call().await;
        let _ = script.call().await;
        script
            .send(
                0,
                Message::GoAway(GoAway {
                    last_stream_id: kept_id,
                    status: StatusCode::UNAVAILABLE,
                    message: "shutting down".into(),
                }),
            )
            .await;
        script.respond(kept_id, StatusCode::OK, b"K").await;
    };
    let (kept, dropped, ()) = tokio::join!(kept, dropped, server);
    assert_eq!(kept.expect("served"), &b"K"[..]);
    match dropped {
        Err(Failed {
            error: RpcError::Unavailable(_),
            unprocessed: true,
        }) => {}
        other => panic!("expected an unprocessed failure, got {other:?}"),
    }
    assert!(!connection.is_open(), "new calls go to a new connection");
}

#[tokio::test]
async fn a_connection_lost_mid_call_fails_the_call_as_unavailable() {
    let (connection, mut script) = connected().await;
    let call = connection.call("a", Bytes::new(), no_deadline(), None, None);
    let server = async {
        let _ = script.call().await;
        drop(script);
    };
    let (result, ()) = tokio::join!(call, server);
    assert!(
        matches!(
            result,
            Err(Failed {
                error: RpcError::Unavailable(_),
                unprocessed: false,
            })
        ),
        "{result:?}"
    );
    assert!(!connection.is_open());
}
