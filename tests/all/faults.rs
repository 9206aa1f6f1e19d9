//! Faults and hostile peers against the runtime. After each, a well-behaved
//! client still gets correct answers.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use rpc_core::wire::{Frame, FrameCodec, Message, Payload, VersionMismatch};
use rpc_core::{
    CallOptions, Client, ClientConfig, Context, FunctionOptions, RpcError, Server, StatusCode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_util::codec::Framed;

use crate::support::{
    Counters, eventually, fixture, frames_until_close, next_response, proxy, raw_call, raw_session,
    start, start_with, test_server,
};

const PATIENCE: Duration = Duration::from_secs(5);

async fn assert_answers(client: &Client) {
    let sum: i64 = client.call("add", &(40i64, 2i64)).await.unwrap();
    assert_eq!(sum, 42);
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    let (_counters, server, client) = fixture().await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut buf = [0u8; 16];
    let read = timeout(PATIENCE, silent.read(&mut buf)).await.unwrap();
    assert!(matches!(read, Ok(0)), "closed without a word: {read:?}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_answers(&client).await;
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn garbage_after_the_handshake_gets_an_error_and_a_close() {
    let (_counters, server, client) = fixture().await;
    assert_answers(&client).await;

    let framed = raw_session(server.local_addr()).await;
    let mut socket = framed.into_inner();
    socket
        .write_all(&[0, 0, 0, 14, 1, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 9, 9])
        .await
        .unwrap();
    let mut framed = Framed::new(socket, FrameCodec::new());
    let messages = frames_until_close(&mut framed).await;
    let Some(Message::Error(error)) = messages.last() else {
        panic!("expected an Error frame, got {messages:?}");
    };
    assert_eq!(error.status, StatusCode::BAD_REQUEST);
    assert_eq!(error.message, "unknown message kind 0x7f");
    assert_answers(&client).await;
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_frame_over_the_limit_gets_an_error_and_a_close() {
    let (_counters, server, client) = fixture().await;

    let framed = raw_session(server.local_addr()).await;
    let mut socket = framed.into_inner();
    socket
        .write_all(&(64u32 << 20).to_be_bytes())
        .await
        .unwrap();
    let mut framed = Framed::new(socket, FrameCodec::new());
    let messages = frames_until_close(&mut framed).await;
    let Some(Message::Error(error)) = messages.last() else {
        panic!("expected an Error frame, got {messages:?}");
    };
    assert_eq!(error.status, StatusCode::RESOURCE_EXHAUSTED);
    assert_eq!(
        error.message,
        "frame of 67108864 bytes exceeds the limit of 1048576"
    );
    assert_answers(&client).await;
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_reused_stream_id_is_a_protocol_error() {
    let counters = Arc::new(Counters::default());
    let server = start(&counters).await;
    let mut framed = raw_session(server.local_addr()).await;
    let call = |method: &str| Frame::new(1, Message::Call(raw_call(method, &(1i64, 2i64), None)));
    framed.send(call("add")).await.unwrap();
    framed.send(call("add")).await.unwrap();
    let messages = frames_until_close(&mut framed).await;
    assert!(matches!(messages.first(), Some(Message::Response(r)) if r.status == StatusCode::OK));
    let Some(Message::Error(error)) = messages.last() else {
        panic!("expected an Error frame, got {messages:?}");
    };
    assert_eq!(error.status, StatusCode::BAD_REQUEST);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_call_cancels_the_handler() {
    let counters = Arc::new(Counters::default());
    let server = start(&counters).await;
    let mut framed = raw_session(server.local_addr()).await;
    let call = raw_call("slow", &60_000u64, None);
    framed
        .send(Frame::new(1, Message::Call(call)))
        .await
        .unwrap();
    eventually("the call to start", || {
        counters.started.load(Ordering::SeqCst) == 1
    })
    .await;
    drop(framed);
    eventually("the handler to be dropped", || {
        counters.dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_answers(&Client::new(server.local_addr().to_string())).await;
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn five_hundred_connections_at_once() {
    let counters = Arc::new(Counters::default());
    let server = start(&counters).await;
    let addr = server.local_addr().to_string();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..500i64 {
        let client = Client::new(addr.clone());
        calls.spawn(async move {
            let sum: i64 = client.call("add", &(i, 1i64)).await.unwrap();
            assert_eq!(sum, i + 1);
            client
        });
    }
    let mut clients = Vec::new();
    while let Some(done) = calls.join_next().await {
        clients.push(done.unwrap());
    }
    assert_eq!(clients.len(), 500);
    // All 500 stay connected and usable.
    for client in clients.iter().step_by(50) {
        assert_answers(client).await;
    }
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn connections_over_the_limit_are_told_unavailable() {
    let counters = Arc::new(Counters::default());
    let server = start_with(
        &counters,
        rpc_core::ServerConfig {
            max_connections: 2,
            ..rpc_core::ServerConfig::default()
        },
    )
    .await;
    let addr = server.local_addr().to_string();
    let first = Client::new(addr.clone());
    let second = Client::new(addr.clone());
    assert_answers(&first).await;
    assert_answers(&second).await;
    let config = ClientConfig {
        timeout: Some(Duration::from_millis(500)),
        ..ClientConfig::default()
    };
    let third = Client::with_config(addr, config);
    let error = third
        .call::<_, i64>("add", &(1i64, 1i64))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RpcError::Unavailable(message) if message.contains("connection limit")),
        "{error:?}"
    );
    assert_answers(&first).await;
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn shutdown_lets_calls_in_flight_finish() {
    let (counters, server, client) = fixture().await;
    assert_answers(&client).await;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let client = client.clone();
        calls.spawn(async move { client.call::<_, u64>("slow", &300u64).await });
    }
    eventually("the calls to start", || {
        counters.started.load(Ordering::SeqCst) == 10
    })
    .await;
    server.shutdown(Duration::from_secs(5)).await;
    while let Some(done) = calls.join_next().await {
        assert_eq!(done.unwrap().unwrap(), 300);
    }
}

#[tokio::test]
async fn shutdown_past_its_grace_fails_calls_as_unavailable() {
    let counters = Arc::new(Counters::default());
    let server = start(&counters).await;
    let addr = server.local_addr().to_string();
    let config = ClientConfig {
        timeout: Some(Duration::from_secs(3)),
        max_retries: 0,
        ..ClientConfig::default()
    };
    let client = Client::with_config(addr, config);
    assert_answers(&client).await;
    let slow = {
        let client = client.clone();
        tokio::spawn(async move { client.call::<_, u64>("slow", &60_000u64).await })
    };
    eventually("the call to start", || {
        counters.started.load(Ordering::SeqCst) == 1
    })
    .await;
    let started = Instant::now();
    server.shutdown(Duration::from_millis(200)).await;
    let error = slow.await.unwrap().unwrap_err();
    assert!(matches!(error, RpcError::Unavailable(_)), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "nothing hangs");
    // With the server gone, calls fail clearly instead of hanging.
    let error = client
        .call::<_, i64>("add", &(1i64, 1i64))
        .await
        .unwrap_err();
    assert!(matches!(error, RpcError::Unavailable(_)), "{error:?}");
}

#[tokio::test]
async fn a_restarted_server_is_reconnected_to() {
    let counters = Arc::new(Counters::default());
    let server = start(&counters).await;
    let addr = server.local_addr();
    let config = ClientConfig {
        timeout: Some(Duration::from_secs(5)),
        ..ClientConfig::default()
    };
    let client = Client::with_config(addr.to_string(), config);
    assert_answers(&client).await;
    server.shutdown(Duration::from_millis(100)).await;

    // Restart on the same port a little later; the client's next call waits
    // for it, reconnecting with backoff.
    let restarted = {
        let counters = Arc::clone(&counters);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            test_server(&counters).bind(addr).await.unwrap()
        })
    };
    assert_answers(&client).await;
    restarted
        .await
        .unwrap()
        .shutdown(Duration::from_secs(1))
        .await;
}

#[tokio::test]
async fn an_idempotent_call_retried_after_a_lost_connection_runs_once() {
    let counters = Arc::new(Counters::default());
    let server = start(&counters).await;
    let (proxy_addr, cut) = proxy(server.local_addr()).await;
    let client = Client::new(proxy_addr.to_string());
    assert_answers(&client).await;

    let call = {
        let client = client.clone();
        tokio::spawn(async move {
            let options = CallOptions::new().idempotent();
            client
                .call_with::<_, u64, ()>("slow", &400u64, options)
                .await
        })
    };
    eventually("the call to start", || {
        counters.started.load(Ordering::SeqCst) == 1
    })
    .await;
    cut.send_modify(|cuts| *cuts += 1);
    assert_eq!(
        call.await.unwrap().unwrap(),
        400,
        "the retry got the result"
    );
    assert_eq!(
        counters.started.load(Ordering::SeqCst),
        1,
        "the function ran once"
    );
    assert_eq!(counters.finished.load(Ordering::SeqCst), 1);

    // A call that is not idempotent is not retried: it fails clearly.
    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.call::<_, u64>("slow", &400u64).await })
    };
    eventually("the second call to start", || {
        counters.started.load(Ordering::SeqCst) == 2
    })
    .await;
    cut.send_modify(|cuts| *cuts += 1);
    let error = call.await.unwrap().unwrap_err();
    assert!(matches!(error, RpcError::Unavailable(_)), "{error:?}");
    assert_answers(&client).await;
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn extreme_timeouts_are_served_not_panicked_on() {
    let counters = Arc::new(Counters::default());
    let server = start(&counters).await;
    let mut framed = raw_session(server.local_addr()).await;
    for (id, timeout_ms) in [(1, u64::MAX), (3, 0)] {
        let call = raw_call("add", &(1i64, 2i64), Some(timeout_ms));
        framed
            .send(Frame::new(id, Message::Call(call)))
            .await
            .unwrap();
        let (_, response) = next_response(&mut framed).await;
        // No deadline at all, or one already past (answered without
        // running): both get an answer.
        let expected = if timeout_ms == 0 {
            StatusCode::DEADLINE_EXCEEDED
        } else {
            StatusCode::OK
        };
        assert_eq!(response.status, expected, "{response:?}");
    }
    let client = Client::with_config(
        server.local_addr().to_string(),
        ClientConfig {
            timeout: Some(Duration::MAX),
            ..ClientConfig::default()
        },
    );
    assert_answers(&client).await;
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn idle_connections_are_closed_but_clients_reconnect() {
    let counters = Arc::new(Counters::default());
    let server = start_with(
        &counters,
        rpc_core::ServerConfig {
            idle_timeout: Some(Duration::from_millis(200)),
            ..rpc_core::ServerConfig::default()
        },
    )
    .await;
    let mut idle = raw_session(server.local_addr()).await;
    let started = Instant::now();
    let messages = frames_until_close(&mut idle).await;
    assert!(
        matches!(&messages[..], [Message::GoAway(goaway)] if goaway.last_stream_id == 0),
        "{messages:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(150));

    // A client whose keepalive pings more often than the idle timeout keeps
    // its connection; one without keepalive loses it but reconnects.
    for keepalive in [Some(Duration::from_millis(50)), None] {
        let client = Client::with_config(
            server.local_addr().to_string(),
            ClientConfig {
                keepalive,
                ..ClientConfig::default()
            },
        );
        assert_answers(&client).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_answers(&client).await;
    }
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn announced_uploads_are_capped_per_connection() {
    let counters = Arc::new(Counters::default());
    let server = start(&counters).await;
    let mut framed = raw_session(server.local_addr()).await;
    let upload = |id: u64| {
        Frame::new(
            id,
            Message::SendData(rpc_core::wire::SendData {
                name: format!("blob{id}"),
                payload: Payload::Chunked { len: 40 << 20 },
            }),
        )
    };
    // The first 40 MiB upload is accepted and waits for its chunks; a
    // second would take the connection past one 64 MiB payload.
    framed.send(upload(1)).await.unwrap();
    framed.send(upload(3)).await.unwrap();
    let (stream_id, response) = next_response(&mut framed).await;
    assert_eq!(stream_id, 3);
    assert_eq!(
        response.status,
        StatusCode::RESOURCE_EXHAUSTED,
        "{}",
        response.message
    );
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn an_invalid_configuration_is_refused_before_binding() {
    let counters = Arc::new(Counters::default());
    let error = test_server(&counters)
        .config(rpc_core::ServerConfig {
            max_frame_len: 1024,
            ..rpc_core::ServerConfig::default()
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid server configuration: max_frame_len is below the protocol's 16384-byte minimum"
    );
}

#[tokio::test]
async fn a_call_without_deadline_to_a_dead_server_gives_up() {
    // Bind and drop a listener to get a port nobody listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = Client::with_config(
        addr.to_string(),
        ClientConfig {
            timeout: None,
            max_retries: 2,
            ..ClientConfig::default()
        },
    );
    let started = Instant::now();
    let error = timeout(PATIENCE, client.call::<_, i64>("add", &(1i64, 1i64)))
        .await
        .expect("the call gives up by itself")
        .unwrap_err();
    assert!(matches!(error, RpcError::Unavailable(_)), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn an_unknown_version_gets_a_version_mismatch_and_a_close() {
    let (_counters, server, client) = fixture().await;
    let v2_ping = [0, 0, 0, 13, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 42];
    let expected = VersionMismatch {
        min_version: 1,
        max_version: 1,
    };

    // As the first frame, in place of a Hello.
    let mut socket = TcpStream::connect(server.local_addr()).await.unwrap();
    socket.write_all(&v2_ping).await.unwrap();
    let mut framed = Framed::new(socket, FrameCodec::new());
    let messages = frames_until_close(&mut framed).await;
    assert_eq!(messages, [Message::VersionMismatch(expected)]);

    // After the handshake.
    let mut socket = raw_session(server.local_addr()).await.into_inner();
    socket.write_all(&v2_ping).await.unwrap();
    let mut framed = Framed::new(socket, FrameCodec::new());
    let messages = frames_until_close(&mut framed).await;
    assert_eq!(messages, [Message::VersionMismatch(expected)]);

    assert_answers(&client).await;
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_program_whose_bytes_do_not_match_its_hash_is_refused() {
    let (_counters, server, client) = fixture().await;
    let mut framed = raw_session(server.local_addr()).await;
    let program = Bytes::from(vec![7u8; 100_000]);
    let claimed = rpc_core::ContentHash::of(b"something else");
    // Inline, and chunked (whose ChunkEnd hash does match the bytes).
    let inline = rpc_core::wire::SendProgram {
        hash: claimed,
        payload: Payload::from(program.clone()),
    };
    framed
        .send(Frame::new(1, Message::SendProgram(inline)))
        .await
        .unwrap();
    let chunked = rpc_core::wire::SendProgram {
        hash: claimed,
        payload: Payload::Chunked {
            len: program.len() as u64,
        },
    };
    framed
        .feed(Frame::new(3, Message::SendProgram(chunked)))
        .await
        .unwrap();
    for frame in rpc_core::wire::ChunkSender::frames(3, program, 16 << 10).with_digest() {
        framed.feed(frame).await.unwrap();
    }
    framed.flush().await.unwrap();
    for expected_id in [1, 3] {
        let (stream_id, response) = next_response(&mut framed).await;
        assert_eq!(stream_id, expected_id);
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{}",
            response.message
        );
        assert!(response.message.contains("hash to"), "{}", response.message);
    }
    assert_answers(&client).await;
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_deadline_that_passes_is_always_answered_504_whoever_notices_it_first() {
    let server = Server::builder()
        // Notices the deadline itself, at the same instant as the server's
        // timer, and says so with its own error.
        .function_with(
            "notices",
            FunctionOptions::new(),
            |context: Context, (): ()| async move {
                if let Some(deadline) = context.deadline() {
                    tokio::time::sleep_until(deadline).await;
                }
                Err::<(), _>("my own deadline error".to_owned())
            },
        )
        // Finishes past the deadline without ever yielding.
        .function("blocks", |millis: u64| async move {
            std::thread::sleep(Duration::from_millis(millis));
            Ok::<_, ()>(millis)
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let mut framed = raw_session(server.local_addr()).await;
    for round in 0..20u64 {
        let calls = [
            raw_call("notices", &(), Some(5)),
            raw_call("blocks", &15u64, Some(5)),
        ];
        for (index, call) in (0u64..).zip(calls) {
            let id = 1 + 2 * (2 * round + index);
            framed
                .send(Frame::new(id, Message::Call(call)))
                .await
                .unwrap();
            let (answered, response) = next_response(&mut framed).await;
            assert_eq!(answered, id);
            assert_eq!(
                response.status,
                StatusCode::DEADLINE_EXCEEDED,
                "round {round}, call {index}: {response:?}"
            );
        }
    }
    server.shutdown(Duration::from_secs(1)).await;
}

/// PROTOCOL.md section 8: the acceptor checks that the first frame is a
/// well-formed `Hello` (its fields within their rules, limits included)
/// before the token, so a malformed one is `400` whatever its token.
#[tokio::test]
async fn a_malformed_hello_is_refused_400_before_its_token_is_looked_at() {
    use futures_util::StreamExt;

    /// A `Hello` frame by hand (our encoder refuses to write bad limits):
    /// the `hello` vector's header, then peer "cli", role Client, `token`,
    /// and default limits but `max_frame_len`.
    fn hello(token: &str, max_frame_len: u32) -> Vec<u8> {
        let token_len = u8::try_from(token.len()).unwrap();
        let mut body = vec![3, b'c', b'l', b'i', 0, 1, token_len];
        body.extend_from_slice(token.as_bytes());
        let mut len = max_frame_len;
        while len >= 0x80 {
            body.push(u8::try_from(len & 0x7f).unwrap() | 0x80);
            len >>= 7;
        }
        body.push(u8::try_from(len).unwrap());
        body.extend_from_slice(&[0x80, 0x08, 0x80, 0x80, 0x80, 0x20, 0x00]);
        let mut frame = u32::try_from(12 + body.len())
            .unwrap()
            .to_be_bytes()
            .to_vec();
        frame.extend_from_slice(&[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        frame.extend_from_slice(&body);
        frame
    }

    let server = Server::builder()
        .token("s3cret", "client")
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let cases = [
        ("wrong", 1024, StatusCode::BAD_REQUEST),
        ("s3cret", 1024, StatusCode::BAD_REQUEST),
        ("wrong", 1 << 20, StatusCode::FORBIDDEN),
        ("s3cret", 1 << 20, StatusCode::OK),
    ];
    for (token, max_frame_len, expected) in cases {
        let mut socket = TcpStream::connect(server.local_addr()).await.unwrap();
        socket
            .write_all(&hello(token, max_frame_len))
            .await
            .unwrap();
        let mut framed = Framed::new(socket, FrameCodec::new());
        let status = match framed.next().await.unwrap().unwrap().message {
            Message::Error(error) => error.status,
            Message::Welcome(_) => StatusCode::OK,
            other => panic!("unexpected answer {other:?}"),
        };
        assert_eq!(status, expected, "token {token}, frames {max_frame_len}");
    }
    server.shutdown(Duration::from_secs(1)).await;
}

/// The `Welcome` says what kind of peer answered: a plain server, a worker
/// or a coordinator (PROTOCOL.md section 14's vector is a worker's).
#[tokio::test]
async fn the_welcome_says_what_kind_of_peer_answered() {
    use rpc_core::PeerRole;
    use rpc_core::wire::{Hello, Limits};

    let hello = || Hello {
        peer_name: "who".into(),
        role: PeerRole::Client,
        token: None,
        limits: Limits::default(),
    };
    let sandbox = worker::Sandbox::new(worker::SandboxConfig {
        concurrency: 1,
        ..worker::SandboxConfig::default()
    })
    .unwrap();
    let servers = [
        (Server::builder(), PeerRole::Server),
        (worker::worker_server(sandbox), PeerRole::Worker),
        (
            worker::coordinator_server(Duration::from_secs(10)),
            PeerRole::Coordinator,
        ),
    ];
    for (server, expected) in servers {
        let handle = server.bind("127.0.0.1:0").await.unwrap();
        match crate::support::answer_to_hello(handle.local_addr(), hello()).await {
            Message::Welcome(welcome) => assert_eq!(welcome.role, expected),
            other => panic!("expected a Welcome, got {other:?}"),
        }
        handle.shutdown(Duration::from_secs(1)).await;
    }
}

/// PROTOCOL.md section 8, keepalive: a peer that announced an idle timeout
/// and only listens gets a `Ping` before half of it has passed; answering
/// those pings does not keep the server's own idle timeout from closing a
/// connection nobody uses.
#[tokio::test]
async fn the_server_pings_a_listening_peer_within_half_its_idle_timeout() {
    use futures_util::StreamExt;
    use rpc_core::PeerRole;
    use rpc_core::wire::{Hello, Limits, Pong};

    let server = Server::builder()
        .config(rpc_core::ServerConfig {
            idle_timeout: Some(Duration::from_millis(1500)),
            ..rpc_core::ServerConfig::default()
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let socket = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut framed = Framed::new(socket, FrameCodec::new());
    let hello = Hello {
        peer_name: "listener".into(),
        role: PeerRole::Client,
        token: None,
        limits: Limits {
            idle_timeout_ms: Some(1000),
            ..Limits::default()
        },
    };
    framed
        .send(Frame::connection(Message::Hello(hello)))
        .await
        .unwrap();
    assert!(matches!(
        framed.next().await.unwrap().unwrap().message,
        Message::Welcome(_)
    ));
    let started = Instant::now();
    let mut pings = 0;
    // Answer every ping; send nothing else. Bounded: the server closes.
    let closed_by = loop {
        let next = timeout(Duration::from_secs(5), framed.next()).await;
        match next
            .expect("the server went silent")
            .map(|frame| frame.unwrap().message)
        {
            Some(Message::Ping(ping)) => {
                if pings == 0 {
                    // Due at 500 ms; before 1 s the listener would have
                    // closed the connection as idle.
                    assert!(
                        started.elapsed() < Duration::from_millis(1000),
                        "first ping after {:?}",
                        started.elapsed()
                    );
                }
                pings += 1;
                let pong = Message::Pong(Pong { nonce: ping.nonce });
                framed.send(Frame::connection(pong)).await.unwrap();
            }
            Some(other) => break Some(other),
            None => break None,
        }
    };
    assert!(pings >= 2, "{pings} pings");
    assert!(
        matches!(&closed_by, Some(Message::GoAway(goaway)) if goaway.message.contains("idle")),
        "{closed_by:?}"
    );
    server.shutdown(Duration::from_secs(1)).await;
}

/// PROTOCOL.md section 8, graceful shutdown: a request still running when
/// the grace period ends gets a `503` response before the connection
/// closes, so its caller knows it was not completed.
#[tokio::test]
async fn a_call_still_running_at_the_end_of_the_grace_gets_a_503() {
    let counters = Arc::new(Counters::default());
    let server = start(&counters).await;
    let mut framed = raw_session(server.local_addr()).await;
    framed
        .send(Frame::new(
            1,
            Message::Call(raw_call("slow", &60_000u64, None)),
        ))
        .await
        .unwrap();
    framed
        .send(Frame::new(
            3,
            Message::Call(raw_call("add", &(1i64, 2i64), None)),
        ))
        .await
        .unwrap();
    let (id, response) = next_response(&mut framed).await;
    assert_eq!((id, response.status), (3, StatusCode::OK));
    eventually("the slow call to start", || {
        counters.started.load(Ordering::SeqCst) == 1
    })
    .await;
    let shutting_down = tokio::spawn(async move {
        server.shutdown(Duration::from_millis(200)).await;
    });
    let messages = frames_until_close(&mut framed).await;
    assert!(
        matches!(messages.first(), Some(Message::GoAway(_))),
        "{messages:?}"
    );
    let answered: Vec<_> = messages
        .iter()
        .filter_map(|message| match message {
            Message::Response(response) => Some((response.status, response.message.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        answered,
        [(
            StatusCode::UNAVAILABLE,
            "the server shut down before this request finished".to_owned()
        )],
        "{messages:?}"
    );
    shutting_down.await.unwrap();
}
