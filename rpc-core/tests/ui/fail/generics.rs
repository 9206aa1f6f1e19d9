use rpc_core::remote;

#[remote]
fn generic<T: serde::Serialize>(value: T) -> T {
    value
}

#[remote]
fn with_where(value: u8) -> u8
where
    u8: Copy,
{
    value
}

fn main() {}
