//! One server connection: the handshake, then a session that reads frames,
//! starts a task per call, and answers on the connection's writer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::{Instant, timeout};
use tokio_util::codec::Framed;

use crate::conn::{self, Io};
use crate::server::ServerConfig;
use crate::server::auth::Verdict;
use crate::server::registry::PeerInfo;
use crate::server::secure::{Certified, Secured};
use crate::server::session::Session;
use crate::server::shared::ServerState;
use crate::wire::DecodeError;
use crate::wire::{
    ErrorMessage, Frame, FrameCodec, Hello, Limits, MIN_MAX_FRAME_LEN, Message, StatusCode, Welcome,
};

/// A connection whose handshake succeeded: its framed transport, who the
/// peer is, and the connection place it holds.
pub(crate) struct Opened {
    framed: Framed<Box<dyn Io>, FrameCodec>,
    peer: Arc<PeerInfo>,
    limits: Limits,
    _place: OwnedSemaphorePermit,
}

/// Performs the handshake on a new connection: reads the `Hello` (held to
/// the handshake's frame limit, within the handshake timeout), checks
/// version, token and limits, takes a connection place, and welcomes the
/// peer. `None` if the connection was refused or failed.
pub(crate) async fn handshake(
    secured: Secured,
    addr: Option<SocketAddr>,
    shared: &ServerState,
) -> Option<Opened> {
    let Secured { io, certified } = secured;
    // Until the peer has authenticated, no frame larger than a handshake
    // frame is buffered, whatever its kind.
    let mut codec = FrameCodec::new();
    codec.set_max_frame_len(MIN_MAX_FRAME_LEN);
    let mut framed = Framed::new(io, codec);
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
        }) => match admit(&hello, addr, certified.as_ref(), shared) {
            Ok((peer, place)) => {
                let welcome = Welcome {
                    peer_name: shared.config.name.clone(),
                    role: shared.role,
                    access_role: peer.role.clone(),
                    limits: own_limits(&shared.config),
                    server_time_ms: conn::unix_time_ms(),
                };
                framed
                    .send(Frame::connection(Message::Welcome(welcome)))
                    .await
                    .ok()?;
                tracing::debug!(peer_name = %peer.name, role = ?peer.role, "handshake done");
                let codec = framed.codec_mut();
                codec.set_max_frame_len(shared.config.max_frame_len);
                codec.set_peer_max_frame_len(hello.limits.max_frame_len);
                return Some(Opened {
                    framed,
                    peer,
                    limits: hello.limits,
                    _place: place,
                });
            }
            Err(refusal) => refusal,
        },
        Ok(other) => Message::Error(ErrorMessage {
            status: StatusCode::BAD_REQUEST,
            message: format!("expected Hello as the first frame, got {}", other.kind()),
        }),
        Err(DecodeError::Io(_)) => return None,
        Err(error) => error.report(),
    };
    tracing::debug!(?refusal, "handshake refused");
    let _ = timeout(
        Duration::from_secs(1),
        framed.send(Frame::connection(refusal)),
    )
    .await;
    None
}

/// Checks a `Hello`'s token and takes a connection place for it: who the
/// peer is, or the message that refuses it.
fn admit(
    hello: &Hello,
    addr: Option<SocketAddr>,
    certified: Option<&Certified>,
    shared: &ServerState,
) -> Result<(Arc<PeerInfo>, OwnedSemaphorePermit), Message> {
    let verdict = shared.tokens.check(hello.token.as_deref());
    let (role, granted, principal) = match (verdict, certified) {
        // A client certificate stands in for a token; a token presented
        // with it must still be valid, and adds its role.
        (Verdict::Refused, Some(_)) if hello.token.is_none() => certificate_grant(certified),
        (Verdict::Refused, _) => {
            return Err(Message::Error(ErrorMessage {
                status: StatusCode::FORBIDDEN,
                message: "the token is missing or not valid".into(),
            }));
        }
        (Verdict::Anonymous, Some(_)) => certificate_grant(certified),
        (Verdict::Anonymous, None) => (None, Arc::from(shared.access.anonymous.clone()), [0; 8]),
        (Verdict::Role { role, principal }, certified) => {
            let mut granted = vec![role.clone()];
            granted.extend(certificate_grant(certified).1.iter().cloned());
            (Some(role), Arc::from(granted), principal)
        }
    };
    let Some(place) = shared.admission.establish() else {
        return Err(Message::Error(ErrorMessage {
            status: StatusCode::UNAVAILABLE,
            message: "the server is at its connection limit; try again later".into(),
        }));
    };
    let peer = PeerInfo {
        name: hello.peer_name.clone(),
        certified_name: certified_name(certified),
        addr,
        role,
        granted,
        principal,
        max_decode_depth: shared.config.max_decode_depth,
    };
    Ok((Arc::new(peer), place))
}

/// What a client certificate grants: its first role (as the peer's role),
/// all its roles, and its holder's principal.
#[cfg(feature = "tls")]
fn certificate_grant(certified: Option<&Certified>) -> (Option<String>, Arc<[String]>, [u8; 8]) {
    match certified {
        Some(peer) => (
            peer.roles.first().cloned(),
            Arc::from(peer.roles.clone()),
            peer.principal,
        ),
        None => (None, Arc::from([]), [0; 8]),
    }
}

/// The common name of the peer's client certificate, if it showed one.
#[cfg(feature = "tls")]
fn certified_name(certified: Option<&Certified>) -> Option<String> {
    certified.and_then(|peer| peer.name.clone())
}

/// Without the `tls` feature no peer has a certificate.
#[cfg(not(feature = "tls"))]
fn certified_name(certified: Option<&Certified>) -> Option<String> {
    certified.map(|never| match *never {})
}

/// Without the `tls` feature no peer has a certificate.
#[cfg(not(feature = "tls"))]
fn certificate_grant(certified: Option<&Certified>) -> (Option<String>, Arc<[String]>, [u8; 8]) {
    match certified {
        Some(never) => match *never {},
        None => (None, Arc::from([]), [0; 8]),
    }
}

/// Serves a connection after its handshake until it closes or the server
/// shuts down.
pub(crate) async fn serve(
    opened: Opened,
    shared: Arc<ServerState>,
    shutdown: watch::Receiver<Option<Instant>>,
) {
    let Opened {
        framed,
        peer,
        limits,
        _place,
    } = opened;
    let conn::Split {
        reader,
        outbox,
        writer,
    } = conn::split(framed, |_: &mut Vec<()>| {});
    let (session, done) = Session::new(shared, peer, limits, outbox);
    session.run(reader, shutdown, done).await;
    // The session dropped its outbox; the writer flushes and closes.
    let _ = writer.await;
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
