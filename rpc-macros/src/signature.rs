//! Checks the signature of a remote function or service method and takes it
//! apart into what the generated code needs.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::visit::Visit;
use syn::{FnArg, GenericArgument, Ident, Pat, PathArguments, ReturnType, Signature, Type};

use crate::errors::Errors;
use crate::options::type_text;

/// Whether a `self` receiver is expected.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Receiver {
    /// A free function: no `self`.
    Forbidden,
    /// A service method: exactly `&self`.
    SharedRef,
}

/// A checked signature.
pub(crate) struct Method {
    /// `async fn` or plain `fn`.
    pub(crate) is_async: bool,
    /// Whether the first argument (after `self`) is the call's `Context`.
    pub(crate) takes_context: bool,
    /// The arguments that travel, in order.
    pub(crate) args: Vec<(Ident, Type)>,
    /// What a successful call returns.
    pub(crate) ok: Type,
    /// The function's own error, when it returns `Result<T, E>` (or
    /// `Result<T, Failure<E>>`).
    pub(crate) err: Option<Type>,
    /// It returns `Result<T, Failure<E>>`: it may answer a protocol status
    /// of its own (busy, unavailable) as well as its error `E`.
    pub(crate) answers_status: bool,
}

impl Method {
    /// Checks `sig`, recording every problem; `None` if there was any.
    pub(crate) fn analyze(
        sig: &Signature,
        receiver: Receiver,
        errors: &mut Errors,
    ) -> Option<Method> {
        let mut ok = true;
        let mut fail = |errors: &mut Errors, tokens: &dyn ToTokens, message: &str| {
            ok = false;
            errors.at(tokens.to_token_stream(), message);
        };
        if !sig.generics.params.is_empty() {
            fail(
                errors,
                &sig.generics,
                "a remote function cannot be generic: its argument and result types must be known to both ends",
            );
        }
        if let Some(clause) = &sig.generics.where_clause {
            fail(
                errors,
                clause,
                "a remote function cannot have a `where` clause",
            );
        }
        if let Some(unsafety) = &sig.unsafety {
            fail(errors, unsafety, "a remote function cannot be `unsafe`");
        }
        if let Some(variadic) = &sig.variadic {
            fail(errors, variadic, "a remote function cannot be variadic");
        }
        if let Some(constness) = &sig.constness {
            fail(errors, constness, "a remote function cannot be `const`");
        }
        let mut has_receiver = false;
        let mut args = Vec::new();
        let mut takes_context = false;
        for (index, input) in sig.inputs.iter().enumerate() {
            match input {
                FnArg::Receiver(own) => {
                    has_receiver = true;
                    match receiver {
                        Receiver::Forbidden => fail(
                            errors,
                            own,
                            "`self` is only allowed in the methods of a `#[service]` trait",
                        ),
                        Receiver::SharedRef => {
                            if own.reference.is_none() || own.mutability.is_some() {
                                fail(
                                    errors,
                                    own,
                                    "a service method takes `&self`: one implementation serves many calls at once",
                                );
                            }
                        }
                    }
                }
                FnArg::Typed(arg) => {
                    let first = index == usize::from(has_receiver);
                    if first && is_context(&arg.ty) {
                        takes_context = true;
                        continue;
                    }
                    let name = match &*arg.pat {
                        Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => {
                            Some(pat.ident.clone())
                        }
                        other => {
                            fail(
                                errors,
                                other,
                                "use a plain name for a remote function's argument; destructure it inside the function",
                            );
                            None
                        }
                    };
                    for problem in problems(&arg.ty) {
                        fail(errors, &problem.0, problem.1);
                    }
                    if let Some(name) = name {
                        args.push((name, (*arg.ty).clone()));
                    }
                }
            }
        }
        if receiver == Receiver::SharedRef && !has_receiver {
            fail(
                errors,
                &sig.ident,
                "a service method takes `&self`: add it as the first argument",
            );
        }
        let (ok_type, err) = match &sig.output {
            ReturnType::Default => (syn::parse_quote!(()), None),
            ReturnType::Type(_, ty) => {
                for problem in problems(ty) {
                    fail(errors, &problem.0, problem.1);
                }
                split_result(ty)
            }
        };
        let (err, answers_status) = match err {
            Some(err) => match failure_inner(&err) {
                Some(inner) => (Some(inner), true),
                None => (Some(err), false),
            },
            None => (None, false),
        };
        ok.then_some(Method {
            is_async: sig.asyncness.is_some(),
            takes_context,
            args,
            ok: ok_type,
            err,
            answers_status,
        })
    }

    /// The argument tuple's type: `(A, B,)`.
    pub(crate) fn args_type(&self) -> TokenStream {
        let types = self.args.iter().map(|(_, ty)| ty);
        quote!((#(#types,)*))
    }

    /// The argument names, as a tuple pattern or expression: `(a, b,)`.
    pub(crate) fn args_tuple(&self) -> TokenStream {
        let names = self.args.iter().map(|(name, _)| name);
        quote!((#(#names,)*))
    }

    /// The stub's parameters: `a: A, b: B`.
    pub(crate) fn params(&self) -> TokenStream {
        let params = self.args.iter().map(|(name, ty)| quote!(#name: #ty));
        quote!(#(#params),*)
    }

    /// The argument names as a list for a call: `a, b`.
    pub(crate) fn arg_names(&self) -> TokenStream {
        let names = self.args.iter().map(|(name, _)| name);
        quote!(#(#names),*)
    }

    /// The constructor of the function's `RemoteFunction`: one that lets it
    /// answer statuses for `Failure<E>`, the plain one otherwise.
    pub(crate) fn constructor(&self, krate: &TokenStream) -> TokenStream {
        if self.answers_status {
            quote!(#krate::RemoteFunction::with_status)
        } else {
            quote!(#krate::RemoteFunction::new)
        }
    }

    /// The function's error type, or `rpc_core::Infallible`.
    pub(crate) fn err_type(&self, krate: &TokenStream) -> TokenStream {
        match &self.err {
            Some(err) => err.to_token_stream(),
            None => quote!(#krate::Infallible),
        }
    }

    /// The strings hashed, after the name, into the schema hash.
    pub(crate) fn schema_parts(&self) -> Vec<String> {
        let mut parts: Vec<String> = self.args.iter().map(|(_, ty)| type_text(ty)).collect();
        parts.push("->".to_owned());
        parts.push(type_text(&self.ok));
        if let Some(err) = &self.err {
            parts.push(type_text(err));
        }
        parts
    }

    /// Assertions, spanned at each type, that arguments and results can
    /// travel: a type that is not serde-serialisable is reported where it is
    /// written.
    pub(crate) fn type_checks(&self, krate: &TokenStream) -> TokenStream {
        let args = self.args.iter().map(|(_, ty)| {
            quote::quote_spanned! {ty_span(ty)=>
                #krate::__private::assert_serialize::<#ty>();
                #krate::__private::assert_deserialize::<#ty>();
            }
        });
        let results = std::iter::once(&self.ok).chain(&self.err).map(|ty| {
            quote::quote_spanned! {ty_span(ty)=>
                #krate::__private::assert_serialize::<#ty>();
                #krate::__private::assert_deserialize::<#ty>();
            }
        });
        quote! {
            const _: () = {
                #(#args)*
                #(#results)*
            };
        }
    }
}

fn ty_span(ty: &Type) -> Span {
    syn::spanned::Spanned::span(ty)
}

/// Whether `ty` names the call's context: a path ending in `Context`.
fn is_context(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == "Context" && segment.arguments.is_empty()),
        _ => false,
    }
}

/// `Result<T, E>` as written, taken apart; anything else is the success type.
fn split_result(ty: &Type) -> (Type, Option<Type>) {
    if let Type::Path(path) = ty
        && path.qself.is_none()
        && let Some(last) = path.path.segments.last()
        && last.ident == "Result"
        && let PathArguments::AngleBracketed(generics) = &last.arguments
        && generics.args.len() == 2
        && let (Some(GenericArgument::Type(ok)), Some(GenericArgument::Type(err))) =
            (generics.args.first(), generics.args.last())
    {
        return (ok.clone(), Some(err.clone()));
    }
    (ty.clone(), None)
}

/// `E` of an error type `Failure<E>` (by its last path segment, so
/// `rpc_core::Failure<E>` too).
fn failure_inner(ty: &Type) -> Option<Type> {
    if let Type::Path(path) = ty
        && path.qself.is_none()
        && let Some(last) = path.path.segments.last()
        && last.ident == "Failure"
        && let PathArguments::AngleBracketed(generics) = &last.arguments
        && generics.args.len() == 1
        && let Some(GenericArgument::Type(inner)) = generics.args.first()
    {
        return Some(inner.clone());
    }
    None
}

/// What in a type cannot travel between machines, with why.
fn problems(ty: &Type) -> Vec<(TokenStream, &'static str)> {
    #[derive(Default)]
    struct Finder(Vec<(TokenStream, &'static str)>);
    impl<'ast> Visit<'ast> for Finder {
        fn visit_type_reference(&mut self, reference: &'ast syn::TypeReference) {
            self.0.push((
                reference.to_token_stream(),
                "a remote function's types must be owned: a reference cannot cross the network (use `String` for `&str`, `Vec<T>` for `&[T]`)",
            ));
        }
        fn visit_lifetime(&mut self, lifetime: &'ast syn::Lifetime) {
            self.0.push((
                lifetime.to_token_stream(),
                "a remote function's types cannot borrow: remove the lifetime",
            ));
        }
        fn visit_type_impl_trait(&mut self, found: &'ast syn::TypeImplTrait) {
            self.0.push((
                found.to_token_stream(),
                "`impl Trait` cannot cross the network: name a concrete type",
            ));
        }
        fn visit_type_bare_fn(&mut self, found: &'ast syn::TypeBareFn) {
            self.0.push((
                found.to_token_stream(),
                "a function pointer cannot cross the network",
            ));
        }
        fn visit_type_trait_object(&mut self, found: &'ast syn::TypeTraitObject) {
            self.0.push((
                found.to_token_stream(),
                "a trait object cannot cross the network: name a concrete type",
            ));
        }
    }
    let mut finder = Finder::default();
    finder.visit_type(ty);
    finder.0
}

/// An identifier that cannot clash with the user's names.
pub(crate) fn hidden(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}
