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
    /// Set by a worker that relays for others (`worker serve
    /// --supernode`): its room for relayed workers. Workers that accept no
    /// connections find their supernodes by it.
    pub supernode: Option<SupernodeOffer>,
}

/// A supernode's room for relayed workers, as it registers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupernodeOffer {
    /// Relayed workers attached now.
    pub attached: u32,
    /// Relayed workers it takes at most.
    pub max_workers: u32,
}

impl SupernodeOffer {
    /// What `supernode` offers now.
    pub fn of(supernode: &rpc_core::relay::Supernode) -> SupernodeOffer {
        SupernodeOffer {
            attached: u32::try_from(supernode.attached()).unwrap_or(u32::MAX),
            max_workers: u32::try_from(supernode.config().max_workers).unwrap_or(u32::MAX),
        }
    }

    /// Whether it takes another relayed worker.
    pub fn has_room(&self) -> bool {
        self.attached < self.max_workers
    }
}

/// A live worker, as the coordinator lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerEntry {
    /// What the worker registered.
    pub registration: Registration,
    /// Milliseconds since its last heartbeat.
    pub last_seen_ms: u64,
}
