//! The core of a framework for remote procedure calls and for shipping
//! WebAssembly programs to workers.
//!
//! Most users need two types: a [`Server`] that hosts named functions (plus a
//! data store and a program store), and a [`Client`] that calls them, many
//! calls at once over one connection, with deadlines, cancellation,
//! reconnection and retries. See [`ServerBuilder`] for a complete example.
//!
//! Most functions are made remote with a macro rather than registered by
//! name: [`remote`] on a function, [`service`] on a trait, or
//! [`Request`](macro@Request) derived on a request type. Each generates
//! typed client stubs and the server registration:
//!
//! ```
//! #[rpc_core::remote]
//! async fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let server = rpc_core::Server::builder().remote_all().bind("127.0.0.1:0").await?;
//!     let client = rpc_core::Client::new(server.local_addr().to_string());
//!     assert_eq!(add::call(&client, 2, 3).await?, 5);
//!     Ok(())
//! }
//! ```
//!
//! # What the crate root holds
//!
//! | to | use |
//! | --- | --- |
//! | call functions | [`Client`], [`ClientConfig`], [`CallOptions`] |
//! | serve them | [`Server::builder`] gives a [`ServerBuilder`] (functions, tokens, [`ServerConfig`]); binding it gives the running [`Server`]; functions see a [`Context`] and may answer a [`Failure`]; [`FunctionOptions`] |
//! | declare them | [`remote`], [`service`], [`Request`](macro@Request), [`RemoteFunction`], [`Service`] |
//! | call many servers as one | [`Pool`], [`PoolConfig`], [`Resolver`], [`DnsResolver`] |
//! | watch them | the [`metrics`] module: [`ServerConfig::metrics`], Prometheus over HTTP, [`Pool::collector`] |
//! | keep shipped programs | [`ProgramStore`], [`ContentHash`] |
//! | handle failures | [`RpcError`], [`RemoteError`], [`ServeError`], [`StatusCode`] |
//! | speak the protocol yourself | the [`wire`] module: frames, codec, messages, limits, chunking, decode and encode errors |
//!
//! The `DEFAULT_*` constants are the defaults of the configuration structs,
//! named in their fields' documentation.
//!
//! Underneath is the **wire protocol**: length-prefixed frames, each a
//! fixed 12-byte header and a [postcard]-encoded body, serving four purposes:
//!
//! | purpose | messages |
//! | --- | --- |
//! | call a named function | [`Call`](wire::Call) → [`Response`](wire::Response), many in flight per connection, answered in any order |
//! | send data | [`SendData`](wire::SendData) → [`Response`](wire::Response) |
//! | request data | [`RequestData`](wire::RequestData) → [`Response`](wire::Response) carrying the value |
//! | transfer a program | [`OfferProgram`](wire::OfferProgram) → `200` (held) or `404` (send it), then [`SendProgram`](wire::SendProgram) → [`Response`](wire::Response) |
//!
//! plus the handshake ([`Hello`](wire::Hello), [`Welcome`](wire::Welcome)), keepalive ([`Ping`](wire::Ping),
//! [`Pong`](wire::Pong)), graceful shutdown ([`GoAway`](wire::GoAway)), fatal errors
//! ([`ErrorMessage`](wire::ErrorMessage)), cancellation ([`Message::Cancel`](wire::Message::Cancel)) and chunked
//! transfer of payloads larger than a frame ([`ChunkSender`](wire::ChunkSender),
//! [`ChunkReceiver`](wire::ChunkReceiver)). `PROTOCOL.md` at the repository root specifies every
//! byte, with test vectors.
//!
//! # Example: the protocol by hand
//!
//! A call and its response over an in-memory pipe, frame by frame; a TCP
//! stream works the same way. The runtime does this for you.
//!
//! ```
//! use bytes::Bytes;
//! use futures_util::{SinkExt, StreamExt};
//! use rpc_core::StatusCode;
//! use rpc_core::wire::{Call, Frame, FrameCodec, Message, Payload, Response};
//! use tokio_util::codec::Framed;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (client, server) = tokio::io::duplex(64 << 10);
//! let mut client = Framed::new(client, FrameCodec::new());
//! let mut server = Framed::new(server, FrameCodec::new());
//!
//! let call = Call {
//!     method: "greet".into(),
//!     timeout_ms: Some(5_000),
//!     idempotency_key: None,
//!     schema_hash: None,
//!     payload: Payload::from(Bytes::from_static(b"world")),
//! };
//! client.send(Frame::new(1, Message::Call(call))).await?;
//!
//! let frame = server.next().await.expect("a frame")?;
//! let Message::Call(call) = frame.message else { panic!("expected a call") };
//! let name = call.payload.inline().expect("inline arguments");
//! let reply = Response {
//!     status: StatusCode::OK,
//!     server_time_ms: 0,
//!     elapsed_us: 3,
//!     message: String::new(),
//!     payload: Payload::from(Bytes::from([&b"hello, "[..], name].concat())),
//! };
//! server.send(Frame::new(frame.stream_id, Message::Response(reply))).await?;
//!
//! let frame = client.next().await.expect("a frame")?;
//! assert_eq!(frame.stream_id, 1);
//! let Message::Response(response) = frame.message else { panic!("expected a response") };
//! assert_eq!(response.status, StatusCode::OK);
//! assert_eq!(response.payload.inline().unwrap(), "hello, world");
//! # Ok(())
//! # }
//! ```
//!
//! [postcard]: https://postcard.jamesmunns.com/wire-format
#![doc(test(attr(deny(warnings))))]

#[doc(hidden)]
pub mod __private;
mod client;
mod conn;
mod error;
pub mod metrics;
mod pool;
pub mod relay;
mod remote;
mod request;
mod server;
#[cfg(feature = "tls")]
pub mod tls;
mod transfer;
pub mod wire;

pub use client::{
    CallOptions, Client, ClientConfig, DEFAULT_CALL_TIMEOUT, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_KEEPALIVE, DEFAULT_MAX_RETRIES, MAX_ROUTES_PER_ADDRESS,
};
pub use pool::{
    DnsResolver, MemberStatus, Pool, PoolCollector, PoolConfig, ResolveFuture, Resolver,
    ServerFailure,
};
pub use remote::{Infallible, RemoteFunction, Service};
pub use request::Request;

/// Makes a function callable from other machines.
///
/// Put it on a free function, sync or `async`, whose arguments and result
/// are serde types. The function stays callable locally, unchanged; beside
/// it, a module of the same name holds:
///
/// | item | what it is |
/// | --- | --- |
/// | `f::call(&client, args...)` | calls `f` on the server `client` is connected to: `Result<T, RpcError>`, or `Result<T, RpcError<E>>` when `f` returns `Result<T, E>` |
/// | `f::call_with(&client, options, args...)` | the same, with other [`CallOptions`] (start from `f::options()`) |
/// | `f::function()` | the function as a [`RemoteFunction`], for [`ServerBuilder::remote`] |
/// | `f::NAME` | the wire name: the function's path, such as `my_crate::math::add` |
/// | `f::SCHEMA_HASH` | a hash of the name and the argument and result types, as written |
/// | `f::options()` | the [`CallOptions`] the attribute asks for |
///
/// Every `#[remote]` function in the program is also listed for
/// [`ServerBuilder::remote_all`]: annotate a function and serve it in one line.
///
/// A first argument of type [`Context`] receives the call's context (the
/// caller's role and name, the deadline); callers do not pass it. The
/// function's doc comment becomes its description in introspection.
///
/// # Options
///
/// | option | meaning |
/// | --- | --- |
/// | `name = "math.add"` | the wire name, instead of the function's path |
/// | `idempotent` | calls are safe to retry: the client retries them after a lost connection, and the server runs a retried call once |
/// | `timeout_ms = 500` | the default deadline of a call (callers may pass another) |
/// | `roles = ["admin"]` | only callers whose token grants one of these roles may call; others get `403 forbidden`. A constant holding the list (`roles = ADMIN_ROLES`, a `[&str; N]` or `&[&str]`) keeps one list for many functions |
///
/// A function that returns `Result<T, Failure<E>>` answers its own error
/// `E` as any other (`422`, [`RpcError::Application`] for the caller), and
/// may also answer a protocol status of its own with
/// [`Failure::Status`]: `429` when it is too busy, `503` when it cannot
/// serve now, which callers and pools treat as the server's condition.
///
/// # Compatibility
///
/// Every call carries `f::SCHEMA_HASH`; a server built with different
/// argument or result types (or another name) answers `409`, which the
/// caller sees as [`RpcError::Incompatible`] instead of garbage. The hash
/// covers the types as written in the signature: renaming a type or
/// changing an argument changes it, changing the fields inside a named
/// struct does not.
///
/// # Errors at compile time
///
/// Arguments that cannot cross the network are refused where they are
/// written: references and lifetimes, `impl Trait`, generic parameters,
/// `self` (use [`service`]), patterns instead of plain names, and types that
/// are not serde-serialisable. `#[remote]` functions are module-level items:
/// the generated module calls `super::f`.
///
/// # Example
///
/// ```
/// use rpc_core::{Client, RpcError, Server, remote};
/// use serde::{Deserialize, Serialize};
///
/// /// Adds two numbers.
/// #[remote]
/// async fn add(a: i64, b: i64) -> i64 {
///     a + b
/// }
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// enum MathError {
///     DivisionByZero,
/// }
///
/// #[remote(name = "math.divide", idempotent, timeout_ms = 2_000)]
/// fn divide(a: i64, b: i64) -> Result<i64, MathError> {
///     a.checked_div(b).ok_or(MathError::DivisionByZero)
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let server = Server::builder().remote_all().bind("127.0.0.1:0").await?;
///     let client = Client::new(server.local_addr().to_string());
///
///     assert_eq!(add::call(&client, 2, 3).await?, 5);
///     assert_eq!(add(2, 3).await, 5, "still a local function");
///     assert_eq!(divide::call(&client, 7, 2).await?, 3);
///     let error = divide::call(&client, 1, 0).await.unwrap_err();
///     assert!(matches!(error, RpcError::Application(MathError::DivisionByZero)));
///     assert_eq!(divide::NAME, "math.divide");
///
///     server.shutdown(std::time::Duration::from_secs(1)).await;
///     Ok(())
/// }
/// ```
pub use rpc_macros::remote;

pub use error::{Failure, RemoteError, RpcError, ServeError};
/// Makes the methods of a trait callable from other machines, in the spirit
/// of tarpc's `#[tarpc::service]`.
///
/// For `trait Calculator` it generates:
///
/// - `CalculatorClient::new(client)`: a typed client with one `async` method
///   per trait method, returning `Result<T, RpcError>` (or
///   `Result<T, RpcError<E>>` for a method returning `Result<T, E>`), and
///   beside each `method` a `method_with(options, ...)` taking other
///   [`CallOptions`] (a deadline, say; the schema hash stays the method's);
/// - `CalculatorServer::new(implementation)`: registers an implementation
///   with [`ServerBuilder::service`].
///
/// Methods take `&self` (one implementation serves many calls at once) and
/// may be `async`; implementations write `async fn` as usual, and their
/// futures must be `Send`. A first argument of type [`Context`] after
/// `&self` receives the call's context (caller's role and name, deadline);
/// callers do not pass it.
///
/// Wire names are `path::to::Calculator::method`, or `NAME::method` with
/// `#[service(name = "NAME")]`. A method takes the options of [`remote`]
/// in an `#[rpc(...)]` attribute: `name`, `idempotent`, `timeout_ms`,
/// `roles`. Methods named `new` or `client` would collide with the client's
/// own and are refused.
///
/// # Which macro for what
///
/// Use [`remote`] for a handful of independent functions; use `service`
/// when a set of calls shares state (a database handle, a cache) held by
/// the implementing type, or when you want one client type to pass around;
/// derive [`Request`](macro@Request) when the message is the unit (commands
/// or queries as types). All produce the same wire calls, so a server can
/// mix them.
///
/// # Example
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// use rpc_core::{Client, Context, Server, service};
///
/// #[service(name = "counter")]
/// trait Counter {
///     /// Adds `by` and returns the new total.
///     async fn add(&self, by: u64) -> u64;
///     /// Who is asking.
///     async fn whoami(&self, context: Context) -> Option<String>;
/// }
///
/// #[derive(Default)]
/// struct Memory(AtomicU64);
///
/// impl Counter for Memory {
///     async fn add(&self, by: u64) -> u64 {
///         self.0.fetch_add(by, Ordering::SeqCst) + by
///     }
///     async fn whoami(&self, context: Context) -> Option<String> {
///         context.role().map(str::to_owned)
///     }
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let server = Server::builder()
///         .service(CounterServer::new(Memory::default()))
///         .bind("127.0.0.1:0")
///         .await?;
///     let counter = CounterClient::new(Client::new(server.local_addr().to_string()));
///     assert_eq!(counter.add(2).await?, 2);
///     assert_eq!(counter.add(3).await?, 5);
///     assert_eq!(counter.whoami().await?, None);
///     server.shutdown(std::time::Duration::from_secs(1)).await;
///     Ok(())
/// }
/// ```
pub use rpc_macros::service;
pub use server::{
    Context, DEFAULT_DEDUP_CAPACITY, DEFAULT_DEDUP_LINGER, DEFAULT_DEDUP_MAX_BYTES,
    DEFAULT_DEDUP_WINDOW, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_LISTEN_BACKLOG,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_PENDING_HANDSHAKES,
    DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_RUNNING_CALLS, DEFAULT_MAX_STORE_BYTES, FunctionOptions,
    InsertFuture, ProgramRejected, ProgramStore, Server, ServerBuilder, ServerConfig,
};
pub use wire::{ContentHash, FunctionInfo, PeerRole, StatusCode};
