//! Procedural macros for `rpc-core`.
//!
//! Users depend on `rpc-core`, which re-exports these macros; this crate is
//! an implementation detail. It holds no macros yet: the attribute that turns
//! a function or trait into a remote one arrives with the macros milestone.
