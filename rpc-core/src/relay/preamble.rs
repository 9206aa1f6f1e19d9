//! The frames that come before a relayed connection's own handshake,
//! read and written on the raw socket one at a time, so that no byte that
//! belongs to the other end is read ahead.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::codec::{Decoder, Encoder};

use crate::wire::{
    DecodeError, ErrorMessage, Frame, FrameCodec, HEADER_LEN, Kind, LENGTH_PREFIX_LEN,
    MIN_MAX_FRAME_LEN, Message, StatusCode,
};

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// How often a peek is repeated while the first header has not all
/// arrived.
const PEEK_RETRY: Duration = Duration::from_millis(2);

/// Whether the connection starts with a relay frame (`Route` or `Join`),
/// found by peeking at its first six bytes without taking them. `None`
/// for anything else (a `Hello`, TLS, garbage), or a peer silent until
/// `within` ends: those go to the ordinary handshake, which deals with
/// them.
pub(crate) async fn peek_relay_kind(socket: &TcpStream, within: Duration) -> Option<Kind> {
    let deadline = Instant::now() + within;
    let mut start = [0u8; LENGTH_PREFIX_LEN + 2];
    loop {
        let peeked = timeout(
            deadline.saturating_duration_since(Instant::now()),
            socket.peek(&mut start),
        )
        .await;
        let n = match peeked {
            Ok(Ok(n)) if n > 0 => n,
            _ => return None,
        };
        if start[0] == TLS_HANDSHAKE_RECORD {
            return None;
        }
        if n == start.len() {
            return match Kind::from_u8(start[LENGTH_PREFIX_LEN + 1]) {
                Some(kind @ (Kind::Route | Kind::Join)) => Some(kind),
                _ => None,
            };
        }
        // Part of the header came; the rest is on its way.
        if Instant::now() >= deadline {
            return None;
        }
        sleep_until((Instant::now() + PEEK_RETRY).min(deadline)).await;
    }
}

/// Reads exactly one frame of at most 16 KiB (a handshake frame) from
/// `io`, taking no byte past its end.
pub(crate) async fn read_frame<S: AsyncRead + Unpin>(io: &mut S) -> Result<Frame, DecodeError> {
    let mut prefix = [0u8; LENGTH_PREFIX_LEN];
    io.read_exact(&mut prefix).await?;
    let len = u32::from_be_bytes(prefix) as usize;
    // Checked before anything is reserved; a length below a header's is
    // the codec's to report.
    if len > MIN_MAX_FRAME_LEN as usize {
        return Err(DecodeError::FrameTooLarge {
            len: len as u64,
            max: MIN_MAX_FRAME_LEN,
        });
    }
    if len < HEADER_LEN {
        let mut buf = BytesMut::from(&prefix[..]);
        let mut codec = FrameCodec::new();
        return match codec.decode(&mut buf)? {
            Some(frame) => Ok(frame),
            None => Err(DecodeError::Io(std::io::ErrorKind::UnexpectedEof.into())),
        };
    }
    let mut rest = vec![0u8; len];
    io.read_exact(&mut rest).await?;
    let mut buf = BytesMut::with_capacity(LENGTH_PREFIX_LEN + len);
    buf.extend_from_slice(&prefix);
    buf.extend_from_slice(&rest);
    let mut codec = FrameCodec::new();
    codec.set_max_frame_len(MIN_MAX_FRAME_LEN);
    match codec.decode(&mut buf)? {
        Some(frame) => Ok(frame),
        None => Err(DecodeError::Io(std::io::ErrorKind::UnexpectedEof.into())),
    }
}

/// Writes one connection message as a frame.
pub(crate) async fn write_message<S: AsyncWrite + Unpin>(
    io: &mut S,
    message: Message,
) -> std::io::Result<()> {
    let mut bytes = BytesMut::new();
    FrameCodec::new()
        .encode(Frame::connection(message), &mut bytes)
        .map_err(std::io::Error::other)?;
    io.write_all(&bytes).await
}

/// Answers a relay frame with `Error` and closes, giving the peer a second
/// at most to take it.
pub(crate) async fn refuse(mut socket: TcpStream, status: StatusCode, message: String) {
    tracing::debug!(%status, %message, "relay request refused");
    let error = Message::Error(ErrorMessage { status, message });
    let _ = timeout(Duration::from_secs(1), async {
        write_message(&mut socket, error).await?;
        socket.shutdown().await
    })
    .await;
}
