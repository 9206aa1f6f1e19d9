//! The worker: receives WebAssembly programs over the rpc protocol, compiles
//! and caches them, and runs jobs in a sandbox with hard limits.
//!
//! The crate is the `worker` binary (`worker serve`, `worker run`,
//! `worker submit`) and a library that embeds the same pieces:
//!
//! - [`Sandbox`]: compiles and caches modules, runs jobs in wasmtime.
//! - [`serve`] / [`worker_server`]: a [`Sandbox`] behind an
//!   [`rpc_core::Server`].
//! - [`WorkerClient`]: ships modules (only when the worker lacks them) and
//!   runs jobs, from another process or machine.
//! - [`WorkerPool`]: the same over many workers, with failover and fan-out
//!   ([`WorkerPool::map`]); each result comes [`Dispatched`], with the
//!   worker that gave it.
//! - [`coordinator_server`], [`join`], [`CoordinatorResolver`],
//!   [`relay_worker`]: many machines, found through a coordinator, with
//!   relays for workers that accept no connections.
//! - Jobs and their results: [`Command`], [`RunOutput`], [`CallOutput`],
//!   [`Receipt`], [`JobError`] (its [`kind`](JobError::kind) and
//!   [`Fault`]); limits: [`Limits`], [`JobLimits`]; errors:
//!   [`WorkerError`], [`SandboxError`].
//! - [`metrics`]: what a worker and a coordinator count for Prometheus
//!   when their [`rpc_core::ServerConfig::metrics`] is set.
//! - [`wire`]: the functions' names and argument types, for peers written
//!   by hand; [`roles`]: the access roles the worker checks.
//!
//! # Two kinds of job
//!
//! - A **WASI command** (`_start`, preview 1): arguments, environment and
//!   stdin go in; stdout, stderr and the exit code come back
//!   ([`Command`], [`RunOutput`]). The exit code is a result: an SMT
//!   solver that exits 10 for "sat" succeeded.
//! - A **typed call**: a named export takes postcard-encoded input and
//!   returns postcard-encoded output ([`WorkerClient::call`]). The guest
//!   side is the `rpc-guest` crate: `rpc_guest::export!(f)` for a
//!   `fn f(In) -> Out`. The ABI underneath: the guest exports `memory`,
//!   `rpc_alloc(len: i32) -> i32` (a buffer for the input) and
//!   `f(ptr: i32, len: i32) -> i64`, whose result is the output's
//!   `ptr << 32 | len`.
//!
//! # The sandbox
//!
//! A job gets no filesystem, no network and no host environment; only its
//! arguments, the environment variables it was given, its stdin and WASI's
//! clocks and random numbers. Every job runs under [`Limits`]: linear
//! memory, tables, fuel (CPU work), wall time (and the call's deadline),
//! wasm stack, stdout/stderr bytes and module size. A job that hits one
//! ends with a [`JobError`] naming it, and the worker goes on serving
//! everyone else. Dropping a job's future (a client's cancel) stops the
//! guest within a few milliseconds.

mod client;
mod coordinator;
mod directory;
mod error;
mod functions;
mod job;
mod limits;
pub mod metrics;
mod pool;
mod relay;
pub mod roles;
mod sandbox;
mod server;
mod warnings;
pub mod wire;

pub use client::{Module, WorkerClient};
pub use coordinator::{
    CoordinatorResolver, DEFAULT_TTL, DIRECTORY_TIMEOUT, coordinator_server, join,
};
pub use error::{SandboxError, WorkerError};
pub use job::{
    CallOutput, CallRequest, Command, Fault, JobError, ModuleOrigin, Receipt, Resource, RunOutput,
    RunRequest, WorkerStatus,
};
pub use limits::{
    DEFAULT_COMPILE_TIMEOUT, DEFAULT_FUEL, DEFAULT_MAX_CODE_BYTES, DEFAULT_MAX_FUNCTIONS,
    DEFAULT_MEMORY_BYTES, DEFAULT_MODULE_BYTES, DEFAULT_OUTPUT_BYTES, DEFAULT_STACK_BYTES,
    DEFAULT_TABLE_ELEMENTS, DEFAULT_WALL_TIME, JobLimits, Limits,
};
pub use pool::{Dispatched, Progress, ProgressCount, WorkerPool, worker_pool_config};
pub use relay::{
    AttachConfig, AttachRefused, Attachment, DEFAULT_RELAY_ROUTES, add_supernode,
    relay_through_supernodes, relay_worker,
};
pub use sandbox::{DEFAULT_MAX_QUEUED_JOBS, Sandbox, SandboxConfig, default_concurrency};
pub use server::{configured_worker_server, serve, worker_server};

/// Locks `mutex`, going on past a panic in another holder: every value
/// the worker guards stays consistent between statements.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
