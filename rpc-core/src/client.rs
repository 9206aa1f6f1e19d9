//! The client: one multiplexed connection shared by every clone, with
//! deadlines, cancellation, reconnection and retries.

mod connection;
mod in_flight;
mod reader;
mod routes;
mod shared;
#[cfg(test)]
mod tests;

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tracing::Instrument;

use crate::error::{RemoteError, RpcError};
use crate::wire::{
    ContentHash, DEFAULT_MAX_FRAME_LEN, DEFAULT_MAX_PAYLOAD_LEN, DEFAULT_MAX_STREAMS, Message,
    OfferProgram, Payload, RequestData, SendData, SendProgram, StatusCode,
};
use crate::wire::{DESCRIBE_METHOD, FunctionInfo};
use connection::Connection;
pub use routes::MAX_ROUTES_PER_ADDRESS;

/// The default for [`ClientConfig::connect_timeout`]: 5 seconds.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default for [`ClientConfig::timeout`]: 30 seconds.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The default for [`ClientConfig::max_retries`]: 3.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// The default for [`ClientConfig::keepalive`]: 15 seconds.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(15);

/// Settings of a [`Client`]. Every field has a safe default.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The name announced to servers. The default is `"rpc-client"`.
    pub name: String,
    /// The shared-secret token presented in the handshake. The default is
    /// none (anonymous).
    pub token: Option<String>,
    /// How long connecting and the handshake may take. The default is
    /// [`DEFAULT_CONNECT_TIMEOUT`], 5 s.
    pub connect_timeout: Duration,
    /// The deadline of calls that set none themselves; `None` waits forever.
    /// The default is [`DEFAULT_CALL_TIMEOUT`], 30 s.
    pub timeout: Option<Duration>,
    /// How many times an idempotent call is retried after the connection
    /// failed under it. The default is [`DEFAULT_MAX_RETRIES`], 3.
    pub max_retries: u32,
    /// The first wait before reconnecting; it doubles after each failure up
    /// to [`max_backoff`](Self::max_backoff). A call reconnects until its
    /// deadline; one without a deadline gives up after
    /// [`max_retries`](Self::max_retries) + 1 failed attempts. The default is
    /// 50 ms.
    pub initial_backoff: Duration,
    /// The longest wait between reconnection attempts. The default is 2 s.
    pub max_backoff: Duration,
    /// At most this many reconnection attempts for one call after the first
    /// connection attempt failed, even if its deadline leaves time for more.
    /// `None` (the default) reconnects until the deadline. A [`Pool`]
    /// sets `Some(0)` unless told otherwise: it fails over to another server
    /// instead of waiting for this one.
    ///
    /// [`Pool`]: crate::Pool
    pub max_reconnects: Option<u32>,
    /// A ping is sent after this long without traffic; a server silent for
    /// twice as long is considered gone. `None` disables keepalive. The
    /// default is [`DEFAULT_KEEPALIVE`], 15 s.
    pub keepalive: Option<Duration>,
    /// The largest frame this client accepts, at least 16 KiB (smaller values
    /// are raised). The default is [`DEFAULT_MAX_FRAME_LEN`], 1 MiB.
    pub max_frame_len: u32,
    /// The largest response payload this client accepts. The default is
    /// [`DEFAULT_MAX_PAYLOAD_LEN`], 64 MiB.
    pub max_payload_len: u64,
    /// How deeply nested a result may be: one nested deeper (which would
    /// overflow the stack decoding it) fails the call with
    /// [`RpcError::Internal`] instead. The default is
    /// [`DEFAULT_MAX_DECODE_DEPTH`](crate::wire::DEFAULT_MAX_DECODE_DEPTH), 128.
    pub max_decode_depth: u32,
    /// Connect with TLS. The default is none: plain TCP, except to
    /// addresses written `tls://host:port`, which fail without it.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::ClientTls>,
    /// Send the [`token`](Self::token) even over plain TCP to an address
    /// outside loopback, where anyone on the path can read it and then act
    /// as this client. The default, `false`, refuses such a connection with
    /// [`RpcError::Tls`]: use TLS instead, or set this on a network you
    /// trust.
    pub insecure_plaintext: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            name: "rpc-client".into(),
            token: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: Some(DEFAULT_CALL_TIMEOUT),
            max_retries: DEFAULT_MAX_RETRIES,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            max_reconnects: None,
            keepalive: Some(DEFAULT_KEEPALIVE),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_payload_len: DEFAULT_MAX_PAYLOAD_LEN,
            max_decode_depth: crate::wire::DEFAULT_MAX_DECODE_DEPTH,
            #[cfg(feature = "tls")]
            tls: None,
            insecure_plaintext: false,
        }
    }
}

/// Options of one call.
///
/// ```
/// use std::time::Duration;
/// use rpc_core::CallOptions;
///
/// let options = CallOptions::new().timeout(Duration::from_millis(250)).idempotent();
/// # drop(options);
/// ```
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    timeout: Option<Duration>,
    idempotent: bool,
    schema_hash: Option<u64>,
}

impl CallOptions {
    /// The client's defaults: its configured timeout, not idempotent, no
    /// schema check.
    pub fn new() -> CallOptions {
        CallOptions::default()
    }

    /// The call's deadline, counted from now. It is sent to the server, which
    /// stops working on the call when it passes.
    pub fn timeout(mut self, timeout: Duration) -> CallOptions {
        self.timeout = Some(timeout);
        self
    }

    /// Declares the call safe to retry: if the connection fails under it, it
    /// is sent again (up to [`ClientConfig::max_retries`] times, within its
    /// deadline) with the same idempotency key, and the server runs it at
    /// most once.
    pub fn idempotent(mut self) -> CallOptions {
        self.idempotent = true;
        self
    }

    /// The schema hash of the function as this caller was built; a server
    /// registered with another hash answers `409 incompatible`.
    pub fn schema_hash(mut self, hash: u64) -> CallOptions {
        self.schema_hash = Some(hash);
        self
    }
}

/// A client of one server address. Cheap to clone; every clone shares one
/// connection, on which any number of calls from any number of tasks are in
/// flight at once.
///
/// The connection is opened on the first call and reopened, with
/// exponential backoff, after it fails. Calls in flight when it fails end
/// with [`RpcError::Unavailable`], except idempotent ones, which are retried.
///
/// # Cancellation
///
/// Dropping a call's future before it completes sends `Cancel` to the
/// server, which aborts the function.
///
/// # Backpressure
///
/// Frames wait in a bounded queue (1024 frames) for the connection's writer.
/// When the server reads slowly the queue fills and new calls wait to be
/// queued, so a slow server slows its callers instead of growing memory.
/// The server in turn answers calls beyond its in-flight limit with
/// [`RpcError::ResourceExhausted`] rather than queueing them.
///
/// ```no_run
/// use rpc_core::Client;
///
/// # async fn run() -> Result<(), rpc_core::RpcError> {
/// let client = Client::new("127.0.0.1:7000");
/// let greeting: String = client.call("greet", &"world").await?;
/// println!("{greeting}");
/// # Ok(())
/// # }
/// # drop(run());
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    addr: String,
    config: ClientConfig,
    current: RwLock<Option<Arc<Connection>>>,
    /// Serialises reconnection attempts.
    connecting: tokio::sync::Mutex<()>,
    /// With `key_counter`, makes idempotency keys unique.
    key_seed: u64,
    key_counter: AtomicU64,
}

impl Client {
    /// A client of the server at `addr` with the default configuration.
    /// Nothing connects until the first call.
    ///
    /// `addr` is `host:port`; `tls://host:port` to require TLS;
    /// `worker@host:port` for a worker reached through the supernode at
    /// `host:port` (PROTOCOL.md section 8); or up to [`MAX_ROUTES_PER_ADDRESS`] of
    /// these separated by commas, several routes to one server, of which
    /// the fastest is used ([`route`](Self::route)).
    pub fn new(addr: impl Into<String>) -> Client {
        Client::with_config(addr, ClientConfig::default())
    }

    /// A client of the server at `addr` with `config`.
    pub fn with_config(addr: impl Into<String>, config: ClientConfig) -> Client {
        Client {
            inner: Arc::new(Inner {
                addr: addr.into(),
                config,
                current: RwLock::new(None),
                connecting: tokio::sync::Mutex::new(()),
                key_seed: RandomState::new().hash_one(std::process::id()),
                key_counter: AtomicU64::new(0),
            }),
        }
    }

    /// Checks that the server answers: connects if needed, sends a `Ping`
    /// and waits for its `Pong`, within the connect timeout plus the default
    /// call timeout. Returns the round trip.
    ///
    /// # Errors
    ///
    /// [`RpcError::Unavailable`] if the server cannot be reached or does
    /// not answer in time.
    pub async fn ping(&self) -> Result<Duration, RpcError> {
        let config = &self.inner.config;
        let started = Instant::now();
        let deadline = started + config.connect_timeout;
        let connection = self.connection(Some(deadline)).await?;
        let wait = config.timeout.unwrap_or(DEFAULT_CALL_TIMEOUT);
        match tokio::time::timeout(wait, connection.ping()).await {
            Ok(Ok(())) => Ok(started.elapsed()),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(RpcError::Unavailable(format!(
                "{} did not answer a ping within {wait:?}",
                self.inner.addr
            ))),
        }
    }

    /// The address this client connects to.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// The route its connection goes over now, if it has one open. For an
    /// address with several routes (`w1@10.0.0.1:7000,w1@10.0.0.2:7000`)
    /// that is the one whose handshake completed first when it connected:
    /// every route is dialled at once, and the fastest kept. A lost
    /// connection races them all again.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), rpc_core::RpcError> {
    /// let client = rpc_core::Client::new("w1@10.0.0.1:7000,w1@10.0.0.2:7000");
    /// client.ping().await?;
    /// println!("reached w1 through {:?}", client.route());
    /// # Ok(())
    /// # }
    /// # drop(run());
    /// ```
    pub fn route(&self) -> Option<String> {
        self.live_connection()
            .map(|connection| connection.route().to_owned())
    }

    /// Calls `method` with `args` (a tuple for several arguments) and decodes
    /// its result. A function's own error arrives as
    /// [`RpcError::Application`] with the error still encoded; use
    /// [`call_with`](Self::call_with) to decode it too.
    ///
    /// # Errors
    ///
    /// An [`RpcError`] saying why the call failed.
    pub async fn call<A, R>(&self, method: &str, args: &A) -> Result<R, RpcError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let args = encode_args(args)?;
        let result = self.call_raw(method, args, CallOptions::new()).await?;
        self.decode(&result)
    }

    /// Calls `method` with options, decoding a function's own error as `E`.
    ///
    /// # Errors
    ///
    /// An [`RpcError`] saying why the call failed.
    pub async fn call_with<A, R, E>(
        &self,
        method: &str,
        args: &A,
        options: CallOptions,
    ) -> Result<R, RpcError<E>>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
        E: DeserializeOwned,
    {
        let args = encode_args(args)?;
        let result = self.call_raw(method, args, options).await;
        let bytes = result.map_err(|error| {
            error.map_application(|RemoteError(bytes)| {
                match crate::wire::decode_limited(&bytes, self.inner.config.max_decode_depth) {
                    Ok(error) => RpcError::Application(error),
                    Err(error) => {
                        RpcError::Internal(format!("the function's error did not decode: {error}"))
                    }
                }
            })
        })?;
        self.decode(&bytes)
    }

    /// Calls `method` with already-encoded arguments and returns the encoded
    /// result.
    ///
    /// # Errors
    ///
    /// An [`RpcError`] saying why the call failed.
    pub async fn call_raw(
        &self,
        method: &str,
        args: Bytes,
        options: CallOptions,
    ) -> Result<Bytes, RpcError> {
        let timeout = options.timeout.or(self.inner.config.timeout);
        let mut now = Instant::now();
        // A timeout too large to represent means no deadline.
        let deadline = timeout.and_then(|timeout| now.checked_add(timeout));
        let key = options.idempotent.then(|| self.new_key());
        let mut retries = 0;
        loop {
            // The clock is read again only if time may have passed: after a
            // failed attempt, or while connecting.
            let connection = match self.live_connection() {
                Some(connection) if retries == 0 => connection,
                _ => {
                    let connection = self.connection(deadline).await?;
                    now = Instant::now();
                    connection
                }
            };
            let span =
                tracing::debug_span!("call", method, retries, status = tracing::field::Empty);
            let attempt = connection.call(
                method,
                args.clone(),
                (now, deadline),
                key,
                options.schema_hash,
            );
            // Without a subscriber listening, the span costs only its check.
            let result = if span.is_disabled() {
                attempt.await
            } else {
                attempt.instrument(span.clone()).await
            };
            let status = match &result {
                Ok(_) => StatusCode::OK,
                Err(failed) => failed.error.status(),
            };
            span.record("status", status.as_u16());
            match result {
                Ok(result) => return Ok(result),
                Err(failed) if self.may_retry(&failed, key.is_some(), retries) => {
                    retries += 1;
                    tracing::debug!(method, error = %failed.error, retries, "retrying");
                }
                Err(failed) => return Err(failed.error),
            }
        }
    }

    /// Stores `value` under `name` in the server's data store, replacing any
    /// value of that name. Values larger than a frame travel chunked.
    ///
    /// # Errors
    ///
    /// [`RpcError::ResourceExhausted`] if the store or the payload limit is
    /// full, or another [`RpcError`] if the request failed.
    pub async fn send_data(&self, name: &str, value: Bytes) -> Result<(), RpcError> {
        self.request(value, |payload| {
            Message::SendData(SendData {
                name: name.to_owned(),
                payload,
            })
        })
        .await
        .map(drop)
    }

    /// Fetches the value named `name` from the server's data store.
    ///
    /// # Errors
    ///
    /// [`RpcError::NotFound`] if there is none, or another [`RpcError`] if
    /// the request failed.
    pub async fn request_data(&self, name: &str) -> Result<Bytes, RpcError> {
        self.request(Bytes::new(), |_| {
            Message::RequestData(RequestData {
                name: name.to_owned(),
            })
        })
        .await
    }

    /// Ships a program to the server: offers its SHA-256 first, and sends the
    /// bytes only if the server lacks them. Returns the program's hash and
    /// whether its bytes had to be sent.
    ///
    /// # Errors
    ///
    /// [`RpcError::BadRequest`] if the server rejects the program,
    /// [`RpcError::ResourceExhausted`] if it is too large, or another
    /// [`RpcError`] if the request failed.
    pub async fn send_program(&self, program: Bytes) -> Result<(ContentHash, bool), RpcError> {
        let hash = ContentHash::of(&program);
        let sent = self.send_program_as(hash, program).await?;
        Ok((hash, sent))
    }

    /// Like [`send_program`](Client::send_program) for a program whose
    /// SHA-256 the caller already knows (hashing a large program once, not
    /// per worker). Returns whether the bytes were sent. The receiver checks
    /// the claim: bytes that do not hash to `hash` are refused.
    ///
    /// # Errors
    ///
    /// As for [`send_program`](Client::send_program).
    pub async fn send_program_as(
        &self,
        hash: ContentHash,
        program: Bytes,
    ) -> Result<bool, RpcError> {
        let len = program.len() as u64;
        let offer = self
            .request(Bytes::new(), |_| {
                Message::OfferProgram(OfferProgram { hash, len })
            })
            .await;
        match offer {
            Ok(_) => return Ok(false),
            Err(RpcError::NotFound(_)) => {}
            Err(error) => return Err(error),
        }
        self.request(program, |payload| {
            Message::SendProgram(SendProgram { hash, payload })
        })
        .await?;
        Ok(true)
    }

    /// Sends a request that is safe to repeat (data, programs), with the
    /// client's default deadline and retries, and returns the response's
    /// payload if it is `200`.
    async fn request(
        &self,
        payload: Bytes,
        build: impl Fn(Payload) -> Message,
    ) -> Result<Bytes, RpcError> {
        let deadline = self
            .inner
            .config
            .timeout
            .and_then(|timeout| Instant::now().checked_add(timeout));
        let mut retries = 0;
        loop {
            let connection = self.connection(deadline).await?;
            let reply = connection.request(payload.clone(), deadline, &build).await;
            match reply {
                Ok(reply) if reply.status == StatusCode::OK => return Ok(reply.payload),
                Ok(reply) => return Err(RpcError::from_status(reply.status, reply.message)),
                Err(failed) if self.may_retry(&failed, true, retries) => retries += 1,
                Err(failed) => return Err(failed.error),
            }
        }
    }

    /// Whether a failed attempt is tried again: when the connection failed
    /// under it and either the server never processed it or it is safe to
    /// repeat, within the retry budget.
    fn may_retry(&self, failed: &in_flight::Failed, idempotent: bool, retries: u32) -> bool {
        matches!(failed.error, RpcError::Unavailable(_))
            && (failed.unprocessed || idempotent)
            && retries < self.inner.config.max_retries
    }

    /// Lists the functions the server offers, with their schema hashes.
    ///
    /// # Errors
    ///
    /// An [`RpcError`] if the server cannot be asked.
    pub async fn describe(&self) -> Result<Vec<FunctionInfo>, RpcError> {
        self.call(DESCRIBE_METHOD, &()).await
    }

    /// The current connection, or a new one, reconnecting with backoff until
    /// `deadline`.
    async fn connection(&self, deadline: Option<Instant>) -> Result<Arc<Connection>, RpcError> {
        if let Some(connection) = self.live_connection() {
            return Ok(connection);
        }
        let _turn = self.inner.connecting.lock().await;
        if let Some(connection) = self.live_connection() {
            return Ok(connection);
        }
        let config = &self.inner.config;
        let mut backoff = config.initial_backoff;
        let mut failures = 0u32;
        loop {
            let error = match routes::open_fastest(&self.inner.addr, config).await {
                Ok(connection) => {
                    let connection = Arc::new(connection);
                    *self
                        .inner
                        .current
                        .write()
                        .unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&connection));
                    return Ok(connection);
                }
                Err(error @ RpcError::Unavailable(_)) => error,
                Err(error) => return Err(error),
            };
            // Reconnect until the deadline; without one, give up after as
            // many attempts as a call may be retried, rather than forever.
            failures += 1;
            let wake = Instant::now() + backoff;
            let out_of_time = match deadline {
                Some(deadline) => wake >= deadline,
                None => failures > config.max_retries,
            } || config.max_reconnects.is_some_and(|max| failures > max);
            if out_of_time {
                return Err(error);
            }
            tracing::debug!(addr = %self.inner.addr, %error, ?backoff, "reconnecting");
            tokio::time::sleep_until(wake).await;
            backoff = (backoff * 2).min(config.max_backoff);
        }
    }

    fn live_connection(&self) -> Option<Arc<Connection>> {
        let current = self
            .inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        current
            .as_ref()
            .filter(|connection| connection.is_open())
            .cloned()
    }

    /// Decodes a result, nested at most as deep as the configuration allows.
    pub(crate) fn decode<R: DeserializeOwned, E>(&self, bytes: &[u8]) -> Result<R, RpcError<E>> {
        crate::wire::decode_limited(bytes, self.inner.config.max_decode_depth)
            .map_err(|error| RpcError::Internal(format!("the result did not decode: {error}")))
    }

    fn new_key(&self) -> [u8; 16] {
        let count = self.inner.key_counter.fetch_add(1, Ordering::Relaxed);
        let mut key = [0u8; 16];
        let (seed, counter) = key.split_at_mut(8);
        seed.copy_from_slice(&self.inner.key_seed.to_le_bytes());
        counter.copy_from_slice(&count.to_le_bytes());
        key
    }
}

fn encode_args<A: Serialize + ?Sized, E>(args: &A) -> Result<Bytes, RpcError<E>> {
    crate::wire::encode_value(args).map_err(|error| {
        RpcError::BadRequest(format!("the arguments could not be encoded: {error}"))
    })
}

/// The limits a client announces.
pub(crate) fn announced_limits(config: &ClientConfig) -> crate::wire::Limits {
    crate::wire::Limits {
        max_frame_len: config.max_frame_len.max(crate::wire::MIN_MAX_FRAME_LEN),
        max_streams: DEFAULT_MAX_STREAMS,
        max_payload_len: config.max_payload_len,
        idle_timeout_ms: None,
    }
}
