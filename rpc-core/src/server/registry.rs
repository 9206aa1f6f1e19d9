//! Registered functions: type-erased handlers, their options, and the
//! context a handler sees.

use crate::metrics::server::CallStats;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::error::{Failure, RemoteError};
use crate::wire::{FunctionInfo, StatusCode};

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What a handler produced, before it becomes a `Response`.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// `200` with the encoded result.
    Ok(Bytes),
    /// `422` with the function's own encoded error.
    Failed(Bytes),
    /// Any other status, with a message.
    Status(StatusCode, String),
}

pub(crate) type Handler = Arc<dyn Fn(Context, Bytes) -> BoxFuture<Outcome> + Send + Sync>;

/// What a handler knows about the call it serves.
#[derive(Clone, Debug)]
pub struct Context {
    pub(crate) peer: Arc<PeerInfo>,
    pub(crate) method: Arc<str>,
    pub(crate) deadline: Option<Instant>,
}

/// The connection a call arrived on.
#[derive(Debug)]
pub(crate) struct PeerInfo {
    pub(crate) name: String,
    /// The common name of its client certificate, checked in the TLS
    /// handshake; `None` without one.
    pub(crate) certified_name: Option<String>,
    pub(crate) addr: Option<SocketAddr>,
    /// The role its token granted; `None` for an anonymous caller.
    pub(crate) role: Option<String>,
    /// The roles access is checked against: the token's one, or those the
    /// server grants anonymous callers.
    pub(crate) granted: Arc<[String]>,
    /// Who the caller is for duplicate suppression: the token's hash, or 0
    /// for anonymous callers. Results are only shared with the same one.
    pub(crate) principal: [u8; 8],
    /// How deeply nested its arguments may be.
    pub(crate) max_decode_depth: u32,
}

impl PeerInfo {
    /// Whether a caller may use something open to `roles` (`None`: every
    /// caller the handshake admitted).
    pub(crate) fn may(&self, roles: Option<&[String]>) -> bool {
        match roles {
            None => true,
            Some(allowed) => self.granted.iter().any(|role| allowed.contains(role)),
        }
    }
}

/// Who may use what, besides each function's own roles.
#[derive(Clone, Debug, Default)]
pub(crate) struct Access {
    /// Roles of callers without a token, on a server without tokens.
    pub(crate) anonymous: Vec<String>,
    /// Who may ship programs; `None`: every admitted caller.
    pub(crate) programs: Option<Vec<String>>,
    /// Who may use the data store; `None`: every admitted caller.
    pub(crate) data: Option<Vec<String>>,
}

impl Context {
    /// The name the caller gave in its handshake.
    pub fn peer_name(&self) -> &str {
        &self.peer.name
    }

    /// The common name of the client certificate the caller presented,
    /// verified in the TLS handshake against the server's CA; `None`
    /// without one. Unlike [`peer_name`](Self::peer_name), the caller
    /// cannot choose it: bind names to it.
    pub fn certified_name(&self) -> Option<&str> {
        self.peer.certified_name.as_deref()
    }

    /// Who the caller is, as far as the server can tell, for binding
    /// something to one caller: a digest of its token, or of its client
    /// certificate's name (or the certificate) without a token; 0 for an
    /// anonymous caller. Callers that share a token share it too.
    pub fn principal(&self) -> u64 {
        u64::from_le_bytes(self.peer.principal)
    }

    /// The caller's address, when the transport has one.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer.addr
    }

    /// The access role the caller's token granted, or `None` if anonymous.
    pub fn role(&self) -> Option<&str> {
        self.peer.role.as_deref()
    }

    /// The function being called.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// When the caller stops waiting; the server abandons the call then.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

/// Options of a registered function.
///
/// ```
/// use rpc_core::{Context, FunctionOptions, Server};
///
/// let options = FunctionOptions::new()
///     .roles(["admin"])
///     .schema_hash(0x5eed)
///     .description("drops every cache");
/// let server = Server::builder()
///     .token("s3cret", "admin")
///     .function_with("flush", options, |context: Context, (): ()| async move {
///         Ok::<_, String>(format!("flushed for {}", context.peer_name()))
///     });
/// # drop(server);
/// ```
#[derive(Clone, Debug, Default)]
pub struct FunctionOptions {
    pub(crate) roles: Option<Vec<String>>,
    pub(crate) schema_hash: Option<u64>,
    pub(crate) description: String,
}

impl FunctionOptions {
    /// Options that let any caller in, with no schema hash.
    pub fn new() -> FunctionOptions {
        FunctionOptions::default()
    }

    /// Only callers whose token granted one of `roles` may call the function
    /// (or, on a server without tokens, anonymous callers if
    /// [`ServerBuilder::anonymous_roles`](crate::ServerBuilder::anonymous_roles) grants
    /// one); others get `403 forbidden` and the handler never runs. The
    /// default lets every caller in, anonymous ones included.
    pub fn roles<I, S>(mut self, roles: I) -> FunctionOptions
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles = Some(roles.into_iter().map(Into::into).collect());
        self
    }

    /// The hash of the function's name and argument and result types. A call
    /// carrying a different hash gets `409 incompatible`. The default is none:
    /// no check.
    pub fn schema_hash(mut self, hash: u64) -> FunctionOptions {
        self.schema_hash = Some(hash);
        self
    }

    /// A human-readable description, listed by introspection.
    pub fn description(mut self, text: impl Into<String>) -> FunctionOptions {
        self.description = text.into();
        self
    }
}

pub(crate) struct Function {
    pub(crate) handler: Handler,
    pub(crate) options: FunctionOptions,
    /// Its counters, when the server has metrics (set as it starts).
    pub(crate) stats: Option<Arc<CallStats>>,
}

impl Function {
    /// Whether `peer` may call this function.
    pub(crate) fn admits(&self, peer: &PeerInfo) -> bool {
        peer.may(self.options.roles.as_deref())
    }
}

/// Decodes a call's arguments as `A`, within the caller's nesting limit; a
/// `400` naming the function if they do not decode.
fn decode_args<A: DeserializeOwned>(context: &Context, args: &Bytes) -> Result<A, Outcome> {
    crate::wire::decode_limited::<A>(args, context.peer.max_decode_depth).map_err(|error| {
        Outcome::Status(
            StatusCode::BAD_REQUEST,
            format!("arguments of {} did not decode: {error}", context.method),
        )
    })
}

/// Wraps a typed async function as a handler: decodes the arguments as
/// `A` (a `400` naming the function if they do not decode), runs it, and
/// turns its result into an [`Outcome`] with `outcome`.
fn typed_handler<A, T, F, Fut, O>(function: F, outcome: O) -> Handler
where
    A: DeserializeOwned + Send + 'static,
    F: Fn(Context, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
    O: Fn(T) -> Outcome + Copy + Send + Sync + 'static,
{
    let function = Arc::new(function);
    Arc::new(move |context: Context, args: Bytes| {
        let function = Arc::clone(&function);
        let decoded = decode_args::<A>(&context, &args);
        Box::pin(async move {
            match decoded {
                Ok(args) => outcome(function(context, args).await),
                Err(refusal) => refusal,
            }
        })
    })
}

/// Wraps a typed async function: its result is `200`, its own error `422`,
/// both encoded with postcard.
pub(crate) fn typed<A, R, E, F, Fut>(function: F) -> Handler
where
    A: DeserializeOwned + Send + 'static,
    R: Serialize + 'static,
    E: Serialize + 'static,
    F: Fn(Context, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
{
    typed_handler(function, |result: Result<R, E>| match result {
        Ok(result) => encode(&result).map_or_else(|status| status, Outcome::Ok),
        Err(error) => encode(&error).map_or_else(|status| status, Outcome::Failed),
    })
}

/// Wraps a typed async function that may also answer with a status, as
/// [`typed`] does otherwise.
pub(crate) fn typed_with_status<A, R, E, F, Fut>(function: F) -> Handler
where
    A: DeserializeOwned + Send + 'static,
    R: Serialize + 'static,
    E: Serialize + 'static,
    F: Fn(Context, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, Failure<E>>> + Send + 'static,
{
    typed_handler(function, |result: Result<R, Failure<E>>| match result {
        Ok(result) => encode(&result).map_or_else(|status| status, Outcome::Ok),
        Err(Failure::Error(error)) => encode(&error).map_or_else(|status| status, Outcome::Failed),
        // `200` and `422` carry a payload the caller decodes: a status
        // without one cannot be either.
        Err(Failure::Status(status, message))
            if status == StatusCode::OK || status == StatusCode::APPLICATION_ERROR =>
        {
            Outcome::Status(
                StatusCode::INTERNAL,
                format!("the function answered status {status} without a payload: {message}"),
            )
        }
        Err(Failure::Status(status, message)) => Outcome::Status(status, message),
    })
}

/// Wraps a function on raw bytes as a handler: the arguments and the result
/// pass through untouched.
pub(crate) fn raw<F, Fut>(function: F) -> Handler
where
    F: Fn(Context, Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, RemoteError>> + Send + 'static,
{
    Arc::new(move |context: Context, args: Bytes| {
        let running = function(context, args);
        Box::pin(async move {
            match running.await {
                Ok(result) => Outcome::Ok(result),
                Err(RemoteError(error)) => Outcome::Failed(error),
            }
        })
    })
}

fn encode<T: Serialize>(value: &T) -> Result<Bytes, Outcome> {
    crate::wire::encode_value(value).map_err(|error| {
        Outcome::Status(
            StatusCode::INTERNAL,
            format!("the result could not be encoded: {error}"),
        )
    })
}

/// The functions of a server, by name. The names are shared with every call's
/// [`Context`]; the table is fixed before serving, so a fast hash without
/// flooding resistance suits it.
pub(crate) type Registry = HashMap<Arc<str>, Function, rustc_hash::FxBuildHasher>;

/// The answer to [`DESCRIBE_METHOD`]: every function, sorted by name.
pub(crate) fn describe(registry: &Registry) -> Vec<FunctionInfo> {
    let mut infos: Vec<FunctionInfo> = registry
        .iter()
        .map(|(name, function)| FunctionInfo {
            name: name.to_string(),
            schema_hash: function.options.schema_hash,
            roles: function.options.roles.clone(),
            description: function.options.description.clone(),
        })
        .collect();
    infos.sort_by(|a, b| a.name.cmp(&b.name));
    infos
}
