//! Relayed connections: reaching a worker that accepts no connections
//! through a *supernode*, a server that it keeps in touch with.
//!
//! The relayed worker *attaches* to a supernode (it asks it, in a long
//! poll of its own, for connections to open: [`Supernode::wait_for_dials`]).
//! A client that wants the worker connects to the supernode and sends a
//! `Route` frame naming it, instead of `Hello`; the supernode hands the
//! worker a single-use ticket, the worker opens a new connection to the
//! supernode and sends `Join` with it ([`join`]), and the supernode joins
//! the two connections byte for byte. The client then does its handshake
//! (TLS if the worker has it, then `Hello`) with the worker itself, end to
//! end: the supernode decodes nothing past the first frame, cannot read or
//! forge a job under TLS, and holds no token of the client's. TCP's own
//! flow control is the backpressure on each side; cancellations, deadlines
//! and modules offered by hash pass through like every other frame.
//!
//! A client names a relayed worker with an address of the form
//! `worker@host:port` (`tls://worker@host:port` with TLS): `worker` is the
//! name it attached under, `host:port` its supernode. PROTOCOL.md section 8
//! ("Relayed connections") is the contract.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use rpc_core::relay::{Supernode, SupernodeConfig};
//! use rpc_core::{Client, Server};
//!
//! // A supernode: an ordinary server that also relays.
//! let supernode = Supernode::new(SupernodeConfig::default());
//! let relay = Server::builder().supernode(supernode.clone()).bind("127.0.0.1:0").await?;
//! let relay_addr = relay.local_addr().to_string();
//!
//! // A worker that listens nowhere: it serves the connections it opens.
//! let (worker, intake) = Server::builder()
//!     .function("hello", |name: String| async move { Ok::<_, rpc_core::Infallible>(format!("hello, {name}")) })
//!     .serve_joined()?;
//! let dials = supernode.clone();
//! let dialer = tokio::spawn(async move {
//!     loop {
//!         // In a real worker this is a call to the supernode over the network.
//!         for ticket in dials.wait_for_dials("w1", 0, Duration::from_secs(10)).await? {
//!             let stream = rpc_core::relay::join(&relay_addr, ticket, Duration::from_secs(5)).await?;
//!             intake.serve(stream).await;
//!         }
//!     }
//!     #[allow(unreachable_code)]
//!     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
//! });
//! # while supernode.attached() == 0 { tokio::task::yield_now().await; }
//!
//! let client = Client::new(format!("w1@{}", relay.local_addr()));
//! let answer: String = client.call("hello", &"relay".to_string()).await?;
//! assert_eq!(answer, "hello, relay");
//! # dialer.abort();
//! # worker.shutdown(Duration::from_secs(1)).await;
//! # relay.shutdown(Duration::from_secs(1)).await;
//! # Ok(())
//! # }
//! ```

mod preamble;
mod splice;
mod supernode;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::wire::{Join, Message, Route, TICKET_LEN};

pub(crate) use preamble::peek_relay_kind;
use preamble::{read_frame, write_message};
pub use supernode::{
    AttachError, DEFAULT_MAX_RELAYED_WORKERS, DEFAULT_MAX_ROUTES, Supernode, SupernodeCollector,
    SupernodeConfig,
};

/// A single-use ticket a supernode hands a relayed worker for one
/// connection: 16 random bytes.
pub type Ticket = [u8; TICKET_LEN];

/// Opens the relayed worker's side of a relayed connection: connects to
/// the supernode at `supernode` (`host:port`), sends `Join` with `ticket`,
/// and returns the connection, to be served as an accepted one
/// ([`JoinedIntake::serve`]).
///
/// # Errors
///
/// The I/O error if the supernode cannot be reached within
/// `connect_timeout`.
pub async fn join(
    supernode: &str,
    ticket: Ticket,
    connect_timeout: Duration,
) -> std::io::Result<TcpStream> {
    timeout(connect_timeout, async {
        let mut socket = TcpStream::connect(supernode).await?;
        let _ = socket.set_nodelay(true);
        write_message(&mut socket, Message::Join(Join { ticket })).await?;
        Ok(socket)
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting timed out"))?
}

/// Asks the supernode on `socket` for the worker `worker` and waits for
/// its answer: `Ok` once the worker is on the line.
pub(crate) async fn request_route(
    socket: &mut TcpStream,
    worker: &str,
) -> Result<(), crate::RpcError> {
    let route = Message::Route(Route {
        worker: worker.to_owned(),
    });
    let unavailable = |error: &dyn std::fmt::Display| {
        crate::RpcError::Unavailable(format!(
            "could not reach {worker} through its supernode: {error}"
        ))
    };
    write_message(socket, route)
        .await
        .map_err(|error| unavailable(&error))?;
    match read_frame(socket).await {
        Ok(frame) => match frame.message {
            Message::Routed => Ok(()),
            Message::Error(error) => Err(crate::RpcError::from_status(
                error.status,
                format!("the supernode could not reach {worker}: {}", error.message),
            )),
            other => Err(unavailable(&format_args!(
                "the supernode answered Route with {}",
                other.kind()
            ))),
        },
        Err(error) => Err(unavailable(&error)),
    }
}

/// Splits a relayed address, `worker@host:port`, into the worker's name
/// and its supernode's address; `None` for an ordinary address.
pub(crate) fn split_route(dial: &str) -> Option<(&str, &str)> {
    let (worker, supernode) = dial.rsplit_once('@')?;
    (!worker.is_empty()).then_some((worker, supernode))
}

/// Connections a relayed worker opened ([`join`]), handed to the server
/// made with [`ServerBuilder::serve_joined`](crate::ServerBuilder::serve_joined)
/// to be served as if it had accepted them.
#[derive(Clone, Debug)]
pub struct JoinedIntake {
    pub(crate) sender: mpsc::Sender<(TcpStream, SocketAddr)>,
}

impl JoinedIntake {
    /// Hands `stream` to the server. Returns `false` if the server has
    /// stopped.
    pub async fn serve(&self, stream: TcpStream) -> bool {
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        self.sender.send((stream, peer)).await.is_ok()
    }
}

#[cfg(test)]
mod tests;
