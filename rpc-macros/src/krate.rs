//! The path generated code uses for `rpc_core`, whatever the user's
//! `Cargo.toml` calls it.

use proc_macro_crate::{FoundCrate, crate_name};
use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::Ident;

/// `::rpc_core`, or `::renamed` when the dependency is renamed.
pub(crate) fn path() -> TokenStream {
    match crate_name("rpc-core") {
        Ok(FoundCrate::Name(name)) => {
            let name = Ident::new(&name, Span::call_site());
            quote!(::#name)
        }
        // rpc-core's own doctests and unit tests, or no Cargo.toml to read.
        Ok(FoundCrate::Itself) | Err(_) => quote!(::rpc_core),
    }
}
