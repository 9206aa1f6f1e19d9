//! `#[derive(Request)]` on the forms users write.

use std::collections::HashMap;

use rpc_core::{Client, Request, RpcError, Server};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Request)]
#[request(response = HashMap<String, Vec<u8>>)]
struct Generic {
    keys: Vec<String>,
}

#[derive(Serialize, Deserialize, Request)]
#[request(
    name = "every.option",
    response = (),
    error = String,
    idempotent,
    timeout_ms = 100,
    roles = ["a", "b"]
)]
struct EveryOption;

#[derive(Serialize, Deserialize, Request)]
#[request(response = u8)]
struct Tuple(u8, String);

#[derive(Serialize, Deserialize, Request)]
#[request(response = u8)]
enum Command {
    Start,
    Stop { force: bool },
}

async fn calls(client: &Client) {
    let _: Result<HashMap<String, Vec<u8>>, _> = Generic { keys: Vec::new() }.call(client).await;
    let _: Result<(), RpcError<String>> = EveryOption.call(client).await;
    let _: Result<u8, _> = Tuple(1, String::new()).call_with(client, Tuple::options()).await;
    let _: Result<u8, _> = Command::Stop { force: true }.call(client).await;
}

fn main() {
    let _server = Server::builder()
        .handle(|_, _: Generic| async move { Ok(HashMap::new()) })
        .handle(|_, _: EveryOption| async move { Err::<(), _>("no".to_owned()) })
        .handle(|_, tuple: Tuple| async move { Ok(tuple.0) })
        .handle(|_, _: Command| async move { Ok(0) });
    let _ = calls;
    assert_eq!(EveryOption::NAME, "every.option");
    assert_eq!(EveryOption::ROLES, Some(&["a", "b"][..]));
}
