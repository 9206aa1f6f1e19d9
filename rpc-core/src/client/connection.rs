//! One client connection: the handshake, the table of calls in flight, and
//! sending requests; its reader task is in [`super::reader`].

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout};
use tokio_util::codec::Framed;

use crate::client::in_flight::{Failed, PendingCall};
use crate::client::shared::{ConnectionState, Outbox};
use crate::client::{ClientConfig, announced_limits};
use crate::conn::{self, Reply};
use crate::error::{RemoteError, RpcError};
use crate::transfer::{ChunkSender, chunk_len_for};
use crate::wire::{
    Call, Frame, FrameCodec, Hello, Limits, Message, Payload, PeerRole, Ping, StatusCode,
};

/// An open connection and its calls in flight.
#[derive(Debug)]
pub(super) struct Connection {
    outbox: Outbox,
    shared: Arc<ConnectionState>,
    /// The next stream id to open: odd, increasing. Taken under the
    /// outbox's lock, so ids reach the wire in order.
    next_id: AtomicU64,
    chunk_len: usize,
    server_limits: Limits,
    /// Requests on this connection not yet answered.
    outstanding: AtomicUsize,
    /// The route it went over: the whole address, or the one of its routes
    /// that answered first.
    route: String,
}

impl Connection {
    /// Connects to `addr`, one route (`host:port`, `tls://host:port` to
    /// require TLS, `worker@host:port` through a supernode), and performs
    /// the handshake.
    pub(super) async fn open(addr: &str, config: &ClientConfig) -> Result<Connection, RpcError> {
        let (dial, tls_required) = match addr.strip_prefix(TLS_SCHEME) {
            Some(rest) => (rest, true),
            None => (addr, false),
        };
        // `worker@host:port`: the worker, through its supernode.
        let (route, dial) = match crate::relay::split_route(dial) {
            Some((worker, supernode)) => (Some(worker), supernode),
            None => (None, dial),
        };
        let unavailable = |what: &str, error: &dyn std::fmt::Display| {
            RpcError::Unavailable(format!("could not {what} {dial}: {error}"))
        };
        let uses_tls = uses_tls(config);
        if tls_required && !uses_tls {
            return Err(RpcError::Tls(format!(
                "{addr} asks for TLS but this client has no TLS configuration: give it one \
                 (--tls, or ClientConfig::tls)"
            )));
        }
        let connected = timeout(config.connect_timeout, async {
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(dial).await?.collect();
            // Checked before connecting: nothing at all goes to a host the
            // token must not be sent to.
            let guarded = !uses_tls && config.token.is_some() && !config.insecure_plaintext;
            if let Some(remote) = addrs
                .iter()
                .find(|a| guarded && !a.ip().to_canonical().is_loopback())
            {
                return Ok(Err(RpcError::Tls(format!(
                    "refusing to send the token in plaintext to {dial} ({}), which is not this \
                     machine: anyone on the path could read it and use it; connect with TLS \
                     (--tls or a tls:// address), or, on a network you trust, allow it with \
                     --insecure-plaintext",
                    remote.ip()
                ))));
            }
            TcpStream::connect(addrs.as_slice()).await.map(Ok)
        })
        .await;
        let socket = match connected {
            Ok(Ok(Ok(socket))) => socket,
            Ok(Ok(Err(refused))) => return Err(refused),
            Ok(Err(error)) => return Err(unavailable("connect to", &error)),
            Err(_) => return Err(unavailable("connect to", &"timed out")),
        };
        let _ = socket.set_nodelay(true);
        let mut socket = socket;
        // Through a supernode, TLS and the handshake are the worker's, and
        // its certificate is checked against its name.
        let secured_name = match route {
            Some(worker) => {
                timeout(
                    config.connect_timeout,
                    crate::relay::request_route(&mut socket, worker),
                )
                .await
                .map_err(|_| unavailable("be relayed by", &"timed out"))??;
                worker
            }
            None => dial,
        };
        let io: Box<dyn conn::Io> = secure(socket, secured_name, config).await?;
        Connection::handshake(io, addr, dial, config).await
    }

    /// Performs the handshake over `io`, already connected (and secured)
    /// to `addr`, and starts the connection's reader.
    pub(super) async fn handshake(
        io: Box<dyn conn::Io>,
        addr: &str,
        dial: &str,
        config: &ClientConfig,
    ) -> Result<Connection, RpcError> {
        let unavailable = |what: &str, error: &dyn std::fmt::Display| {
            RpcError::Unavailable(format!("could not {what} {dial}: {error}"))
        };
        // Until the server has answered the handshake, no frame larger than
        // a handshake frame is buffered.
        let mut codec = FrameCodec::new();
        codec.set_max_frame_len(crate::wire::MIN_MAX_FRAME_LEN);
        let mut framed = Framed::new(io, codec);
        let hello = Hello {
            peer_name: config.name.clone(),
            role: PeerRole::Client,
            token: config.token.clone(),
            limits: announced_limits(config),
        };
        let answer = timeout(config.connect_timeout, async {
            framed
                .send(Frame::connection(Message::Hello(hello)))
                .await?;
            Ok::<_, std::io::Error>(framed.next().await)
        })
        .await;
        let welcome = match answer {
            Err(_) => return Err(unavailable("complete the handshake with", &"timed out")),
            Ok(Err(error)) => {
                return Err(tls_failure(&error, dial, config, false)
                    .unwrap_or_else(|| unavailable("send the handshake to", &error)));
            }
            Ok(Ok(None)) => return Err(unavailable("complete the handshake with", &"closed")),
            Ok(Ok(Some(Err(crate::wire::DecodeError::Io(error))))) => {
                return Err(tls_failure(&error, dial, config, false)
                    .unwrap_or_else(|| unavailable("read the handshake of", &error)));
            }
            Ok(Ok(Some(Err(error)))) => return Err(unavailable("read the handshake of", &error)),
            Ok(Ok(Some(Ok(frame)))) => match frame.message {
                Message::Welcome(welcome) => welcome,
                Message::Error(error) if error.status == StatusCode::TLS_REQUIRED => {
                    return Err(RpcError::Tls(error.message));
                }
                Message::Error(error) => {
                    return Err(RpcError::from_status(error.status, error.message));
                }
                Message::VersionMismatch(mismatch) => {
                    return Err(RpcError::Unavailable(format!(
                        "{addr} speaks protocol versions {}..={}, not {}",
                        mismatch.min_version,
                        mismatch.max_version,
                        crate::wire::PROTOCOL_VERSION
                    )));
                }
                other => {
                    return Err(RpcError::Internal(format!(
                        "{addr} answered the handshake with {}",
                        other.kind()
                    )));
                }
            },
        };
        let codec = framed.codec_mut();
        codec.set_max_frame_len(config.max_frame_len);
        codec.set_peer_max_frame_len(welcome.limits.max_frame_len);
        let shared = Arc::new(ConnectionState::new());
        let registrar = Arc::clone(&shared);
        let conn::Split { reader, outbox, .. } = conn::split(framed, move |calls| {
            registrar.register(calls);
        });
        let keepalive = config.keepalive;
        let max_payload_len = config.max_payload_len;
        tokio::spawn(super::reader::read_loop(
            reader,
            Arc::clone(&shared),
            outbox.clone(),
            keepalive,
            max_payload_len,
        ));
        tracing::debug!(%addr, server = %welcome.peer_name, "connected");
        Ok(Connection {
            outbox,
            shared,
            next_id: AtomicU64::new(1),
            outstanding: AtomicUsize::new(0),
            chunk_len: chunk_len_for(welcome.limits.max_frame_len),
            server_limits: welcome.limits,
            route: addr.to_owned(),
        })
    }

    /// Sends a ping and waits for its pong (or for the connection to end,
    /// which drops the waiter).
    pub(super) async fn ping(&self) -> Result<(), RpcError> {
        let nonce = self.shared.next_nonce();
        let (sender, receiver) = oneshot::channel();
        self.shared
            .pings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(nonce, sender);
        let sent = self
            .outbox
            .send(Frame::connection(Message::Ping(Ping { nonce })))
            .await;
        let answered = match sent {
            Ok(()) => receiver.await.is_ok(),
            Err(_) => false,
        };
        self.shared
            .pings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&nonce);
        if answered {
            Ok(())
        } else {
            Err(RpcError::Unavailable(
                "the connection closed before the pong".into(),
            ))
        }
    }

    pub(super) fn is_open(&self) -> bool {
        self.shared.is_open()
    }

    /// The route it went over (one address, without other routes).
    pub(super) fn route(&self) -> &str {
        &self.route
    }

    /// Makes one attempt at a call on this connection. `now` is a recent
    /// reading of the clock, from which the time left until `deadline` is
    /// told to the server.
    pub(super) async fn call(
        &self,
        method: &str,
        args: Bytes,
        (now, deadline): (Instant, Option<Instant>),
        idempotency_key: Option<[u8; 16]>,
        schema_hash: Option<u64>,
    ) -> Result<Bytes, Failed> {
        let timeout_ms = deadline.map(|deadline| {
            let left = deadline.saturating_duration_since(now);
            u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
        });
        let reply = self
            .request(args, deadline, |payload| {
                Message::Call(Call {
                    method: method.to_owned(),
                    timeout_ms,
                    idempotency_key,
                    schema_hash,
                    payload,
                })
            })
            .await?;
        match reply.status {
            StatusCode::OK => Ok(reply.payload),
            StatusCode::APPLICATION_ERROR => Err(Failed::processed(RpcError::Application(
                RemoteError(reply.payload),
            ))),
            status => Err(Failed::processed(RpcError::from_status(
                status,
                reply.message,
            ))),
        }
    }

    /// Sends the request `build` makes around `payload` on a new stream and
    /// waits for its response until `deadline`.
    pub(super) async fn request(
        &self,
        payload: Bytes,
        deadline: Option<Instant>,
        build: impl FnOnce(Payload) -> Message,
    ) -> Result<Reply, Failed> {
        if payload.len() as u64 > self.server_limits.max_payload_len {
            return Err(Failed::processed(RpcError::ResourceExhausted(format!(
                "a payload of {} bytes exceeds the server's limit of {}",
                payload.len(),
                self.server_limits.max_payload_len
            ))));
        }
        let closed = || Failed {
            error: RpcError::Unavailable("the connection is closed".into()),
            // A request the server cannot have seen whole is unprocessed.
            unprocessed: true,
        };
        let chunk_len = self.chunk_len;
        let (first, chunked) = if payload.len() <= chunk_len {
            (build(Payload::Inline(payload)), None)
        } else {
            let len = payload.len() as u64;
            (build(Payload::Chunked { len }), Some(payload))
        };
        // Stream ids must reach the server in increasing order, so the id is
        // taken and the opening frame queued in one step, under the outbox's
        // lock; the call is in flight before its frame can leave.
        let (waiter, answer) = oneshot::channel();
        let (_outstanding, alone) = Outstanding::enter(&self.outstanding);
        let open = move || {
            let id = self.next_id.fetch_add(2, Ordering::Relaxed);
            let registration = PendingCall {
                id,
                waiter,
                deadline,
            };
            (Frame::new(id, first), Some(registration), id)
        };
        // A call on an idle connection goes out from this task at once; with
        // others under way, the writer task gathers it with theirs.
        let sent = if alone {
            self.outbox.send_registered_alone(open)
        } else {
            self.outbox.send_registered(open)
        };
        let id = sent.await.map_err(|_| closed())?;
        let mut guard = CancelStreamOnDrop {
            id,
            answer: Some(answer),
            shared: &self.shared,
            outbox: &self.outbox,
        };
        if let Some(payload) = chunked {
            for frame in ChunkSender::frames(id, payload, chunk_len) {
                if self.outbox.send(frame).await.is_err() {
                    guard.forget();
                    return Err(closed());
                }
            }
        }
        // The reader answers `DeadlineExceeded` when the deadline passes, and
        // cancels the request on the server.
        match guard.answer().await {
            Ok(reply) => reply,
            Err(_) => Err(Failed::processed(RpcError::Unavailable(
                "the connection was lost".into(),
            ))),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // No call can use the connection any more: end its reader, which
        // lets the writer flush and close.
        self.shared.mark_dropped();
    }
}

/// The prefix of addresses that require TLS.
pub(super) const TLS_SCHEME: &str = "tls://";

/// Whether connections of `config` use TLS.
fn uses_tls(config: &ClientConfig) -> bool {
    #[cfg(feature = "tls")]
    return config.tls.is_some();
    #[cfg(not(feature = "tls"))]
    {
        let _ = config;
        false
    }
}

/// Wraps the socket in TLS if the configuration asks for it; a failure of
/// the TLS handshake says what is wrong and what to do.
#[cfg(feature = "tls")]
async fn secure(
    socket: TcpStream,
    dial: &str,
    config: &ClientConfig,
) -> Result<Box<dyn conn::Io>, RpcError> {
    let Some(tls) = &config.tls else {
        return Ok(Box::new(socket));
    };
    let name = tls.name_for(dial).map_err(RpcError::Tls)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config));
    let socket = tokio::io::BufReader::with_capacity(crate::tls::SOCKET_READ_BUFFER, socket);
    match timeout(config.connect_timeout, connector.connect(name, socket)).await {
        Ok(Ok(stream)) => Ok(Box::new(stream)),
        Ok(Err(error)) => Err(tls_failure(&error, dial, config, true).unwrap_or_else(|| {
            RpcError::Unavailable(format!("could not set up TLS with {dial}: {error}"))
        })),
        Err(_) => Err(RpcError::Unavailable(format!(
            "could not set up TLS with {dial}: timed out"
        ))),
    }
}

#[cfg(not(feature = "tls"))]
async fn secure(
    socket: TcpStream,
    _: &str,
    _: &ClientConfig,
) -> Result<Box<dyn conn::Io>, RpcError> {
    Ok(Box::new(socket))
}

/// The error for a TLS failure on a connection of `config` to `dial`;
/// `None` if the connection has no TLS or `error` is not about TLS.
#[cfg(feature = "tls")]
fn tls_failure(
    error: &std::io::Error,
    dial: &str,
    config: &ClientConfig,
    in_handshake: bool,
) -> Option<RpcError> {
    let tls = config.tls.as_ref()?;
    let name = tls
        .server_name
        .as_deref()
        .unwrap_or_else(|| crate::tls::host_of(dial));
    crate::tls::explain::client_failure(error, dial, name, in_handshake).map(RpcError::Tls)
}

#[cfg(not(feature = "tls"))]
fn tls_failure(_: &std::io::Error, _: &str, _: &ClientConfig, _: bool) -> Option<RpcError> {
    None
}

/// Counts a request as outstanding on its connection while it lives.
struct Outstanding<'a>(&'a AtomicUsize);

impl<'a> Outstanding<'a> {
    /// Counts one more request; says whether it is the only one.
    fn enter(count: &'a AtomicUsize) -> (Outstanding<'a>, bool) {
        let alone = count.fetch_add(1, Ordering::Relaxed) == 0;
        (Outstanding(count), alone)
    }
}

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits for a call's answer, and cancels the call on the server if its
/// future is dropped before the answer came.
struct CancelStreamOnDrop<'a> {
    id: u64,
    /// `None` once the answer came or the call was forgotten.
    answer: Option<oneshot::Receiver<Result<Reply, Failed>>>,
    shared: &'a ConnectionState,
    outbox: &'a Outbox,
}

impl CancelStreamOnDrop<'_> {
    /// Waits for the call's answer; `Err` if the connection dropped the
    /// call without one.
    async fn answer(&mut self) -> Result<Result<Reply, Failed>, oneshot::error::RecvError> {
        let Some(answer) = self.answer.as_mut() else {
            return Ok(Err(Failed::processed(RpcError::Unavailable(
                "the call was abandoned".into(),
            ))));
        };
        let answer = answer.await;
        self.answer = None;
        answer
    }

    /// Gives the call up without telling the server.
    fn forget(&mut self) {
        self.answer = None;
        self.shared.take(self.id);
    }
}

impl Drop for CancelStreamOnDrop<'_> {
    fn drop(&mut self) {
        let Some(answer) = self.answer.take() else {
            return;
        };
        // The answer goes first: a registration the writer has not handed
        // over yet is then left out (see `InFlight::register`), and one it
        // has is taken here.
        drop(answer);
        self.shared.take(self.id);
        let _ = self.outbox.send_now(&Frame::new(self.id, Message::Cancel));
    }
}
