//! Status codes carried by every response, error and goaway.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The outcome of a request, in the spirit of HTTP's status codes.
///
/// On the wire a status is a `u16` (a postcard varint). The classes follow
/// HTTP: `2xx` means success, `4xx` means the request was at fault (the caller
/// should change something before trying again), `5xx` means the responder
/// could not serve a valid request (trying again later may work).
///
/// Codes this version does not name are still carried faithfully, so a newer
/// peer's code reaches the caller unchanged; [`StatusCode::class`] tells how to
/// treat it. A decoder rejects codes outside `100..=599`.
///
/// ```
/// use rpc_core::StatusCode;
///
/// let status = StatusCode::NOT_FOUND;
/// assert_eq!(status.as_u16(), 404);
/// assert!(status.is_client_error());
/// assert_eq!(status.to_string(), "404 not found");
/// assert_eq!(StatusCode::from_u16(404), Some(StatusCode::NOT_FOUND));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatusCode(u16);

impl StatusCode {
    /// `200`: the request succeeded; the payload holds the result.
    pub const OK: Self = Self(200);
    /// `400`: the request was malformed (a body or arguments that did not
    /// decode, a protocol violation).
    pub const BAD_REQUEST: Self = Self(400);
    /// `403`: the credentials are missing or wrong, or their role may not make
    /// this request.
    pub const FORBIDDEN: Self = Self(403);
    /// `404`: no function, value or program has that name or hash.
    pub const NOT_FOUND: Self = Self(404);
    /// `409`: the caller and the responder disagree on the types of a function
    /// (its schema hash differs).
    pub const INCOMPATIBLE: Self = Self(409);
    /// `422`: the function ran and returned its own error; the payload holds
    /// that error, encoded by the function.
    pub const APPLICATION_ERROR: Self = Self(422);
    /// `426`: this server accepts TLS connections only, and the connection
    /// was plaintext (sent in the clear, in place of `Welcome`, before the
    /// server closes).
    pub const TLS_REQUIRED: Self = Self(426);
    /// `429`: a limit was reached (too many calls in flight, payload too large,
    /// out of memory or fuel).
    pub const RESOURCE_EXHAUSTED: Self = Self(429);
    /// `499`: the caller cancelled the request.
    pub const CANCELLED: Self = Self(499);
    /// `500`: the responder failed in a way the caller cannot fix.
    pub const INTERNAL: Self = Self(500);
    /// `501`: the responder does not serve this kind of request at all (for
    /// example data requests sent to a peer without a data store).
    pub const UNSUPPORTED: Self = Self(501);
    /// `503`: the responder cannot serve now (shutting down, overloaded,
    /// connection lost); trying again later may work.
    pub const UNAVAILABLE: Self = Self(503);
    /// `504`: the request's deadline passed before it completed.
    pub const DEADLINE_EXCEEDED: Self = Self(504);

    /// The lowest code a decoder accepts.
    pub const MIN: u16 = 100;
    /// The highest code a decoder accepts.
    pub const MAX: u16 = 599;

    /// Returns the status for `code`, or `None` if it is outside `100..=599`.
    pub const fn from_u16(code: u16) -> Option<Self> {
        if code >= Self::MIN && code <= Self::MAX {
            Some(Self(code))
        } else {
            None
        }
    }

    /// The numeric code.
    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// Whether the code is in `200..=299`.
    pub const fn is_success(self) -> bool {
        self.0 >= 200 && self.0 <= 299
    }

    /// Whether the code is in `400..=499`: the request was at fault.
    pub const fn is_client_error(self) -> bool {
        self.0 >= 400 && self.0 <= 499
    }

    /// Whether the code is in `500..=599`: the responder was at fault.
    pub const fn is_server_error(self) -> bool {
        self.0 >= 500 && self.0 <= 599
    }

    /// The class of the code: `1` to `5`, its hundreds digit.
    pub const fn class(self) -> u8 {
        // `self.0 <= 599`, so the quotient fits in a `u8`.
        #[allow(clippy::cast_possible_truncation)]
        let class = (self.0 / 100) as u8;
        class
    }

    /// A short lowercase description, or `None` for codes this version does
    /// not name.
    pub const fn reason(self) -> Option<&'static str> {
        Some(match self.0 {
            200 => "ok",
            400 => "bad request",
            403 => "forbidden",
            404 => "not found",
            409 => "incompatible",
            422 => "application error",
            426 => "tls required",
            429 => "resource exhausted",
            499 => "cancelled",
            500 => "internal",
            501 => "unsupported",
            503 => "unavailable",
            504 => "deadline exceeded",
            _ => return None,
        })
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason() {
            Some(reason) => write!(f, "{} {reason}", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Debug for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StatusCode({self})")
    }
}

impl Serialize for StatusCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u16(self.0)
    }
}

impl<'de> Deserialize<'de> for StatusCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = u16::deserialize(deserializer)?;
        Self::from_u16(code).ok_or_else(|| {
            serde::de::Error::custom(format_args!(
                "status code {code} is outside {}..={}",
                Self::MIN,
                Self::MAX
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_http() {
        assert!(StatusCode::OK.is_success());
        for status in [
            StatusCode::BAD_REQUEST,
            StatusCode::FORBIDDEN,
            StatusCode::NOT_FOUND,
            StatusCode::INCOMPATIBLE,
            StatusCode::APPLICATION_ERROR,
            StatusCode::RESOURCE_EXHAUSTED,
            StatusCode::CANCELLED,
        ] {
            assert!(status.is_client_error(), "{status}");
            assert_eq!(status.class(), 4);
        }
        for status in [
            StatusCode::INTERNAL,
            StatusCode::UNSUPPORTED,
            StatusCode::UNAVAILABLE,
            StatusCode::DEADLINE_EXCEEDED,
        ] {
            assert!(status.is_server_error(), "{status}");
        }
    }

    #[test]
    fn unknown_codes_are_kept_but_out_of_range_rejected() {
        let teapot = StatusCode::from_u16(418).unwrap();
        assert_eq!(teapot.reason(), None);
        assert_eq!(teapot.to_string(), "418");
        assert_eq!(StatusCode::from_u16(99), None);
        assert_eq!(StatusCode::from_u16(600), None);
        assert_eq!(StatusCode::from_u16(0), None);
    }

    #[test]
    fn postcard_form_is_a_varint() {
        let bytes = postcard::to_allocvec(&StatusCode::OK).unwrap();
        assert_eq!(bytes, [0xc8, 0x01]);
        let bytes = postcard::to_allocvec(&700u16).unwrap();
        assert!(postcard::from_bytes::<StatusCode>(&bytes).is_err());
    }
}
