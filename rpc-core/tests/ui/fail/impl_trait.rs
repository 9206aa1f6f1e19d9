use rpc_core::remote;

#[remote]
fn shows(value: impl std::fmt::Display) -> String {
    value.to_string()
}

#[remote]
fn returns_impl() -> impl std::fmt::Display {
    1
}

#[remote]
fn boxed(callback: Box<dyn Fn() + Send>) {
    callback()
}

fn main() {}
