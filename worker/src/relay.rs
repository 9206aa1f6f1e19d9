//! Relaying: reaching a worker that cannot accept connections (behind NAT
//! or a firewall).
//!
//! The way to do it is through **supernodes** ([`supernode`] and
//! [`attach`]): any worker with a reachable address may relay (`worker
//! serve --supernode`); a worker that accepts no connections (`worker
//! serve --relay auto`) asks the directory for supernodes, measures its
//! round trip to each, attaches to the fastest with room, and registers
//! as `name@supernode`. Clients then connect to it through the supernode,
//! which joins their connection to one the worker opens, byte for byte
//! ([`rpc_core::relay`]). When its supernode dies, it attaches to the next
//! one and registers again at once.
//!
//! The older way, kept for workers started with `--relay-via`: the
//! coordinator takes jobs from clients as if it were a worker and hands
//! them to the relayed worker, which long-polls for them ([`hub`] is the
//! coordinator's side, [`relayed`] the worker's). Every job and module is
//! decoded and re-encoded on the way.

mod attach;
mod hub;
mod relayed;
mod supernode;

pub use attach::{AttachConfig, Attachment, DEFAULT_RELAY_ROUTES, relay_through_supernodes};
pub(crate) use hub::add_relay;
pub use relayed::relay_worker;
pub use supernode::{AttachRefused, SUPERNODE_DIALS_METHOD, add_supernode};

use serde::{Deserialize, Serialize};

use crate::job::{CallOutput, CallRequest, JobError, RunOutput, RunRequest};

/// A relayed worker asks for its next job: its name in, `Option<RelayTask>`
/// out (none after a while without jobs; ask again).
pub const RELAY_POLL_METHOD: &str = "coordinator.relay.poll";
/// A relayed worker returns a result: [`RelayDone`] in, `()` out.
pub const RELAY_DONE_METHOD: &str = "coordinator.relay.done";
/// A relayed worker fetches a module it lacks: its hash in, the bytes out.
pub const RELAY_MODULE_METHOD: &str = "coordinator.relay.module";
/// A relayed worker learns which of the jobs it took their callers no
/// longer wait for (cancelled, or past their deadline): its name in, the
/// jobs' ids (`Vec<u64>`) out, as soon as there is one (long polling; an
/// empty list after a while without any).
pub const RELAY_CANCELLED_METHOD: &str = "coordinator.relay.cancelled";

/// A job handed to a relayed worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelayTask {
    /// Names the job in [`RelayDone`].
    pub id: u64,
    /// What to run.
    pub job: RelayedJob,
    /// What is left of the caller's deadline when the job is handed over,
    /// in milliseconds: the worker stops the guest when it passes. `None`:
    /// the caller set no deadline.
    pub timeout_ms: Option<u64>,
}

/// The two kinds of job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RelayedJob {
    /// A WASI command.
    Run(RunRequest),
    /// A typed call.
    Call(CallRequest),
}

/// A relayed worker's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelayDone {
    /// The job's id.
    pub id: u64,
    /// The worker that ran it.
    pub worker: String,
    /// What came of it.
    pub outcome: RelayOutcome,
}

/// The result of either kind of job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RelayOutcome {
    /// Of a WASI command.
    Run(Result<RunOutput, JobError>),
    /// Of a typed call.
    Call(Result<CallOutput, JobError>),
}
