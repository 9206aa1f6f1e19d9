//! Functions and a trait made remote with `#[remote]` and `#[service]`, and
//! called across a TCP socket.
//!
//! ```sh
//! cargo run --example remote                            # server and client in one process
//! cargo run --example remote -- serve 127.0.0.1:7000   # or a server in one terminal...
//! cargo run --example remote -- call 127.0.0.1:7000    # ...and a client in another
//! ```
//!
//! The server grants the role `math` to the token `s3cret` and lets no one
//! in without a token; `math.divide` is for the role `math` only.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rpc_core::{Client, ClientConfig, Context, RpcError, Server, remote, service};
use serde::{Deserialize, Serialize};

/// Adds two numbers. (Doc comments become the description that
/// introspection lists.)
#[remote]
async fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Why a division failed: a function's own error type, sent to the caller.
#[derive(Debug, Serialize, Deserialize)]
enum MathError {
    DivisionByZero,
}

/// Divides `a` by `b`. Safe to retry, so the client may retry it after a
/// lost connection and the server runs a retried call once. Only callers
/// whose token grants the role `math` may call it.
#[remote(name = "math.divide", idempotent, timeout_ms = 2_000, roles = ["math"])]
fn divide(a: i64, b: i64) -> Result<i64, MathError> {
    a.checked_div(b).ok_or(MathError::DivisionByZero)
}

/// A set of calls sharing state: a tiny key-value store.
#[service(name = "kv")]
trait KeyValue {
    /// Stores `value` under `key`, returning the previous value.
    async fn put(&self, key: String, value: String) -> Option<String>;
    /// The value under `key`.
    async fn get(&self, key: String) -> Option<String>;
    /// Who is asking, from the call's context.
    async fn whoami(&self, context: Context) -> String;
}

#[derive(Default)]
struct Memory(Mutex<HashMap<String, String>>);

impl KeyValue for Memory {
    async fn put(&self, key: String, value: String) -> Option<String> {
        self.map().insert(key, value)
    }

    async fn get(&self, key: String) -> Option<String> {
        self.map().get(&key).cloned()
    }

    async fn whoami(&self, context: Context) -> String {
        format!(
            "{} ({})",
            context.peer_name(),
            context.role().unwrap_or("anonymous")
        )
    }
}

impl Memory {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        // A panic while holding the lock cannot leave the map half-written.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => {
            let server = serve("127.0.0.1:0").await?;
            call(&server.local_addr().to_string()).await?;
            server.shutdown(Duration::from_secs(1)).await;
        }
        ["serve", addr] => {
            let server = serve(addr).await?;
            println!("serving on {}; Ctrl-C to stop", server.local_addr());
            tokio::signal::ctrl_c().await?;
            server.shutdown(Duration::from_secs(5)).await;
        }
        ["call", addr] => call(addr).await?,
        _ => {
            eprintln!("usage: remote [serve ADDR | call ADDR]");
            std::process::exit(2);
        }
    }
    Ok(())
}

/// The token that grants the role `math`.
const TOKEN: &str = "s3cret";

/// Every `#[remote]` function of the program, and the key-value service.
async fn serve(addr: &str) -> Result<Server, rpc_core::ServeError> {
    Server::builder()
        .token(TOKEN, "math")
        .remote_all()
        .service(KeyValueServer::new(Memory::default()))
        .bind(addr)
        .await
}

async fn call(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    // A server with tokens lets no caller in without one.
    match add::call(&Client::new(addr), 2, 3).await {
        Err(RpcError::Forbidden(reason)) => println!("without the token: refused ({reason})"),
        other => println!("without the token: {other:?}?"),
    }

    let client = Client::with_config(
        addr,
        ClientConfig {
            token: Some(TOKEN.into()),
            ..ClientConfig::default()
        },
    );

    // Remote functions: `f::call(&client, args...)`, typed by the compiler.
    println!("add(2, 3) = {}", add::call(&client, 2, 3).await?);
    println!("divide(7, 2) = {}", divide::call(&client, 7, 2).await?);
    match divide::call(&client, 1, 0).await {
        Err(RpcError::Application(error)) => println!("divide(1, 0) failed: {error:?}"),
        other => println!("divide(1, 0) = {other:?}?"),
    }

    // A service: a typed client with one method per trait method.
    let kv = KeyValueClient::new(client.clone());
    kv.put("greeting".into(), "hello".into()).await?;
    println!("kv.get(greeting) = {:?}", kv.get("greeting".into()).await?);
    println!("kv.whoami() = {}", kv.whoami().await?);

    // What the server offers, as a client checking compatibility sees it.
    for function in client.describe().await? {
        println!(
            "  offers {:<28} schema {:>20}  {}",
            function.name,
            function
                .schema_hash
                .map_or_else(|| "-".to_owned(), |hash| format!("{hash:#018x}")),
            function.description.lines().next().unwrap_or_default()
        );
    }
    Ok(())
}
