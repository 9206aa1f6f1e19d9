//! Frame codec throughput against a raw floor measured in the same run.
//!
//! The floor is tokio-util's `LengthDelimitedCodec` splitting and writing the
//! very same bytes: what any length-prefixed protocol pays at least. The
//! ratio says what the header checks, postcard and validation add on top.
//!
//! Run with `cargo bench -p rpc-core --bench codec`.

// A bench panics on a broken setup; that is the right report.
#![allow(clippy::expect_used, clippy::cast_precision_loss)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rpc_core::wire::{Call, DEFAULT_CHUNK_LEN, Frame, FrameCodec, Message, Payload};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// Runs `work` on a fresh input from `setup` repeatedly for about `budget`,
/// and returns the fastest run; `setup` is not timed.
fn fastest<T>(budget: Duration, mut setup: impl FnMut() -> T, mut work: impl FnMut(T)) -> Duration {
    let started = Instant::now();
    let mut best = Duration::MAX;
    while started.elapsed() < budget {
        let input = setup();
        let run = Instant::now();
        work(input);
        best = best.min(run.elapsed());
    }
    best
}

fn call_frame(id: u64, payload: Bytes) -> Frame {
    Frame::new(
        id,
        Message::Call(Call {
            method: "bench.echo".into(),
            timeout_ms: Some(5_000),
            idempotency_key: None,
            schema_hash: Some(0x1234_5678_9abc_def0),
            payload: Payload::from(payload),
        }),
    )
}

fn encode_all(frames: &[Frame]) -> BytesMut {
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::new();
    for frame in frames {
        codec.encode(frame.clone(), &mut buf).expect("encodes");
    }
    buf
}

fn report(name: &str, count: usize, bytes: usize, ours: Duration, floor: Duration) {
    let per_frame = |time: Duration| time.as_nanos() as f64 / count as f64;
    let rate = |time: Duration| bytes as f64 / time.as_secs_f64() / (1 << 20) as f64;
    println!(
        "{name:<34} {:>8.1} ns/frame {:>9.0} MiB/s | floor {:>7.1} ns/frame {:>9.0} MiB/s | ratio {:.2}x",
        per_frame(ours),
        rate(ours),
        per_frame(floor),
        rate(floor),
        ours.as_secs_f64() / floor.as_secs_f64(),
    );
}

fn bench_decode(name: &str, frames: &[Frame], budget: Duration) {
    let wire = encode_all(frames).freeze();
    let input = || BytesMut::from(&wire[..]);
    let ours = fastest(budget, input, |mut buf| {
        let mut codec = FrameCodec::new();
        while let Some(frame) = codec.decode(&mut buf).expect("decodes") {
            black_box(frame);
        }
    });
    let floor = fastest(budget, input, |mut buf| {
        let mut codec = LengthDelimitedCodec::builder()
            .max_frame_length(usize::MAX)
            .new_codec();
        while let Some(frame) = codec.decode(&mut buf).expect("decodes") {
            black_box(frame);
        }
    });
    report(name, frames.len(), wire.len(), ours, floor);
}

/// What the floor writes: each frame's body, already encoded, to be put
/// behind a length prefix; and the total with prefixes.
fn floor_bodies(frames: &[Frame]) -> (Vec<Bytes>, usize) {
    let bodies: Vec<Bytes> = frames
        .iter()
        .map(|frame| {
            encode_all(std::slice::from_ref(frame))
                .split_off(4)
                .freeze()
        })
        .collect();
    let total = bodies.iter().map(|body| body.len() + 4).sum();
    (bodies, total)
}

/// The floor of encoding: each body written behind a length prefix.
fn encode_floor(bodies: &[Bytes], total: usize, budget: Duration) -> Duration {
    fastest(
        budget,
        || BytesMut::with_capacity(total),
        |mut buf| {
            let mut codec = LengthDelimitedCodec::builder()
                .max_frame_length(usize::MAX)
                .new_codec();
            for body in bodies {
                codec.encode(body.clone(), &mut buf).expect("encodes");
            }
            black_box(buf);
        },
    )
}

fn bench_encode(name: &str, frames: &[Frame], budget: Duration) {
    let (bodies, total) = floor_bodies(frames);
    let output = || BytesMut::with_capacity(total);
    let ours = fastest(budget, output, |mut buf| {
        let mut codec = FrameCodec::new();
        for frame in frames {
            codec.encode(frame.clone(), &mut buf).expect("encodes");
        }
        black_box(buf);
    });
    let floor = encode_floor(&bodies, total, budget);
    report(name, frames.len(), total, ours, floor);
}

fn main() {
    let budget = Duration::from_secs(2);
    println!(
        "rpc-core frame codec vs LengthDelimitedCodec on the same bytes (best of runs over {budget:?})"
    );

    let small: Vec<Frame> = (0..100_000u64)
        .map(|id| call_frame(id * 2 + 1, Bytes::from(vec![7u8; 64])))
        .collect();
    bench_decode("decode Call, 64-byte payload", &small, budget);
    bench_encode("encode Call, 64-byte payload", &small, budget);

    let chunk = Bytes::from(vec![0x5au8; DEFAULT_CHUNK_LEN]);
    let chunks: Vec<Frame> = (0..256)
        .map(|_| Frame::new(1, Message::Chunk(chunk.clone())))
        .collect();
    bench_decode("decode Chunk, 256 KiB", &chunks, budget);
    bench_encode("encode Chunk, 256 KiB (copying)", &chunks, budget);
    bench_encode_head("encode_head Chunk, 256 KiB (no copy)", &chunks, budget);
}

/// The zero-copy path: headers into one buffer, payloads handed back for a
/// vectored write. The floor still copies each body behind its prefix.
fn bench_encode_head(name: &str, frames: &[Frame], budget: Duration) {
    let (bodies, total) = floor_bodies(frames);
    let ours = fastest(
        budget,
        || {
            (
                BytesMut::with_capacity(64 * frames.len()),
                Vec::with_capacity(frames.len()),
            )
        },
        |(mut heads, mut tails): (BytesMut, Vec<Bytes>)| {
            for frame in frames {
                let tail = frame.encode_head(&mut heads, u32::MAX).expect("encodes");
                tails.extend(tail);
            }
            black_box((heads, tails));
        },
    );
    let floor = encode_floor(&bodies, total, budget);
    report(name, frames.len(), total, ours, floor);
}
