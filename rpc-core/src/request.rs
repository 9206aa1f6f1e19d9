//! Requests as types: a serde type that names the function it calls, made
//! with `#[derive(Request)]`.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{CallOptions, Client, RpcError};

/// A serde type that is a call of a named remote function: its value is the
/// function's argument, and it names the function, its result and its error
/// type. Derive it with [`#[derive(Request)]`](macro@Request); serve it
/// with [`ServerBuilder::handle`](crate::ServerBuilder::handle) and call it with
/// [`Request::call`].
///
/// This is the third way to describe a remote call, beside [`remote`](crate::remote)
/// functions and [`service`](crate::service) traits: here the *message* is
/// the unit, which suits APIs designed as a set of commands or queries
/// (`Search { query, limit }`), requests that are built, stored or logged
/// before they are sent, and clients and servers that share only a crate of
/// types.
///
/// ```
/// use rpc_core::{Client, Request, Server};
/// use serde::{Deserialize, Serialize};
///
/// /// Finds words that start with `prefix`.
/// #[derive(Debug, Serialize, Deserialize, Request)]
/// #[request(name = "words.search", response = Vec<String>, idempotent)]
/// struct Search {
///     prefix: String,
///     limit: usize,
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let server = Server::builder()
///         .handle(|_, search: Search| async move {
///             let words = ["apple", "apricot", "banana"]
///                 .into_iter()
///                 .filter(|word| word.starts_with(&search.prefix))
///                 .take(search.limit)
///                 .map(str::to_owned)
///                 .collect::<Vec<_>>();
///             Ok(words)
///         })
///         .bind("127.0.0.1:0")
///         .await?;
///     let client = Client::new(server.local_addr().to_string());
///     let found = Search { prefix: "ap".into(), limit: 10 }.call(&client).await?;
///     assert_eq!(found, ["apple", "apricot"]);
///     server.shutdown(std::time::Duration::from_secs(1)).await;
///     Ok(())
/// }
/// ```
pub trait Request: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The wire name of the function: the type's path, or the `name` given.
    const NAME: &'static str;
    /// A hash of the name, the type's fields and the result and error types.
    const SCHEMA_HASH: u64;
    /// The roles allowed to call; `None` lets every caller in.
    const ROLES: Option<&'static [&'static str]>;
    /// What a successful call returns.
    type Response: Serialize + DeserializeOwned + Send + 'static;
    /// The function's own error ([`Infallible`](crate::Infallible) if it
    /// cannot fail).
    type Error: Serialize + DeserializeOwned + Send + 'static;

    /// The call options of the `#[request(...)]` attribute: schema hash,
    /// deadline, retries.
    fn options() -> CallOptions;

    /// Sends this request to the server `client` is connected to.
    ///
    /// # Errors
    ///
    /// An [`RpcError`] saying why the call failed, or holding the function's
    /// own error.
    fn call(
        &self,
        client: &Client,
    ) -> impl Future<Output = Result<Self::Response, RpcError<Self::Error>>> + Send {
        self.call_with(client, Self::options())
    }

    /// Like [`call`](Self::call), with other options (start from
    /// [`options`](Self::options) to keep the schema check).
    ///
    /// # Errors
    ///
    /// An [`RpcError`] saying why the call failed, or holding the function's
    /// own error.
    fn call_with(
        &self,
        client: &Client,
        options: CallOptions,
    ) -> impl Future<Output = Result<Self::Response, RpcError<Self::Error>>> + Send {
        client.call_with(Self::NAME, self, options)
    }
}

/// Makes a serde struct or enum a [`Request`](trait@Request): a call of the
/// named remote function whose argument is the value itself.
///
/// ```
/// # use rpc_core::Request;
/// # use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize, Request)]
/// #[request(response = u64, error = String, timeout_ms = 500, roles = ["admin"])]
/// struct Purge {
///     older_than_days: u32,
/// }
/// assert!(Purge::NAME.ends_with("::Purge"));
/// ```
///
/// | option | meaning |
/// | --- | --- |
/// | `response = Type` | what the function returns (required) |
/// | `error = Type` | the function's own error; none means it cannot fail |
/// | `name = "..."` | the wire name, instead of the type's path |
/// | `idempotent`, `timeout_ms = N`, `roles = [...]` | as for [`remote`](crate::remote) |
///
/// The schema hash covers the type's field names and types, so a client
/// and server built with different fields get `incompatible` instead of
/// garbage.
pub use rpc_macros::Request;
