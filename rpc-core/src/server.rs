//! The server: hosts named functions, a data store and a program store, and
//! serves many connections, each with many calls in flight.

mod admission;
mod auth;
mod budget;
mod connection;
mod dedup;
mod programs;
pub(crate) mod registry;
mod secure;
mod session;
mod shared;
mod store;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::{TcpListener, TcpSocket, TcpStream, ToSocketAddrs};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use crate::error::ServeError;
use crate::metrics::server::{CallStats, ServerStats};
use crate::remote::{RemoteFunction, Service};
use crate::wire::{
    DEFAULT_MAX_DECODE_DEPTH, DEFAULT_MAX_FRAME_LEN, DEFAULT_MAX_PAYLOAD_LEN, PeerRole,
};
use admission::Admission;
use auth::Tokens;
use budget::Budget;
use dedup::Dedup;
pub use programs::{InsertFuture, ProgramRejected, ProgramStore};
pub use registry::{Context, FunctionOptions};
use registry::{Function, Registry};
use store::BoundedStore;

/// The default for [`ServerConfig::handshake_timeout`]: 5 seconds.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The default for [`ServerConfig::max_pending_handshakes`]: 256.
pub const DEFAULT_MAX_PENDING_HANDSHAKES: usize = 256;
/// The default for [`ServerConfig::listen_backlog`]: 4096.
pub const DEFAULT_LISTEN_BACKLOG: u32 = 4096;
/// The default for [`ServerConfig::max_running_calls`]: 16 384.
pub const DEFAULT_MAX_RUNNING_CALLS: usize = 16_384;
/// The default for [`ServerConfig::max_request_bytes`]: 512 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 512 << 20;
/// The default for [`ServerConfig::dedup_max_bytes`]: 64 MiB.
pub const DEFAULT_DEDUP_MAX_BYTES: u64 = 64 << 20;
/// The default for [`ServerConfig::dedup_linger`]: 5 seconds.
pub const DEFAULT_DEDUP_LINGER: Duration = Duration::from_secs(5);
/// The default for [`ServerConfig::idle_timeout`]: 5 minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// The default for [`ServerConfig::max_connections`]: 1024.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// The default for [`ServerConfig::max_in_flight`]: 256 calls per connection.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 256;
/// The default for [`ServerConfig::dedup_window`]: 5 minutes.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(300);
/// The default for [`ServerConfig::dedup_capacity`]: 100 000 keys.
pub const DEFAULT_DEDUP_CAPACITY: usize = 100_000;
/// The default for [`ServerConfig::max_store_bytes`]: 1 GiB.
pub const DEFAULT_MAX_STORE_BYTES: u64 = 1 << 30;

/// Settings of a [`Server`]. Every field has a safe default.
///
/// ```
/// use std::time::Duration;
/// use rpc_core::ServerConfig;
///
/// let config = ServerConfig {
///     max_in_flight: 64,
///     idle_timeout: Some(Duration::from_secs(60)),
///     ..ServerConfig::default()
/// };
/// let server = rpc_core::Server::builder().config(config);
/// # drop(server);
/// ```
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The name announced to peers. The default is `"rpc-server"`.
    pub name: String,
    /// How long a new connection has to complete its handshake (TLS and
    /// `Hello`) before it is closed. The default is
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`], 5 s.
    pub handshake_timeout: Duration,
    /// Connections still in their handshake, at most. They do not count
    /// against [`max_connections`](Self::max_connections): peers that have
    /// not authenticated get this smaller budget of their own. When it is
    /// full, the oldest handshake is closed to make room, once it has had a
    /// tenth of the handshake timeout to finish, so that sockets that never
    /// speak cannot keep a real client out. The default is
    /// [`DEFAULT_MAX_PENDING_HANDSHAKES`], 256.
    pub max_pending_handshakes: usize,
    /// The listen backlog: connections the kernel completes and holds
    /// before the server accepts them (capped by the system's
    /// `net.core.somaxconn`). The default is [`DEFAULT_LISTEN_BACKLOG`],
    /// 4096.
    pub listen_backlog: u32,
    /// A connection that sends nothing for this long is closed; announced to
    /// clients, which ping before it runs out. `None` keeps idle connections
    /// forever. The default is [`DEFAULT_IDLE_TIMEOUT`], 5 minutes.
    pub idle_timeout: Option<Duration>,
    /// Connections that completed their handshake, at most; a peer past
    /// them is told `503 unavailable` and closed. The default is
    /// [`DEFAULT_MAX_CONNECTIONS`], 1024.
    pub max_connections: usize,
    /// Requests in flight on one connection beyond this many are answered
    /// `429 resource exhausted` without running. The default is
    /// [`DEFAULT_MAX_IN_FLIGHT`], 256.
    pub max_in_flight: u32,
    /// The largest frame accepted. The default is
    /// [`DEFAULT_MAX_FRAME_LEN`], 1 MiB.
    pub max_frame_len: u32,
    /// The largest payload (arguments, value, program) accepted in one
    /// request. The default is [`DEFAULT_MAX_PAYLOAD_LEN`], 64 MiB.
    pub max_payload_len: u64,
    /// The most bytes of large request payloads the whole server holds at
    /// once, over every connection: uploads in progress (counted at their
    /// announced length from the start) and payloads over 64 KiB of
    /// requests still being served. A request past it is answered `429`
    /// and its bytes are not buffered; smaller requests are bounded by
    /// [`max_running_calls`](Self::max_running_calls) instead, so that
    /// filling this budget does not keep small calls out. The default is
    /// [`DEFAULT_MAX_REQUEST_BYTES`], 512 MiB.
    pub max_request_bytes: u64,
    /// The most calls that wait (in a task of their own) at once, over
    /// every connection; a call past it is answered `429`. Calls that finish
    /// without waiting are not counted. The default is
    /// [`DEFAULT_MAX_RUNNING_CALLS`], 16 384.
    pub max_running_calls: usize,
    /// How deeply nested an argument may be: a value nested deeper (a
    /// recursive type sent a million levels deep, which would overflow the
    /// stack) is answered `400`. The default is
    /// [`DEFAULT_MAX_DECODE_DEPTH`](crate::wire::DEFAULT_MAX_DECODE_DEPTH), 128.
    pub max_decode_depth: u32,
    /// How long responses to calls with an idempotency key are remembered
    /// for duplicates. The default is [`DEFAULT_DEDUP_WINDOW`], 5 minutes.
    pub dedup_window: Duration,
    /// How many idempotency keys are remembered at most. The default is
    /// [`DEFAULT_DEDUP_CAPACITY`], 100 000.
    pub dedup_capacity: usize,
    /// The most bytes of responses remembered for duplicates, over every
    /// connection; the oldest are forgotten first. A response larger than
    /// this is not remembered, so a retry of its call runs again. The
    /// default is [`DEFAULT_DEDUP_MAX_BYTES`], 64 MiB.
    pub dedup_max_bytes: u64,
    /// A call with an idempotency key whose caller's connection is lost
    /// keeps running this long for the caller's retry to claim its result;
    /// if no retry waits for it by then (or once every retry has left), it
    /// is stopped. The default is [`DEFAULT_DEDUP_LINGER`], 5 s.
    pub dedup_linger: Duration,
    /// The most bytes the data store holds, and separately the program store.
    /// The default is [`DEFAULT_MAX_STORE_BYTES`], 1 GiB.
    pub max_store_bytes: u64,
    /// Where to count connections, calls by function and status, call
    /// latency and bytes, for Prometheus to scrape (see
    /// [`metrics`](crate::metrics)); several servers may share one. The
    /// default is `None`: nothing is counted.
    pub metrics: Option<crate::metrics::Metrics>,
}

impl ServerConfig {
    /// Checks that every value can be announced to peers and enforced.
    fn check(&self) -> Result<(), ServeError> {
        let invalid = |field, reason| Err(ServeError::InvalidConfig { field, reason });
        if self.max_frame_len < crate::wire::MIN_MAX_FRAME_LEN {
            return invalid(
                "max_frame_len",
                "is below the protocol's 16384-byte minimum",
            );
        }
        if self.max_in_flight == 0 {
            return invalid("max_in_flight", "must be at least 1");
        }
        if self.max_connections == 0 {
            return invalid("max_connections", "must be at least 1");
        }
        if self.max_pending_handshakes == 0 {
            return invalid("max_pending_handshakes", "must be at least 1");
        }
        if self.max_decode_depth == 0 {
            return invalid("max_decode_depth", "must be at least 1");
        }
        if self.handshake_timeout.is_zero() {
            return invalid("handshake_timeout", "must be positive");
        }
        if self
            .idle_timeout
            .is_some_and(|idle| idle < Duration::from_millis(1))
        {
            return invalid("idle_timeout", "must be at least 1 ms when set");
        }
        Ok(())
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            name: "rpc-server".into(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_pending_handshakes: DEFAULT_MAX_PENDING_HANDSHAKES,
            listen_backlog: DEFAULT_LISTEN_BACKLOG,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_payload_len: DEFAULT_MAX_PAYLOAD_LEN,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_running_calls: DEFAULT_MAX_RUNNING_CALLS,
            max_decode_depth: DEFAULT_MAX_DECODE_DEPTH,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            dedup_capacity: DEFAULT_DEDUP_CAPACITY,
            dedup_max_bytes: DEFAULT_DEDUP_MAX_BYTES,
            dedup_linger: DEFAULT_DEDUP_LINGER,
            max_store_bytes: DEFAULT_MAX_STORE_BYTES,
            metrics: None,
        }
    }
}

/// A server being built ([`Server::builder`]): register functions and
/// tokens, then [`bind`](Self::bind) an address or [`serve`](Self::serve) a
/// listener to get the running [`Server`].
///
/// # Backpressure
///
/// Each connection reads a request, starts it, and reads on. Calls beyond
/// [`ServerConfig::max_in_flight`] are answered `429` without running, and
/// responses wait in a bounded queue for the connection's writer: a client
/// that stops reading fills that queue, and the server then stops reading
/// from it too, so TCP pushes back instead of memory growing.
///
/// # Cancellation
///
/// A function stops (its future is dropped) when the caller cancels, when the
/// call's deadline passes, or when the caller's connection drops, except for
/// calls with an idempotency key, which finish so that a retry gets their
/// result.
///
/// ```
/// use rpc_core::{Client, Server};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = Server::builder()
///     .function("add", |(a, b): (i64, i64)| async move { Ok::<_, String>(a + b) })
///     .function("greet", |name: String| async move { Ok::<_, String>(format!("hello, {name}")) })
///     .bind("127.0.0.1:0")
///     .await?;
///
/// let client = Client::new(server.local_addr().to_string());
/// let sum: i64 = client.call("add", &(2i64, 3i64)).await?;
/// assert_eq!(sum, 5);
/// server.shutdown(std::time::Duration::from_secs(1)).await;
/// # Ok(())
/// # }
/// ```
#[derive(Default)]
pub struct ServerBuilder {
    registry: Registry,
    tokens: Tokens,
    access: registry::Access,
    config: ServerConfig,
    programs: Option<Arc<dyn ProgramStore>>,
    /// What the server says it is in its `Welcome`; `None`: a server.
    role: Option<PeerRole>,
    /// Collectors of what its functions count, registered into
    /// `config.metrics` when it starts with metrics.
    collectors: Vec<Box<dyn prometheus_client::collector::Collector>>,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::ServerTls>,
    supernode: Option<crate::relay::Supernode>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&Arc<str>> = self.registry.keys().collect();
        names.sort();
        f.debug_struct("ServerBuilder")
            .field("functions", &names)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// A server with no functions, no tokens (anonymous access) and the
    /// default [`ServerConfig`]; the same as [`Server::builder`].
    pub fn new() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Replaces the configuration.
    pub fn config(mut self, config: ServerConfig) -> ServerBuilder {
        self.config = config;
        self
    }

    /// Adds a collector of metrics the server's functions keep (a job
    /// queue's length, say), registered into [`ServerConfig::metrics`]
    /// when the server starts, if it has metrics; otherwise never asked.
    pub fn collector(
        mut self,
        collector: impl prometheus_client::collector::Collector,
    ) -> ServerBuilder {
        self.collectors.push(Box::new(collector));
        self
    }

    /// What the server says it is in its `Welcome` (`role`): a worker
    /// or a coordinator rather than a plain server, the default. Peers may
    /// use it to check that they reached the kind of peer they meant to.
    ///
    /// ```
    /// use rpc_core::{PeerRole, Server};
    ///
    /// let worker = Server::builder().role(PeerRole::Worker);
    /// # drop(worker);
    /// ```
    pub fn role(mut self, role: PeerRole) -> ServerBuilder {
        self.role = Some(role);
        self
    }

    /// Relays for workers that accept no connections: answers `Route`
    /// and `Join` frames with `supernode` (see [`crate::relay`]), and
    /// every other connection as before. The supernode's limits hold for
    /// the whole process; a `Route` waits in a handshake place of this
    /// server until its first frame is read. With
    /// [`ServerConfig::metrics`], the server exports the supernode's
    /// ([`Supernode::collector`](crate::relay::Supernode::collector)).
    pub fn supernode(mut self, supernode: crate::relay::Supernode) -> ServerBuilder {
        self.supernode = Some(supernode);
        self
    }

    /// Serves TLS only, with `tls`: a [`ServerTls`](crate::tls::ServerTls)
    /// (which can reload its certificate while the server runs) or a fixed
    /// `Arc<rustls::ServerConfig>`. Plaintext peers are told in one frame
    /// that this server speaks TLS only. Requires the `tls` feature.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: impl Into<crate::tls::ServerTls>) -> ServerBuilder {
        self.tls = Some(tls.into());
        self
    }

    /// Keeps shipped programs in `store` instead of the default in-memory
    /// map bounded by [`ServerConfig::max_store_bytes`]. A worker plugs in its
    /// module cache here, which validates each module before accepting it.
    pub fn programs(mut self, store: impl ProgramStore) -> ServerBuilder {
        self.programs = Some(Arc::new(store));
        self
    }

    /// Accepts `token`, granting `role` to connections that present it. Once
    /// any token is added, connections without a valid token are refused with
    /// `403 forbidden` at the handshake.
    pub fn token(mut self, token: impl AsRef<str>, role: impl Into<String>) -> ServerBuilder {
        self.tokens.add(token.as_ref(), role.into());
        self
    }

    /// Grants `roles` to callers that present no token, on a server that
    /// has no tokens at all (with tokens, such callers are refused at the
    /// handshake). Function roles are then checked against these. The
    /// default grants none, so functions restricted to roles refuse
    /// anonymous callers.
    ///
    /// Granting every role makes a server without tokens open to anyone
    /// who can connect, as a worker on loopback is.
    pub fn anonymous_roles<I, S>(mut self, roles: I) -> ServerBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.access.anonymous = roles.into_iter().map(Into::into).collect();
        self
    }

    /// Only callers with one of `roles` may ship programs (`OfferProgram`,
    /// `SendProgram`); others get `403 forbidden`. The default lets every
    /// caller the handshake admitted ship programs.
    pub fn program_roles<I, S>(mut self, roles: I) -> ServerBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.access.programs = Some(roles.into_iter().map(Into::into).collect());
        self
    }

    /// Only callers with one of `roles` may use the data store
    /// (`SendData`, `RequestData`); others get `403 forbidden`. Pass no
    /// roles to close the store to everyone. The default lets every caller
    /// the handshake admitted use it.
    pub fn data_roles<I, S>(mut self, roles: I) -> ServerBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.access.data = Some(roles.into_iter().map(Into::into).collect());
        self
    }

    /// Registers `function` under `name`: it receives the postcard-decoded
    /// arguments (a tuple for several) and returns a result or its own error,
    /// both encoded with postcard. A later registration of the same name
    /// replaces the earlier one.
    pub fn function<A, R, E, F, Fut>(self, name: impl Into<String>, function: F) -> ServerBuilder
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + 'static,
        E: Serialize + 'static,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        self.function_with(name, FunctionOptions::new(), move |_: Context, args: A| {
            function(args)
        })
    }

    /// Registers `function` under `name` with options (roles, schema hash),
    /// passing it the call's [`Context`] too.
    pub fn function_with<A, R, E, F, Fut>(
        self,
        name: impl Into<String>,
        options: FunctionOptions,
        function: F,
    ) -> ServerBuilder
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + 'static,
        E: Serialize + 'static,
        F: Fn(Context, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        self.remote(RemoteFunction::new(name, options, function))
    }

    /// Registers `function` under `name` as [`ServerBuilder::function_with`]
    /// does, for a function that may also answer with a protocol status
    /// ([`Failure::Status`](crate::Failure::Status)) when the condition is
    /// the server's rather than the call's: busy (`429`), unavailable
    /// (`503`). Its own errors ([`Failure::Error`](crate::Failure::Error))
    /// are answered `422` as for any function.
    ///
    /// ```
    /// use rpc_core::{Context, Failure, FunctionOptions, Server, StatusCode};
    ///
    /// let server = Server::builder().function_with_status(
    ///     "render",
    ///     FunctionOptions::new(),
    ///     |_: Context, page: u32| async move {
    ///         if page > 1_000 {
    ///             // The call's fault: answered 422 with the error.
    ///             return Err(Failure::Error(format!("no page {page}")));
    ///         }
    ///         if page == 0 {
    ///             // The server's condition: answered 503, as when it is down.
    ///             return Err(Failure::Status(StatusCode::UNAVAILABLE, "restarting".into()));
    ///         }
    ///         Ok(format!("page {page}"))
    ///     },
    /// );
    /// # drop(server);
    /// ```
    pub fn function_with_status<A, R, E, F, Fut>(
        self,
        name: impl Into<String>,
        options: FunctionOptions,
        function: F,
    ) -> ServerBuilder
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + 'static,
        E: Serialize + 'static,
        F: Fn(Context, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, crate::Failure<E>>> + Send + 'static,
    {
        self.remote(RemoteFunction::with_status(name, options, function))
    }

    /// Registers a function made by `#[remote]` (`add::function()`), by
    /// hand with [`RemoteFunction::new`], or by a service. A later
    /// registration of the same name replaces the earlier one.
    pub fn remote(mut self, function: RemoteFunction) -> ServerBuilder {
        self.registry
            .insert(Arc::from(function.name), function.function);
        self
    }

    /// Serves requests of type `R` (see [`Request`](trait@crate::Request))
    /// with `handler`, under `R::NAME`, with its schema hash and roles.
    pub fn handle<R, F, Fut>(self, handler: F) -> ServerBuilder
    where
        R: crate::Request,
        F: Fn(Context, R) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R::Response, R::Error>> + Send + 'static,
    {
        let mut options = FunctionOptions::new().schema_hash(R::SCHEMA_HASH);
        if let Some(roles) = R::ROLES {
            options = options.roles(roles.iter().copied());
        }
        self.remote(RemoteFunction::new(R::NAME, options, handler))
    }

    /// Registers every `#[remote]` function linked into this program: annotate
    /// a function and it is served, with no list to keep up to date.
    ///
    /// Functions of a library crate count only when the program links that
    /// crate (uses at least one item of it).
    pub fn remote_all(mut self) -> ServerBuilder {
        for function in crate::remote::registered() {
            self = self.remote(function);
        }
        self
    }

    /// Registers every method of a service (`#[service]`), as
    /// `CalculatorServer::new(implementation)`.
    pub fn service(mut self, service: impl Service) -> ServerBuilder {
        for function in service.into_functions() {
            self = self.remote(function);
        }
        self
    }

    /// Registers a function that works on raw bytes: it receives the
    /// arguments exactly as the caller sent them and returns the result's
    /// bytes, or its own error already encoded (`422`). Nothing is decoded
    /// or copied on the way, which is what large blobs want; pair it with
    /// [`Client::call_raw`](crate::Client::call_raw).
    ///
    /// ```
    /// use bytes::Bytes;
    /// use rpc_core::{Context, FunctionOptions, RemoteError, Server};
    ///
    /// let server = Server::builder().raw_function(
    ///     "checksum",
    ///     FunctionOptions::new(),
    ///     |_: Context, blob: Bytes| async move {
    ///         let sum = blob.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte));
    ///         Ok::<_, RemoteError>(Bytes::from(vec![sum]))
    ///     },
    /// );
    /// # drop(server);
    /// ```
    pub fn raw_function<F, Fut>(
        mut self,
        name: impl Into<String>,
        options: FunctionOptions,
        function: F,
    ) -> ServerBuilder
    where
        F: Fn(Context, bytes::Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<bytes::Bytes, crate::RemoteError>> + Send + 'static,
    {
        let function = Function {
            handler: registry::raw(function),
            options,
            stats: None,
        };
        self.registry.insert(Arc::from(name.into()), function);
        self
    }

    /// Listens on `addr` and serves in the background until
    /// [`Server::shutdown`].
    ///
    /// # Errors
    ///
    /// [`ServeError::InvalidConfig`] if the configuration is out of range
    /// (checked before binding), [`ServeError::Bind`] if the address cannot
    /// be bound.
    pub async fn bind(
        self,
        addr: impl ToSocketAddrs + std::fmt::Display,
    ) -> Result<Server, ServeError> {
        self.config.check()?;
        let shown = addr.to_string();
        let listener = listen(addr, self.config.listen_backlog)
            .await
            .map_err(|source| ServeError::Bind {
                addr: shown.clone(),
                source,
            })?;
        self.serve(listener)
    }

    /// Serves on a listener the caller already has: one bound elsewhere
    /// (systemd socket activation, a port reserved by a test or a bench),
    /// or one made from a standard listener with
    /// [`TcpListener::from_std`]. Must be called within a Tokio runtime.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let addr = listener.local_addr()?;
    /// let server = rpc_core::Server::builder().serve(listener)?;
    /// assert_eq!(server.local_addr(), addr);
    /// server.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ServeError::InvalidConfig`] if the configuration is out of range,
    /// [`ServeError::Bind`] if the listener has no local address.
    pub fn serve(self, listener: TcpListener) -> Result<Server, ServeError> {
        self.config.check()?;
        let local_addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: "the given listener".into(),
            source,
        })?;
        let incoming = Incoming {
            listener: Some(listener),
            joined: None,
        };
        Ok(self.start(incoming, local_addr))
    }

    /// Serves connections it is handed instead of accepting them: those a
    /// relayed worker opened to its supernode ([`crate::relay::join`]),
    /// given to the returned [`JoinedIntake`](crate::relay::JoinedIntake).
    /// Each is served exactly as an accepted one: handshake budget, TLS if
    /// configured, tokens, limits. The server's
    /// [`local_addr`](Server::local_addr) is `0.0.0.0:0`: it listens
    /// nowhere. Must be called within a Tokio runtime.
    ///
    /// # Errors
    ///
    /// [`ServeError::InvalidConfig`] if the configuration is out of range.
    pub fn serve_joined(self) -> Result<(Server, crate::relay::JoinedIntake), ServeError> {
        self.config.check()?;
        self.serve_from(None)
    }

    /// Both: serves on `listener` and the connections handed to the
    /// returned [`JoinedIntake`](crate::relay::JoinedIntake), for a worker
    /// reachable directly and through a supernode at once (two routes).
    /// Must be called within a Tokio runtime.
    ///
    /// # Errors
    ///
    /// As [`serve`](Self::serve).
    pub fn serve_and_join(
        self,
        listener: TcpListener,
    ) -> Result<(Server, crate::relay::JoinedIntake), ServeError> {
        self.config.check()?;
        self.serve_from(Some(listener))
    }

    fn serve_from(
        self,
        listener: Option<TcpListener>,
    ) -> Result<(Server, crate::relay::JoinedIntake), ServeError> {
        let local_addr = match &listener {
            Some(listener) => listener.local_addr().map_err(|source| ServeError::Bind {
                addr: "the given listener".into(),
                source,
            })?,
            None => SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        let incoming = Incoming {
            listener,
            joined: Some(receiver),
        };
        let server = self.start(incoming, local_addr);
        Ok((server, crate::relay::JoinedIntake { sender }))
    }

    /// Starts the accept loop over `incoming`.
    fn start(self, incoming: Incoming, local_addr: SocketAddr) -> Server {
        let (shared, tls) = self.into_state(local_addr);
        let (shutdown, watcher) = watch::channel(None);
        let task = tokio::spawn(
            accept_loop(incoming, shared, watcher, tls)
                .instrument(tracing::info_span!("server", addr = %local_addr)),
        );
        Server {
            local_addr,
            shutdown,
            task,
        }
    }

    /// What every connection will share, and the TLS configuration, made
    /// from the builder's parts.
    fn into_state(
        mut self,
        local_addr: SocketAddr,
    ) -> (Arc<shared::ServerState>, Option<secure::Tls>) {
        let config = self.config;
        // Each function's counters live with it, found with it on every call.
        let stats = config.metrics.as_ref().map(|metrics| {
            let describe = Arc::new(CallStats::default());
            let mut functions = vec![(
                Arc::from(crate::wire::DESCRIBE_METHOD),
                Arc::clone(&describe),
            )];
            for (name, function) in &mut self.registry {
                let calls = Arc::new(CallStats::default());
                function.stats = Some(Arc::clone(&calls));
                functions.push((Arc::clone(name), calls));
            }
            functions.sort_by(|a, b| a.0.cmp(&b.0));
            let stats = Arc::new(ServerStats::new(local_addr.to_string(), functions));
            metrics.add_server(Arc::clone(&stats));
            for collector in std::mem::take(&mut self.collectors) {
                metrics.register_boxed(collector);
            }
            if let Some(supernode) = &self.supernode {
                metrics.register_boxed(Box::new(supernode.collector()));
            }
            (stats, describe)
        });
        let state = Arc::new(shared::ServerState {
            admission: Arc::new(Admission::new(
                config.max_pending_handshakes,
                config.handshake_timeout / 10,
                config.max_connections,
            )),
            requests: Budget::new("bytes of request payloads", config.max_request_bytes),
            calls: Budget::new("calls that wait", config.max_running_calls as u64),
            dedup: Arc::new(Dedup::new(
                config.dedup_window,
                config.dedup_capacity,
                config.dedup_max_bytes,
            )),
            data: BoundedStore::<String>::new(config.max_store_bytes),
            programs: self.programs.unwrap_or_else(|| {
                Arc::new(programs::MemoryPrograms(BoundedStore::new(
                    config.max_store_bytes,
                )))
            }),
            registry: self.registry,
            tokens: self.tokens,
            access: self.access,
            role: self.role.unwrap_or(PeerRole::Server),
            stats,
            supernode: self.supernode,
            config,
        });
        #[cfg(feature = "tls")]
        let tls = self.tls;
        #[cfg(not(feature = "tls"))]
        let tls = None;
        (state, tls)
    }
}

/// A running server, from [`ServerBuilder::bind`] or
/// [`ServerBuilder::serve`]; [`Server::builder`] starts one.
///
/// Dropping it leaves the server running until the runtime stops; call
/// [`shutdown`](Self::shutdown) to stop it gracefully.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    shutdown: watch::Sender<Option<Instant>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// A server to build: with no functions, no tokens (anonymous access)
    /// and the default [`ServerConfig`]. Register functions on it, then
    /// [`bind`](ServerBuilder::bind) or [`serve`](ServerBuilder::serve) it
    /// to get the running [`Server`].
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Shuts down gracefully: stops accepting connections, sends `GoAway` on
    /// every connection, lets calls in flight finish for up to `grace`, then
    /// cancels what is left and closes. Returns when every connection is
    /// closed.
    pub async fn shutdown(self, grace: Duration) {
        let now = Instant::now();
        let deadline = now
            .checked_add(grace)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        self.shutdown.send_replace(Some(deadline));
        let _ = self.task.await;
    }
}

/// Binds `addr` (the first of its addresses that binds) with a listen
/// backlog of `backlog`.
async fn listen(addr: impl ToSocketAddrs, backlog: u32) -> std::io::Result<TcpListener> {
    let mut last_error = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(backlog)) {
            Ok(listener) => return Ok(listener),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        )
    }))
}

/// Adds one to a server's counter, when it counts.
fn bump(stats: Option<&ServerStats>, counter: fn(&ServerStats) -> &AtomicU64) {
    if let Some(stats) = stats {
        counter(stats).fetch_add(1, Ordering::Relaxed);
    }
}

/// Where a server's connections come from: its listener, connections
/// this relayed worker opened to its supernode, or both.
struct Incoming {
    listener: Option<TcpListener>,
    joined: Option<tokio::sync::mpsc::Receiver<(TcpStream, SocketAddr)>>,
}

impl Incoming {
    async fn accept(&mut self) -> std::io::Result<(TcpStream, SocketAddr)> {
        let listened = async {
            match &self.listener {
                Some(listener) => listener.accept().await,
                None => std::future::pending().await,
            }
        };
        let joined = async {
            match &mut self.joined {
                Some(receiver) => match receiver.recv().await {
                    Some(joined) => Ok(joined),
                    // Nothing more will come this way.
                    None => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            accepted = listened => accepted,
            joined = joined => joined,
        }
    }
}

async fn accept_loop(
    mut listener: Incoming,
    shared: Arc<shared::ServerState>,
    mut shutdown: watch::Receiver<Option<Instant>>,
    tls: Option<secure::Tls>,
) {
    let mut connections = JoinSet::new();
    loop {
        // A handshake place first: while every place is young, new
        // connections wait in the listen backlog.
        let place = tokio::select! {
            place = shared.admission.begin() => place,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            _ = shutdown.changed() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            _ = shutdown.changed() => break,
        };
        let (socket, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, say: wait, then go on.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let span = tracing::info_span!("connection", peer = %addr);
        let shared = Arc::clone(&shared);
        let shutdown = shutdown.clone();
        #[allow(clippy::clone_on_copy, reason = "without TLS the type is Copy")]
        let tls = tls.clone();
        let stats = shared.stats.as_ref().map(|(stats, _)| Arc::clone(stats));
        bump(stats.as_deref(), |stats| &stats.accepted);
        connections.spawn(
            async move {
                let mut place = place;
                let mut socket = socket;
                let handshake_timeout = shared.config.handshake_timeout;
                if let Some(supernode) = shared.supernode.clone() {
                    // A relay request's first frame is read in the
                    // handshake place, like a Hello; then the supernode's
                    // own budgets hold it.
                    let request = async {
                        crate::relay::peek_relay_kind(&socket, handshake_timeout).await?;
                        Some(supernode.read_request(&mut socket, handshake_timeout).await)
                    };
                    let request = tokio::select! {
                        request = request => request,
                        () = place.evicted() => {
                            bump(stats.as_deref(), |stats| &stats.evicted);
                            return;
                        }
                    };
                    if let Some(request) = request {
                        drop(place);
                        supernode
                            .serve_request(socket, addr, request, shutdown)
                            .await;
                        return;
                    }
                }
                let opened = async {
                    let mut secured =
                        secure::secure(socket, tls.as_ref(), handshake_timeout).await?;
                    if let Some(stats) = &stats {
                        secured.io = stats.count_bytes(secured.io);
                    }
                    connection::handshake(secured, Some(addr), &shared).await
                };
                let opened = tokio::select! {
                    opened = opened => opened,
                    () = place.evicted() => {
                        tracing::debug!("closed to make room for newer handshakes");
                        bump(stats.as_deref(), |stats| &stats.evicted);
                        return;
                    }
                };
                drop(place);
                let Some(opened) = opened else {
                    bump(stats.as_deref(), |stats| &stats.refused);
                    return;
                };
                bump(stats.as_deref(), |stats| &stats.opened);
                connection::serve(opened, shared, shutdown).await;
                bump(stats.as_deref(), |stats| &stats.closed);
            }
            .instrument(span),
        );
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}
