//! The options of `#[remote(...)]` and of `#[rpc(...)]` on service methods.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprArray, ExprLit, Lit, LitInt, LitStr, Meta, Token};

use crate::errors::Errors;

/// What a remote function's attribute may say.
#[derive(Default)]
pub(crate) struct Options {
    /// `name = "..."`: the wire name, replacing the default.
    pub(crate) name: Option<LitStr>,
    /// `idempotent`: safe to retry; duplicates are dropped.
    pub(crate) idempotent: bool,
    /// `timeout_ms = N`: the default deadline of a call.
    pub(crate) timeout_ms: Option<LitInt>,
    /// `roles = ["a", "b"]` or `roles = path::TO_ROLES`: only these roles
    /// may call.
    pub(crate) roles: Option<Roles>,
}

/// The roles allowed to call: listed, or named by a constant (a
/// `&[&str]` or `[&str; N]`) that the crate keeps in one place.
pub(crate) enum Roles {
    Listed(Vec<LitStr>),
    Named(syn::ExprPath),
}

impl Roles {
    /// The roles as a `&'static [&'static str]` expression.
    pub(crate) fn as_slice(&self) -> TokenStream {
        match self {
            Roles::Listed(roles) => quote!(&[#(#roles),*]),
            Roles::Named(path) => quote!(&#path),
        }
    }
}

const KNOWN: &str = "expected `name = \"...\"`, `idempotent`, `timeout_ms = N` or `roles = [\"...\"]` (or `roles = CONSTANT`)";

impl Options {
    /// Parses `tokens`, recording every malformed, unknown or repeated option.
    pub(crate) fn parse(tokens: TokenStream, errors: &mut Errors) -> Options {
        let mut options = Options::default();
        let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(tokens) {
            Ok(metas) => metas,
            Err(error) => {
                errors.push(error);
                return options;
            }
        };
        for meta in metas {
            options.take(meta, errors);
        }
        options
    }

    /// Takes one option, recording what is wrong with it.
    pub(crate) fn take(&mut self, meta: Meta, errors: &mut Errors) {
        let Some(key) = meta.path().get_ident().map(ToString::to_string) else {
            errors.at(meta.path(), format!("unknown option: {KNOWN}"));
            return;
        };
        match (key.as_str(), &meta) {
            ("idempotent", Meta::Path(path)) => {
                if self.idempotent {
                    errors.at(path, "`idempotent` is given twice");
                }
                self.idempotent = true;
            }
            ("name", Meta::NameValue(pair)) => match string(&pair.value) {
                Some(name) if name.value().is_empty() => {
                    errors.at(&pair.value, "the name cannot be empty");
                }
                Some(name) => set(&mut self.name, name, &meta, errors),
                None => errors.at(&pair.value, "expected a string: `name = \"math.add\"`"),
            },
            ("timeout_ms", Meta::NameValue(pair)) => match &pair.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Int(millis),
                    ..
                }) if millis.base10_parse::<u64>().is_ok_and(|millis| millis > 0) => {
                    set(&mut self.timeout_ms, millis.clone(), &meta, errors);
                }
                other => errors.at(
                    other,
                    "expected a positive number of milliseconds: `timeout_ms = 500`",
                ),
            },
            ("roles", Meta::NameValue(pair)) => match roles(&pair.value) {
                Some(roles) => set(&mut self.roles, roles, &meta, errors),
                None => errors.at(
                    &pair.value,
                    "expected a list of strings, `roles = [\"admin\"]`, or a constant holding one, `roles = ADMIN_ROLES`",
                ),
            },
            ("idempotent" | "name" | "timeout_ms" | "roles", _) => {
                errors.at(&meta, format!("malformed option: {KNOWN}"));
            }
            _ => errors.at(meta.path(), format!("unknown option `{key}`: {KNOWN}")),
        }
    }

    /// The `FunctionOptions` expression these options make, around
    /// `schema_hash` and `description`.
    pub(crate) fn function_options(
        &self,
        krate: &TokenStream,
        schema_hash: &TokenStream,
        description: &str,
    ) -> TokenStream {
        let roles = self.roles.as_ref().map(|roles| {
            let roles = roles.as_slice();
            quote!(.roles(::core::iter::Iterator::copied(<[&str]>::iter(#roles))))
        });
        quote! {
            #krate::FunctionOptions::new()
                .schema_hash(#schema_hash)
                .description(#description)
                #roles
        }
    }

    /// The `CallOptions` expression a client stub starts from.
    pub(crate) fn call_options(
        &self,
        krate: &TokenStream,
        schema_hash: &TokenStream,
    ) -> TokenStream {
        let idempotent = self.idempotent.then(|| quote!(.idempotent()));
        let timeout = self
            .timeout_ms
            .as_ref()
            .map(|millis| quote!(.timeout(#krate::__private::Duration::from_millis(#millis))));
        quote! {
            #krate::CallOptions::new().schema_hash(#schema_hash) #idempotent #timeout
        }
    }
}

fn set<T>(slot: &mut Option<T>, value: T, meta: &Meta, errors: &mut Errors) {
    if slot.is_some() {
        errors.at(meta.path(), "this option is given twice");
    }
    *slot = Some(value);
}

fn string(expr: &Expr) -> Option<LitStr> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) => Some(text.clone()),
        _ => None,
    }
}

fn roles(expr: &Expr) -> Option<Roles> {
    match expr {
        Expr::Array(ExprArray { elems, .. }) => elems
            .iter()
            .map(string)
            .collect::<Option<_>>()
            .map(Roles::Listed),
        Expr::Path(path) => Some(Roles::Named(path.clone())),
        _ => None,
    }
}

/// Joins an item's doc comments into one description.
pub(crate) fn doc_text(attrs: &[syn::Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|attr| attr.path().is_ident("doc"))
        .filter_map(|attr| match &attr.meta {
            Meta::NameValue(pair) => string(&pair.value).map(|text| text.value()),
            _ => None,
        })
        .map(|line| {
            line.strip_prefix(' ')
                .unwrap_or(&line)
                .trim_end()
                .to_owned()
        })
        .collect();
    lines.join("\n").trim().to_owned()
}

/// The `#[cfg]` and `#[cfg_attr]` attributes of an item, to repeat on what
/// is generated for it.
pub(crate) fn cfg_attrs(attrs: &[syn::Attribute]) -> Vec<&syn::Attribute> {
    attrs
        .iter()
        .filter(|attr| attr.path().is_ident("cfg") || attr.path().is_ident("cfg_attr"))
        .collect()
}

/// Token text of a type, as hashed into a schema hash.
pub(crate) fn type_text(ty: &impl ToTokens) -> String {
    ty.to_token_stream().to_string()
}
