//! What the macros generate code against: remote functions as values that a
//! server registers, services as sets of them, and the program-wide list of
//! `#[remote]` functions.

use std::future::Future;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::server::registry::{self, Context, FunctionOptions};

/// One function a server can host: its wire name, its options and its
/// handler. `#[remote]` makes one for each function it annotates (`f::function()`),
/// and a service's server type makes one per method.
///
/// ```
/// use rpc_core::{FunctionOptions, RemoteFunction, Server};
///
/// let double = RemoteFunction::new("double", FunctionOptions::new(), |_, n: u64| async move {
///     Ok::<_, String>(n * 2)
/// });
/// assert_eq!(double.name(), "double");
/// let server = Server::builder().remote(double);
/// # drop(server);
/// ```
pub struct RemoteFunction {
    pub(crate) name: String,
    pub(crate) function: registry::Function,
}

impl RemoteFunction {
    /// A function named `name` that decodes its arguments as `A` (a tuple for
    /// several), runs `function` with the call's [`Context`], and encodes its
    /// result `R` or its own error `E`, all with postcard.
    pub fn new<A, R, E, F, Fut>(
        name: impl Into<String>,
        options: FunctionOptions,
        function: F,
    ) -> RemoteFunction
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + 'static,
        E: Serialize + 'static,
        F: Fn(Context, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        RemoteFunction::from_handler(name.into(), options, registry::typed(function))
    }

    /// Like [`new`](Self::new), for a function that may also answer a
    /// protocol status of its own ([`Failure::Status`](crate::Failure)):
    /// busy, unavailable. `#[remote]` and `#[service]` use it for functions
    /// that return `Result<T, Failure<E>>`.
    pub fn with_status<A, R, E, F, Fut>(
        name: impl Into<String>,
        options: FunctionOptions,
        function: F,
    ) -> RemoteFunction
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + 'static,
        E: Serialize + 'static,
        F: Fn(Context, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, crate::Failure<E>>> + Send + 'static,
    {
        RemoteFunction::from_handler(name.into(), options, registry::typed_with_status(function))
    }

    fn from_handler(
        name: String,
        options: FunctionOptions,
        handler: registry::Handler,
    ) -> RemoteFunction {
        RemoteFunction {
            name,
            function: registry::Function {
                handler,
                options,
                stats: None,
            },
        }
    }

    /// The name callers use.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its options: roles, schema hash, description.
    pub fn options(&self) -> &FunctionOptions {
        &self.function.options
    }
}

impl std::fmt::Debug for RemoteFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteFunction")
            .field("name", &self.name)
            .field("options", &self.function.options)
            .finish_non_exhaustive()
    }
}

/// A set of functions served together: what `#[service]` generates a server
/// type for (`CalculatorServer::new(implementation)`), registered with
/// [`ServerBuilder::service`](crate::ServerBuilder::service).
pub trait Service {
    /// The service's functions, one per method.
    fn into_functions(self) -> Vec<RemoteFunction>;
}

/// The error type of a remote function that cannot fail: it has no values,
/// so a call of such a function never returns
/// [`RpcError::Application`](crate::RpcError::Application).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Infallible {}

/// One `#[remote]` function, as listed for [`ServerBuilder::remote_all`](crate::ServerBuilder::remote_all).
#[doc(hidden)]
#[derive(Debug)]
pub struct ListedFunction {
    /// Makes the function.
    pub function: fn() -> RemoteFunction,
}

inventory::collect!(ListedFunction);

/// Every `#[remote]` function linked into this program, in no particular
/// order.
pub(crate) fn registered() -> impl Iterator<Item = RemoteFunction> {
    inventory::iter::<ListedFunction>
        .into_iter()
        .map(|registration| (registration.function)())
}

/// FNV-1a over `parts`, each followed by a zero byte, as a `const fn` so that
/// generated schema hashes are constants.
#[doc(hidden)]
pub const fn schema_hash(parts: &[&str]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut parts = parts;
    while let [part, rest @ ..] = parts {
        let mut bytes = part.as_bytes();
        while let [byte, rest @ ..] = bytes {
            hash ^= *byte as u64;
            hash = hash.wrapping_mul(PRIME);
            bytes = rest;
        }
        hash = hash.wrapping_mul(PRIME);
        parts = rest;
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_hashes_are_fnv1a_and_separate_parts() {
        // FNV-1a of the empty input is its offset basis; a part adds a zero.
        assert_eq!(schema_hash(&[]), 0xcbf2_9ce4_8422_2325);
        assert_ne!(schema_hash(&["ab", "c"]), schema_hash(&["a", "bc"]));
        assert_eq!(schema_hash(&["add", "i64"]), schema_hash(&["add", "i64"]));
        const AT_COMPILE_TIME: u64 = schema_hash(&["f"]);
        assert_eq!(AT_COMPILE_TIME, schema_hash(&["f"]));
    }
}
