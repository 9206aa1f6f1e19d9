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

// The three macros are documented on their re-exports in rpc-core: rustdoc
// appends an item's own docs to its re-export's, so they have none here.
#[allow(missing_docs)]
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    remote::expand(attr.into(), item.into()).into()
}

#[allow(missing_docs)]
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    service::expand(attr.into(), item.into()).into()
}

#[allow(missing_docs)]
#[proc_macro_derive(Request, attributes(request))]
pub fn derive_request(input: TokenStream) -> TokenStream {
    request::expand(input.into()).into()
}
