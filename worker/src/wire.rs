//! What the worker, the coordinator and relayed workers say on the wire
//! (PROTOCOL.md sections 16 and 17): the names of their functions and the
//! types of their arguments and results. [`WorkerClient`](crate::WorkerClient),
//! [`WorkerPool`](crate::WorkerPool) and the coordinator's functions use
//! them for you; they are here for peers written by hand, in Rust or from
//! the specification in another language.

pub use crate::directory::{
    MAX_ADDR_LEN, MAX_MODULES_LISTED, MAX_REGISTRATIONS, REGISTER_METHOD, RegisterRefused,
    Registration, SupernodeOffer, WORKERS_METHOD, WorkerEntry,
};
pub use crate::functions::{
    Directory, DirectoryClient, DirectoryServer, Jobs, JobsClient, JobsServer, Relaying,
    RelayingClient, RelayingServer, Status, StatusClient, StatusServer, Supernoding,
    SupernodingClient, SupernodingServer,
};
pub use crate::job::{CALL_METHOD, CallRequest, RUN_METHOD, RunRequest, STATUS_METHOD};
pub use crate::relay::{
    RELAY_CANCELLED_METHOD, RELAY_DONE_METHOD, RELAY_MODULE_METHOD, RELAY_POLL_METHOD, RelayDone,
    RelayOutcome, RelayTask, RelayedJob, SUPERNODE_DIALS_METHOD,
};
