//! Pipelined 64-byte calls on loopback TCP, measured in one run through
//! three stacks: a bare `LengthDelimitedCodec` echo (the floor of
//! `cargo bench -p rpc-core --bench rpc`), rpc-core, and tarpc 0.37 (bincode
//! over its length-delimited serde transport, one task per request on the
//! server as tarpc's examples do). Each is printed as calls per second and
//! as a ratio to the floor.
//!
//! Run with `cargo run --release --manifest-path rpc-core/benches/tarpc/Cargo.toml`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::{FutureExt, SinkExt, StreamExt};
use rpc_core::{Client, Server, ServerConfig};
use rpc_core::wire::{Call, DEFAULT_MAX_FRAME_LEN, Frame, Message, Payload};
use tarpc::server::Channel;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

const SMALL: usize = 64;
const CALLS: usize = 400_000;

#[tarpc::service]
trait Echo {
    async fn echo(bytes: Bytes) -> Bytes;
}

#[derive(Clone)]
struct EchoServer;

impl Echo for EchoServer {
    async fn echo(self, _: tarpc::context::Context, bytes: Bytes) -> Bytes {
        bytes
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let ours = Server::builder()
        .config(ServerConfig {
            max_in_flight: 1024,
            ..ServerConfig::default()
        })
        .function("echo", |bytes: Bytes| async move { Ok::<_, ()>(bytes) })
        .bind("127.0.0.1:0")
        .await
        .expect("binds");
    let ours_addr = ours.local_addr().to_string();
    let tarpc_addr = spawn_tarpc().await;
    let floor_addr = spawn_floor().await;
    let args = Bytes::from(vec![7u8; SMALL]);
    println!("pipelined 64-byte echo calls, loopback TCP, 2 runtime threads");
    for (connections, in_flight) in [(1, 128), (4, 64)] {
        let floor = pipelined_floor(floor_addr, connections, in_flight, &args).await;
        let rpc = pipelined(connections, in_flight, || {
            let client = Client::new(ours_addr.clone());
            let args = args.clone();
            move || {
                let client = client.clone();
                let args = args.clone();
                async move {
                    let _: Bytes = client.call("echo", &args).await.expect("rpc-core call");
                }
            }
        })
        .await;
        let tarpc = pipelined_tarpc(tarpc_addr, connections, in_flight, &args).await;
        println!(
            "{connections} conn x {in_flight:>3}: floor {floor:>9.0}/s | rpc-core {rpc:>9.0}/s ({:.2}x) | tarpc {tarpc:>9.0}/s ({:.2}x) | rpc-core / tarpc {:.1}",
            rpc / floor,
            tarpc / floor,
            rpc / tarpc
        );
    }
    ours.shutdown(std::time::Duration::from_secs(1)).await;
}

/// Calls per second when `in_flight` tasks per connection each make calls
/// back to back until `CALLS` are done; `connect` makes one connection's
/// call function.
async fn pipelined<C, F, Fut>(connections: usize, in_flight: usize, mut connect: C) -> f64
where
    C: FnMut() -> F,
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let calls: Vec<F> = (0..connections).map(|_| connect()).collect();
    for call in &calls {
        call().await;
    }
    let remaining = Arc::new(AtomicUsize::new(CALLS));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for call in &calls {
        for _ in 0..in_flight {
            let call = call.clone();
            let remaining = Arc::clone(&remaining);
            tasks.spawn(async move {
                while remaining
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    call().await;
                }
            });
        }
    }
    while tasks.join_next().await.is_some() {}
    CALLS as f64 / started.elapsed().as_secs_f64()
}

async fn pipelined_tarpc(
    addr: SocketAddr,
    connections: usize,
    in_flight: usize,
    args: &Bytes,
) -> f64 {
    let mut clients = Vec::new();
    for _ in 0..connections {
        let socket = TcpStream::connect(addr).await.expect("connects");
        socket.set_nodelay(true).expect("nodelay");
        let framed = Framed::new(socket, LengthDelimitedCodec::new());
        let transport =
            tarpc::serde_transport::new(framed, tarpc::tokio_serde::formats::Bincode::default());
        let config = tarpc::client::Config::default();
        clients.push(EchoClient::new(config, transport).spawn());
    }
    let mut clients = clients.into_iter();
    let args = args.clone();
    pipelined(connections, in_flight, move || {
        let client = clients.next().expect("one client per connection");
        let args = args.clone();
        move || {
            let client = client.clone();
            let args = args.clone();
            async move {
                client
                    .echo(tarpc::context::current(), args)
                    .await
                    .expect("tarpc call");
            }
        }
    })
    .await
}

async fn spawn_tarpc() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            socket.set_nodelay(true).expect("nodelay");
            let framed = Framed::new(socket, LengthDelimitedCodec::new());
            let transport = tarpc::serde_transport::new(
                framed,
                tarpc::tokio_serde::formats::Bincode::default(),
            );
            let channel = tarpc::server::BaseChannel::with_defaults(transport);
            tokio::spawn(
                channel
                    .execute(EchoServer.serve())
                    .for_each(|response| async move {
                        tokio::spawn(response);
                    }),
            );
        }
    });
    addr
}

/// The floor of `cargo bench -p rpc-core --bench rpc`: a server that echoes
/// every frame, flushing once per batch of frames already received, and a
/// client that keeps `in_flight` copies of one call's frame outstanding.
async fn spawn_floor() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            socket.set_nodelay(true).expect("nodelay");
            tokio::spawn(async move {
                let mut framed = Framed::new(socket, LengthDelimitedCodec::new());
                while let Some(Ok(frame)) = framed.next().await {
                    if framed.feed(frame.freeze()).await.is_err() {
                        return;
                    }
                    while let Some(Some(Ok(frame))) = framed.next().now_or_never() {
                        if framed.feed(frame.freeze()).await.is_err() {
                            return;
                        }
                    }
                    if SinkExt::<Bytes>::flush(&mut framed).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn pipelined_floor(
    addr: SocketAddr,
    connections: usize,
    in_flight: usize,
    args: &Bytes,
) -> f64 {
    let encoded = Bytes::from(postcard::to_allocvec(args).expect("encodes"));
    let call = Frame::new(
        1,
        Message::Call(Call {
            method: "echo".into(),
            timeout_ms: Some(30_000),
            idempotency_key: None,
            schema_hash: None,
            payload: Payload::Inline(encoded),
        }),
    );
    let mut buf = BytesMut::new();
    call.encode(&mut buf, DEFAULT_MAX_FRAME_LEN)
        .expect("encodes");
    let frame = buf.split_off(4).freeze();
    let per_connection = CALLS / connections;
    let mut sockets = Vec::new();
    for _ in 0..connections {
        let socket = TcpStream::connect(addr).await.expect("connects");
        socket.set_nodelay(true).expect("nodelay");
        sockets.push(Framed::new(socket, LengthDelimitedCodec::new()).split());
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (mut sink, mut stream) in sockets {
        let frame = frame.clone();
        tasks.spawn(async move {
            let window = Arc::new(Semaphore::new(in_flight));
            let writer = {
                let window = Arc::clone(&window);
                tokio::spawn(async move {
                    for _ in 0..per_connection {
                        window.acquire().await.expect("open").forget();
                        sink.feed(frame.clone()).await.expect("sends");
                        if window.available_permits() == 0 {
                            sink.flush().await.expect("sends");
                        }
                    }
                    sink.flush().await.expect("sends");
                    sink
                })
            };
            for _ in 0..per_connection {
                stream.next().await.expect("open").expect("reads");
                window.add_permits(1);
            }
            drop(writer.await.expect("writer"));
        });
    }
    while tasks.join_next().await.is_some() {}
    (per_connection * connections) as f64 / started.elapsed().as_secs_f64()
}
