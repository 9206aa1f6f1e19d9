//! Connection control messages: keepalive, shutdown, fatal errors and the
//! version notice.

use serde::{Deserialize, Serialize};

use crate::wire::StatusCode;

/// Asks the peer to answer with a [`Pong`] carrying the same nonce.
///
/// Either side may ping at any time after the handshake, to keep an idle
/// connection open or to measure the round-trip time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Any value; the pong echoes it.
    pub nonce: u64,
}

/// Answers a [`Ping`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// The nonce of the ping being answered.
    pub nonce: u64,
}

/// Announces that the sender is shutting down gracefully.
///
/// The sender will finish the streams the receiver opened with ids up to and
/// including `last_stream_id`, and ignore newer ones; the receiver should open
/// no new streams on this connection and retry newer ones elsewhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoAway {
    /// The highest stream id, opened by the receiver, that the sender will
    /// still answer.
    pub last_stream_id: u64,
    /// Why: usually [`StatusCode::UNAVAILABLE`] for a shutdown.
    pub status: StatusCode,
    /// A human-readable reason; may be empty.
    pub message: String,
}

/// Reports a fatal connection error; the sender closes the connection after
/// it.
///
/// Used for a refused handshake (`403` for a wrong token) and for protocol
/// violations (`400`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMessage {
    /// What kind of failure.
    pub status: StatusCode,
    /// A human-readable description, without internals such as paths.
    pub message: String,
}

/// Tells a peer that the version in its frame is not spoken here.
///
/// Its layout is frozen across all protocol versions: a receiver decodes it
/// whatever the frame's version byte, so any peer can read it. The sender
/// closes the connection after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionMismatch {
    /// The lowest version the sender speaks.
    pub min_version: u8,
    /// The highest version the sender speaks; at least `min_version`.
    pub max_version: u8,
}
