//! A crate that renames its `rpc-core` dependency to `rpc` and has no
//! prelude: the code `#[remote]` and `#[service]` generate must still
//! compile and work.
#![no_implicit_prelude]

/// Doubles `n`.
#[::rpc::remote]
pub fn double(n: u64) -> u64 {
    n * 2
}

/// A service under the renamed crate.
#[::rpc::service]
pub trait Echo {
    /// Returns `text`.
    async fn echo(&self, text: ::std::string::String) -> ::std::string::String;
}

/// The implementation.
#[derive(Debug)]
pub struct Parrot;

impl Echo for Parrot {
    async fn echo(&self, text: ::std::string::String) -> ::std::string::String {
        text
    }
}
