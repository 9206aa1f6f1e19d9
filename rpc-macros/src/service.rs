//! `#[service]` on a trait: the trait's methods become remote, with a typed
//! client (`NameClient`) and a server type (`NameServer`) that registers an
//! implementation.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::{ItemTrait, LitStr, ReturnType, TraitItem, TraitItemFn};

use crate::errors::Errors;
use crate::krate;
use crate::options::{Options, cfg_attrs, doc_text};
use crate::signature::{Method, Receiver, hidden};

/// Method names the generated client has for itself.
const CLIENT_METHODS: [&str; 2] = ["new", "client"];

/// One checked method with its options.
struct Remote<'a> {
    item: &'a TraitItemFn,
    options: Options,
    method: Method,
}

/// Expands `#[service(attr)] item`.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let service: ItemTrait = match syn::parse2(item.clone()) {
        Ok(service) => service,
        Err(error) => {
            let message = syn::Error::new(
                error.span(),
                "`#[service]` goes on a trait; for a function, use `#[remote]`",
            );
            let error = message.to_compile_error();
            return quote!(#item #error);
        }
    };
    let mut errors = Errors::default();
    let prefix = service_name(attr, &mut errors);
    if !service.generics.params.is_empty() {
        errors.at(&service.generics, "a `#[service]` trait cannot be generic");
    }
    let mut remotes = Vec::new();
    for item in &service.items {
        match item {
            TraitItem::Fn(function) => {
                let mut options = Options::default();
                for attr in function
                    .attrs
                    .iter()
                    .filter(|attr| attr.path().is_ident("rpc"))
                {
                    match attr.meta.require_list() {
                        Ok(list) => {
                            let parsed = Options::parse(list.tokens.clone(), &mut errors);
                            merge(&mut options, parsed);
                        }
                        Err(error) => errors.push(error),
                    }
                }
                let ident = function.sig.ident.to_string();
                if CLIENT_METHODS.contains(&ident.as_str()) {
                    errors.at(
                        &function.sig.ident,
                        format!(
                            "`{ident}` collides with `{}Client::{ident}`, which the macro generates; rename the method",
                            service.ident
                        ),
                    );
                }
                if let Some(method) =
                    Method::analyze(&function.sig, Receiver::SharedRef, &mut errors)
                {
                    remotes.push(Remote {
                        item: function,
                        options,
                        method,
                    });
                }
            }
            other => errors.at(other, "a `#[service]` trait holds only methods"),
        }
    }
    let trait_tokens = rewrite_trait(&service);
    if let Some(errors) = errors.into_compile_errors() {
        return quote!(#trait_tokens #errors);
    }
    let generated = generate(&service, &prefix, &remotes);
    quote!(#trait_tokens #generated)
}

/// `name = "..."` on the trait: the prefix of its methods' wire names.
fn service_name(attr: TokenStream, errors: &mut Errors) -> Option<LitStr> {
    if attr.is_empty() {
        return None;
    }
    let mut name = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            name = Some(meta.value()?.parse::<LitStr>()?);
            Ok(())
        } else {
            Err(meta.error("unknown option: a `#[service]` takes only `name = \"...\"`; method options go in `#[rpc(...)]` on the method"))
        }
    });
    if let Err(error) = syn::parse::Parser::parse2(parser, attr) {
        errors.push(error);
    }
    name
}

fn merge(into: &mut Options, from: Options) {
    into.idempotent |= from.idempotent;
    into.name = from.name.or(into.name.take());
    into.timeout_ms = from.timeout_ms.or(into.timeout_ms.take());
    into.roles = from.roles.or(into.roles.take());
}

/// The trait as the user wrote it, with `#[rpc]` attributes removed, `Send +
/// Sync + 'static` required of implementations, and each `async fn` turned
/// into a `fn` returning a `Send` future (so servers can run calls on any
/// thread); implementations still write `async fn`.
fn rewrite_trait(service: &ItemTrait) -> TokenStream {
    let mut service = service.clone();
    service
        .supertraits
        .push(syn::parse_quote!(::core::marker::Send));
    service
        .supertraits
        .push(syn::parse_quote!(::core::marker::Sync));
    service.supertraits.push(syn::parse_quote!('static));
    for item in &mut service.items {
        let TraitItem::Fn(function) = item else {
            continue;
        };
        function.attrs.retain(|attr| !attr.path().is_ident("rpc"));
        if function.sig.asyncness.take().is_none() {
            continue;
        }
        let output = match &function.sig.output {
            ReturnType::Default => quote!(()),
            ReturnType::Type(_, ty) => quote!(#ty),
        };
        function.sig.output = syn::parse_quote! {
            -> impl ::core::future::Future<Output = #output> + ::core::marker::Send
        };
        if let Some(block) = &function.default {
            function.default = Some(syn::parse_quote!({ async move #block }));
        }
    }
    quote!(#service)
}

fn generate(service: &ItemTrait, prefix: &Option<LitStr>, remotes: &[Remote<'_>]) -> TokenStream {
    let krate = krate::path();
    let vis = &service.vis;
    let trait_ident = &service.ident;
    let client_ident = format_ident!("{}Client", trait_ident);
    let server_ident = format_ident!("{}Server", trait_ident);
    let trait_text = trait_ident.to_string();
    let inner = hidden("client");
    let implementation = hidden("service");
    let context = hidden("context");
    let mut consts = Vec::new();
    let mut client_methods = Vec::new();
    let mut registrations = Vec::new();
    for remote in remotes {
        let method = &remote.method;
        let ident = &remote.item.sig.ident;
        let ident_text = ident.to_string();
        let ident_text = ident_text
            .strip_prefix("r#")
            .unwrap_or(&ident_text)
            .to_owned();
        let upper = ident_text.to_uppercase();
        let name_const = format_ident!("__RPC_{}_{}_NAME", trait_text.to_uppercase(), upper);
        let hash_const = format_ident!("__RPC_{}_{}_SCHEMA_HASH", trait_text.to_uppercase(), upper);
        let cfgs = cfg_attrs(&remote.item.attrs);
        let name = match (&remote.options.name, prefix) {
            (Some(name), _) => quote!(#name),
            (None, Some(prefix)) => quote!(::core::concat!(#prefix, "::", #ident_text)),
            (None, None) => {
                quote!(
                    ::core::concat!(::core::module_path!(), "::", #trait_text, "::", #ident_text)
                )
            }
        };
        let parts = method.schema_parts();
        let method_checks = method.type_checks(&krate);
        consts.push(quote! {
            #(#cfgs)*
            #[doc(hidden)]
            #[allow(non_upper_case_globals)]
            const #name_const: &str = #name;
            #(#cfgs)*
            #[doc(hidden)]
            #[allow(non_upper_case_globals)]
            const #hash_const: u64 = #krate::__private::schema_hash(&[#name_const, #(#parts),*]);
            #(#cfgs)*
            #method_checks
        });

        let args_type = method.args_type();
        let args_tuple = method.args_tuple();
        let params = method.params();
        let arg_names = method.arg_names();
        let ok = &method.ok;
        let err = method.err_type(&krate);
        let constructor = method.constructor(&krate);
        let docs = remote
            .item
            .attrs
            .iter()
            .filter(|attr| attr.path().is_ident("doc"));
        let call_options = remote.options.call_options(&krate, &quote!(#hash_const));
        let ident_with = format_ident!("{}_with", ident_text);
        let with_doc = format!(
            "[`{ident_text}`](Self::{ident_text}) with other `CallOptions` (a deadline, idempotency) than the method's own; the schema hash is always the method's."
        );
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
        client_methods.push(quote! {
            #(#cfgs)*
            #(#docs)*
            ///
            /// # Errors
            ///
            /// An `RpcError` saying why the call failed, or holding the
            /// method's own error.
            #[allow(clippy::too_many_arguments)]
            #vis async fn #ident(&self, #params) -> #result {
                #call(&self.#inner, #name_const, &#args_tuple, #call_options).await
            }

            #(#cfgs)*
            #[doc = #with_doc]
            ///
            /// # Errors
            ///
            /// An `RpcError` saying why the call failed, or holding the
            /// method's own error.
            #[allow(clippy::too_many_arguments)]
            #vis async fn #ident_with(&self, options: #krate::CallOptions, #params) -> #result {
                #call(&self.#inner, #name_const, &#args_tuple, options.schema_hash(#hash_const)).await
            }
        });

        let description = doc_text(&remote.item.attrs);
        let function_options =
            remote
                .options
                .function_options(&krate, &quote!(#hash_const), &description);
        let context_arg = method.takes_context.then(|| quote!(#context,));
        let await_ = method.is_async.then(|| quote!(.await));
        let run = quote!(#implementation.#ident(#context_arg #arg_names) #await_);
        let body = if method.err.is_some() {
            run
        } else {
            quote!(#krate::__private::Ok::<#ok, #krate::Infallible>(#run))
        };
        registrations.push(quote! {
            #(#cfgs)*
            {
                let #implementation = ::core::clone::Clone::clone(&self.#implementation);
                functions.push(#constructor::<#args_type, #ok, #err, _, _>(
                    #name_const,
                    #function_options,
                    move |#context: #krate::Context, #args_tuple: #args_type| {
                        let #implementation = ::core::clone::Clone::clone(&#implementation);
                        async move {
                            let _ = &#context;
                            #body
                        }
                    },
                ));
            }
        });
    }
    let client_doc = format!(
        "A typed client of the [`{trait_text}`] service, made by `#[service]`: one async method per remote method."
    );
    let server_doc = format!(
        "Serves an implementation of [`{trait_text}`]: register it with `ServerBuilder::service({trait_text}ServerBuilder::new(implementation))`."
    );
    quote! {
        #(#consts)*

        #[doc = #client_doc]
        #[derive(Clone, Debug)]
        #vis struct #client_ident {
            #inner: #krate::Client,
        }

        impl #client_ident {
            /// A client of the service on the server `client` connects to.
            #vis fn new(client: #krate::Client) -> #client_ident {
                #client_ident { #inner: client }
            }

            /// The underlying connection, for calls outside the service.
            #vis fn client(&self) -> &#krate::Client {
                &self.#inner
            }

            #(#client_methods)*
        }

        #[doc = #server_doc]
        #[derive(Debug)]
        #vis struct #server_ident<S> {
            #implementation: #krate::__private::Arc<S>,
        }

        impl<S: #trait_ident> #server_ident<S> {
            /// Serves `service`.
            #vis fn new(service: S) -> #server_ident<S> {
                #server_ident { #implementation: #krate::__private::Arc::new(service) }
            }

            /// Serves a shared `service`.
            #vis fn from_arc(service: #krate::__private::Arc<S>) -> #server_ident<S> {
                #server_ident { #implementation: service }
            }
        }

        impl<S: #trait_ident> #krate::Service for #server_ident<S> {
            fn into_functions(self) -> #krate::__private::Vec<#krate::RemoteFunction> {
                let mut functions = #krate::__private::Vec::new();
                #(#registrations)*
                functions
            }
        }
    }
}
