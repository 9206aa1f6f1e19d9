//! Turns an accepted socket into the stream the protocol runs on: TLS when
//! the server has it, plain TCP otherwise. A peer on the wrong side (a
//! plaintext client of a TLS server, a TLS client of a plaintext server) is
//! told so in one `Error` frame in the clear, and closed.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::codec::Encoder;

use crate::conn::Io;
use crate::wire::{ErrorMessage, Frame, FrameCodec, Message, StatusCode};

/// The server's TLS, if it has the `tls` feature and was given one.
#[cfg(feature = "tls")]
pub(crate) type Tls = crate::tls::ServerTls;
/// Without the `tls` feature there is no TLS.
#[cfg(not(feature = "tls"))]
pub(crate) type Tls = std::convert::Infallible;

/// Who the peer's client certificate says it is.
#[cfg(feature = "tls")]
pub(crate) type Certified = crate::tls::CertifiedPeer;
/// Without the `tls` feature no peer has a certificate.
#[cfg(not(feature = "tls"))]
pub(crate) type Certified = std::convert::Infallible;

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A stream ready for the protocol's handshake, and the identity of the
/// peer's certificate if it showed one.
pub(crate) struct Secured {
    pub(crate) io: Box<dyn Io>,
    pub(crate) certified: Option<Certified>,
}

/// Waits for the peer's first byte and sets up the stream (the TLS
/// handshake included) within `handshake_timeout`; `None` if the peer is on
/// the wrong side, fails the TLS handshake or is too slow.
pub(crate) async fn secure(
    socket: TcpStream,
    tls: Option<&Tls>,
    handshake_timeout: Duration,
) -> Option<Secured> {
    let mut first = [0u8; 1];
    let peeked = timeout(handshake_timeout, socket.peek(&mut first)).await;
    let speaks_tls = match peeked {
        Ok(Ok(1)) => first == [TLS_HANDSHAKE_RECORD],
        // Closed, failed, or silent for the whole timeout.
        _ => return None,
    };
    match (tls, speaks_tls) {
        (None, false) => Some(Secured {
            io: Box::new(socket),
            certified: None,
        }),
        (None, true) => {
            refuse_in_clear(
                socket,
                StatusCode::BAD_REQUEST,
                "this server speaks plaintext, not TLS: connect without TLS, or have the \
                 server turned to TLS (worker serve --tls-cert and --tls-key)",
            )
            .await;
            None
        }
        (Some(_), false) => {
            refuse_in_clear(
                socket,
                StatusCode::TLS_REQUIRED,
                "this server accepts TLS only: connect with TLS (--tls, or a tls:// address)",
            )
            .await;
            None
        }
        #[cfg(feature = "tls")]
        (Some(tls), true) => accept_tls(socket, tls, handshake_timeout).await,
        #[cfg(not(feature = "tls"))]
        (Some(never), true) => match *never {},
    }
}

#[cfg(feature = "tls")]
async fn accept_tls(socket: TcpStream, tls: &Tls, handshake_timeout: Duration) -> Option<Secured> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
    let socket = tokio::io::BufReader::with_capacity(crate::tls::SOCKET_READ_BUFFER, socket);
    match timeout(handshake_timeout, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => {
            let certified = tls.certified_peer(stream.get_ref().1.peer_certificates());
            Some(Secured {
                io: Box::new(stream),
                certified,
            })
        }
        Ok(Err(error)) => {
            tracing::info!(%error, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("no TLS handshake in time");
            None
        }
    }
}

/// Writes one `Error` frame with `status` in the clear and closes, giving
/// the peer a second at most to take it. What the peer sent is read and
/// dropped first (64 KiB at most), so that closing does not reset the
/// connection and destroy the answer before the peer reads it.
async fn refuse_in_clear(mut socket: TcpStream, status: StatusCode, message: &str) {
    tracing::info!(reason = message, "peer on the wrong side of TLS");
    let mut bytes = BytesMut::new();
    let frame = Frame::connection(Message::Error(ErrorMessage {
        status,
        message: message.to_owned(),
    }));
    if FrameCodec::new().encode(frame, &mut bytes).is_err() {
        return;
    }
    let _ = timeout(Duration::from_secs(1), async {
        socket.write_all(&bytes).await?;
        socket.shutdown().await?;
        let mut sink = [0u8; 4096];
        for _ in 0..16 {
            if socket.read(&mut sink).await? == 0 {
                break;
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}
