//! Who may call what. A token grants one role; every function of a worker,
//! a coordinator and its relay names the roles that may call it, where it
//! is declared.
//!
//! | role | may |
//! | --- | --- |
//! | [`CLIENT_ROLE`] | run jobs (`worker.run`, `worker.call`), ship modules, look workers up (`coordinator.workers`) |
//! | [`WORKER_ROLE`] | register with a coordinator (`coordinator.register`), attach to a supernode (`supernode.dials`) and take relayed jobs (`coordinator.relay.*`) |
//! | [`ADMIN_ROLE`] | what a client may, and read a worker's status (`worker.status`) |
//!
//! No role may use the data store (`SendData`, `RequestData`): workers and
//! coordinators keep none. A server started without any token grants
//! anonymous callers every role: anyone who can connect may do anything,
//! which is why `worker serve` and `worker coordinator` listen on loopback
//! unless told otherwise.

/// The role of those who run jobs: the default of a token given without
/// one.
pub const CLIENT_ROLE: &str = "client";
/// The role of workers towards their coordinator.
pub const WORKER_ROLE: &str = "worker";
/// The role of operators: a client that may also read a worker's status.
pub const ADMIN_ROLE: &str = "admin";

/// Who may run jobs and ship modules.
pub(crate) const RUNS_JOBS: [&str; 2] = [CLIENT_ROLE, ADMIN_ROLE];
/// Who may read a worker's status.
pub(crate) const READS_STATUS: [&str; 1] = [ADMIN_ROLE];
/// Who may register and take relayed jobs.
pub(crate) const IS_WORKER: [&str; 1] = [WORKER_ROLE];
/// Every role: what anonymous callers get on a server without tokens.
pub(crate) const ALL: [&str; 3] = [CLIENT_ROLE, WORKER_ROLE, ADMIN_ROLE];
/// No role at all: for the data store, which workers do not offer.
pub(crate) const NONE: [&str; 0] = [];
