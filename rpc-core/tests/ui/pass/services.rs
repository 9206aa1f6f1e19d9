//! `#[service]` on the forms of trait users write.

use rpc_core::{Client, Context, RpcError, Server, service};

/// A service.
#[service]
pub trait Everything {
    /// Async, with arguments.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Sync, no arguments, unit result.
    fn ping(&self);
    /// The function's own error.
    async fn fallible(&self, fail: bool) -> Result<u8, String>;
    /// The call's context.
    async fn whoami(&self, context: Context) -> Option<String>;
    /// Options.
    #[rpc(name = "everything.renamed", idempotent, timeout_ms = 10, roles = ["admin"])]
    async fn renamed(&self);
    /// Raw identifiers.
    async fn r#type(&self, r#in: u8) -> u8;
    #[cfg(any())]
    async fn compiled_out(&self, x: TypeThatDoesNotExist);
    /// A default body.
    async fn with_default(&self) -> u8 {
        7
    }
}

struct Impl;

impl Everything for Impl {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    fn ping(&self) {}
    async fn fallible(&self, fail: bool) -> Result<u8, String> {
        if fail { Err("failed".into()) } else { Ok(1) }
    }
    async fn whoami(&self, context: Context) -> Option<String> {
        context.role().map(str::to_owned)
    }
    async fn renamed(&self) {}
    async fn r#type(&self, r#in: u8) -> u8 {
        r#in
    }
}

#[service(name = "short")]
trait Named {
    async fn get(&self) -> String;
}

async fn calls(client: Client) -> Result<(), RpcError> {
    let everything = EverythingClient::new(client.clone());
    let _: i64 = everything.add(1, 2).await?;
    everything.ping().await?;
    let _: Result<u8, RpcError<String>> = everything.fallible(false).await;
    let _: Option<String> = everything.whoami().await?;
    everything.renamed().await?;
    let _: u8 = everything.r#type(1).await?;
    let _: u8 = everything.with_default().await?;
    let _: &Client = everything.client();
    let _: String = NamedClient::new(client).get().await?;
    Ok(())
}

fn main() {
    let _server = Server::builder().service(EverythingServer::new(Impl));
    let _ = calls;
}
