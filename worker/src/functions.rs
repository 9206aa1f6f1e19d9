//! The functions workers and coordinators serve, declared once with our
//! own macros: each trait is implemented by whoever serves it (a sandbox,
//! the coordinator's directory, its relay hub) and called through the
//! client it generates. The wire names are PROTOCOL.md's (sections 16 and
//! 17), and so are the bytes: one argument travels as itself.

use bytes::Bytes;
use rpc_core::{ContentHash, Context, Failure, service};

use crate::directory::{RegisterRefused, Registration, WorkerEntry};
use crate::job::{CallOutput, CallRequest, JobError, RunOutput, RunRequest, WorkerStatus};
use crate::relay::{AttachRefused, RelayDone, RelayTask};

/// Running jobs: what a worker serves, and what a coordinator serves on
/// behalf of the workers it relays for.
///
/// A job without a result is its own [`JobError`] (status 422); a server
/// too busy to take it answers `429 worker busy: ...` instead, the
/// server's condition and not the job's.
#[service]
pub trait Jobs {
    /// Runs a shipped module as a WASI command.
    #[rpc(name = "worker.run", roles = crate::roles::RUNS_JOBS)]
    async fn run(
        &self,
        context: Context,
        request: RunRequest,
    ) -> Result<RunOutput, Failure<JobError>>;

    /// Calls a typed export of a shipped module.
    #[rpc(name = "worker.call", roles = crate::roles::RUNS_JOBS)]
    async fn call(
        &self,
        context: Context,
        request: CallRequest,
    ) -> Result<CallOutput, Failure<JobError>>;
}

/// A worker's load and caches, for its operator.
#[service]
pub trait Status {
    /// The worker's load and caches.
    #[rpc(name = "worker.status", roles = crate::roles::READS_STATUS)]
    async fn status(&self) -> WorkerStatus;
}

/// The coordinator's directory of live workers.
#[service]
pub trait Directory {
    /// Registers a worker, or renews its registration; the time to live of
    /// the entry, in milliseconds. A name is bound to the caller that
    /// registered it (its token or certificate) until its entry expires.
    #[rpc(name = "coordinator.register", roles = crate::roles::IS_WORKER)]
    async fn register(
        &self,
        context: Context,
        registration: Registration,
    ) -> Result<u64, RegisterRefused>;

    /// Lists the live workers.
    #[rpc(name = "coordinator.workers", roles = crate::roles::RUNS_JOBS)]
    async fn workers(&self) -> Vec<WorkerEntry>;
}

/// Relaying between a coordinator and the workers that take jobs through
/// it. Only the connection that took a job may answer it, so each call
/// sees its [`Context`].
#[service]
pub trait Relaying {
    /// Hands a relayed worker its next job (long polling); none after a
    /// while without one.
    #[rpc(name = "coordinator.relay.poll", roles = crate::roles::IS_WORKER)]
    async fn poll(&self, context: Context, worker: String) -> Option<RelayTask>;

    /// Takes a relayed worker's result for a job it took.
    #[rpc(name = "coordinator.relay.done", roles = crate::roles::IS_WORKER)]
    async fn done(&self, context: Context, result: RelayDone) -> Result<(), JobError>;

    /// Tells a relayed worker which of its jobs no one waits for (long
    /// polling).
    #[rpc(name = "coordinator.relay.cancelled", roles = crate::roles::IS_WORKER)]
    async fn cancelled(&self, context: Context, worker: String) -> Vec<u64>;

    /// Hands a relayed worker a module clients shipped.
    #[rpc(name = "coordinator.relay.module", roles = crate::roles::IS_WORKER)]
    async fn module(&self, hash: ContentHash) -> Result<Bytes, JobError>;
}

/// A supernode's side of relaying, for the workers that attach to it.
#[service]
pub trait Supernoding {
    /// A relayed worker's long poll: its name in; the tickets of the
    /// connections it should open to this supernode now out (each to be
    /// sent in a `Join` frame), or an empty list after about 10 s without
    /// any (ask again). The first call attaches the worker; it stays
    /// attached while it keeps asking, and the name is bound to the caller
    /// (its token, or its client certificate, whose name must be the
    /// worker's) until then.
    #[rpc(name = "supernode.dials", roles = crate::roles::IS_WORKER)]
    async fn dials(
        &self,
        context: Context,
        worker: String,
    ) -> Result<Vec<[u8; rpc_core::wire::TICKET_LEN]>, AttachRefused>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names the traits declare are the ones PROTOCOL.md gives and
    /// the crate's constants (for peers written by hand) repeat.
    #[test]
    fn the_declared_names_are_the_protocols() {
        let declared = [
            (__RPC_JOBS_RUN_NAME, crate::job::RUN_METHOD),
            (__RPC_JOBS_CALL_NAME, crate::job::CALL_METHOD),
            (__RPC_STATUS_STATUS_NAME, crate::job::STATUS_METHOD),
            (
                __RPC_DIRECTORY_REGISTER_NAME,
                crate::directory::REGISTER_METHOD,
            ),
            (
                __RPC_DIRECTORY_WORKERS_NAME,
                crate::directory::WORKERS_METHOD,
            ),
            (__RPC_RELAYING_POLL_NAME, crate::relay::RELAY_POLL_METHOD),
            (__RPC_RELAYING_DONE_NAME, crate::relay::RELAY_DONE_METHOD),
            (
                __RPC_RELAYING_CANCELLED_NAME,
                crate::relay::RELAY_CANCELLED_METHOD,
            ),
            (
                __RPC_RELAYING_MODULE_NAME,
                crate::relay::RELAY_MODULE_METHOD,
            ),
            (
                __RPC_SUPERNODING_DIALS_NAME,
                crate::relay::SUPERNODE_DIALS_METHOD,
            ),
        ];
        for (name, constant) in declared {
            assert_eq!(name, constant);
        }
        let protocol = include_str!("../../PROTOCOL.md");
        for (name, _) in declared {
            assert!(
                protocol.contains(&format!("`{name}`")),
                "PROTOCOL.md names {name}"
            );
        }
    }
}
