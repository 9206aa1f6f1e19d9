//! Procedural macros for `rpc-core`: `#[remote]`, `#[service]` and
//! `#[derive(Request)]`.
//!
//! Depend on `rpc-core`, which re-exports these macros with their full
//! documentation; this crate is an implementation detail.

mod errors;
mod krate;
mod options;
mod remote;
mod request;
mod service;
mod signature;

use proc_macro::TokenStream;

/// Makes a function callable from other machines. Documented on its
/// re-export, `rpc_core::remote`.
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    remote::expand(attr.into(), item.into()).into()
}

/// Makes a trait's methods callable from other machines. Documented on its
/// re-export, `rpc_core::service`.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    service::expand(attr.into(), item.into()).into()
}

/// Makes a serde type a request that calls a named remote function.
/// Documented on its re-export, `rpc_core::Request`.
#[proc_macro_derive(Request, attributes(request))]
pub fn derive_request(input: TokenStream) -> TokenStream {
    request::expand(input.into()).into()
}
