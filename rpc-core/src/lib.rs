//! The core of a framework for remote procedure calls and for shipping
//! WebAssembly programs to workers.
//!
//! Most users need two types: a [`Server`] that hosts named functions (plus a
//! data store and a program store), and a [`Client`] that calls them, many
//! calls at once over one connection, with deadlines, cancellation,
//! reconnection and retries. See [`Server`] for a complete example.
//!
//! Underneath is the **wire protocol**: length-prefixed frames, each a
//! fixed 12-byte header and a [postcard]-encoded body, serving four purposes:
//!
//! | purpose | messages |
//! | --- | --- |
//! | call a named function | [`Call`] → [`Response`], many in flight per connection, answered in any order |
//! | send data | [`SendData`] → [`Response`] |
//! | request data | [`RequestData`] → [`Response`] carrying the value |
//! | transfer a program | [`OfferProgram`] → `200` (held) or `404` (send it), then [`SendProgram`] → [`Response`] |
//!
//! plus the handshake ([`Hello`], [`Welcome`]), keepalive ([`Ping`],
//! [`Pong`]), graceful shutdown ([`GoAway`]), fatal errors
//! ([`ErrorMessage`]), cancellation ([`Message::Cancel`]) and chunked
//! transfer of payloads larger than a frame ([`ChunkSender`],
//! [`ChunkReceiver`]). `PROTOCOL.md` at the repository root specifies every
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
//! use rpc_core::{Call, Frame, FrameCodec, Message, Payload, Response, StatusCode};
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

mod client;
mod conn;
mod error;
mod server;
#[cfg(feature = "tls")]
pub mod tls;
mod transfer;
mod wire;

pub use client::{
    CallOptions, Client, ClientConfig, DEFAULT_CALL_TIMEOUT, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_KEEPALIVE, DEFAULT_MAX_RETRIES,
};
pub use error::{DecodeError, EncodeError, RemoteError, RpcError, ServeError, TransferError};
pub use server::{
    Context, DEFAULT_DEDUP_CAPACITY, DEFAULT_DEDUP_WINDOW, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_STORE_BYTES,
    DESCRIBE_METHOD, FunctionInfo, FunctionOptions, Server, ServerConfig, ServerHandle,
};
pub use transfer::{ChunkFrames, ChunkReceiver, ChunkSender, DEFAULT_CHUNK_LEN, chunk_len_for};
pub use wire::{
    Call, ChunkEnd, ContentHash, DEFAULT_MAX_FRAME_LEN, DEFAULT_MAX_PAYLOAD_LEN,
    DEFAULT_MAX_STREAMS, ErrorMessage, Frame, FrameCodec, GoAway, HEADER_LEN, Hello, Kind,
    LENGTH_PREFIX_LEN, Limits, MAX_NAME_LEN, MAX_PROTOCOL_VERSION, MIN_MAX_FRAME_LEN,
    MIN_PROTOCOL_VERSION, Message, OfferProgram, PROTOCOL_VERSION, ParseHashError, Payload,
    PeerRole, Ping, Pong, RequestData, Response, SendData, SendProgram, StatusCode,
    VersionMismatch, Welcome,
};
