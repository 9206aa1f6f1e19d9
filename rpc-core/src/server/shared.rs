//! What every connection of a server shares: the functions, the tokens, the
//! configuration and the budgets that hold for the whole process. The
//! accept loop makes it; [`super::connection`] and [`super::session`] read
//! it.

use std::sync::Arc;

use crate::metrics::server::{CallStats, ServerStats};
use crate::server::ServerConfig;
use crate::server::admission::Admission;
use crate::server::auth::Tokens;
use crate::server::budget::Budget;
use crate::server::dedup::Dedup;
use crate::server::programs::ProgramStore;
use crate::server::registry::{Access, Registry};
use crate::server::store::BoundedStore;
use crate::wire::PeerRole;

/// What every connection of a server shares.
pub(crate) struct ServerState {
    pub(crate) registry: Registry,
    pub(crate) tokens: Tokens,
    pub(crate) access: Access,
    pub(crate) config: ServerConfig,
    pub(crate) admission: Arc<Admission>,
    /// Bytes of large request payloads held, over every connection.
    pub(crate) requests: Arc<Budget>,
    /// Calls waiting in tasks of their own, over every connection.
    pub(crate) calls: Arc<Budget>,
    pub(crate) dedup: Arc<Dedup>,
    pub(crate) data: BoundedStore<String>,
    pub(crate) programs: Arc<dyn ProgramStore>,
    /// What this server says it is in its `Welcome`.
    pub(crate) role: PeerRole,
    /// Its counters and the introspection call's, when it has metrics.
    pub(crate) stats: Option<(Arc<ServerStats>, Arc<CallStats>)>,
    /// Its relaying side, if it is a supernode.
    pub(crate) supernode: Option<crate::relay::Supernode>,
}
