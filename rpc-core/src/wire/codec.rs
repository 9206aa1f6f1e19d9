//! The frame codec: length-prefixed frames on a byte stream.
//!
//! ```text
//! +----------------+---------+------+-------+----------+-----------+--------------+
//! | length: u32 BE | version | kind | flags | reserved | stream id | body         |
//! | 4 bytes        | 1 byte  | 1    | 1     | 1        | u64 BE, 8 | length - 12  |
//! +----------------+---------+------+-------+----------+-----------+--------------+
//!                  |<------------------------ length ---------------------------->|
//! ```

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::errors::{DecodeError, EncodeError};
use crate::wire::header::Header;
use crate::wire::{Frame, HEADER_LEN, LENGTH_PREFIX_LEN, Message};

/// The default largest frame length (the length prefix's value): 1 MiB.
///
/// Payloads larger than a frame travel chunked, so the limit bounds the memory
/// one connection can make its peer hold without limiting what it can send.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 1 << 20;

/// The smallest frame limit a peer may set or announce: 16 KiB. `Hello` and
/// `Welcome` must fit in it, since they are sent before the limits are known.
pub const MIN_MAX_FRAME_LEN: u32 = 16 << 10;

/// The most a decoder reserves ahead of bytes actually received, so that a
/// peer announcing a large frame and sending nothing pins no memory.
const MAX_RESERVE_AHEAD: usize = 64 << 10;

/// Decodes and encodes [`Frame`]s on a byte stream, for use with
/// [`tokio_util::codec::Framed`].
///
/// The decoder checks each length prefix against
/// [`max_frame_len`](Self::max_frame_len) before buffering anything (and
/// `Hello` and `Welcome` frames against [`MIN_MAX_FRAME_LEN`]), checks the
/// header as soon as it arrives (so garbage fails fast), and never reserves
/// more than 64 KiB ahead of the bytes it has received. Inline
/// payloads and chunks in decoded frames share the read buffer's memory.
///
/// ```
/// use bytes::BytesMut;
/// use rpc_core::wire::{Frame, FrameCodec, Message, Ping};
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = FrameCodec::new();
/// let mut buf = BytesMut::new();
/// let ping = Frame::connection(Message::Ping(Ping { nonce: 1 }));
/// codec.encode(ping.clone(), &mut buf)?;
/// assert_eq!(&buf[..], b"\x00\x00\x00\x0d\x01\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01");
/// assert_eq!(codec.decode(&mut buf)?, Some(ping));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct FrameCodec {
    max_frame_len: u32,
    peer_max_frame_len: u32,
}

impl FrameCodec {
    /// A codec with both limits at [`DEFAULT_MAX_FRAME_LEN`].
    pub fn new() -> FrameCodec {
        FrameCodec {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            peer_max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }

    /// The largest frame length this side decodes. The default is
    /// [`DEFAULT_MAX_FRAME_LEN`], 1 MiB.
    pub fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }

    /// Sets the largest frame length this side decodes, raised to at least
    /// [`MIN_MAX_FRAME_LEN`].
    pub fn set_max_frame_len(&mut self, len: u32) -> &mut Self {
        self.max_frame_len = len.max(MIN_MAX_FRAME_LEN);
        self
    }

    /// The largest frame length this side encodes: the limit the peer
    /// announced. The default is [`DEFAULT_MAX_FRAME_LEN`], 1 MiB.
    pub fn peer_max_frame_len(&self) -> u32 {
        self.peer_max_frame_len
    }

    /// Sets the largest frame length this side encodes, raised to at least
    /// [`MIN_MAX_FRAME_LEN`]; call it with the peer's announced
    /// [`Limits::max_frame_len`](crate::wire::Limits::max_frame_len).
    pub fn set_peer_max_frame_len(&mut self, len: u32) -> &mut Self {
        self.peer_max_frame_len = len.max(MIN_MAX_FRAME_LEN);
        self
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new()
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = DecodeError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let Some(&prefix) = src.first_chunk::<LENGTH_PREFIX_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(prefix);
        if len > self.max_frame_len {
            return Err(DecodeError::FrameTooLarge {
                len: len.into(),
                max: self.max_frame_len,
            });
        }
        if (len as usize) < HEADER_LEN {
            return Err(DecodeError::FrameTooShort {
                len,
                min: HEADER_LEN,
            });
        }
        // `len` fits in memory: it is at most `max_frame_len`, a `u32`.
        let len = len as usize;
        let header = match src
            .get(LENGTH_PREFIX_LEN..)
            .and_then(|rest| rest.first_chunk::<HEADER_LEN>())
        {
            Some(header) => Header::decode(header)?,
            None => return Ok(None),
        };
        // Handshake frames travel before limits are exchanged, so they are
        // held to the minimum limit: an unauthenticated peer cannot make this
        // side buffer more than 16 KiB.
        if header.kind.is_handshake() && len > MIN_MAX_FRAME_LEN as usize {
            return Err(DecodeError::FrameTooLarge {
                len: len as u64,
                max: MIN_MAX_FRAME_LEN,
            });
        }
        let total = LENGTH_PREFIX_LEN + len;
        if src.len() < total {
            src.reserve((total - src.len()).min(MAX_RESERVE_AHEAD));
            return Ok(None);
        }
        src.advance(LENGTH_PREFIX_LEN + HEADER_LEN);
        let body = src.split_to(len - HEADER_LEN).freeze();
        let message = Message::decode(header.kind, body)?;
        Ok(Some(Frame::new(header.stream_id, message)))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => {
                let expected = match src.first_chunk::<LENGTH_PREFIX_LEN>() {
                    Some(&prefix) => {
                        LENGTH_PREFIX_LEN as u64 + u64::from(u32::from_be_bytes(prefix))
                    }
                    None => LENGTH_PREFIX_LEN as u64,
                };
                Err(DecodeError::Truncated {
                    received: src.len(),
                    expected,
                })
            }
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = EncodeError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), EncodeError> {
        frame.encode(dst, self.peer_max_frame_len)
    }
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, Bytes};
    use futures_util::StreamExt;
    use tokio_util::codec::FramedRead;

    use super::*;
    use crate::wire::{Call, Kind, Payload, Ping, Response, StatusCode};

    fn encoded(frame: &Frame) -> BytesMut {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf, DEFAULT_MAX_FRAME_LEN).unwrap();
        buf
    }

    fn sample_frames() -> Vec<Frame> {
        vec![
            Frame::connection(Message::Ping(Ping { nonce: 42 })),
            Frame::new(
                3,
                Message::Call(Call {
                    method: "add".into(),
                    timeout_ms: Some(250),
                    idempotency_key: Some([9; 16]),
                    schema_hash: Some(u64::MAX),
                    payload: Payload::from(Bytes::from_static(b"\x02\x03")),
                }),
            ),
            Frame::new(3, Message::Cancel),
            Frame::new(4, Message::Chunk(Bytes::from(vec![0xab; 300]))),
        ]
    }

    /// Raw bytes of a frame with the given length prefix, header and body.
    fn raw(len: u32, header: [u8; HEADER_LEN], body: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_u32(len);
        buf.put_slice(&header);
        buf.put_slice(body);
        buf
    }

    fn decode_all(bytes: &[u8]) -> Result<Option<Frame>, DecodeError> {
        FrameCodec::new().decode_eof(&mut BytesMut::from(bytes))
    }

    #[test]
    fn every_prefix_of_a_frame_is_incomplete_then_truncated() {
        for frame in sample_frames() {
            let bytes = encoded(&frame);
            for cut in 0..bytes.len() {
                let mut partial = BytesMut::from(&bytes[..cut]);
                let mut codec = FrameCodec::new();
                assert_eq!(codec.decode(&mut partial).unwrap(), None, "{cut} bytes");
                let error = codec.decode_eof(&mut partial);
                if cut == 0 {
                    assert!(matches!(error, Ok(None)));
                } else {
                    let Err(DecodeError::Truncated { received, expected }) = error else {
                        panic!("{cut} bytes: expected Truncated, got {error:?}");
                    };
                    assert_eq!(received, cut);
                    let whole = if cut < LENGTH_PREFIX_LEN {
                        4
                    } else {
                        bytes.len() as u64
                    };
                    assert_eq!(expected, whole);
                }
            }
            assert_eq!(decode_all(&bytes).unwrap(), Some(frame));
        }
    }

    #[tokio::test]
    async fn frames_split_across_reads_decode_the_same() {
        let frames = sample_frames();
        let mut stream = BytesMut::new();
        for frame in &frames {
            stream.extend_from_slice(&encoded(frame));
        }
        // One byte per read, the worst split there is.
        let mut io = tokio_test::io::Builder::new();
        for byte in stream.chunks(1) {
            io.read(byte);
        }
        let decoded: Vec<Frame> = FramedRead::new(io.build(), FrameCodec::new())
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(decoded, frames);
    }

    #[tokio::test]
    async fn stream_ending_mid_frame_reports_truncation() {
        let bytes = encoded(&sample_frames()[1]);
        let io = tokio_test::io::Builder::new().read(&bytes[..10]).build();
        let mut reader = FramedRead::new(io, FrameCodec::new());
        let error = reader.next().await.unwrap().unwrap_err();
        assert!(
            matches!(error, DecodeError::Truncated { received: 10, .. }),
            "{error:?}"
        );
    }

    #[test]
    fn a_four_gib_length_prefix_is_refused_without_allocating() {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_u32(u32::MAX);
        buf.put_slice(&Header::encode(Kind::Chunk, 1));
        let error = FrameCodec::new().decode(&mut buf).unwrap_err();
        assert_eq!(
            error.to_string(),
            "frame of 4294967295 bytes exceeds the limit of 1048576"
        );
        assert_eq!(error.status(), StatusCode::RESOURCE_EXHAUSTED);
        assert_eq!(buf.capacity(), 64, "nothing was reserved");
    }

    #[test]
    fn a_length_one_past_the_limit_is_refused() {
        let mut codec = FrameCodec::new();
        codec.set_max_frame_len(100_000);
        let mut buf = raw(100_001, Header::encode(Kind::Chunk, 1), &[]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(DecodeError::FrameTooLarge {
                len: 100_001,
                max: 100_000
            })
        ));
    }

    #[test]
    fn a_frame_at_the_limit_is_accepted_and_reserves_little_ahead() {
        let mut codec = FrameCodec::new();
        let max = codec.max_frame_len();
        let mut buf = raw(max, Header::encode(Kind::Chunk, 1), &[]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(
            buf.capacity() <= LENGTH_PREFIX_LEN + HEADER_LEN + MAX_RESERVE_AHEAD,
            "reserved {} bytes for a frame that has not arrived",
            buf.capacity()
        );
        buf.put_bytes(0x5a, max as usize - HEADER_LEN);
        let frame = codec.decode(&mut buf).unwrap().unwrap();
        let Message::Chunk(bytes) = frame.message else {
            panic!("expected a chunk");
        };
        assert_eq!(bytes.len(), max as usize - HEADER_LEN);
    }

    #[test]
    fn handshake_frames_are_held_to_the_minimum_limit_both_ways() {
        let mut buf = raw(MIN_MAX_FRAME_LEN + 1, Header::encode(Kind::Hello, 0), &[]);
        let error = FrameCodec::new().decode(&mut buf).unwrap_err();
        assert_eq!(
            error.to_string(),
            "frame of 16385 bytes exceeds the limit of 16384"
        );

        let hello = Frame::connection(Message::Hello(crate::wire::Hello {
            peer_name: String::new(),
            role: crate::wire::PeerRole::Client,
            token: Some("t".repeat(MIN_MAX_FRAME_LEN as usize)),
            limits: crate::wire::Limits::default(),
        }));
        let error = FrameCodec::new()
            .encode(hello, &mut BytesMut::new())
            .unwrap_err();
        assert!(
            matches!(error, EncodeError::FrameTooLarge { max: 16384, .. }),
            "{error:?}"
        );
    }

    #[test]
    fn a_length_shorter_than_the_header_is_refused() {
        let error = decode_all(&[0, 0, 0, 11]).unwrap_err();
        assert!(matches!(
            error,
            DecodeError::FrameTooShort { len: 11, min: 12 }
        ));
        assert_eq!(
            error.to_string(),
            "frame of 11 bytes is shorter than the 12-byte header"
        );
    }

    #[test]
    fn a_bad_header_fails_before_the_body_arrives() {
        let mut header = Header::encode(Kind::Call, 1);
        header[0] = 2;
        let mut buf = raw(1000, header, &[]);
        let error = FrameCodec::new().decode(&mut buf).unwrap_err();
        assert!(matches!(
            error,
            DecodeError::UnsupportedVersion { version: 2 }
        ));
        assert_eq!(
            error.to_string(),
            "protocol version 2 is not supported (this peer speaks 1..=1)"
        );

        let mut header = Header::encode(Kind::Call, 1);
        header[1] = 0x99;
        let mut buf = raw(1000, header, &[]);
        let error = FrameCodec::new().decode(&mut buf).unwrap_err();
        assert_eq!(error.to_string(), "unknown message kind 0x99");
    }

    #[test]
    fn decoded_payloads_share_the_read_buffer() {
        let frame = Frame::new(1, Message::Chunk(Bytes::from(vec![7; 10_000])));
        let mut buf = encoded(&frame);
        let start = buf.as_ptr() as usize;
        let end = start + buf.len();
        let decoded = FrameCodec::new().decode(&mut buf).unwrap().unwrap();
        let Message::Chunk(bytes) = decoded.message else {
            panic!("expected a chunk");
        };
        let at = bytes.as_ptr() as usize;
        assert!(at > start && at < end, "the chunk was copied");
    }

    #[test]
    fn encoding_past_the_peer_limit_fails_and_writes_nothing() {
        let mut codec = FrameCodec::new();
        codec.set_peer_max_frame_len(MIN_MAX_FRAME_LEN);
        let big = Frame::new(
            1,
            Message::Response(Response {
                status: StatusCode::OK,
                server_time_ms: 0,
                elapsed_us: 0,
                message: String::new(),
                payload: Payload::from(Bytes::from(vec![0; MIN_MAX_FRAME_LEN as usize])),
            }),
        );
        let mut buf = BytesMut::from(&b"kept"[..]);
        let error = codec.encode(big, &mut buf).unwrap_err();
        assert!(
            matches!(error, EncodeError::FrameTooLarge { max: 16384, .. }),
            "{error:?}"
        );
        assert_eq!(&buf[..], b"kept");
        let io_error = std::io::Error::from(error);
        assert_eq!(io_error.kind(), std::io::ErrorKind::InvalidInput);
    }

    #[test]
    fn encoding_on_the_wrong_stream_fails() {
        let mut buf = BytesMut::new();
        let ping_on_stream = Frame::new(5, Message::Ping(Ping { nonce: 0 }));
        assert!(matches!(
            FrameCodec::new().encode(ping_on_stream, &mut buf),
            Err(EncodeError::WrongStream { stream_id: 5, .. })
        ));
        let cancel_on_zero = Frame::connection(Message::Cancel);
        assert!(matches!(
            FrameCodec::new().encode(cancel_on_zero, &mut buf),
            Err(EncodeError::WrongStream { stream_id: 0, .. })
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn encode_head_leaves_the_payload_to_the_caller() {
        let payload = Bytes::from(vec![1u8; 5000]);
        let frame = Frame::new(
            7,
            Message::Call(Call {
                method: "sum".into(),
                timeout_ms: None,
                idempotency_key: None,
                schema_hash: None,
                payload: Payload::from(payload.clone()),
            }),
        );
        let mut head = BytesMut::new();
        let tail = frame
            .encode_head(&mut head, DEFAULT_MAX_FRAME_LEN)
            .unwrap()
            .unwrap();
        assert_eq!(tail.as_ptr(), payload.as_ptr(), "the payload is not copied");
        let mut whole = head.clone();
        whole.extend_from_slice(&tail);
        assert_eq!(whole, encoded(&frame));
        let prefix = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
        assert_eq!(prefix, head.len() - LENGTH_PREFIX_LEN + tail.len());
    }

    #[test]
    fn decode_errors_become_invalid_data() {
        let error = decode_all(&[0, 0, 0, 1]).unwrap_err();
        assert_eq!(
            std::io::Error::from(error).kind(),
            std::io::ErrorKind::InvalidData
        );
    }
}
