//! `#[derive(Request)]`: a serde type that names the remote function it
//! calls, with the function's result and error types.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};
use syn::parse::Parser;
use syn::{Data, DeriveInput, Expr, Fields, Meta, Token, Type};

use crate::errors::Errors;
use crate::krate;
use crate::options::{Options, type_text};

/// Expands `#[derive(Request)]` on `input`.
pub(crate) fn expand(input: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(error) => return error.to_compile_error(),
    };
    let mut errors = Errors::default();
    let mut options = Options::default();
    let mut response: Option<Type> = None;
    let mut error_type: Option<Type> = None;
    let mut seen = false;
    for attr in input
        .attrs
        .iter()
        .filter(|attr| attr.path().is_ident("request"))
    {
        seen = true;
        let list = match attr.meta.require_list() {
            Ok(list) => list,
            Err(error) => {
                errors.push(error);
                continue;
            }
        };
        let parser = syn::meta::parser(|meta| {
            let slot = if meta.path.is_ident("response") {
                &mut response
            } else if meta.path.is_ident("error") {
                &mut error_type
            } else {
                let option = if meta.input.peek(Token![=]) {
                    Meta::NameValue(syn::MetaNameValue {
                        path: meta.path.clone(),
                        eq_token: meta.input.parse()?,
                        value: meta.input.parse::<Expr>()?,
                    })
                } else {
                    Meta::Path(meta.path.clone())
                };
                options.take(option, &mut errors);
                return Ok(());
            };
            let ty: Type = meta.value()?.parse()?;
            if slot.is_some() {
                errors.at(&meta.path, "this option is given twice");
            }
            *slot = Some(ty);
            Ok(())
        });
        if let Err(error) = parser.parse2(list.tokens.clone()) {
            errors.push(error);
        }
    }
    if !seen || response.is_none() {
        errors.at(
            &input.ident,
            "a `Request` names its result type: add `#[request(response = Type)]` (and optionally `error = Type`, `name = \"...\"`, `idempotent`, `timeout_ms = N`, `roles = [...]`)",
        );
    }
    if !input.generics.params.is_empty() {
        errors.at(
            &input.generics,
            "a `Request` cannot be generic: both ends must know its type",
        );
    }
    if let Data::Union(union) = &input.data {
        errors.at(union.union_token, "a `Request` is a struct or an enum");
    }
    if let Some(errors) = errors.into_compile_errors() {
        return errors;
    }
    let krate = krate::path();
    let ident = &input.ident;
    let ident_text = ident.to_string();
    let name = match &options.name {
        Some(name) => quote!(#name),
        None => quote!(::core::concat!(::core::module_path!(), "::", #ident_text)),
    };
    let response = response.map_or_else(|| quote!(()), |ty| ty.to_token_stream());
    let error = error_type.map_or_else(|| quote!(#krate::Infallible), |ty| ty.to_token_stream());
    let mut parts = shape(&input.data);
    parts.push("->".to_owned());
    parts.push(type_text(&response));
    parts.push(type_text(&error));
    let call_options =
        options.call_options(&krate, &quote!(<Self as #krate::Request>::SCHEMA_HASH));
    let roles = match &options.roles {
        Some(roles) => {
            let roles = roles.as_slice();
            quote!(#krate::__private::Some(#roles))
        }
        None => quote!(#krate::__private::None),
    };
    quote! {
        impl #krate::Request for #ident {
            const NAME: &'static str = #name;
            const SCHEMA_HASH: u64 = #krate::__private::schema_hash(&[#name, #(#parts),*]);
            const ROLES: #krate::__private::Option<&'static [&'static str]> = #roles;
            type Response = #response;
            type Error = #error;

            fn options() -> #krate::CallOptions {
                #call_options
            }
        }
    }
}

/// The fields (and variants) of a type, as the strings its schema hash
/// covers: names and types, not attributes or docs.
fn shape(data: &Data) -> Vec<String> {
    let fields = |fields: &Fields| -> Vec<String> {
        fields
            .iter()
            .map(|field| {
                let name = field
                    .ident
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                format!("{name}:{}", type_text(&field.ty))
            })
            .collect()
    };
    match data {
        Data::Struct(data) => fields(&data.fields),
        Data::Enum(data) => data
            .variants
            .iter()
            .flat_map(|variant| {
                std::iter::once(format!("variant {}", variant.ident)).chain(fields(&variant.fields))
            })
            .collect(),
        Data::Union(_) => Vec::new(),
    }
}
