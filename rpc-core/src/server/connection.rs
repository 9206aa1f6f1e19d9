//! One server connection: the handshake, then a loop that reads frames,
//! starts a task per call, and answers on the connection's writer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, timeout};
use tokio_util::codec::Framed;

use crate::conn;
use crate::error::DecodeError;
use crate::server::ServerConfig;
use crate::server::auth::{Tokens, Verdict};
use crate::server::dedup::Dedup;
use crate::server::programs::ProgramStore;
use crate::server::registry::{PeerInfo, Registry};
use crate::server::session::Session;
use crate::server::store::BoundedStore;
use crate::wire::{
    ErrorMessage, Frame, FrameCodec, Hello, Limits, MAX_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION,
    Message, PeerRole, StatusCode, VersionMismatch, Welcome,
};

/// What every connection of a server shares.
pub(crate) struct Shared {
    pub(crate) registry: Registry,
    pub(crate) tokens: Tokens,
    pub(crate) config: ServerConfig,
    pub(crate) dedup: Arc<Dedup>,
    pub(crate) data: BoundedStore<String>,
    pub(crate) programs: Arc<dyn ProgramStore>,
}

/// Tells a connection over the limit why it is refused, and closes it.
pub(crate) async fn refuse_busy(socket: TcpStream) {
    let mut framed = Framed::new(socket, FrameCodec::new());
    let error = ErrorMessage {
        status: StatusCode::UNAVAILABLE,
        message: "the server is at its connection limit; try again later".into(),
    };
    let _ = timeout(
        Duration::from_secs(1),
        framed.send(Frame::connection(Message::Error(error))),
    )
    .await;
}

/// Serves one connection until it closes or the server shuts down.
pub(crate) async fn serve<T>(
    io: T,
    addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<Option<Instant>>,
) where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut codec = FrameCodec::new();
    codec.set_max_frame_len(shared.config.max_frame_len);
    let mut framed = Framed::new(io, codec);
    let Some((hello, role)) = handshake(&mut framed, &shared).await else {
        return;
    };
    tracing::debug!(peer_name = %hello.peer_name, role = ?role, "handshake done");
    framed
        .codec_mut()
        .set_peer_max_frame_len(hello.limits.max_frame_len);
    let peer = Arc::new(PeerInfo {
        name: hello.peer_name,
        addr,
        role,
    });
    let conn::Split {
        reader,
        outbox,
        writer,
    } = conn::split(framed, |_: &mut Vec<()>| {});
    let (session, done) = Session::new(shared, peer, hello.limits, outbox);
    session.run(reader, shutdown, done).await;
    // The session dropped its outbox; the writer flushes and closes.
    let _ = writer.await;
}

/// Reads the `Hello`, checks version, token and limits, and answers.
/// Returns the hello and the role granted, or `None` if the connection was
/// refused.
async fn handshake<T>(
    framed: &mut Framed<T, FrameCodec>,
    shared: &Shared,
) -> Option<(Hello, Option<String>)>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let first = match timeout(shared.config.handshake_timeout, framed.next()).await {
        Err(_) => {
            tracing::debug!("no handshake in time; closing");
            return None;
        }
        Ok(None) => return None,
        Ok(Some(first)) => first,
    };
    let refusal = match first {
        Ok(Frame {
            message: Message::Hello(hello),
            ..
        }) => match shared.tokens.check(hello.token.as_deref()) {
            Verdict::Refused => Message::Error(ErrorMessage {
                status: StatusCode::FORBIDDEN,
                message: "the token is missing or not valid".into(),
            }),
            verdict => {
                let role = match verdict {
                    Verdict::Role(role) => Some(role),
                    _ => None,
                };
                let welcome = Welcome {
                    peer_name: shared.config.name.clone(),
                    role: PeerRole::Server,
                    access_role: role.clone(),
                    limits: own_limits(&shared.config),
                    server_time_ms: conn::unix_time_ms(),
                };
                let sent = framed
                    .send(Frame::connection(Message::Welcome(welcome)))
                    .await;
                return sent.ok().map(|()| (hello, role));
            }
        },
        Ok(other) => Message::Error(ErrorMessage {
            status: StatusCode::BAD_REQUEST,
            message: format!("expected Hello as the first frame, got {}", other.kind()),
        }),
        Err(DecodeError::Io(_)) => return None,
        Err(error) => report(&error),
    };
    tracing::debug!(?refusal, "handshake refused");
    let _ = timeout(
        Duration::from_secs(1),
        framed.send(Frame::connection(refusal)),
    )
    .await;
    None
}

/// The frame that tells a peer why its input was refused: `VersionMismatch`
/// for a version this server does not speak, an `Error` otherwise.
pub(crate) fn report(error: &DecodeError) -> Message {
    match error {
        DecodeError::UnsupportedVersion { .. } => Message::VersionMismatch(VersionMismatch {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: MAX_PROTOCOL_VERSION,
        }),
        error => Message::Error(ErrorMessage {
            status: error.status(),
            message: error.to_string(),
        }),
    }
}

fn own_limits(config: &ServerConfig) -> Limits {
    Limits {
        max_frame_len: config.max_frame_len,
        max_streams: config.max_in_flight,
        max_payload_len: config.max_payload_len,
        idle_timeout_ms: config
            .idle_timeout
            .map(|idle| u32::try_from(idle.as_millis()).unwrap_or(u32::MAX).max(1)),
    }
}
