use rpc_core::remote;

struct NotSerde;

#[remote]
fn takes(value: NotSerde) -> u8 {
    let _ = value;
    0
}

#[remote]
fn gives() -> NotSerde {
    NotSerde
}

fn main() {}
