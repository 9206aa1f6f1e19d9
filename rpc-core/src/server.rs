//! The server: hosts named functions, a data store and a program store, and
//! serves many connections, each with many calls in flight.

mod auth;
mod connection;
mod dedup;
mod programs;
pub(crate) mod registry;
mod session;
mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use crate::error::ServeError;
use crate::remote::{RemoteFunction, Service};
use crate::wire::{DEFAULT_MAX_FRAME_LEN, DEFAULT_MAX_PAYLOAD_LEN};
use auth::Tokens;
use dedup::Dedup;
pub use programs::{InsertFuture, ProgramRejected, ProgramStore};
pub use registry::{Context, DESCRIBE_METHOD, FunctionInfo, FunctionOptions};
use registry::{Function, Registry};
use store::BoundedStore;

/// The default for [`ServerConfig::handshake_timeout`]: 10 seconds.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
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
    /// How long a new connection has to complete its handshake before it is
    /// closed. The default is [`DEFAULT_HANDSHAKE_TIMEOUT`], 10 s.
    pub handshake_timeout: Duration,
    /// A connection that sends nothing for this long is closed; announced to
    /// clients, which ping before it runs out. `None` keeps idle connections
    /// forever. The default is [`DEFAULT_IDLE_TIMEOUT`], 5 minutes.
    pub idle_timeout: Option<Duration>,
    /// Connections beyond this many are told `503 unavailable` and closed.
    /// The default is [`DEFAULT_MAX_CONNECTIONS`], 1024.
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
    /// How long responses to calls with an idempotency key are remembered
    /// for duplicates. The default is [`DEFAULT_DEDUP_WINDOW`], 5 minutes.
    pub dedup_window: Duration,
    /// How many idempotency keys are remembered at most. The default is
    /// [`DEFAULT_DEDUP_CAPACITY`], 100 000.
    pub dedup_capacity: usize,
    /// The most bytes the data store holds, and separately the program store.
    /// The default is [`DEFAULT_MAX_STORE_BYTES`], 1 GiB.
    pub max_store_bytes: u64,
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
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_payload_len: DEFAULT_MAX_PAYLOAD_LEN,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            dedup_capacity: DEFAULT_DEDUP_CAPACITY,
            max_store_bytes: DEFAULT_MAX_STORE_BYTES,
        }
    }
}

/// Builds a server: register functions and tokens, then [`bind`](Self::bind).
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
pub struct Server {
    registry: Registry,
    tokens: Tokens,
    config: ServerConfig,
    programs: Option<Arc<dyn ProgramStore>>,
    #[cfg(feature = "tls")]
    tls: Option<Arc<crate::tls::rustls::ServerConfig>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&Arc<str>> = self.registry.keys().collect();
        names.sort();
        f.debug_struct("Server")
            .field("functions", &names)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server with no functions, no tokens (anonymous access) and the
    /// default [`ServerConfig`].
    pub fn builder() -> Server {
        Server::default()
    }

    /// Replaces the configuration.
    pub fn config(mut self, config: ServerConfig) -> Server {
        self.config = config;
        self
    }

    /// Serves TLS only, with `config` (certificate chain and key). Requires
    /// the `tls` feature.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: Arc<crate::tls::rustls::ServerConfig>) -> Server {
        self.tls = Some(config);
        self
    }

    /// Keeps shipped programs in `store` instead of the default in-memory
    /// map bounded by [`ServerConfig::max_store_bytes`]. A worker plugs in its
    /// module cache here, which validates each module before accepting it.
    pub fn programs(mut self, store: impl ProgramStore) -> Server {
        self.programs = Some(Arc::new(store));
        self
    }

    /// Accepts `token`, granting `role` to connections that present it. Once
    /// any token is added, connections without a valid token are refused with
    /// `403 forbidden` at the handshake.
    pub fn token(mut self, token: impl AsRef<str>, role: impl Into<String>) -> Server {
        self.tokens.add(token.as_ref(), role.into());
        self
    }

    /// Registers `function` under `name`: it receives the postcard-decoded
    /// arguments (a tuple for several) and returns a result or its own error,
    /// both encoded with postcard. A later registration of the same name
    /// replaces the earlier one.
    pub fn function<A, R, E, F, Fut>(self, name: impl Into<String>, function: F) -> Server
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
        mut self,
        name: impl Into<String>,
        options: FunctionOptions,
        function: F,
    ) -> Server
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + 'static,
        E: Serialize + 'static,
        F: Fn(Context, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        let function = Function {
            handler: registry::typed(function),
            options,
        };
        self.registry.insert(Arc::from(name.into()), function);
        self
    }

    /// Registers a function made by `#[remote]` (`add::function()`), by
    /// hand with [`RemoteFunction::new`], or by a service. A later
    /// registration of the same name replaces the earlier one.
    pub fn remote(mut self, function: RemoteFunction) -> Server {
        self.registry
            .insert(Arc::from(function.name), function.function);
        self
    }

    /// Serves requests of type `R` (see [`Request`](trait@crate::Request))
    /// with `handler`, under `R::NAME`, with its schema hash and roles.
    pub fn handle<R, F, Fut>(self, handler: F) -> Server
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
    pub fn remote_all(mut self) -> Server {
        for function in crate::remote::registered() {
            self = self.remote(function);
        }
        self
    }

    /// Registers every method of a service (`#[service]`), as
    /// `CalculatorServer::new(implementation)`.
    pub fn service(mut self, service: impl Service) -> Server {
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
    ) -> Server
    where
        F: Fn(Context, bytes::Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<bytes::Bytes, crate::RemoteError>> + Send + 'static,
    {
        let function = Function {
            handler: registry::raw(function),
            options,
        };
        self.registry.insert(Arc::from(name.into()), function);
        self
    }

    /// Listens on `addr` and serves in the background until
    /// [`ServerHandle::shutdown`].
    ///
    /// # Errors
    ///
    /// [`ServeError::InvalidConfig`] if the configuration is out of range
    /// (checked before binding), [`ServeError::Bind`] if the address cannot
    /// be bound.
    pub async fn bind(
        self,
        addr: impl ToSocketAddrs + std::fmt::Display,
    ) -> Result<ServerHandle, ServeError> {
        self.config.check()?;
        let shown = addr.to_string();
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: shown.clone(),
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: shown,
            source,
        })?;
        let config = self.config;
        let shared = Arc::new(connection::Shared {
            dedup: Arc::new(Dedup::new(config.dedup_window, config.dedup_capacity)),
            data: BoundedStore::<String>::new(config.max_store_bytes),
            programs: self.programs.unwrap_or_else(|| {
                Arc::new(programs::MemoryPrograms(BoundedStore::new(
                    config.max_store_bytes,
                )))
            }),
            registry: self.registry,
            tokens: self.tokens,
            config,
        });
        let (shutdown, watcher) = watch::channel(None);
        #[cfg(feature = "tls")]
        let tls = self.tls.map(tokio_rustls::TlsAcceptor::from);
        #[cfg(not(feature = "tls"))]
        let tls = None;
        let task = tokio::spawn(
            accept_loop(listener, shared, watcher, tls)
                .instrument(tracing::info_span!("server", addr = %local_addr)),
        );
        Ok(ServerHandle {
            local_addr,
            shutdown,
            task,
        })
    }
}

/// A running server.
///
/// Dropping the handle leaves the server running until the runtime stops;
/// call [`shutdown`](Self::shutdown) to stop it gracefully.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    shutdown: watch::Sender<Option<Instant>>,
    task: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
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

#[cfg(feature = "tls")]
type Acceptor = tokio_rustls::TlsAcceptor;
/// Without the `tls` feature there is no acceptor.
#[cfg(not(feature = "tls"))]
type Acceptor = std::convert::Infallible;

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<connection::Shared>,
    mut shutdown: watch::Receiver<Option<Instant>>,
    tls: Option<Acceptor>,
) {
    let slots = Arc::new(Semaphore::new(shared.config.max_connections));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
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
                match Arc::clone(&slots).try_acquire_owned() {
                    Ok(permit) => {
                        let shared = Arc::clone(&shared);
                        let shutdown = shutdown.clone();
                        #[allow(clippy::clone_on_copy, reason = "an acceptor is Copy only without TLS")]
                        let tls = tls.clone();
                        connections.spawn(async move {
                            if let Some(io) = secure(socket, tls, &shared).await {
                                connection::serve(io, Some(addr), shared, shutdown).await;
                            }
                            drop(permit);
                        }.instrument(span));
                    }
                    Err(_) => {
                        connections.spawn(connection::refuse_busy(socket).instrument(span));
                    }
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Performs the TLS handshake if the server has TLS, within the handshake
/// timeout; `None` if it fails.
async fn secure(
    socket: tokio::net::TcpStream,
    tls: Option<Acceptor>,
    shared: &connection::Shared,
) -> Option<Box<dyn crate::conn::Io>> {
    let Some(acceptor) = tls else {
        return Some(Box::new(socket));
    };
    #[cfg(feature = "tls")]
    {
        let accepted =
            tokio::time::timeout(shared.config.handshake_timeout, acceptor.accept(socket)).await;
        match accepted {
            Ok(Ok(stream)) => Some(Box::new(stream)),
            Ok(Err(error)) => {
                tracing::debug!(%error, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!("no TLS handshake in time");
                None
            }
        }
    }
    #[cfg(not(feature = "tls"))]
    {
        let _ = shared;
        match acceptor {}
    }
}
