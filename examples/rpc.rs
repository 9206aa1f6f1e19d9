//! A tour of the RPC layer: a server with a few functions, a data store and
//! a program store, and a client calling it over TCP on loopback, printing
//! what happens: typed results, each kind of error, deadlines, a thousand
//! concurrent calls on one connection, chunked data, program shipping,
//! introspection and a graceful shutdown.
//!
//! Run it with `cargo run --example rpc`.

use std::error::Error;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rpc_core::{CallOptions, Client, ClientConfig, Context, FunctionOptions, RpcError, Server};
use serde::{Deserialize, Serialize};

/// The error `divide` returns, typed on both sides.
#[derive(Debug, Serialize, Deserialize)]
enum MathError {
    DivisionByZero,
}

/// The error of a call that is meant to fail.
fn failure<T: std::fmt::Debug, E>(result: Result<T, E>) -> Result<E, Box<dyn Error>> {
    match result {
        Ok(value) => Err(format!("expected an error, got {value:?}").into()),
        Err(error) => Ok(error),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let server = Server::builder()
        .token("demo-token", "admin")
        .function(
            "add",
            |(a, b): (i64, i64)| async move { Ok::<_, ()>(a + b) },
        )
        .function("greet", |name: String| async move {
            Ok::<_, ()>(format!("hello, {name}"))
        })
        .function("divide", |(a, b): (i64, i64)| async move {
            if b == 0 {
                Err(MathError::DivisionByZero)
            } else {
                Ok(a / b)
            }
        })
        .function("sleep", |millis: u64| async move {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            Ok::<_, ()>(millis)
        })
        .function_with(
            "whoami",
            FunctionOptions::new()
                .roles(["admin"])
                .description("the caller's name and role"),
            |context: Context, (): ()| async move {
                Ok::<_, ()>(format!(
                    "{} ({})",
                    context.peer_name(),
                    context.role().unwrap_or("-")
                ))
            },
        )
        .bind("127.0.0.1:0")
        .await?;
    let addr = server.local_addr().to_string();
    println!("server listening on {addr}");

    let client = Client::with_config(
        addr.clone(),
        ClientConfig {
            name: "demo-client".into(),
            token: Some("demo-token".into()),
            ..ClientConfig::default()
        },
    );

    let sum: i64 = client.call("add", &(2i64, 3i64)).await?;
    println!("add(2, 3) = {sum}");
    let greeting: String = client.call("greet", "world").await?;
    println!("greet(\"world\") = {greeting:?}");
    let me: String = client.call("whoami", &()).await?;
    println!("whoami() = {me}  (needs role admin, granted by the token)");

    let error = failure(
        client
            .call_with::<_, i64, MathError>("divide", &(1i64, 0i64), CallOptions::new())
            .await,
    )?;
    println!("divide(1, 0) -> {error:?}  (the function's own typed error)");
    let error = failure(client.call::<_, i64>("multiply", &(2i64, 3i64)).await)?;
    println!("multiply(2, 3) -> {error}");
    let error = failure(client.call::<_, i64>("add", "two and three").await)?;
    println!("add(\"two and three\") -> {error}");
    let anonymous = Client::new(addr.clone());
    let error = failure(anonymous.call::<_, i64>("add", &(1i64, 1i64)).await)?;
    println!("a client without the token -> {error}");

    let options = CallOptions::new().timeout(Duration::from_millis(100));
    let started = Instant::now();
    let error = failure(
        client
            .call_with::<_, u64, ()>("sleep", &10_000u64, options)
            .await,
    )?;
    println!(
        "sleep(10 s) with a 100 ms deadline -> {error} after {:?}; the server stopped too",
        started.elapsed()
    );

    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..1000i64 {
        let client = client.clone();
        calls.spawn(async move { client.call::<_, i64>("add", &(i, i)).await });
    }
    let mut correct = 0;
    while let Some(result) = calls.join_next().await {
        if result?.is_ok() {
            correct += 1;
        }
    }
    println!(
        "1000 concurrent calls on one connection: {correct} correct in {:?}",
        started.elapsed()
    );

    let dataset = Bytes::from(
        (0..3u32 << 20)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    client.send_data("dataset", dataset.clone()).await?;
    let fetched = client.request_data("dataset").await?;
    println!(
        "sent and fetched 3 MiB of data, chunked with SHA-256 checks: identical = {}",
        fetched == dataset
    );

    let program = Bytes::from_static(b"\0asm\x01\0\0\0");
    let (hash, sent) = client.send_program(program.clone()).await?;
    println!(
        "shipped program {}…: bytes sent = {sent}",
        &hash.to_string()[..12]
    );
    let (_, sent) = client.send_program(program).await?;
    println!("shipped it again: bytes sent = {sent} (the server has it)");

    let functions = client.describe().await?;
    let names: Vec<&str> = functions.iter().map(|f| f.name.as_str()).collect();
    println!("the server offers {names:?}");

    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move { client.call::<_, u64>("sleep", &300u64).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.shutdown(Duration::from_secs(5)).await;
    println!(
        "graceful shutdown: the call in flight finished with {:?}",
        in_flight.await?
    );
    let error = failure(client.call::<_, i64>("add", &(1i64, 1i64)).await)?;
    println!(
        "a call after shutdown -> {}",
        match error {
            RpcError::Unavailable(_) => "unavailable, as expected".to_owned(),
            other => other.to_string(),
        }
    );
    Ok(())
}
