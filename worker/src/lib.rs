//! The worker: receives WebAssembly programs over the rpc protocol, compiles
//! and caches them, and runs jobs in a sandbox.
//!
//! This crate is a binary (`worker`) and a library that tests embed. The
//! sandbox, the module cache and the `serve`, `run` and `submit` commands
//! arrive with the worker milestone; today the binary only describes itself.

/// The protocol version this worker speaks, from `rpc-core`.
pub const PROTOCOL_VERSION: u8 = rpc_core::PROTOCOL_VERSION;
