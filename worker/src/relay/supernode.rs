//! A supernode's side: the function relayed workers poll for the
//! connections to open, on top of [`rpc_core::relay::Supernode`], which
//! joins the connections.

use std::time::Duration;

use rpc_core::ServerBuilder;
use rpc_core::relay::{AttachError, Supernode};
use rpc_core::wire::TICKET_LEN;
use serde::{Deserialize, Serialize};

use crate::functions::{Supernoding, SupernodingServer};

/// The wire name of the relayed workers' long poll: its name (`String`)
/// in, `Result<Vec<[u8; 16]>, AttachRefused>` out.
pub const SUPERNODE_DIALS_METHOD: &str = "supernode.dials";

/// How long a poll waits for a connection to open before answering none.
const DIALS_WAIT: Duration = Duration::from_secs(10);

/// Why a supernode does not take a relayed worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AttachRefused {
    /// It relays for as many workers as it takes: attach to another.
    #[error("the supernode relays for {max} workers already, its limit; attach to another")]
    Full {
        /// Its limit.
        max: u64,
    },
    /// The name is empty or longer than 1024 bytes.
    #[error("a relayed worker's name must be 1 to 1024 bytes")]
    InvalidName,
    /// Another worker is attached under the name now: choose another.
    #[error("another worker is attached under this name here; choose another name")]
    Taken,
    /// The caller's client certificate names someone else: a worker with
    /// a certificate attaches under its certificate's name only.
    #[error("a worker with a client certificate attaches under its certificate's name only")]
    NotYourName,
}

/// The supernode's function, over its [`Supernode`].
struct Dials(Supernode);

impl Supernoding for Dials {
    async fn dials(
        &self,
        context: rpc_core::Context,
        worker: String,
    ) -> Result<Vec<[u8; TICKET_LEN]>, AttachRefused> {
        // A name a certificate vouches for is its holder's alone; other
        // names are bound to whoever attached them first, while attached.
        if let Some(certified) = context.certified_name()
            && certified != worker
        {
            return Err(AttachRefused::NotYourName);
        }
        self.0
            .wait_for_dials(&worker, context.principal(), DIALS_WAIT)
            .await
            .map_err(|error| match error {
                AttachError::Full { max } => AttachRefused::Full { max: max as u64 },
                AttachError::Taken => AttachRefused::Taken,
                _ => AttachRefused::InvalidName,
            })
    }
}

/// Makes `server` a supernode: it serves `supernode.dials` to the
/// [worker role](crate::roles) and joins the connections clients ask it
/// for (`Route`) to those its relayed workers open (`Join`).
///
/// ```
/// use rpc_core::relay::{Supernode, SupernodeConfig};
///
/// let supernode = Supernode::new(SupernodeConfig::default());
/// let sandbox = worker::Sandbox::new(worker::SandboxConfig::default())?;
/// let server = worker::add_supernode(worker::worker_server(sandbox), supernode);
/// # drop(server);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn add_supernode(server: ServerBuilder, supernode: Supernode) -> ServerBuilder {
    server
        .service(SupernodingServer::new(Dials(supernode.clone())))
        .supernode(supernode)
}
