//! `#[remote]` on a free function: the function stays as written, and a
//! module of the same name holds its wire name, schema hash, client stubs
//! and server registration.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::{ItemFn, Visibility};

use crate::errors::Errors;
use crate::krate;
use crate::options::{Options, cfg_attrs, doc_text};
use crate::signature::{Method, Receiver, hidden};

/// Expands `#[remote(attr)] item`.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(error) => {
            let message = syn::Error::new(
                error.span(),
                "`#[remote]` goes on a function; for a trait, use `#[service]`",
            );
            let error = message.to_compile_error();
            return quote!(#item #error);
        }
    };
    let mut errors = Errors::default();
    let options = Options::parse(attr, &mut errors);
    let method = Method::analyze(&function.sig, Receiver::Forbidden, &mut errors);
    match (method, errors.into_compile_errors()) {
        (Some(method), None) => generate(&function, &options, &method),
        (_, errors) => quote!(#function #errors),
    }
}

fn generate(function: &ItemFn, options: &Options, method: &Method) -> TokenStream {
    let krate = krate::path();
    let ident = &function.sig.ident;
    let ident_text = ident.to_string();
    let ident_text = ident_text.strip_prefix("r#").unwrap_or(&ident_text);
    let cfgs = cfg_attrs(&function.attrs);
    let outer_vis = &function.vis;
    let vis = inner_visibility(outer_vis);
    let name = match &options.name {
        Some(name) => quote!(#name),
        // Inside the generated module, whose name is the function's.
        None => quote!(::core::module_path!()),
    };
    let parts = method.schema_parts();
    let schema_hash = quote!(#krate::__private::schema_hash(&[self::NAME, #(#parts),*]));
    let description = doc_text(&function.attrs);
    let function_options =
        options.function_options(&krate, &quote!(self::SCHEMA_HASH), &description);
    let call_options = options.call_options(&krate, &quote!(self::SCHEMA_HASH));
    let args_type = method.args_type();
    let args_tuple = method.args_tuple();
    let params = method.params();
    let arg_names = method.arg_names();
    let ok = &method.ok;
    let err = method.err_type(&krate);
    let constructor = method.constructor(&krate);
    let client = hidden("client");
    let call_options_var = hidden("options");
    let context = hidden("context");
    let context_arg = method.takes_context.then(|| quote!(#context,));
    let await_ = method.is_async.then(|| quote!(.await));
    let run = quote!(super::#ident(#context_arg #arg_names) #await_);
    let body = if method.err.is_some() {
        run
    } else {
        quote!(#krate::__private::Ok::<#ok, #krate::Infallible>(#run))
    };
    let (result, call) = if method.err.is_some() {
        (
            quote!(#krate::__private::Result<#ok, #krate::RpcError<#err>>),
            quote!(#krate::__private::call_fallible::<#args_type, #ok, #err>),
        )
    } else {
        (
            quote!(#krate::__private::Result<#ok, #krate::RpcError>),
            quote!(#krate::__private::call::<#args_type, #ok>),
        )
    };
    let checks = method.type_checks(&krate);
    let module_doc = format!(
        "Remote access to [`{ident_text}()`](fn@{ident_text}): its wire name, schema hash, client stubs and server registration, made by `#[remote]`."
    );
    let call_doc = format!(
        "Calls `{ident_text}` on the server `client` is connected to, with the options of its `#[remote]` attribute."
    );
    let registration = quote! {
        #(#cfgs)*
        #krate::__private::inventory::submit! {
            #krate::__private::ListedFunction { function: #ident::function }
        }
    };
    let unused = format_ident!("unused_imports");
    quote! {
        #function

        #(#cfgs)*
        #checks

        #(#cfgs)*
        #[doc = #module_doc]
        #outer_vis mod #ident {
            #[allow(#unused)]
            use super::*;

            /// The name callers use.
            #vis const NAME: &str = #name;

            /// The hash of the name and the argument and result types, checked
            /// by the server on every call.
            #vis const SCHEMA_HASH: u64 = #schema_hash;

            /// The call options of the attribute: schema hash, deadline, retries.
            #vis fn options() -> #krate::CallOptions {
                #call_options
            }

            #[doc = #call_doc]
            ///
            /// # Errors
            ///
            /// An `RpcError` saying why the call failed, or holding the
            /// function's own error.
            #[allow(clippy::too_many_arguments)]
            #vis async fn call(#client: &#krate::Client, #params) -> #result {
                #call(#client, self::NAME, &#args_tuple, self::options()).await
            }

            /// Like `call`, with options other than the attribute's (start
            /// from `options()` to keep the schema check).
            ///
            /// # Errors
            ///
            /// An `RpcError` saying why the call failed, or holding the
            /// function's own error.
            #[allow(clippy::too_many_arguments)]
            #vis async fn call_with(
                #client: &#krate::Client,
                #call_options_var: #krate::CallOptions,
                #params
            ) -> #result {
                #call(#client, self::NAME, &#args_tuple, #call_options_var).await
            }

            /// The function, ready for `ServerBuilder::remote`.
            #vis fn function() -> #krate::RemoteFunction {
                #constructor::<#args_type, #ok, #err, _, _>(
                    self::NAME,
                    #function_options,
                    |#context: #krate::Context, #args_tuple: #args_type| async move {
                        let _ = &#context;
                        #body
                    },
                )
            }
        }

        #registration
    }
}

/// The visibility of the generated module's items: as visible as the
/// function, seen from one module deeper.
fn inner_visibility(vis: &Visibility) -> TokenStream {
    match vis {
        Visibility::Public(_) => quote!(pub),
        Visibility::Inherited => quote!(pub(super)),
        Visibility::Restricted(restricted) => {
            let path = &restricted.path;
            if path.is_ident("crate") {
                quote!(pub(crate))
            } else if path.is_ident("self") {
                quote!(pub(super))
            } else if path.is_ident("super") {
                quote!(pub(in super::super))
            } else if path.leading_colon.is_none()
                && path
                    .segments
                    .first()
                    .is_some_and(|first| first.ident == "crate")
            {
                quote!(pub(in #path))
            } else {
                quote!(pub(crate))
            }
        }
    }
}
