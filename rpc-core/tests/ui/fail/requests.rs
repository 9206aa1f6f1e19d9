use rpc_core::Request;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Request)]
struct NoAttribute;

#[derive(Serialize, Deserialize, Request)]
#[request(name = "x")]
struct NoResponse;

#[derive(Serialize, Deserialize, Request)]
#[request(response = u8, retries = 3, response = u16)]
struct BadOptions;

#[derive(Serialize, Deserialize, Request)]
#[request(response = u8)]
struct Generic<T> {
    value: T,
}

struct NotSerde;

#[derive(Request)]
#[request(response = NotSerde)]
struct NeitherSerde;

fn main() {}
