//! Compile-time behaviour of `#[remote]` and `#[service]` (trybuild): the
//! forms users write compile, and each misuse fails with a clear error at
//! the offending token. Expected messages are in `tests/ui/fail/*.stderr`;
//! regenerate them with `TRYBUILD=overwrite cargo test --test all ui`.

#[test]
fn macros_accept_what_they_should_and_explain_what_they_refuse() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
