use rpc_core::remote;

#[remote(bogus)]
fn everything_wrong<T>(_a: &T, (_b, _c): (u8, u8), _d: impl Copy) {}

fn main() {}
