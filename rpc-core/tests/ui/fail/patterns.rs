use rpc_core::remote;

#[remote]
fn tuple_pattern((a, b): (u8, u8)) -> u8 {
    a + b
}

#[remote]
fn by_ref(ref value: u8) -> u8 {
    *value
}

#[remote]
fn wildcard(_: u8) {}

fn main() {}
