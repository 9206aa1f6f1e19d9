//! Fuzzes the frame decoder with arbitrary bytes, delivered in two reads.
//!
//! Checks that decoding never panics, that whatever decodes re-encodes to a
//! frame that decodes the same, and that the read buffer never holds much
//! more memory than the bytes that arrived.
//!
//! Run with `cargo +nightly fuzz run frame_decoder` from `rpc-core/`.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rpc_core::wire::{Frame, FrameCodec};
use tokio_util::codec::{Decoder, Encoder};

/// The decoder's read-ahead allowance, plus room for a prefix and a header.
const SLACK: usize = (64 << 10) + 16;

fuzz_target!(|data: &[u8]| {
    // The first byte picks where the input is split into two reads.
    let split = data.first().map_or(0, |&byte| usize::from(byte)).min(data.len());
    let (first, second) = data.split_at(split);
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::new();
    for piece in [first, second] {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => check_round_trip(frame),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(
            buf.capacity() <= 2 * data.len() + SLACK,
            "{} bytes reserved for {} bytes of input",
            buf.capacity(),
            data.len()
        );
    }
    if let Ok(Some(frame)) = codec.decode_eof(&mut buf) {
        check_round_trip(frame);
    }
});

fn check_round_trip(frame: Frame) {
    let mut encoded = BytesMut::new();
    FrameCodec::new()
        .encode(frame.clone(), &mut encoded)
        .expect("a decoded frame encodes");
    let again = FrameCodec::new()
        .decode(&mut encoded)
        .expect("an encoded frame decodes")
        .expect("an encoded frame is whole");
    assert_eq!(again, frame);
    assert!(encoded.is_empty());
}
