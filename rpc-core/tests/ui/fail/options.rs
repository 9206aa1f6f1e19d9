use rpc_core::remote;

#[remote(retries = 3)]
fn unknown_option() {}

#[remote(name = 5, timeout_ms = "soon", roles = "admin")]
fn malformed_values() {}

#[remote(idempotent = true)]
fn flag_with_a_value() {}

#[remote(name = "a", name = "b")]
fn given_twice() {}

#[remote(timeout_ms = 0)]
fn zero_timeout() {}

fn main() {
    // The functions are still emitted: no "cannot find function" errors.
    unknown_option();
    malformed_values();
    flag_with_a_value();
    given_twice();
    zero_timeout();
}
