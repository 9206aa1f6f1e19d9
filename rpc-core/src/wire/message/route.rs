//! `Route`, `Routed` and `Join`: how a connection is relayed by a
//! supernode to a worker that accepts no connections (PROTOCOL.md
//! section 8, "Relayed connections").

use serde::{Deserialize, Serialize};

/// The length of a [`Join`] ticket: 16 random bytes.
pub const TICKET_LEN: usize = 16;

/// Asks a supernode to connect this byte stream to the relayed worker
/// named `worker`: the first frame of a connection, sent in the clear
/// instead of `Hello` (and before TLS).
///
/// The supernode answers [`Kind::Routed`](crate::wire::Kind::Routed) once
/// the worker is on the line, or `Error` (404 no such worker attached, 503
/// no room) and closes. After `Routed` every byte belongs to the worker:
/// the opener starts its own handshake (TLS if the worker has it, then
/// `Hello`) with the worker, end to end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The name the worker attached under; 1 to 1024 bytes.
    pub worker: String,
}

/// A relayed worker's answer to a supernode's call for a connection: the
/// first frame of a connection the worker opened to the supernode, sent in
/// the clear instead of `Hello`. The supernode joins this connection to the
/// one that asked for the worker; from then on the worker is the
/// *acceptor* of the joined connection and waits for the opener's `Hello`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    /// The ticket the supernode handed out for this connection: single use,
    /// 16 random bytes.
    pub ticket: [u8; TICKET_LEN],
}
