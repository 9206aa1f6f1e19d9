//! The fixed-position header at the start of every frame, and message kinds.

use std::fmt;

use super::errors::DecodeError;

/// The protocol version this crate speaks, carried in every frame header.
pub const PROTOCOL_VERSION: u8 = 1;

/// The lowest protocol version this crate speaks.
pub const MIN_PROTOCOL_VERSION: u8 = 1;

/// The highest protocol version this crate speaks.
pub const MAX_PROTOCOL_VERSION: u8 = 1;

/// Size of the length prefix in front of every frame: a big-endian `u32`.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// Size of the fixed header that starts every frame, after the length prefix.
///
/// ```text
/// offset  size  field
///      0     1  version    protocol version, 1
///      1     1  kind       message kind (see `Kind`)
///      2     1  flags      0 in version 1
///      3     1  reserved   0 in version 1
///      4     8  stream id  big-endian u64; 0 for connection messages
/// ```
pub const HEADER_LEN: usize = 12;

/// The kind of a message, the second byte of every frame header.
///
/// Kinds in `0x01..=0x0f` are connection messages and travel on stream 0;
/// all others belong to a stream and travel on a non-zero stream id.
///
/// ```
/// use rpc_core::wire::Kind;
///
/// assert_eq!(Kind::from_u8(0x10), Some(Kind::Call));
/// assert!(Kind::Call.is_stream());
/// assert!(!Kind::Ping.is_stream());
/// assert_eq!(Kind::from_u8(0xee), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
#[repr(u8)]
pub enum Kind {
    /// Opens a connection: version, name, role, credentials and limits.
    Hello = 0x01,
    /// Accepts a connection: the acceptor's name, role and limits.
    Welcome = 0x02,
    /// Asks the peer to answer with a [`Kind::Pong`].
    Ping = 0x03,
    /// Answers a [`Kind::Ping`].
    Pong = 0x04,
    /// Announces a graceful shutdown.
    GoAway = 0x05,
    /// Reports a fatal connection error; the sender then closes.
    Error = 0x06,
    /// Tells a peer that its protocol version is not spoken here.
    VersionMismatch = 0x07,
    /// Asks a supernode to relay the connection to a worker.
    Route = 0x08,
    /// A supernode's answer to [`Kind::Route`]: the worker is on the line.
    Routed = 0x09,
    /// Opens a relayed worker's side of a relayed connection.
    Join = 0x0a,
    /// Calls a named function.
    Call = 0x10,
    /// Answers any request with a status and a payload.
    Response = 0x11,
    /// Abandons a stream.
    Cancel = 0x12,
    /// Pushes a named value to the peer.
    SendData = 0x20,
    /// Asks the peer for a named value.
    RequestData = 0x21,
    /// Asks whether the peer already holds a program.
    OfferProgram = 0x30,
    /// Uploads a program.
    SendProgram = 0x31,
    /// Carries the next piece of a chunked payload.
    Chunk = 0x40,
    /// Ends a chunked payload with its SHA-256.
    ChunkEnd = 0x41,
}

impl Kind {
    /// Every kind of this protocol version, in code order.
    pub const ALL: [Kind; 19] = [
        Kind::Hello,
        Kind::Welcome,
        Kind::Ping,
        Kind::Pong,
        Kind::GoAway,
        Kind::Error,
        Kind::VersionMismatch,
        Kind::Route,
        Kind::Routed,
        Kind::Join,
        Kind::Call,
        Kind::Response,
        Kind::Cancel,
        Kind::SendData,
        Kind::RequestData,
        Kind::OfferProgram,
        Kind::SendProgram,
        Kind::Chunk,
        Kind::ChunkEnd,
    ];

    /// Returns the kind with wire code `code`, or `None` if there is none.
    pub const fn from_u8(code: u8) -> Option<Kind> {
        Some(match code {
            0x01 => Kind::Hello,
            0x02 => Kind::Welcome,
            0x03 => Kind::Ping,
            0x04 => Kind::Pong,
            0x05 => Kind::GoAway,
            0x06 => Kind::Error,
            0x07 => Kind::VersionMismatch,
            0x08 => Kind::Route,
            0x09 => Kind::Routed,
            0x0a => Kind::Join,
            0x10 => Kind::Call,
            0x11 => Kind::Response,
            0x12 => Kind::Cancel,
            0x20 => Kind::SendData,
            0x21 => Kind::RequestData,
            0x30 => Kind::OfferProgram,
            0x31 => Kind::SendProgram,
            0x40 => Kind::Chunk,
            0x41 => Kind::ChunkEnd,
            _ => return None,
        })
    }

    /// The wire code of this kind.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// Whether this kind belongs to a stream (non-zero stream id) rather than
    /// to the connection (stream 0).
    pub const fn is_stream(self) -> bool {
        self as u8 >= 0x10
    }

    /// Whether this kind opens a connection (`Hello`, `Welcome`, and the
    /// relay's `Route`, `Routed`, `Join`). Such frames
    /// are sent before the limits are known, so they must fit in
    /// [`MIN_MAX_FRAME_LEN`](crate::wire::MIN_MAX_FRAME_LEN).
    pub const fn is_handshake(self) -> bool {
        matches!(
            self,
            Kind::Hello | Kind::Welcome | Kind::Route | Kind::Routed | Kind::Join
        )
    }

    /// Whether the body of this kind ends in a payload (see
    /// [`Payload`](crate::wire::Payload)).
    pub const fn has_payload(self) -> bool {
        matches!(
            self,
            Kind::Call | Kind::Response | Kind::SendData | Kind::SendProgram
        )
    }

    /// The kind's name as PROTOCOL.md spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Hello => "Hello",
            Kind::Welcome => "Welcome",
            Kind::Ping => "Ping",
            Kind::Pong => "Pong",
            Kind::GoAway => "GoAway",
            Kind::Error => "Error",
            Kind::VersionMismatch => "VersionMismatch",
            Kind::Route => "Route",
            Kind::Routed => "Routed",
            Kind::Join => "Join",
            Kind::Call => "Call",
            Kind::Response => "Response",
            Kind::Cancel => "Cancel",
            Kind::SendData => "SendData",
            Kind::RequestData => "RequestData",
            Kind::OfferProgram => "OfferProgram",
            Kind::SendProgram => "SendProgram",
            Kind::Chunk => "Chunk",
            Kind::ChunkEnd => "ChunkEnd",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A decoded and validated frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) version: u8,
    pub(crate) kind: Kind,
    pub(crate) stream_id: u64,
}

impl Header {
    /// Decodes and validates the header at the start of `bytes`, which must
    /// hold at least [`HEADER_LEN`] bytes.
    ///
    /// Checks, in this order: the version (any version is accepted for
    /// [`Kind::VersionMismatch`], whose layout is frozen), the kind, the
    /// flags and reserved bytes, and that the stream id suits the kind.
    pub(crate) fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Header, DecodeError> {
        let [version, kind_code, flags, reserved, id @ ..] = *bytes;
        let stream_id = u64::from_be_bytes(id);
        let kind = Kind::from_u8(kind_code);
        let version_ok = (MIN_PROTOCOL_VERSION..=MAX_PROTOCOL_VERSION).contains(&version);
        if !version_ok && kind != Some(Kind::VersionMismatch) {
            return Err(DecodeError::UnsupportedVersion { version });
        }
        let kind = kind.ok_or(DecodeError::UnknownKind { kind: kind_code })?;
        if flags != 0 || reserved != 0 {
            return Err(DecodeError::ReservedBits { flags, reserved });
        }
        if !stream_fits(kind, stream_id) {
            return Err(DecodeError::WrongStream { kind, stream_id });
        }
        Ok(Header {
            version,
            kind,
            stream_id,
        })
    }

    /// Encodes the header for the current protocol version.
    pub(crate) fn encode(kind: Kind, stream_id: u64) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let [version, kind_code, _flags, _reserved, id @ ..] = &mut out;
        *version = PROTOCOL_VERSION;
        *kind_code = kind.as_u8();
        *id = stream_id.to_be_bytes();
        out
    }
}

/// Whether `stream_id` suits `kind`: connection messages use stream 0 and
/// stream messages any other id.
pub(crate) fn stream_fits(kind: Kind, stream_id: u64) -> bool {
    kind.is_stream() == (stream_id != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_codes() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_u8(kind.as_u8()), Some(kind));
        }
        let known = (0..=u8::MAX).filter_map(Kind::from_u8).count();
        assert_eq!(known, Kind::ALL.len());
    }

    #[test]
    fn header_round_trips() {
        let bytes = Header::encode(Kind::Call, 0x0102_0304_0506_0708);
        assert_eq!(
            bytes,
            [1, 0x10, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8],
            "version, kind, flags, reserved, big-endian stream id"
        );
        let header = Header::decode(&bytes).unwrap();
        assert_eq!(header.kind, Kind::Call);
        assert_eq!(header.stream_id, 0x0102_0304_0506_0708);
    }

    #[test]
    fn header_rejections_are_specific() {
        let mut bytes = Header::encode(Kind::Call, 1);
        bytes[0] = 9;
        assert!(matches!(
            Header::decode(&bytes),
            Err(DecodeError::UnsupportedVersion { version: 9 })
        ));

        let mut bytes = Header::encode(Kind::Call, 1);
        bytes[1] = 0x7f;
        assert!(matches!(
            Header::decode(&bytes),
            Err(DecodeError::UnknownKind { kind: 0x7f })
        ));

        let mut bytes = Header::encode(Kind::Call, 1);
        bytes[2] = 0x80;
        assert!(matches!(
            Header::decode(&bytes),
            Err(DecodeError::ReservedBits { flags: 0x80, .. })
        ));

        let mut bytes = Header::encode(Kind::Call, 1);
        bytes[3] = 1;
        assert!(matches!(
            Header::decode(&bytes),
            Err(DecodeError::ReservedBits { reserved: 1, .. })
        ));

        let bytes = Header::encode(Kind::Call, 0);
        assert!(matches!(
            Header::decode(&bytes),
            Err(DecodeError::WrongStream { stream_id: 0, .. })
        ));

        let bytes = Header::encode(Kind::Ping, 7);
        assert!(matches!(
            Header::decode(&bytes),
            Err(DecodeError::WrongStream { stream_id: 7, .. })
        ));
    }

    #[test]
    fn version_mismatch_is_readable_in_any_version() {
        let mut bytes = Header::encode(Kind::VersionMismatch, 0);
        bytes[0] = 200;
        let header = Header::decode(&bytes).unwrap();
        assert_eq!(header.version, 200);
        assert_eq!(header.kind, Kind::VersionMismatch);
    }
}
