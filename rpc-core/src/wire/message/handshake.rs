//! `Hello` and `Welcome`: how a connection starts.

use serde::{Deserialize, Serialize};

use crate::wire::{DEFAULT_MAX_FRAME_LEN, MIN_MAX_FRAME_LEN};

/// The default for [`Limits::max_streams`]: 1024 streams.
pub const DEFAULT_MAX_STREAMS: u32 = 1024;

/// The default for [`Limits::max_payload_len`]: 64 MiB.
pub const DEFAULT_MAX_PAYLOAD_LEN: u64 = 64 << 20;

/// What a peer is, announced in [`Hello`] and [`Welcome`].
///
/// On the wire a postcard enum: the variant index as a varint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PeerRole {
    /// Makes calls and ships programs; serves nothing. Wire value 0.
    Client,
    /// Serves functions and data. Wire value 1.
    Server,
    /// Runs shipped programs. Wire value 2.
    Worker,
    /// Keeps the directory of workers and relays to them. Wire value 3.
    Coordinator,
}

/// Limits a peer announces about what it will accept.
///
/// Each side announces its own limits in the handshake, and the other side
/// must stay within them for the rest of the connection.
///
/// ```
/// use rpc_core::wire::Limits;
///
/// let limits = Limits {
///     max_payload_len: 1 << 30,
///     ..Limits::default()
/// };
/// assert_eq!(limits.max_frame_len, rpc_core::wire::DEFAULT_MAX_FRAME_LEN);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// The largest frame length (header plus body, the value of the length
    /// prefix) this peer accepts; at least [`MIN_MAX_FRAME_LEN`]. The default
    /// is [`DEFAULT_MAX_FRAME_LEN`], 1 MiB.
    pub max_frame_len: u32,
    /// How many streams the other side may have open towards this peer at
    /// once; at least 1. The default is [`DEFAULT_MAX_STREAMS`], 1024.
    pub max_streams: u32,
    /// The largest payload, inline or chunked, this peer accepts in one
    /// message. The default is [`DEFAULT_MAX_PAYLOAD_LEN`], 64 MiB.
    pub max_payload_len: u64,
    /// After this many milliseconds without receiving a frame, this peer
    /// closes the connection; the other side should send a `Ping` well before
    /// (at half the interval, say). `None` means this peer never times out an
    /// idle connection. The default is `None`.
    pub idle_timeout_ms: Option<u32>,
}

impl Limits {
    /// Checks the rules PROTOCOL.md sets for limits.
    pub(crate) fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.max_frame_len < MIN_MAX_FRAME_LEN {
            return Err(("max_frame_len", "below the 16384-byte minimum"));
        }
        if self.max_streams == 0 {
            return Err(("max_streams", "must be at least 1"));
        }
        if self.idle_timeout_ms == Some(0) {
            return Err(("idle_timeout_ms", "must be positive when present"));
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_streams: DEFAULT_MAX_STREAMS,
            max_payload_len: DEFAULT_MAX_PAYLOAD_LEN,
            idle_timeout_ms: None,
        }
    }
}

/// The first frame of a connection, sent by the peer that opened it.
///
/// The acceptor answers with [`Welcome`], or with an
/// [`ErrorMessage`](crate::wire::ErrorMessage) (for example `403` for a wrong
/// token) and closes, or with a
/// [`VersionMismatch`](crate::wire::VersionMismatch) and closes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// A name for logs, such as a host name; at most
    /// [`MAX_NAME_LEN`](crate::wire::MAX_NAME_LEN) bytes, may be empty.
    pub peer_name: String,
    /// What the opener is.
    pub role: PeerRole,
    /// A shared-secret token that grants an access role, if any.
    pub token: Option<String>,
    /// What the opener accepts.
    pub limits: Limits,
}

/// The acceptor's answer to a [`Hello`] it accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// A name for logs; at most [`MAX_NAME_LEN`](crate::wire::MAX_NAME_LEN) bytes,
    /// may be empty.
    pub peer_name: String,
    /// What the acceptor is.
    pub role: PeerRole,
    /// The access role the opener's token granted, or `None` if the opener is
    /// anonymous.
    pub access_role: Option<String>,
    /// What the acceptor accepts.
    pub limits: Limits,
    /// The acceptor's clock, in milliseconds since the Unix epoch.
    pub server_time_ms: u64,
}
