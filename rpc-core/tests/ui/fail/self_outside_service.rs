use rpc_core::remote;

struct Counter;

impl Counter {
    #[remote]
    fn get(&self) -> u64 {
        0
    }
}

fn main() {}
