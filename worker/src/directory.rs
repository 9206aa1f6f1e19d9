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

/// Workers a directory lists at most: past it, new names are refused
/// ([`RegisterRefused::Full`]) until entries expire.
pub const MAX_REGISTRATIONS: usize = 10_000;
/// Module hashes one registration may list.
pub const MAX_MODULES_LISTED: usize = 1024;
/// Bytes a registration's address may take (every route, commas and all).
pub const MAX_ADDR_LEN: usize = 4096;

/// Why a directory does not take a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RegisterRefused {
    /// Another worker (another token, or certificate) is registered under
    /// the name, until its entry expires.
    #[error("another worker is registered under this name; choose another name")]
    Taken,
    /// The directory lists as many workers as it takes.
    #[error("the directory lists {max} workers, its limit; join another directory")]
    Full {
        /// [`MAX_REGISTRATIONS`].
        max: u64,
    },
    /// A name over 1024 bytes, an address over [`MAX_ADDR_LEN`], or more
    /// than [`MAX_MODULES_LISTED`] modules.
    #[error(
        "the registration is larger than a directory keeps: a name of at most 1024 bytes, an \
         address of at most 4096, at most 1024 modules"
    )]
    TooLarge,
}

impl Registration {
    /// Whether it is within what a directory keeps of one worker.
    pub(crate) fn fits(&self) -> bool {
        !self.name.is_empty()
            && self.name.len() <= rpc_core::wire::MAX_NAME_LEN
            && self.addr.len() <= MAX_ADDR_LEN
            && self.modules.len() <= MAX_MODULES_LISTED
    }
}
