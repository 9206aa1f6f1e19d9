//! Client and server over loopback TCP against a raw floor measured in the
//! same run: the same frames echoed by a bare `LengthDelimitedCodec` server.
//!
//! Measures sequential round-trip latency of a 64-byte call (p50, p99),
//! pipelined throughput (1 connection x 128 in flight, 4 x 64), and bulk
//! transfer of 1 MiB and 16 MiB payloads, each as a ratio to the floor.
//!
//! Then the cost of counting metrics: the same calls to a server with
//! `ServerConfig::metrics` and to one without, alternating.
//!
//! Last, the cost of a supernode (`RPC_BENCH=relay`): the same server
//! reached directly and through a supernode on loopback, alternating, with
//! the raw loopback round trip as the yardstick of one extra hop.
//!
//! Run with `cargo bench -p rpc-core --bench rpc`. `RPC_BENCH=split` shows
//! each side of the pipelined run alone: our client against a raw server
//! that answers with ready-made responses, and a raw client pipelining
//! ready-made calls to our server.

// A bench panics on a broken setup; that is the right report.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::indexing_slicing
)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use rpc_core::metrics::Metrics;
use rpc_core::wire::{
    Call, ChunkSender, DEFAULT_MAX_FRAME_LEN, Frame, Message, Payload, chunk_len_for,
};
use rpc_core::{CallOptions, Client, Context, FunctionOptions, RemoteError, Server, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

const SMALL: usize = 64;
const LATENCY_CALLS: usize = 10_000;
/// Latency is measured in this many alternating rounds.
const LATENCY_ROUNDS: usize = 10;
/// Bulk transfers are measured in this many alternating rounds; the median
/// is reported.
const BULK_ROUNDS: usize = 3;
const PIPELINED_CALLS: usize = 200_000;
/// Rounds of each pipelined measurement; the median is reported.
const PIPELINED_ROUNDS: usize = 5;

/// A connection to the floor server, split so that a round trip writes and
/// reads at once (a large payload would otherwise fill both sockets' buffers
/// and stall).
struct FloorConnection {
    sink: SplitSink<Framed<TcpStream, LengthDelimitedCodec>, Bytes>,
    stream: SplitStream<Framed<TcpStream, LengthDelimitedCodec>>,
}

/// The server under test, counting into `metrics` if given.
async fn bench_server(metrics: Option<Metrics>) -> Server {
    bench_builder(metrics)
        .bind("127.0.0.1:0")
        .await
        .expect("binds")
}

/// The server under test, to be served.
fn bench_builder(metrics: Option<Metrics>) -> rpc_core::ServerBuilder {
    Server::builder()
        .config(ServerConfig {
            max_in_flight: 1024,
            max_payload_len: 64 << 20,
            metrics,
            ..ServerConfig::default()
        })
        .function("echo", |bytes: Bytes| async move { Ok::<_, ()>(bytes) })
        .raw_function(
            "echo_raw",
            FunctionOptions::new(),
            |_: Context, bytes: Bytes| async move { Ok::<_, RemoteError>(bytes) },
        )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = bench_server(None).await;
    let addr = server.local_addr().to_string();
    let floor = spawn_floor().await;
    println!(
        "rpc-core client/server vs the same frames echoed by a LengthDelimitedCodec server (loopback TCP)"
    );

    // RPC_BENCH=latency|pipelined|bulk runs one section, for profiling;
    // RPC_BENCH=split measures each side of the pipelined run alone.
    let only = std::env::var("RPC_BENCH").ok();
    let runs = |section: &str| only.as_deref().is_none_or(|only| only == section);
    let args = Bytes::from(vec![7u8; SMALL]);
    let frames = call_frames(&args);
    let client = Client::new(addr.clone());
    let mut raw = connect_floor(floor).await;
    if runs("latency") {
        // From a task of the runtime, as an application calls: measured from
        // `main` (the runtime's `block_on` thread), every round trip of both
        // would also pay the wake-up of that thread.
        let (client, args, frames) = (client.clone(), args.clone(), frames.clone());
        let mut raw = connect_floor(floor).await;
        tokio::spawn(async move { latency(&client, &args, &mut raw, &frames).await })
            .await
            .unwrap();
    }
    if runs("pipelined") {
        for (connections, in_flight) in shapes() {
            // Alternating rounds, and the median of each side: this machine's
            // speed drifts by more than the differences worth seeing.
            let mut ours = Vec::new();
            let mut floor_rates = Vec::new();
            for _ in 0..PIPELINED_ROUNDS {
                ours.push(pipelined_ours(&addr, connections, in_flight, &args).await);
                floor_rates.push(pipelined_floor(floor, connections, in_flight, &frames).await);
            }
            let (ours, floor_rate) = (median(&mut ours), median(&mut floor_rates));
            println!(
                "pipelined {connections} conn x {in_flight:>3} in flight        {:>9.0} calls/s | floor {:>9.0} calls/s | ratio {:.2}x",
                ours,
                floor_rate,
                ours / floor_rate
            );
        }
    }
    if only.as_deref() == Some("split") {
        split(&addr, &frames, &args).await;
    }
    if only.as_deref() == Some("wakeups") {
        wakeups().await;
    }
    if runs("bulk") {
        bulk(&client, &mut raw).await;
    }
    if runs("metrics") {
        metrics_cost(&addr, &args).await;
    }
    if runs("relay") {
        relay_cost(&args, floor, &frames).await;
    }
    server.shutdown(Duration::from_secs(1)).await;
}

/// Sequential round trips of a 64-byte call, ours and the floor's in
/// alternating rounds so that both see the same drifts of the machine.
async fn latency(client: &Client, args: &Bytes, raw: &mut FloorConnection, frames: &[Bytes]) {
    let _: Bytes = client.call("echo", args).await.unwrap();
    round_trip(raw, frames).await;
    let mut ours = Vec::with_capacity(LATENCY_CALLS);
    let mut floor_times = Vec::with_capacity(LATENCY_CALLS);
    for _ in 0..LATENCY_ROUNDS {
        for _ in 0..LATENCY_CALLS / LATENCY_ROUNDS {
            let started = Instant::now();
            let _: Bytes = client.call("echo", args).await.unwrap();
            ours.push(started.elapsed());
        }
        for _ in 0..LATENCY_CALLS / LATENCY_ROUNDS {
            let started = Instant::now();
            round_trip(raw, frames).await;
            floor_times.push(started.elapsed());
        }
    }
    for (name, quantile) in [("p50", 0.50), ("p99", 0.99)] {
        let (a, b) = (
            percentile(&mut ours, quantile),
            percentile(&mut floor_times, quantile),
        );
        println!(
            "latency {name}, 64-byte call          {:>9.1} us | floor {:>9.1} us | ratio {:.2}x",
            micros(a),
            micros(b),
            a.as_secs_f64() / b.as_secs_f64()
        );
    }
}

/// The p50 of a round of sequential 64-byte echoes, in seconds.
async fn echo_p50(client: Client, args: &Bytes) -> f64 {
    let mut times = Vec::with_capacity(LATENCY_CALLS / LATENCY_ROUNDS);
    for _ in 0..LATENCY_CALLS / LATENCY_ROUNDS {
        let started = Instant::now();
        let _: Bytes = client.call("echo", args).await.unwrap();
        times.push(started.elapsed());
    }
    percentile(&mut times, 0.5).as_secs_f64()
}

/// What a supernode costs: one server, reached directly and through a
/// supernode (`w@relay`), p50 of sequential calls and throughput with 64
/// in flight on one connection, in alternating rounds; the difference in
/// p50 is compared with the raw floor's round trip, one more loopback hop.
async fn relay_cost(args: &Bytes, floor: SocketAddr, frames: &[Bytes]) {
    use rpc_core::relay::{Supernode, SupernodeConfig, join};
    const ROUNDS: usize = 10;
    let supernode = Supernode::new(SupernodeConfig::default());
    let relay = Server::builder()
        .supernode(supernode.clone())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let relay_addr = relay.local_addr().to_string();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (worker, intake) = bench_builder(None).serve_and_join(listener).unwrap();
    let direct_addr = worker.local_addr().to_string();
    let dials = supernode.clone();
    let dial_addr = relay_addr.clone();
    let dialer = tokio::spawn(async move {
        loop {
            let tickets = dials
                .wait_for_dials("w", 0, Duration::from_secs(10))
                .await
                .unwrap();
            for ticket in tickets {
                let stream = join(&dial_addr, ticket, Duration::from_secs(5))
                    .await
                    .unwrap();
                intake.serve(stream).await;
            }
        }
    });
    while supernode.attached() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let relayed_addr = format!("w@{relay_addr}");
    let (direct, relayed) = (
        Client::new(direct_addr.clone()),
        Client::new(relayed_addr.clone()),
    );
    let mut raw = connect_floor(floor).await;
    let p50 = |client: Client| echo_p50(client, args);
    let _ = p50(relayed.clone()).await;
    let (mut direct_p50, mut relayed_p50, mut floor_p50) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            direct_p50.push(p50(direct.clone()).await);
            relayed_p50.push(p50(relayed.clone()).await);
        } else {
            relayed_p50.push(p50(relayed.clone()).await);
            direct_p50.push(p50(direct.clone()).await);
        }
        let mut times = Vec::with_capacity(LATENCY_CALLS / LATENCY_ROUNDS);
        for _ in 0..LATENCY_CALLS / LATENCY_ROUNDS {
            let started = Instant::now();
            round_trip(&mut raw, frames).await;
            times.push(started.elapsed());
        }
        floor_p50.push(percentile(&mut times, 0.5).as_secs_f64());
    }
    let (direct_us, relayed_us, hop_us) = (
        median(&mut direct_p50) * 1e6,
        median(&mut relayed_p50) * 1e6,
        median(&mut floor_p50) * 1e6,
    );
    println!(
        "relay latency p50, 64-byte call     relayed {relayed_us:>7.1} us | direct {direct_us:>7.1} us | ratio {:.2}x | relayed - direct {:.1} us = {:.2} loopback round trips ({hop_us:.1} us)",
        relayed_us / direct_us,
        relayed_us - direct_us,
        (relayed_us - direct_us) / hop_us,
    );
    let (mut direct_rates, mut relayed_rates) = (Vec::new(), Vec::new());
    for round in 0..PIPELINED_ROUNDS {
        if round % 2 == 0 {
            direct_rates.push(pipelined_ours(&direct_addr, 1, 64, args).await);
            relayed_rates.push(pipelined_ours(&relayed_addr, 1, 64, args).await);
        } else {
            relayed_rates.push(pipelined_ours(&relayed_addr, 1, 64, args).await);
            direct_rates.push(pipelined_ours(&direct_addr, 1, 64, args).await);
        }
    }
    let (direct_rate, relayed_rate) = (median(&mut direct_rates), median(&mut relayed_rates));
    println!(
        "relay throughput, 1 conn x 64       relayed {relayed_rate:>9.0} calls/s | direct {direct_rate:>9.0} calls/s | ratio {:.2}x",
        relayed_rate / direct_rate
    );
    dialer.abort();
    worker.shutdown(Duration::from_secs(1)).await;
    relay.shutdown(Duration::from_secs(1)).await;
}

/// What counting metrics costs: the same calls to this server and to one
/// with [`ServerConfig::metrics`] (never scraped, as between scrapes), in
/// pairs of runs taken in alternating order; the ratio reported is the
/// median of the pairs' ratios, which the machine's drift moves least.
async fn metrics_cost(plain: &str, args: &Bytes) {
    const PAIRS: usize = 11;
    let metrics = Metrics::new();
    let counted = bench_server(Some(metrics.clone())).await;
    let counted_addr = counted.local_addr().to_string();
    let (plain_client, counted_client) = (Client::new(plain), Client::new(counted_addr.clone()));
    let p50 = |client: Client| echo_p50(client, args);
    let mut ratios = Vec::new();
    let (mut on_all, mut off_all) = (Vec::new(), Vec::new());
    for pair in 0..PAIRS {
        let (on, off) = if pair % 2 == 0 {
            let on = p50(counted_client.clone()).await;
            (on, p50(plain_client.clone()).await)
        } else {
            let off = p50(plain_client.clone()).await;
            (p50(counted_client.clone()).await, off)
        };
        ratios.push(on / off);
        on_all.push(on * 1e6);
        off_all.push(off * 1e6);
    }
    println!(
        "metrics on: latency p50               {:>9.1} us | off   {:>9.1} us | ratio {:.3}x (median of {PAIRS} pairs' ratios; they ranged {:.3} to {:.3})",
        median(&mut on_all),
        median(&mut off_all),
        median(&mut ratios),
        ratios.first().copied().unwrap_or_default(),
        ratios.last().copied().unwrap_or_default()
    );
    for (connections, in_flight) in shapes() {
        let mut ratios = Vec::new();
        let (mut on_all, mut off_all) = (Vec::new(), Vec::new());
        for pair in 0..PAIRS {
            let (on, off) = if pair % 2 == 0 {
                let on = pipelined_ours(&counted_addr, connections, in_flight, args).await;
                (
                    on,
                    pipelined_ours(plain, connections, in_flight, args).await,
                )
            } else {
                let off = pipelined_ours(plain, connections, in_flight, args).await;
                (
                    pipelined_ours(&counted_addr, connections, in_flight, args).await,
                    off,
                )
            };
            ratios.push(on / off);
            on_all.push(on);
            off_all.push(off);
        }
        println!(
            "metrics on: pipelined {connections} x {in_flight:>3}         {:>9.0} calls/s | off   {:>9.0} calls/s | ratio {:.3}x (pairs ranged {:.3} to {:.3})",
            median(&mut on_all),
            median(&mut off_all),
            median(&mut ratios),
            ratios.first().copied().unwrap_or_default(),
            ratios.last().copied().unwrap_or_default()
        );
    }
    // The calls were counted: a scrape sees them.
    assert!(metrics.encode().contains("rpc_calls_total"));
    counted.shutdown(Duration::from_secs(1)).await;
}

/// The payload goes to the server and comes back: through a raw-bytes
/// function (`call_raw`, the bulk path), and through a typed one whose
/// argument and result are `Bytes` (serde copies them).
async fn bulk(client: &Client, raw: &mut FloorConnection) {
    // RPC_BULK_MIB=1 (or 16) runs one size, for profiling.
    let only = std::env::var("RPC_BULK_MIB").ok();
    for size in [1usize << 20, 16 << 20] {
        if only
            .as_deref()
            .is_some_and(|only| only != (size >> 20).to_string())
        {
            continue;
        }
        let payload = Bytes::from(vec![0x5au8; size]);
        let rounds = (64 << 20) / size;
        let raw_call = || async {
            let echoed = client
                .call_raw("echo_raw", payload.clone(), CallOptions::new())
                .await
                .unwrap();
            assert_eq!(echoed.len(), size);
        };
        let typed_call = || async {
            let echoed: Bytes = client.call("echo", &payload).await.unwrap();
            assert_eq!(echoed.len(), size);
        };
        let frames = call_frames(&payload);
        let (mut ours, mut typed, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..BULK_ROUNDS {
            ours.push(throughput(size, rounds, raw_call).await);
            typed.push(throughput(size, rounds, typed_call).await);
            round_trip(raw, &frames).await;
            let started = Instant::now();
            for _ in 0..rounds {
                round_trip(raw, &frames).await;
            }
            theirs.push((2 * size * rounds) as f64 / started.elapsed().as_secs_f64());
        }
        let (ours, typed, theirs) = (median(&mut ours), median(&mut typed), median(&mut theirs));
        let mib = |rate: f64| rate / f64::from(1 << 20);
        println!(
            "bulk {:>2} MiB echo, raw bytes         {:>9.0} MiB/s  | floor {:>9.0} MiB/s  | ratio {:.2}x",
            size >> 20,
            mib(ours),
            mib(theirs),
            ours / theirs
        );
        println!(
            "bulk {:>2} MiB echo, typed (serde)     {:>9.0} MiB/s  | floor {:>9.0} MiB/s  | ratio {:.2}x",
            size >> 20,
            mib(typed),
            mib(theirs),
            typed / theirs
        );
    }
}

/// Bytes a second moved by `rounds` echoes of `size` bytes (counting both
/// ways), after one warm-up round.
async fn throughput<F, Fut>(size: usize, rounds: usize, mut echo: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    echo().await;
    let started = Instant::now();
    for _ in 0..rounds {
        echo().await;
    }
    (2 * size * rounds) as f64 / started.elapsed().as_secs_f64()
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_unstable_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

fn percentile(samples: &mut [Duration], quantile: f64) -> Duration {
    samples.sort_unstable();
    let index = ((samples.len() as f64 - 1.0) * quantile).round() as usize;
    samples[index.min(samples.len() - 1)]
}

/// The frames a client sends for one `echo` call with `args`, without their
/// length prefixes (the floor's codec adds those): inline or chunked, as the
/// client does.
fn call_frames(args: &Bytes) -> Vec<Bytes> {
    let encoded = Bytes::from(postcard::to_allocvec(args).unwrap());
    let chunk_len = chunk_len_for(DEFAULT_MAX_FRAME_LEN);
    let call = |payload| {
        Message::Call(Call {
            method: "echo".into(),
            timeout_ms: Some(30_000),
            idempotency_key: None,
            schema_hash: None,
            payload,
        })
    };
    let mut frames = Vec::new();
    if encoded.len() <= chunk_len {
        frames.push(Frame::new(1, call(Payload::Inline(encoded))));
    } else {
        let len = encoded.len() as u64;
        frames.push(Frame::new(1, call(Payload::Chunked { len })));
        frames.extend(ChunkSender::frames(1, encoded, chunk_len));
    }
    frames
        .iter()
        .map(|frame| {
            let mut buf = BytesMut::new();
            frame.encode(&mut buf, u32::MAX).unwrap();
            buf.split_off(4).freeze()
        })
        .collect()
}

fn floor_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(64 << 20)
        .new_codec()
}

/// A server that echoes every frame, flushing once per batch of frames
/// already received.
async fn spawn_floor() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            socket.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut framed = Framed::new(socket, floor_codec());
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

async fn connect_floor(addr: SocketAddr) -> FloorConnection {
    let socket = TcpStream::connect(addr).await.unwrap();
    socket.set_nodelay(true).unwrap();
    let (sink, stream) = Framed::new(socket, floor_codec()).split();
    FloorConnection { sink, stream }
}

/// Sends the frames of one call and reads back as many.
async fn round_trip(raw: &mut FloorConnection, frames: &[Bytes]) {
    let write = async {
        for frame in frames {
            raw.sink.feed(frame.clone()).await.unwrap();
        }
        raw.sink.flush().await.unwrap();
    };
    let read = async {
        for _ in frames {
            raw.stream.next().await.unwrap().unwrap();
        }
    };
    tokio::join!(write, read);
}

async fn pipelined_ours(addr: &str, connections: usize, in_flight: usize, args: &Bytes) -> f64 {
    let clients: Vec<Client> = (0..connections).map(|_| Client::new(addr)).collect();
    for client in &clients {
        let _: Bytes = client.call("echo", args).await.unwrap();
    }
    // Each task makes its share of the calls: no counter shared between
    // threads, which the floor does not pay for either.
    let per_task = PIPELINED_CALLS / (connections * in_flight);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client in &clients {
        for _ in 0..in_flight {
            let client = client.clone();
            let args = args.clone();
            tasks.spawn(async move {
                for _ in 0..per_task {
                    let _: Bytes = client.call("echo", &args).await.unwrap();
                }
            });
        }
    }
    while tasks.join_next().await.is_some() {}
    (per_task * connections * in_flight) as f64 / started.elapsed().as_secs_f64()
}

async fn pipelined_floor(
    addr: SocketAddr,
    connections: usize,
    in_flight: usize,
    frames: &[Bytes],
) -> f64 {
    let frame = frames.first().cloned().unwrap();
    let per_connection = PIPELINED_CALLS / connections;
    let mut sockets = Vec::new();
    for _ in 0..connections {
        sockets.push(connect_floor(addr).await);
    }
    // The floor echoes the call itself.
    window(sockets, in_flight, per_connection, 0x10, move |_| {
        frame.clone()
    })
    .await
}

/// The pipelined shapes: connections x calls in flight on each.
/// `RPC_SHAPE=1x128` (or `4x64`) runs one, for profiling.
fn shapes() -> Vec<(usize, usize)> {
    let only = std::env::var("RPC_SHAPE").ok();
    [(1, 128), (4, 64)]
        .into_iter()
        .filter(|(connections, in_flight)| {
            only.as_deref()
                .is_none_or(|only| only == format!("{connections}x{in_flight}"))
        })
        .collect()
}

/// Each side alone (`RPC_BENCH=split`): our client against a raw server
/// that answers every call with a ready-made response, and a raw client
/// that pipelines ready-made calls to our server.
async fn split(addr: &str, frames: &[Bytes], args: &Bytes) {
    // RPC_SPLIT=client|server measures one side only, for profiling.
    let side = std::env::var("RPC_SPLIT").ok();
    let measures = |which: &str| side.as_deref().is_none_or(|side| side == which);
    let raw_server = spawn_raw_rpc_server(args).await.to_string();
    for (connections, in_flight) in shapes() {
        let mut client_side = 0.0;
        if measures("client") {
            client_side = pipelined_ours(&raw_server, connections, in_flight, args).await;
        }
        let mut server_side = 0.0;
        if measures("server") {
            server_side = raw_client(addr, connections, in_flight, &frames[0]).await;
        }
        println!(
            "{connections} conn x {in_flight:>3}: our client + raw server {client_side:>9.0} calls/s | raw client + our server {server_side:>9.0} calls/s"
        );
    }
}

async fn handshake(socket: TcpStream) -> Framed<TcpStream, LengthDelimitedCodec> {
    use rpc_core::PeerRole;
    use rpc_core::wire::{FrameCodec, Hello, Limits};
    let mut framed = Framed::new(socket, FrameCodec::new());
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
    assert_eq!(welcome.kind(), rpc_core::wire::Kind::Welcome);
    raw_framed(framed)
}

fn raw_framed<C>(framed: Framed<TcpStream, C>) -> Framed<TcpStream, LengthDelimitedCodec> {
    let parts = framed.into_parts();
    let mut raw = tokio_util::codec::FramedParts::new::<Bytes>(parts.io, floor_codec());
    raw.read_buf = parts.read_buf;
    Framed::from_parts(raw)
}

fn set_stream_id(frame: &mut [u8], id: u64) {
    frame[4..12].copy_from_slice(&id.to_be_bytes());
}

async fn spawn_raw_rpc_server(args: &Bytes) -> SocketAddr {
    use rpc_core::wire::{FrameCodec, Limits, Response, Welcome};
    use rpc_core::{PeerRole, StatusCode};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let result = Bytes::from(postcard::to_allocvec(args).unwrap());
    let response = Frame::new(
        2,
        Message::Response(Response {
            status: StatusCode::OK,
            server_time_ms: 0,
            elapsed_us: 0,
            message: String::new(),
            payload: Payload::Inline(result),
        }),
    );
    let mut encoded = BytesMut::new();
    response.encode(&mut encoded, u32::MAX).unwrap();
    let template = encoded.split_off(4).freeze();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            socket.set_nodelay(true).unwrap();
            let template = template.clone();
            tokio::spawn(async move {
                let mut framed = Framed::new(socket, FrameCodec::new());
                let Some(Ok(_hello)) = framed.next().await else {
                    return;
                };
                let welcome = Welcome {
                    peer_name: "raw".into(),
                    role: PeerRole::Server,
                    access_role: None,
                    limits: Limits::default(),
                    server_time_ms: 0,
                };
                framed
                    .send(Frame::connection(Message::Welcome(welcome)))
                    .await
                    .unwrap();
                let mut framed = raw_framed(framed);
                let answer = |call: &BytesMut| {
                    let mut response = BytesMut::from(&template[..]);
                    response[4..12].copy_from_slice(&call[4..12]);
                    response.freeze()
                };
                while let Some(Ok(frame)) = framed.next().await {
                    if framed.feed(answer(&frame)).await.is_err() {
                        return;
                    }
                    while let Some(Some(Ok(frame))) = framed.next().now_or_never() {
                        if framed.feed(answer(&frame)).await.is_err() {
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

async fn raw_client(addr: &str, connections: usize, in_flight: usize, call: &Bytes) -> f64 {
    let per_connection = PIPELINED_CALLS / connections;
    let mut sockets = Vec::new();
    for _ in 0..connections {
        let socket = TcpStream::connect(addr).await.unwrap();
        socket.set_nodelay(true).unwrap();
        let (sink, stream) = handshake(socket).await.split();
        sockets.push(FloorConnection { sink, stream });
    }
    let call = call.clone();
    let calls = move |n: u64| {
        let mut frame = BytesMut::from(&call[..]);
        set_stream_id(&mut frame, 2 * n + 1);
        frame.freeze()
    };
    // Our server answers with a `Response`.
    window(sockets, in_flight, per_connection, 0x11, calls).await
}

/// Frames a second when each connection keeps `in_flight` frames
/// outstanding until `per_connection` have come back, each of kind
/// `answer_kind`; `frame(n)` is the n-th frame a connection sends.
async fn window<F>(
    sockets: Vec<FloorConnection>,
    in_flight: usize,
    per_connection: usize,
    answer_kind: u8,
    frame: F,
) -> f64
where
    F: Fn(u64) -> Bytes + Clone + Send + 'static,
{
    let connections = sockets.len();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for FloorConnection {
        mut sink,
        mut stream,
    } in sockets
    {
        let frame = frame.clone();
        tasks.spawn(async move {
            let window = Arc::new(Semaphore::new(in_flight));
            let writer = {
                let window = Arc::clone(&window);
                tokio::spawn(async move {
                    for n in 0..per_connection as u64 {
                        window.acquire().await.unwrap().forget();
                        sink.feed(frame(n)).await.unwrap();
                        if window.available_permits() == 0 {
                            sink.flush().await.unwrap();
                        }
                    }
                    sink.flush().await.unwrap();
                    sink
                })
            };
            for _ in 0..per_connection {
                let answer = stream.next().await.unwrap().unwrap();
                assert_eq!(answer[1], answer_kind, "the expected kind of frame");
                window.add_permits(1);
            }
            drop(writer.await.unwrap());
        });
    }
    while tasks.join_next().await.is_some() {}
    (per_connection * connections) as f64 / started.elapsed().as_secs_f64()
}

/// The least any client of per-call futures pays (`RPC_BENCH=wakeups`): no
/// sockets, no encoding, only what carries a call from its task to a
/// connection task and its answer back. 256 tasks each "call" in a loop:
/// queue a oneshot sender, wait for it; one task answers whatever is queued
/// in batches, as a connection's reader would. Printed as calls per second
/// on this runtime, to set against the floor's frames per second.
async fn wakeups() {
    use std::sync::Mutex;
    use tokio::sync::{Notify, oneshot};

    const TASKS: usize = 256;
    let per_task = PIPELINED_CALLS / TASKS;
    let queue: Arc<Mutex<Vec<oneshot::Sender<()>>>> = Arc::default();
    let queued = Arc::new(Notify::new());
    let answerer = {
        let queue = Arc::clone(&queue);
        let queued = Arc::clone(&queued);
        tokio::spawn(async move {
            let mut answered = 0;
            let mut batch = Vec::new();
            while answered < per_task * TASKS {
                queued.notified().await;
                std::mem::swap(&mut *queue.lock().unwrap(), &mut batch);
                answered += batch.len();
                for waiter in batch.drain(..) {
                    let _ = waiter.send(());
                }
            }
        })
    };
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        let queue = Arc::clone(&queue);
        let queued = Arc::clone(&queued);
        tasks.spawn(async move {
            for _ in 0..per_task {
                let (waiter, answer) = oneshot::channel();
                queue.lock().unwrap().push(waiter);
                queued.notify_one();
                answer.await.unwrap();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    answerer.await.unwrap();
    let rate = (per_task * TASKS) as f64 / started.elapsed().as_secs_f64();
    println!("wake-ups alone: {rate:>9.0} calls/s (a task woken and a oneshot per call, no I/O)");
}
