//! What workers and clients tell the coordinator's directory, and what it
//! answers (PROTOCOL.md section 17).

use rpc_core::ContentHash;
use serde::{Deserialize, Serialize};

/// The wire name of [`Directory::register`](crate::wire::Directory::register), for peers written by hand:
/// workers call it to register and to heartbeat, [`Registration`] in, the
/// time to live in milliseconds out.
pub const REGISTER_METHOD: &str = "coordinator.register";
/// The wire name of [`Directory::workers`](crate::wire::Directory::workers): `()` in, `Vec<WorkerEntry>`
/// out.
pub const WORKERS_METHOD: &str = "coordinator.workers";

/// What a worker tells the coordinator about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// A name unique among the workers (a new registration under the same
    /// name replaces the old one).
    pub name: String,
    /// Where clients reach it (`host:port`).
    pub addr: String,
    /// Jobs it runs at once.
    pub capacity: u32,
    /// Jobs running now.
    pub running: u32,
    /// Modules it holds, so clients can prefer workers that need no
    /// shipping.
    pub modules: Vec<ContentHash>,
}

/// A live worker, as the coordinator lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerEntry {
    /// What the worker registered.
    pub registration: Registration,
    /// Milliseconds since its last heartbeat.
    pub last_seen_ms: u64,
}
