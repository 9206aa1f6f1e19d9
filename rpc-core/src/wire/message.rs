//! Every message of the protocol, and how their bodies are encoded.

mod control;
mod handshake;
mod request;
mod route;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use control::{ErrorMessage, GoAway, Ping, Pong, VersionMismatch};
pub use handshake::{
    DEFAULT_MAX_PAYLOAD_LEN, DEFAULT_MAX_STREAMS, Hello, Limits, PeerRole, Welcome,
};
pub use request::RequestData;
pub use request::{Call, ChunkEnd, OfferProgram, Response, SendData, SendProgram};
pub use route::{Join, Route, TICKET_LEN};

use super::errors::{DecodeError, EncodeError};
use crate::wire::payload::PayloadTag;
use crate::wire::{Kind, Payload};

/// The longest method, value or peer name, in bytes: 1024.
pub const MAX_NAME_LEN: usize = 1024;

/// A message: the body of a frame, decoded.
///
/// Each variant's fields are encoded with [postcard] in declaration order.
/// Messages with a [`Payload`] end with it; `Chunk` is raw bytes and `Cancel`
/// is empty. PROTOCOL.md gives the byte layout of each.
///
/// [postcard]: https://postcard.jamesmunns.com/wire-format
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`Welcome`].
    Welcome(Welcome),
    /// See [`Ping`].
    Ping(Ping),
    /// See [`Pong`].
    Pong(Pong),
    /// See [`GoAway`].
    GoAway(GoAway),
    /// See [`ErrorMessage`].
    Error(ErrorMessage),
    /// See [`VersionMismatch`].
    VersionMismatch(VersionMismatch),
    /// See [`Route`].
    Route(Route),
    /// A supernode's answer to [`Route`]: the relayed worker is on the
    /// line, and every byte after this frame is the worker's. The body is
    /// empty.
    Routed,
    /// See [`Join`].
    Join(Join),
    /// See [`Call`].
    Call(Call),
    /// See [`Response`].
    Response(Response),
    /// Abandons the stream: the receiver stops working on it and sends
    /// nothing more on it. Frames for the stream that cross the cancel in
    /// flight are ignored. The body is empty.
    Cancel,
    /// See [`SendData`].
    SendData(SendData),
    /// See [`RequestData`].
    RequestData(RequestData),
    /// See [`OfferProgram`].
    OfferProgram(OfferProgram),
    /// See [`SendProgram`].
    SendProgram(SendProgram),
    /// The next bytes of the stream's chunked payload: the whole body, raw.
    Chunk(Bytes),
    /// See [`ChunkEnd`].
    ChunkEnd(ChunkEnd),
}

/// A rule broken by a field: its name and the rule.
type FieldViolation = (&'static str, &'static str);

impl Message {
    /// The kind of this message.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello(_) => Kind::Hello,
            Message::Welcome(_) => Kind::Welcome,
            Message::Ping(_) => Kind::Ping,
            Message::Pong(_) => Kind::Pong,
            Message::GoAway(_) => Kind::GoAway,
            Message::Error(_) => Kind::Error,
            Message::VersionMismatch(_) => Kind::VersionMismatch,
            Message::Route(_) => Kind::Route,
            Message::Routed => Kind::Routed,
            Message::Join(_) => Kind::Join,
            Message::Call(_) => Kind::Call,
            Message::Response(_) => Kind::Response,
            Message::Cancel => Kind::Cancel,
            Message::SendData(_) => Kind::SendData,
            Message::RequestData(_) => Kind::RequestData,
            Message::OfferProgram(_) => Kind::OfferProgram,
            Message::SendProgram(_) => Kind::SendProgram,
            Message::Chunk(_) => Kind::Chunk,
            Message::ChunkEnd(_) => Kind::ChunkEnd,
        }
    }

    /// The message's payload, for the kinds that carry one.
    pub fn payload(&self) -> Option<&Payload> {
        match self {
            Message::Call(call) => Some(&call.payload),
            Message::Response(response) => Some(&response.payload),
            Message::SendData(send) => Some(&send.payload),
            Message::SendProgram(send) => Some(&send.payload),
            _ => None,
        }
    }

    /// Decodes the body of a frame of kind `kind`. Inline payloads and chunks
    /// are slices of `body`, not copies.
    pub(crate) fn decode(kind: Kind, body: Bytes) -> Result<Message, DecodeError> {
        let message = match kind {
            Kind::Hello => Message::Hello(fields_only(kind, &body)?),
            Kind::Welcome => Message::Welcome(fields_only(kind, &body)?),
            Kind::Ping => Message::Ping(fields_only(kind, &body)?),
            Kind::Pong => Message::Pong(fields_only(kind, &body)?),
            Kind::GoAway => Message::GoAway(fields_only(kind, &body)?),
            Kind::Error => Message::Error(fields_only(kind, &body)?),
            Kind::VersionMismatch => Message::VersionMismatch(fields_only(kind, &body)?),
            Kind::Route => Message::Route(fields_only(kind, &body)?),
            Kind::Routed if body.is_empty() => Message::Routed,
            Kind::Routed => {
                return Err(DecodeError::TrailingBytes {
                    kind,
                    count: body.len(),
                });
            }
            Kind::Join => Message::Join(fields_only(kind, &body)?),
            Kind::Call => {
                let (mut call, payload) = fields_and_payload::<Call>(kind, &body)?;
                call.payload = payload;
                Message::Call(call)
            }
            Kind::Response => {
                let (mut response, payload) = fields_and_payload::<Response>(kind, &body)?;
                response.payload = payload;
                Message::Response(response)
            }
            Kind::Cancel if body.is_empty() => Message::Cancel,
            Kind::Cancel => {
                return Err(DecodeError::TrailingBytes {
                    kind,
                    count: body.len(),
                });
            }
            Kind::SendData => {
                let (mut send, payload) = fields_and_payload::<SendData>(kind, &body)?;
                send.payload = payload;
                Message::SendData(send)
            }
            Kind::RequestData => Message::RequestData(fields_only(kind, &body)?),
            Kind::OfferProgram => Message::OfferProgram(fields_only(kind, &body)?),
            Kind::SendProgram => {
                let (mut send, payload) = fields_and_payload::<SendProgram>(kind, &body)?;
                send.payload = payload;
                Message::SendProgram(send)
            }
            Kind::Chunk => Message::Chunk(body),
            Kind::ChunkEnd => Message::ChunkEnd(fields_only(kind, &body)?),
        };
        message
            .check()
            .map_err(|(field, reason)| DecodeError::InvalidField {
                kind,
                field,
                reason,
            })?;
        Ok(message)
    }

    /// Appends the body to `dst`, except for an inline payload (or a chunk's
    /// bytes), which is returned for the caller to send after it.
    pub(crate) fn encode_body(&self, dst: &mut BytesMut) -> Result<Option<&Bytes>, EncodeError> {
        let kind = self.kind();
        self.check()
            .map_err(|(field, reason)| EncodeError::InvalidField {
                kind,
                field,
                reason,
            })?;
        match self {
            Message::Hello(hello) => put_fields(kind, hello, dst)?,
            Message::Welcome(welcome) => put_fields(kind, welcome, dst)?,
            Message::Ping(ping) => put_fields(kind, ping, dst)?,
            Message::Pong(pong) => put_fields(kind, pong, dst)?,
            Message::GoAway(go_away) => put_fields(kind, go_away, dst)?,
            Message::Error(error) => put_fields(kind, error, dst)?,
            Message::VersionMismatch(mismatch) => put_fields(kind, mismatch, dst)?,
            Message::Route(route) => put_fields(kind, route, dst)?,
            Message::Routed => {}
            Message::Join(join) => put_fields(kind, join, dst)?,
            Message::Call(call) => put_fields(kind, call, dst)?,
            Message::Response(response) => put_fields(kind, response, dst)?,
            Message::Cancel => {}
            Message::SendData(send) => put_fields(kind, send, dst)?,
            Message::RequestData(request) => put_fields(kind, request, dst)?,
            Message::OfferProgram(offer) => put_fields(kind, offer, dst)?,
            Message::SendProgram(send) => put_fields(kind, send, dst)?,
            Message::Chunk(bytes) => return Ok(Some(bytes)),
            Message::ChunkEnd(end) => put_fields(kind, end, dst)?,
        }
        match self.payload() {
            Some(payload) => {
                put_fields(kind, &PayloadTag::of(payload), dst)?;
                Ok(payload.inline())
            }
            None => Ok(None),
        }
    }

    /// Checks the rules PROTOCOL.md sets beyond what postcard checks.
    fn check(&self) -> Result<(), FieldViolation> {
        match self {
            Message::Hello(hello) => {
                check_name_len("peer_name", &hello.peer_name)?;
                hello.limits.check()
            }
            Message::Welcome(welcome) => {
                check_name_len("peer_name", &welcome.peer_name)?;
                welcome.limits.check()
            }
            Message::VersionMismatch(mismatch) if mismatch.min_version > mismatch.max_version => {
                Err(("max_version", "is below min_version"))
            }
            Message::Call(call) => check_name("method", &call.method),
            Message::Route(route) => check_name("worker", &route.worker),
            Message::SendData(send) => check_name("name", &send.name),
            Message::RequestData(request) => check_name("name", &request.name),
            _ => Ok(()),
        }
    }
}

fn check_name_len(field: &'static str, name: &str) -> Result<(), FieldViolation> {
    if name.len() > MAX_NAME_LEN {
        Err((field, "longer than 1024 bytes"))
    } else {
        Ok(())
    }
}

fn check_name(field: &'static str, name: &str) -> Result<(), FieldViolation> {
    if name.is_empty() {
        return Err((field, "is empty"));
    }
    check_name_len(field, name)
}

/// Decodes a body that holds only fields, rejecting leftover bytes.
fn fields_only<T: DeserializeOwned>(kind: Kind, body: &[u8]) -> Result<T, DecodeError> {
    let (value, rest) = postcard::take_from_bytes(body)
        .map_err(|source| DecodeError::MalformedBody { kind, source })?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(DecodeError::TrailingBytes {
            kind,
            count: rest.len(),
        })
    }
}

/// Decodes a body of fields followed by a payload.
fn fields_and_payload<T: DeserializeOwned>(
    kind: Kind,
    body: &Bytes,
) -> Result<(T, Payload), DecodeError> {
    let malformed = |source| DecodeError::MalformedBody { kind, source };
    let (value, rest) = postcard::take_from_bytes::<T>(body).map_err(malformed)?;
    let (tag, rest) = postcard::take_from_bytes::<PayloadTag>(rest).map_err(malformed)?;
    let payload = match tag {
        PayloadTag::Inline => Payload::Inline(body.slice(body.len() - rest.len()..)),
        PayloadTag::Chunked(_) if !rest.is_empty() => {
            return Err(DecodeError::TrailingBytes {
                kind,
                count: rest.len(),
            });
        }
        PayloadTag::Chunked(len) => Payload::Chunked { len },
    };
    Ok((value, payload))
}

/// Appends the postcard encoding of `value` to `dst`.
fn put_fields<T: Serialize>(kind: Kind, value: &T, dst: &mut BytesMut) -> Result<(), EncodeError> {
    postcard::serialize_with_flavor(value, BytesMutFlavor(dst))
        .map_err(|source| EncodeError::Serialize { kind, source })
}

/// A postcard output that appends to a `BytesMut`.
struct BytesMutFlavor<'a>(&'a mut BytesMut);

impl postcard::ser_flavors::Flavor for BytesMutFlavor<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.put_u8(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ContentHash, StatusCode};

    fn decode(kind: Kind, body: &[u8]) -> Result<Message, DecodeError> {
        Message::decode(kind, Bytes::copy_from_slice(body))
    }

    fn body_of(message: &Message) -> Vec<u8> {
        let mut dst = BytesMut::new();
        let tail = message.encode_body(&mut dst).unwrap().cloned();
        dst.extend_from_slice(&tail.unwrap_or_default());
        dst.to_vec()
    }

    fn call(method: &str, payload: Payload) -> Message {
        Message::Call(Call {
            method: method.into(),
            timeout_ms: None,
            idempotency_key: None,
            schema_hash: None,
            payload,
        })
    }

    #[test]
    fn garbage_bodies_are_malformed() {
        // A varint that never ends.
        let error = decode(Kind::Ping, &[0xff; 11]).unwrap_err();
        assert!(
            matches!(
                error,
                DecodeError::MalformedBody {
                    kind: Kind::Ping,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(error.to_string(), "malformed Ping body");
        // An empty body where fields are due.
        assert!(matches!(
            decode(Kind::Hello, &[]),
            Err(DecodeError::MalformedBody { .. })
        ));
        // A string that is not UTF-8: length 2, then 0xc3 0x28.
        assert!(matches!(
            decode(Kind::RequestData, &[2, 0xc3, 0x28]),
            Err(DecodeError::MalformedBody { .. })
        ));
        // A string length far past the end of the body.
        assert!(matches!(
            decode(Kind::RequestData, &[0xff, 0xff, 0xff, 0xff, 0x0f, b'a']),
            Err(DecodeError::MalformedBody { .. })
        ));
        // A payload tag that does not exist.
        let mut body = body_of(&Message::SendData(SendData {
            name: "x".into(),
            payload: Payload::empty(),
        }));
        *body.last_mut().unwrap() = 7;
        assert!(matches!(
            decode(Kind::SendData, &body),
            Err(DecodeError::MalformedBody { .. })
        ));
        // An unknown peer role.
        let hello = Message::Hello(Hello {
            peer_name: String::new(),
            role: PeerRole::Client,
            token: None,
            limits: Limits::default(),
        });
        let mut body = body_of(&hello);
        body[1] = 9;
        assert!(matches!(
            decode(Kind::Hello, &body),
            Err(DecodeError::MalformedBody { .. })
        ));
    }

    #[test]
    fn status_codes_outside_the_range_are_malformed() {
        let mut body = postcard::to_allocvec(&700u16).unwrap();
        body.extend([0, 0, 0, 0]);
        assert!(matches!(
            decode(Kind::Response, &body),
            Err(DecodeError::MalformedBody { .. })
        ));
    }

    #[test]
    fn trailing_bytes_after_a_body_are_refused() {
        let mut body = body_of(&Message::Ping(Ping { nonce: 5 }));
        body.push(0);
        let error = decode(Kind::Ping, &body).unwrap_err();
        assert!(matches!(
            error,
            DecodeError::TrailingBytes {
                kind: Kind::Ping,
                count: 1
            }
        ));
        assert_eq!(
            error.to_string(),
            "Ping body is followed by unexpected bytes (1)"
        );

        let error = decode(Kind::Cancel, &[0]).unwrap_err();
        assert!(matches!(error, DecodeError::TrailingBytes { count: 1, .. }));

        let mut body = body_of(&call("f", Payload::Chunked { len: 10 }));
        body.extend([1, 2, 3]);
        let error = decode(Kind::Call, &body).unwrap_err();
        assert!(matches!(
            error,
            DecodeError::TrailingBytes {
                kind: Kind::Call,
                count: 3
            }
        ));

        let mut body = body_of(&Message::ChunkEnd(ChunkEnd {
            hash: Some(ContentHash::of(b"")),
        }));
        body.push(0);
        assert!(matches!(
            decode(Kind::ChunkEnd, &body),
            Err(DecodeError::TrailingBytes { .. })
        ));
    }

    #[test]
    fn an_inline_payload_is_the_rest_of_the_body() {
        let message = call("f", Payload::from(Bytes::from_static(b"\x00\x01rest")));
        let body = body_of(&message);
        assert_eq!(body, b"\x01f\x00\x00\x00\x00\x00\x01rest");
        assert_eq!(decode(Kind::Call, &body).unwrap(), message);
    }

    #[test]
    fn field_rules_are_checked_both_ways() {
        let empty = call("", Payload::empty());
        let mut dst = BytesMut::new();
        let error = empty.encode_body(&mut dst).unwrap_err();
        assert_eq!(error.to_string(), "invalid method in Call: is empty");
        // The same body, hand-made, is refused by the decoder.
        let error = decode(Kind::Call, &[0, 0, 0, 0, 0, 0]).unwrap_err();
        assert_eq!(error.to_string(), "invalid method in Call: is empty");

        // Names of exactly the maximum length pass; one byte more fails.
        let longest = Message::RequestData(RequestData {
            name: "x".repeat(MAX_NAME_LEN),
        });
        assert_eq!(
            decode(Kind::RequestData, &body_of(&longest)).unwrap(),
            longest
        );
        let too_long = postcard::to_allocvec(&"x".repeat(MAX_NAME_LEN + 1)).unwrap();
        let error = decode(Kind::RequestData, &too_long).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid name in RequestData: longer than 1024 bytes"
        );

        let limits = Limits {
            max_frame_len: 100,
            ..Limits::default()
        };
        let welcome = Message::Welcome(Welcome {
            peer_name: "w".into(),
            role: PeerRole::Worker,
            access_role: None,
            limits,
            server_time_ms: 0,
        });
        let error = welcome.encode_body(&mut BytesMut::new()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid max_frame_len in Welcome: below the 16384-byte minimum"
        );

        let mismatch = postcard::to_allocvec(&(3u8, 2u8)).unwrap();
        let error = decode(Kind::VersionMismatch, &mismatch).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid max_version in VersionMismatch: is below min_version"
        );
    }

    #[test]
    fn goaway_and_error_carry_their_status() {
        let goaway = Message::GoAway(GoAway {
            last_stream_id: 9,
            status: StatusCode::UNAVAILABLE,
            message: "shutting down".into(),
        });
        assert_eq!(decode(Kind::GoAway, &body_of(&goaway)).unwrap(), goaway);
    }
}
