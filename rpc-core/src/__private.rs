//! What generated code names, and nothing else: not part of the public API,
//! and free to change in any release.

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::remote::{ListedFunction, schema_hash};
pub use inventory;
pub use std::boxed::Box;
pub use std::future::Future;
pub use std::marker::{Send, Sync};
pub use std::option::Option::{self, None, Some};
pub use std::result::Result::{self, Err, Ok};
pub use std::string::String;
pub use std::sync::Arc;
pub use std::time::Duration;
pub use std::vec::Vec;

use crate::{CallOptions, Client, RpcError};

/// Calls a function that cannot fail with its own error.
pub async fn call<A, R>(
    client: &Client,
    method: &str,
    args: &A,
    options: CallOptions,
) -> Result<R, RpcError>
where
    A: Serialize + ?Sized,
    R: DeserializeOwned,
{
    let args = crate::wire::encode_value(args).map_err(|error| {
        RpcError::BadRequest(format!("the arguments could not be encoded: {error}"))
    })?;
    let result = client.call_raw(method, args, options).await?;
    client.decode(&result)
}

/// Calls a function whose own error is `E`.
pub async fn call_fallible<A, R, E>(
    client: &Client,
    method: &str,
    args: &A,
    options: CallOptions,
) -> Result<R, RpcError<E>>
where
    A: Serialize + ?Sized,
    R: DeserializeOwned,
    E: DeserializeOwned,
{
    client.call_with(method, args, options).await
}

/// Fails to compile, at the type's span, unless `T` can be sent.
pub const fn assert_serialize<T: Serialize + ?Sized>() {}

/// Fails to compile, at the type's span, unless `T` can be received.
pub const fn assert_deserialize<T: DeserializeOwned>() {}
