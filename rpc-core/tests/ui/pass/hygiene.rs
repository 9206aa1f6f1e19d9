//! Generated code names only absolute paths: it compiles without the
//! prelude, and next to user items named like the things it uses.
#![no_implicit_prelude]

// User items that shadow what generated code might name.
#[allow(dead_code)]
struct Result;
#[allow(dead_code)]
struct Option;
#[allow(dead_code)]
struct Vec;
#[allow(dead_code)]
struct Box;
#[allow(dead_code)]
mod core {}
#[allow(dead_code)]
mod serde {}

#[::rpc_core::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[::rpc_core::remote]
async fn fallible(a: u8) -> ::std::result::Result<u8, ::std::string::String> {
    ::std::result::Result::Ok(a)
}

#[::rpc_core::service]
trait Math {
    async fn double(&self, x: u64) -> u64;
    fn fails(&self) -> ::std::result::Result<(), u8>;
}

struct Impl;

impl Math for Impl {
    async fn double(&self, x: u64) -> u64 {
        x * 2
    }
    fn fails(&self) -> ::std::result::Result<(), u8> {
        ::std::result::Result::Err(1)
    }
}

fn main() {
    let _server = ::rpc_core::Server::builder()
        .remote(add::function())
        .remote(fallible::function())
        .service(MathServer::new(Impl));
    let _ = MathClient::new;
}
