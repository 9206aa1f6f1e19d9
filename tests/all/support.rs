//! Helpers shared by the runtime tests: a server with a few functions, and
//! a TCP proxy whose connections a test can cut.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use futures_util::StreamExt;
use rpc_core::ServerBuilder;
use rpc_core::wire::{Call, Frame, FrameCodec, Hello, Limits, Message, Payload, Response};
use rpc_core::{Client, Context, FunctionOptions, PeerRole, RemoteError, Server, ServerConfig};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::codec::Framed;

/// A function's own error, returned by `divide`.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MathError {
    DivisionByZero,
}

/// Counters the test functions update, so tests can see what ran.
#[derive(Debug, Default)]
pub struct Counters {
    /// Calls of `slow` that started.
    pub started: AtomicUsize,
    /// Calls of `slow` whose future was dropped before finishing.
    pub dropped: AtomicUsize,
    /// Calls of `slow` that finished.
    pub finished: AtomicUsize,
}

struct CountDrop(Arc<Counters>, bool);

impl Drop for CountDrop {
    fn drop(&mut self) {
        if !self.1 {
            self.0.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A server with `add`, `greet`, `divide` (which can fail with `MathError`),
/// `echo` (bytes), `slow` (sleeps the given milliseconds), `whoami`, and
/// `admin_only` (role `admin`), and `reverse` (raw bytes, fails on none).
pub fn test_server(counters: &Arc<Counters>) -> ServerBuilder {
    let slow_counters = Arc::clone(counters);
    Server::builder()
        .config(ServerConfig {
            handshake_timeout: Duration::from_millis(300),
            ..ServerConfig::default()
        })
        .function("add", |(a, b): (i64, i64)| async move { Ok::<_, ()>(a + b) })
        .function("greet", |name: String| async move {
            Ok::<_, ()>(format!("hello, {name}"))
        })
        .function("divide", |(a, b): (i64, i64)| async move {
            if b == 0 {
                Err(MathError::DivisionByZero)
            } else {
                Ok(a / b)
            }
        })
        .function("echo", |bytes: Vec<u8>| async move { Ok::<_, ()>(bytes) })
        .function("slow", move |millis: u64| {
            let counters = Arc::clone(&slow_counters);
            async move {
                counters.started.fetch_add(1, Ordering::SeqCst);
                let mut guard = CountDrop(Arc::clone(&counters), false);
                tokio::time::sleep(Duration::from_millis(millis)).await;
                guard.1 = true;
                counters.finished.fetch_add(1, Ordering::SeqCst);
                Ok::<_, ()>(millis)
            }
        })
        .function_with(
            "whoami",
            FunctionOptions::new(),
            |context: Context, (): ()| async move {
                Ok::<_, ()>(context.role().map(str::to_owned))
            },
        )
        .function_with(
            "admin_only",
            FunctionOptions::new().roles(["admin"]).schema_hash(0xabcd),
            |_: Context, (): ()| async move { Ok::<_, ()>("secret".to_owned()) },
        )
        .raw_function(
            "reverse",
            FunctionOptions::new(),
            |_: Context, bytes: Bytes| async move {
                if bytes.is_empty() {
                    return Err(RemoteError(Bytes::from_static(b"nothing to reverse")));
                }
                Ok(bytes.iter().rev().copied().collect::<Bytes>())
            },
        )
}

/// Starts the test server on a free loopback port.
pub async fn start(counters: &Arc<Counters>) -> Server {
    test_server(counters).bind("127.0.0.1:0").await.unwrap()
}

/// Starts the test server with `config` on a free loopback port.
pub async fn start_with(counters: &Arc<Counters>, config: ServerConfig) -> Server {
    test_server(counters)
        .config(config)
        .bind("127.0.0.1:0")
        .await
        .unwrap()
}

/// The test server on a free port, its counters, and a client of it.
pub async fn fixture() -> (Arc<Counters>, Server, Client) {
    let counters = Arc::new(Counters::default());
    let server = start(&counters).await;
    let client = Client::new(server.local_addr().to_string());
    (counters, server, client)
}

/// Reads the next frame, within 10 seconds, which must be a `Response`;
/// returns its stream id and the response.
pub async fn next_response<T>(conn: &mut Framed<T, FrameCodec>) -> (u64, Response)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let frame = tokio::time::timeout(Duration::from_secs(10), conn.next())
        .await
        .expect("a frame in time")
        .expect("a frame before the close")
        .expect("a valid frame");
    match frame.message {
        Message::Response(response) => (frame.stream_id, response),
        other => panic!("expected a response, got {:?}", other.kind()),
    }
}

/// Waits until `condition` holds, for at most 5 seconds.
pub async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A TCP proxy to `target`. Sending `true` on the returned channel cuts
/// every connection it carries at that moment; new ones still go through.
pub async fn proxy(target: SocketAddr) -> (SocketAddr, watch::Sender<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (cut, cuts) = watch::channel(0u64);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let mut cuts = cuts.clone();
            cuts.borrow_and_update();
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(target).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = cuts.changed() => {}
                }
            });
        }
    });
    (addr, cut)
}

/// Opens a raw framed connection and completes the handshake.
pub async fn raw_session(addr: SocketAddr) -> Framed<TcpStream, FrameCodec> {
    raw_handshake(TcpStream::connect(addr).await.unwrap()).await
}

/// Completes the handshake, as an anonymous client, on a stream already
/// connected (plain TCP or TLS), and frames it.
pub async fn raw_handshake<T: AsyncRead + AsyncWrite + Unpin>(io: T) -> Framed<T, FrameCodec> {
    let mut framed = Framed::new(io, FrameCodec::new());
    let hello = Hello {
        peer_name: "raw".into(),
        role: PeerRole::Client,
        token: None,
        limits: Limits::default(),
    };
    framed
        .send(Frame::connection(Message::Hello(hello)))
        .await
        .unwrap();
    let welcome = framed.next().await.unwrap().unwrap();
    assert!(matches!(welcome.message, Message::Welcome(_)));
    framed
}

/// Sends `hello` as the first frame to `addr` and returns the first frame
/// the server answers with (`Welcome`, or the `Error` that refuses it).
pub async fn answer_to_hello(addr: SocketAddr, hello: Hello) -> Message {
    let mut framed = Framed::new(TcpStream::connect(addr).await.unwrap(), FrameCodec::new());
    framed
        .send(Frame::connection(Message::Hello(hello)))
        .await
        .unwrap();
    framed.next().await.unwrap().unwrap().message
}

/// A call message with postcard-encoded `args`, for raw sessions.
pub fn raw_call<A: Serialize>(method: &str, args: &A, timeout_ms: Option<u64>) -> Call {
    Call {
        method: method.into(),
        timeout_ms,
        idempotency_key: None,
        schema_hash: None,
        payload: Payload::from(Bytes::from(postcard::to_allocvec(args).unwrap())),
    }
}

/// Reads until the server closes, returning the frames it sent.
pub async fn frames_until_close(framed: &mut Framed<TcpStream, FrameCodec>) -> Vec<Message> {
    let mut messages = Vec::new();
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(5), framed.next())
        .await
        .expect("the server closes the connection")
    {
        match frame {
            Ok(frame) => messages.push(frame.message),
            Err(_) => break,
        }
    }
    messages
}

/// A supernode on a loopback port, without TLS (it passes the bytes
/// through): the supernode, its server, and the address it listens at.
pub(crate) async fn plain_supernode() -> (rpc_core::relay::Supernode, Server, String) {
    let supernode = rpc_core::relay::Supernode::new(rpc_core::relay::SupernodeConfig::default());
    let relay = Server::builder()
        .supernode(supernode.clone())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = relay.local_addr().to_string();
    (supernode, relay, addr)
}

/// A relayed server's side of attaching to `supernode` (listening at
/// `relay_addr`) as `name`, without the worker crate: polls for the
/// connections clients open to it and hands each to `intake`, until
/// aborted (or a bounded while). Returns once the supernode counts it
/// attached (or after a bounded wait).
pub(crate) async fn dial_for(
    supernode: &rpc_core::relay::Supernode,
    relay_addr: &str,
    name: &'static str,
    intake: rpc_core::relay::JoinedIntake,
) -> tokio::task::JoinHandle<()> {
    let attached_before = supernode.attached();
    let (dials, relay_addr) = (supernode.clone(), relay_addr.to_owned());
    let dialer = tokio::spawn(async move {
        for _ in 0..10_000 {
            let Ok(tickets) = dials.wait_for_dials(name, 0, Duration::from_secs(10)).await else {
                return;
            };
            for ticket in tickets {
                let joined =
                    rpc_core::relay::join(&relay_addr, ticket, Duration::from_secs(5)).await;
                if let Ok(stream) = joined {
                    intake.serve(stream).await;
                }
            }
        }
    });
    for _ in 0..1000 {
        if supernode.attached() > attached_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    dialer
}
