//! Compile-time behaviour of `#[remote]` and `#[service]` (trybuild): the
//! forms users write compile, and each misuse fails with a clear error at
//! the offending token. Expected messages are in `tests/ui/fail/*.stderr`;
//! regenerate them with `TRYBUILD=overwrite cargo test -p rpc-core --test ui`.
//!
//! They live in `rpc-core`, not in the workspace's test binary, because
//! trybuild builds the dev-dependencies of the package it runs in: here
//! rpc-core's few, not the worker's wasmtime (six minutes of CI on 2 cores).

#![allow(missing_docs)]

#[test]
fn macros_accept_what_they_should_and_explain_what_they_refuse() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
