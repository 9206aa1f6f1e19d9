#[rpc_core::remote]
struct NotAFunction;

#[rpc_core::service]
fn not_a_trait() {}

#[rpc_core::remote]
trait AlsoNotAFunction {}

fn main() {}
