//! `#[remote]` on the forms of function users write.

use rpc_core::{Client, Context, RpcError, Server, remote};
use serde::{Deserialize, Serialize};

/// Doc comments stay on the function.
///
/// Several lines of them.
#[remote]
pub async fn documented(text: String) -> usize {
    text.len()
}

#[remote]
fn no_arguments() -> u64 {
    7
}

#[remote]
fn unit_result(_ignored: u8) {}

#[derive(Debug, Serialize, Deserialize)]
pub struct Failure {
    pub reason: String,
}

#[remote]
async fn fallible(ok: bool) -> Result<Vec<u8>, Failure> {
    if ok {
        Ok(vec![1])
    } else {
        Err(Failure { reason: "asked to fail".into() })
    }
}

#[remote]
#[allow(clippy::too_many_arguments)]
fn many(a: u8, b: u16, c: u32, d: u64, e: i8, f: i16, g: i32, h: i64, i: String, j: Vec<u8>) -> u64 {
    let _ = (a, b, c, d, e, f, g, h, i, j);
    0
}

#[remote]
fn r#match(r#in: u8, r#fn: String) -> (u8, String) {
    (r#in, r#fn)
}

#[remote]
fn mutable(mut value: u64) -> u64 {
    value += 1;
    value
}

#[remote]
async fn with_context(context: Context, n: u8) -> Option<String> {
    let _ = n;
    context.role().map(str::to_owned)
}

#[remote]
fn generated_names_do_not_clash(client: u8, options: u8, context: u8) -> u8 {
    client + options + context
}

#[cfg(any())]
#[remote]
fn compiled_out(_: TypeThatDoesNotExist) {}

#[cfg(all())]
#[remote]
fn compiled_in() {}

#[remote(name = "custom.name", idempotent, timeout_ms = 250, roles = ["admin", "ops"])]
pub(crate) fn every_option() {}

mod nested {
    #[rpc_core::remote]
    pub(super) fn private_to_parent() -> u8 {
        1
    }
}

async fn calls(client: &Client) -> Result<(), RpcError> {
    let _: usize = documented::call(client, String::new()).await?;
    let _: u64 = no_arguments::call(client).await?;
    unit_result::call(client, 0).await?;
    let _: Result<Vec<u8>, RpcError<Failure>> = fallible::call(client, true).await;
    let _: u64 = many::call(client, 1, 2, 3, 4, 5, 6, 7, 8, String::new(), Vec::new()).await?;
    let _: (u8, String) = r#match::call(client, 1, String::new()).await?;
    let _: u64 = mutable::call(client, 1).await?;
    let _: Option<String> = with_context::call(client, 1).await?;
    let _: u8 = generated_names_do_not_clash::call(client, 1, 2, 3).await?;
    compiled_in::call(client).await?;
    every_option::call_with(client, every_option::options()).await?;
    let _: u8 = nested::private_to_parent::call(client).await?;
    Ok(())
}

fn main() {
    let _server = Server::builder()
        .remote(documented::function())
        .remote(every_option::function())
        .remote_all();
    let _ = calls;
    assert_eq!(every_option::NAME, "custom.name");
    assert_eq!(no_arguments(), 7);
    let _: u64 = documented::SCHEMA_HASH;
}
