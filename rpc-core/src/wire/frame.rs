//! A frame: a message and the stream it belongs to.

use bytes::{BufMut, Bytes, BytesMut};

use super::errors::EncodeError;
use crate::wire::header::{Header, stream_fits};
use crate::wire::{HEADER_LEN, Kind, LENGTH_PREFIX_LEN, MIN_MAX_FRAME_LEN, Message};

/// One unit on the wire: a message on a stream.
///
/// Connection messages (handshake, ping, goaway, error) travel on stream 0;
/// every request opens a new stream with a fresh non-zero id, and all frames
/// of that exchange (chunks, cancel, the response) carry it. The peer that
/// opened the connection uses odd ids and the peer that accepted it even ids,
/// each increasing, so both can open streams without colliding.
///
/// ```
/// use rpc_core::wire::{Frame, Message, Ping};
///
/// let ping = Frame::connection(Message::Ping(Ping { nonce: 7 }));
/// assert_eq!(ping.stream_id, 0);
/// assert_eq!(ping.kind(), rpc_core::wire::Kind::Ping);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The stream the message belongs to; 0 for connection messages.
    pub stream_id: u64,
    /// The message.
    pub message: Message,
}

impl Frame {
    /// A frame carrying `message` on stream `stream_id`.
    pub fn new(stream_id: u64, message: Message) -> Frame {
        Frame { stream_id, message }
    }

    /// A frame carrying a connection message, on stream 0.
    pub fn connection(message: Message) -> Frame {
        Frame::new(0, message)
    }

    /// The kind of the frame's message.
    pub fn kind(&self) -> Kind {
        self.message.kind()
    }

    /// Appends the frame's length prefix, header and body to `dst`, except for
    /// the trailing inline payload (or chunk bytes), which it returns: the
    /// caller writes those bytes right after, for example with a vectored
    /// write, so large payloads are never copied. The length prefix counts
    /// them.
    ///
    /// # Errors
    ///
    /// [`EncodeError::WrongStream`] if the stream id does not suit the kind,
    /// [`EncodeError::InvalidField`] if a field breaks a protocol rule, and
    /// [`EncodeError::FrameTooLarge`] if the frame would be longer than
    /// `max_frame_len` (or, for `Hello` and `Welcome`, than
    /// [`MIN_MAX_FRAME_LEN`]). On error `dst` is left as it was.
    pub fn encode_head(
        &self,
        dst: &mut BytesMut,
        max_frame_len: u32,
    ) -> Result<Option<Bytes>, EncodeError> {
        let kind = self.kind();
        if !stream_fits(kind, self.stream_id) {
            return Err(EncodeError::WrongStream {
                kind,
                stream_id: self.stream_id,
            });
        }
        let max_frame_len = if kind.is_handshake() {
            max_frame_len.min(MIN_MAX_FRAME_LEN)
        } else {
            max_frame_len
        };
        let start = dst.len();
        dst.reserve(LENGTH_PREFIX_LEN + HEADER_LEN + 64);
        dst.put_u32(0);
        dst.put_slice(&Header::encode(kind, self.stream_id));
        let tail = match self.message.encode_body(dst) {
            Ok(tail) => tail,
            Err(error) => {
                dst.truncate(start);
                return Err(error);
            }
        };
        let tail_len = tail.map_or(0, Bytes::len);
        let frame_len = (dst.len() - start - LENGTH_PREFIX_LEN) as u64 + tail_len as u64;
        match u32::try_from(frame_len) {
            Ok(len) if len <= max_frame_len => {
                if let Some(prefix) = dst.get_mut(start..start + LENGTH_PREFIX_LEN) {
                    prefix.copy_from_slice(&len.to_be_bytes());
                }
                Ok(tail.cloned())
            }
            _ => {
                dst.truncate(start);
                Err(EncodeError::FrameTooLarge {
                    len: frame_len,
                    max: max_frame_len,
                })
            }
        }
    }

    /// Appends the whole frame to `dst`, copying any inline payload.
    ///
    /// # Errors
    ///
    /// As for [`Frame::encode_head`]; on error `dst` is left as it was.
    pub fn encode(&self, dst: &mut BytesMut, max_frame_len: u32) -> Result<(), EncodeError> {
        if let Some(tail) = self.encode_head(dst, max_frame_len)? {
            dst.extend_from_slice(&tail);
        }
        Ok(())
    }
}
