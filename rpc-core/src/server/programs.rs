//! Where a server keeps the programs peers ship to it: a pluggable store,
//! with a bounded in-memory map as the default.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use super::store::BoundedStore;
use crate::wire::{ContentHash, StatusCode};

/// The future [`ProgramStore::insert`] returns.
pub type InsertFuture = Pin<Box<dyn Future<Output = Result<(), ProgramRejected>> + Send>>;

/// Holds the programs (WebAssembly modules or any other content-addressed
/// blobs) that peers ship with `OfferProgram` and `SendProgram`.
///
/// The server answers an offer from [`contains`](ProgramStore::contains) and
/// [`accepts`](ProgramStore::accepts), checks that received bytes hash to
/// the announced SHA-256, and only then hands them to
/// [`insert`](ProgramStore::insert), which may validate them further (a
/// worker checks that they are a module it can run) off the connection's
/// task. Plug one in with [`ServerBuilder::programs`](crate::ServerBuilder::programs).
///
/// ```
/// use std::collections::HashSet;
/// use std::sync::Mutex;
/// use rpc_core::{ContentHash, InsertFuture, ProgramRejected, ProgramStore, Server};
/// use bytes::Bytes;
///
/// /// Accepts only programs that start with `#!`, keeps their hashes.
/// #[derive(Default)]
/// struct Scripts(Mutex<HashSet<ContentHash>>);
///
/// impl ProgramStore for Scripts {
///     fn contains(&self, hash: &ContentHash) -> bool {
///         self.0.lock().unwrap().contains(hash)
///     }
///     fn accepts(&self, len: u64) -> Result<(), ProgramRejected> {
///         if len <= 1 << 20 { Ok(()) } else { Err(ProgramRejected::too_large(len, 1 << 20)) }
///     }
///     fn insert(&self, hash: ContentHash, program: Bytes) -> InsertFuture {
///         let ok = program.starts_with(b"#!");
///         if ok {
///             self.0.lock().unwrap().insert(hash);
///         }
///         Box::pin(async move {
///             if ok { Ok(()) } else { Err(ProgramRejected::invalid("not a script")) }
///         })
///     }
/// }
///
/// let server = Server::builder().programs(Scripts::default());
/// # drop(server);
/// ```
pub trait ProgramStore: Send + Sync + 'static {
    /// Whether the program with this SHA-256 is held, so an offer of it is
    /// answered "already held" and its bytes need not travel.
    fn contains(&self, hash: &ContentHash) -> bool;

    /// Whether a program of `len` bytes could be accepted at all; checked
    /// when it is offered and before any of its bytes are buffered.
    fn accepts(&self, len: u64) -> Result<(), ProgramRejected>;

    /// Stores a program whose bytes are known to hash to `hash`. The
    /// returned future runs on its own task, so it may take time (validate,
    /// write to disk) without holding up the connection.
    fn insert(&self, hash: ContentHash, program: Bytes) -> InsertFuture;
}

/// Why a [`ProgramStore`] refused a program; the peer gets the status and
/// the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramRejected {
    status: StatusCode,
    message: String,
}

impl ProgramRejected {
    /// The program is not one this store can hold (status 400), for the
    /// reason given.
    pub fn invalid(message: impl Into<String>) -> ProgramRejected {
        ProgramRejected {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// The program is larger than `max` bytes (status 429).
    pub fn too_large(len: u64, max: u64) -> ProgramRejected {
        ProgramRejected {
            status: StatusCode::RESOURCE_EXHAUSTED,
            message: format!("a program of {len} bytes is more than the {max} this server accepts"),
        }
    }

    /// The store cannot take the program now (status 503): it is full, or
    /// failed to write it. The peer may try again later.
    pub fn unavailable(message: impl Into<String>) -> ProgramRejected {
        ProgramRejected {
            status: StatusCode::UNAVAILABLE,
            message: message.into(),
        }
    }

    /// The status the peer receives.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The reason the peer receives.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ProgramRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl std::error::Error for ProgramRejected {}

/// The default store: programs in memory, bounded in total bytes
/// ([`ServerConfig::max_store_bytes`](crate::ServerConfig::max_store_bytes)).
pub(crate) struct MemoryPrograms(pub(crate) BoundedStore<ContentHash>);

impl ProgramStore for MemoryPrograms {
    fn contains(&self, hash: &ContentHash) -> bool {
        self.0.contains(hash)
    }

    fn accepts(&self, len: u64) -> Result<(), ProgramRejected> {
        if self.0.fits(len) {
            Ok(())
        } else {
            Err(ProgramRejected::too_large(len, self.0.max_bytes()))
        }
    }

    fn insert(&self, hash: ContentHash, program: Bytes) -> InsertFuture {
        let result = self
            .0
            .insert(hash, program)
            .map_err(|full| ProgramRejected {
                status: StatusCode::RESOURCE_EXHAUSTED,
                message: format!(
                    "the program store has {} bytes free, {} needed",
                    full.free, full.len
                ),
            });
        Box::pin(std::future::ready(result))
    }
}
