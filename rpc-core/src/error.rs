//! Errors of the wire protocol and of chunked transfers.

use std::io;

use crate::wire::StatusCode;

/// Why a function registered with
/// [`ServerBuilder::function_with_status`](crate::ServerBuilder::function_with_status)
/// has no result: its own error, answered `422` with the error encoded as
/// for any function, or a protocol status with a message, for conditions
/// that are the server's and not the call's (busy, unavailable), which
/// callers and pools handle as they do the server's own.
///
/// `?` turns the function's own error into a `Failure`.
///
/// ```
/// use rpc_core::{Failure, StatusCode};
///
/// fn check(queue: usize) -> Result<(), Failure<String>> {
///     if queue > 100 {
///         return Err(Failure::Status(StatusCode::RESOURCE_EXHAUSTED, "busy".into()));
///     }
///     Err("not today".to_owned())?
/// }
/// assert!(matches!(check(200), Err(Failure::Status(..))));
/// assert_eq!(check(1), Err(Failure::Error("not today".to_owned())));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure<E> {
    /// The function's own error (`422`).
    Error(E),
    /// A status other than `200` and `422`, with its message.
    Status(StatusCode, String),
}

impl<E> From<E> for Failure<E> {
    fn from(error: E) -> Failure<E> {
        Failure::Error(error)
    }
}

/// The undecoded error a remote function returned (status `422`): decode it
/// with [`RemoteError::decode`] into the function's error type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteError(pub bytes::Bytes);

impl RemoteError {
    /// Decodes the error as `E`, the function's error type.
    ///
    /// # Errors
    ///
    /// The postcard error if the bytes are not exactly one `E`.
    pub fn decode<E: serde::de::DeserializeOwned>(&self) -> Result<E, postcard::Error> {
        crate::wire::decode_exact(&self.0).map_err(Into::into)
    }
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes of encoded error", self.0.len())
    }
}

/// Why a remote call failed.
///
/// Each variant but `Application` corresponds to a status code (see
/// [`RpcError::status`]); `Application` holds the function's own error,
/// decoded as `E` (or left encoded, as [`RemoteError`], by
/// [`Client::call`](crate::Client::call)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError<E = RemoteError> {
    /// The function ran and returned its own error, which this variant
    /// holds.
    #[error("the remote function returned its own error")]
    Application(E),
    /// No function has that name (`404`).
    #[error("not found: {0}")]
    NotFound(String),
    /// The caller's token or role may not make this call (`403`).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The arguments did not decode, or the request broke the protocol
    /// (`400`).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Caller and callee were built with different types for the function
    /// (`409`).
    #[error("incompatible: {0}")]
    Incompatible(String),
    /// The deadline passed before the call completed (`504`).
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The call was cancelled (`499`).
    #[error("cancelled")]
    Cancelled,
    /// The server could not be reached, went away, or is shutting down
    /// (`503`); retrying later or elsewhere may work.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The connection could not be secured, or would not have been: the
    /// server's certificate is not trusted, names another host or has
    /// expired; the server refused this client's certificate or wants one;
    /// one side speaks TLS and the other does not; or a token would have
    /// crossed a network in plaintext. The message says which and what to
    /// change; retrying without changing it fails the same way. Never sent
    /// on the wire; its [`status`](Self::status) is `503`, as for a server
    /// that cannot be reached.
    #[error("not secure: {0}")]
    Tls(String),
    /// A limit was hit: too many calls in flight, a payload too large (`429`).
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// The server failed (`500`), or answered something this client cannot
    /// read.
    #[error("internal error: {0}")]
    Internal(String),
    /// A status this version does not name.
    #[error("{status}: {message}")]
    Other {
        /// The status received.
        status: StatusCode,
        /// The server's explanation.
        message: String,
    },
}

impl<E> RpcError<E> {
    /// The error for a response with `status` (not `200` nor `422`).
    pub fn from_status(status: StatusCode, message: String) -> RpcError<E> {
        match status {
            StatusCode::NOT_FOUND => RpcError::NotFound(message),
            StatusCode::FORBIDDEN => RpcError::Forbidden(message),
            StatusCode::BAD_REQUEST => RpcError::BadRequest(message),
            StatusCode::INCOMPATIBLE => RpcError::Incompatible(message),
            StatusCode::DEADLINE_EXCEEDED => RpcError::DeadlineExceeded,
            StatusCode::CANCELLED => RpcError::Cancelled,
            StatusCode::UNAVAILABLE => RpcError::Unavailable(message),
            StatusCode::RESOURCE_EXHAUSTED => RpcError::ResourceExhausted(message),
            StatusCode::INTERNAL => RpcError::Internal(message),
            status => RpcError::Other { status, message },
        }
    }

    /// The status code this error corresponds to.
    pub fn status(&self) -> StatusCode {
        match self {
            RpcError::Application(_) => StatusCode::APPLICATION_ERROR,
            RpcError::NotFound(_) => StatusCode::NOT_FOUND,
            RpcError::Forbidden(_) => StatusCode::FORBIDDEN,
            RpcError::BadRequest(_) => StatusCode::BAD_REQUEST,
            RpcError::Incompatible(_) => StatusCode::INCOMPATIBLE,
            RpcError::DeadlineExceeded => StatusCode::DEADLINE_EXCEEDED,
            RpcError::Cancelled => StatusCode::CANCELLED,
            RpcError::Unavailable(_) | RpcError::Tls(_) => StatusCode::UNAVAILABLE,
            RpcError::ResourceExhausted(_) => StatusCode::RESOURCE_EXHAUSTED,
            RpcError::Internal(_) => StatusCode::INTERNAL,
            RpcError::Other { status, .. } => *status,
        }
    }

    /// Replaces the application error, keeping every other variant.
    pub fn map_application<F>(self, map: impl FnOnce(E) -> RpcError<F>) -> RpcError<F> {
        match self {
            RpcError::Application(error) => map(error),
            RpcError::NotFound(message) => RpcError::NotFound(message),
            RpcError::Forbidden(message) => RpcError::Forbidden(message),
            RpcError::BadRequest(message) => RpcError::BadRequest(message),
            RpcError::Incompatible(message) => RpcError::Incompatible(message),
            RpcError::DeadlineExceeded => RpcError::DeadlineExceeded,
            RpcError::Cancelled => RpcError::Cancelled,
            RpcError::Unavailable(message) => RpcError::Unavailable(message),
            RpcError::Tls(message) => RpcError::Tls(message),
            RpcError::ResourceExhausted(message) => RpcError::ResourceExhausted(message),
            RpcError::Internal(message) => RpcError::Internal(message),
            RpcError::Other { status, message } => RpcError::Other { status, message },
        }
    }
}

/// A server could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A configuration value is out of range.
    #[error("invalid server configuration: {field} {reason}")]
    InvalidConfig {
        /// The [`ServerConfig`](crate::ServerConfig) field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The listening address could not be bound.
    #[error("could not listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// Why binding failed.
        #[source]
        source: io::Error,
    },
}
