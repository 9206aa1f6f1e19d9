//! Property tests of the frame codec: every frame round-trips, however the
//! bytes are split across reads, and no input makes the decoder panic or
//! reserve memory beyond what arrived plus a fixed allowance.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use rpc_core::wire::{
    Call, ChunkEnd, DecodeError, ErrorMessage, Frame, FrameCodec, GoAway, Hello, LENGTH_PREFIX_LEN,
    Limits, MIN_MAX_FRAME_LEN, Message, OfferProgram, Payload, Ping, Pong, RequestData, Response,
    SendData, SendProgram, VersionMismatch, Welcome,
};
use rpc_core::{ContentHash, PeerRole, StatusCode};
use tokio_util::codec::{Decoder, Encoder};

fn name() -> impl Strategy<Value = String> {
    "\\PC{1,40}"
}

fn peer_name() -> impl Strategy<Value = String> {
    "\\PC{0,40}"
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,80}"
}

fn status() -> impl Strategy<Value = StatusCode> {
    (StatusCode::MIN..=StatusCode::MAX).prop_map(|code| StatusCode::from_u16(code).unwrap())
}

fn hash() -> impl Strategy<Value = ContentHash> {
    any::<[u8; 32]>().prop_map(ContentHash::from_bytes)
}

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        vec(any::<u8>(), 0..600).prop_map(|bytes| Payload::from(Bytes::from(bytes))),
        any::<u64>().prop_map(|len| Payload::Chunked { len }),
    ]
}

fn role() -> impl Strategy<Value = PeerRole> {
    prop_oneof![
        Just(PeerRole::Client),
        Just(PeerRole::Server),
        Just(PeerRole::Worker),
        Just(PeerRole::Coordinator),
    ]
}

fn limits() -> impl Strategy<Value = Limits> {
    (
        MIN_MAX_FRAME_LEN..=u32::MAX,
        1..=u32::MAX,
        any::<u64>(),
        option::of(1..=u32::MAX),
    )
        .prop_map(
            |(max_frame_len, max_streams, max_payload_len, idle_timeout_ms)| Limits {
                max_frame_len,
                max_streams,
                max_payload_len,
                idle_timeout_ms,
            },
        )
}

fn connection_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (peer_name(), role(), option::of(text()), limits()).prop_map(
            |(peer_name, role, token, limits)| Message::Hello(Hello {
                peer_name,
                role,
                token,
                limits,
            })
        ),
        (
            peer_name(),
            role(),
            option::of(text()),
            limits(),
            any::<u64>()
        )
            .prop_map(|(peer_name, role, access_role, limits, server_time_ms)| {
                Message::Welcome(Welcome {
                    peer_name,
                    role,
                    access_role,
                    limits,
                    server_time_ms,
                })
            }),
        any::<u64>().prop_map(|nonce| Message::Ping(Ping { nonce })),
        any::<u64>().prop_map(|nonce| Message::Pong(Pong { nonce })),
        (any::<u64>(), status(), text()).prop_map(|(last_stream_id, status, message)| {
            Message::GoAway(GoAway {
                last_stream_id,
                status,
                message,
            })
        }),
        (status(), text())
            .prop_map(|(status, message)| Message::Error(ErrorMessage { status, message })),
        (any::<u8>(), any::<u8>()).prop_map(|(a, b)| {
            Message::VersionMismatch(VersionMismatch {
                min_version: a.min(b),
                max_version: a.max(b),
            })
        }),
    ]
}

fn stream_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            name(),
            option::of(any::<u64>()),
            option::of(any::<[u8; 16]>()),
            option::of(any::<u64>()),
            payload()
        )
            .prop_map(
                |(method, timeout_ms, idempotency_key, schema_hash, payload)| {
                    Message::Call(Call {
                        method,
                        timeout_ms,
                        idempotency_key,
                        schema_hash,
                        payload,
                    })
                }
            ),
        (status(), any::<u64>(), any::<u64>(), text(), payload()).prop_map(
            |(status, server_time_ms, elapsed_us, message, payload)| {
                Message::Response(Response {
                    status,
                    server_time_ms,
                    elapsed_us,
                    message,
                    payload,
                })
            }
        ),
        Just(Message::Cancel),
        (name(), payload())
            .prop_map(|(name, payload)| Message::SendData(SendData { name, payload })),
        name().prop_map(|name| Message::RequestData(RequestData { name })),
        (hash(), any::<u64>())
            .prop_map(|(hash, len)| Message::OfferProgram(OfferProgram { hash, len })),
        (hash(), payload())
            .prop_map(|(hash, payload)| Message::SendProgram(SendProgram { hash, payload })),
        vec(any::<u8>(), 0..600).prop_map(|bytes| Message::Chunk(Bytes::from(bytes))),
        option::of(hash()).prop_map(|hash| Message::ChunkEnd(ChunkEnd { hash })),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        connection_message().prop_map(Frame::connection),
        (1..=u64::MAX, stream_message()).prop_map(|(id, message)| Frame::new(id, message)),
    ]
}

fn encode(frame: &Frame) -> BytesMut {
    let mut buf = BytesMut::new();
    FrameCodec::new().encode(frame.clone(), &mut buf).unwrap();
    buf
}

/// Feeds `input` to a decoder in pieces of the given sizes (cycled), and
/// returns every frame decoded until the input ends or an error occurs.
fn decode_in_pieces(input: &[u8], pieces: &[usize]) -> (Vec<Frame>, Option<DecodeError>) {
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = input;
    let mut sizes = pieces.iter().copied().cycle();
    while !rest.is_empty() {
        let take = sizes.next().unwrap_or(1).clamp(1, rest.len());
        let (piece, tail) = rest.split_at(take);
        buf.extend_from_slice(piece);
        rest = tail;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => return (frames, Some(error)),
            }
        }
    }
    match codec.decode_eof(&mut buf) {
        Ok(Some(frame)) => frames.push(frame),
        Ok(None) => {}
        Err(error) => return (frames, Some(error)),
    }
    (frames, None)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_frame_round_trips(frame in frame()) {
        let bytes = encode(&frame);
        let mut buf = bytes.clone();
        let decoded = FrameCodec::new().decode(&mut buf).unwrap();
        prop_assert_eq!(decoded.as_ref(), Some(&frame));
        prop_assert!(buf.is_empty(), "the decoder consumed exactly one frame");
        prop_assert_eq!(encode(&frame), bytes, "encoding is deterministic");
    }

    #[test]
    fn frames_split_anywhere_decode_the_same(
        frames in vec(frame(), 1..8),
        pieces in vec(1usize..64, 1..8),
    ) {
        let mut stream = Vec::new();
        for frame in &frames {
            stream.extend_from_slice(&encode(frame));
        }
        let (decoded, error) = decode_in_pieces(&stream, &pieces);
        prop_assert!(error.is_none(), "{:?}", error);
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic_or_overallocate(input in vec(any::<u8>(), 0..2048)) {
        let mut buf = BytesMut::from(&input[..]);
        let mut codec = FrameCodec::new();
        while let Ok(Some(frame)) = codec.decode(&mut buf) {
            // Whatever decoded is a frame the encoder can write.
            let again = FrameCodec::new().decode(&mut encode(&frame)).unwrap();
            prop_assert_eq!(again, Some(frame));
        }
        prop_assert!(
            buf.capacity() <= 2 * input.len() + (64 << 10) + 2 * LENGTH_PREFIX_LEN + 16,
            "{} bytes reserved for {} bytes of input", buf.capacity(), input.len()
        );
    }

    #[test]
    fn corrupted_frames_fail_cleanly(
        frame in frame(),
        position in any::<prop::sample::Index>(),
        replacement in any::<u8>(),
    ) {
        let mut bytes = encode(&frame).to_vec();
        let at = position.index(bytes.len());
        bytes[at] = replacement;
        // A frame or a specific error, never a panic; whatever decodes is
        // a frame the encoder can write and read back.
        let (decoded, _error) = decode_in_pieces(&bytes, &[7]);
        for frame in decoded {
            let again = FrameCodec::new().decode(&mut encode(&frame)).unwrap();
            prop_assert_eq!(again, Some(frame));
        }
    }
}
