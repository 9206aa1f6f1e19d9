//! The worker's errors: why a job sent to workers has no result
//! ([`WorkerError`]), and why a sandbox could not start ([`SandboxError`]).
//! Who failed is part of each: the job itself ([`WorkerError::Job`], whose
//! [`JobError`] says whether the guest, the caller or the host), or getting
//! it to a worker ([`WorkerError::Rpc`]).

use std::path::PathBuf;

use rpc_core::{RpcError, ServerFailure};

use crate::job::JobError;

/// Why a job run through a [`WorkerClient`](crate::WorkerClient) or a
/// [`WorkerPool`](crate::WorkerPool) has no result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The job ran (or tried to) and failed: a limit, a trap, a bad module.
    #[error(transparent)]
    Job(JobError),
    /// The call did not get through: the worker is unreachable, refused the
    /// token, the deadline passed on the way, ...
    #[error(transparent)]
    Rpc(RpcError),
    /// The typed call's input could not be encoded.
    #[error("the input could not be encoded: {0}")]
    Encode(postcard::Error),
    /// The typed call's output did not decode as the expected type: guest
    /// and caller disagree on it.
    #[error("the guest's output did not decode as the expected type: {0}")]
    Decode(rpc_core::wire::ValueError),
}

impl From<RpcError<JobError>> for WorkerError {
    fn from(error: RpcError<JobError>) -> WorkerError {
        match error {
            RpcError::Application(job) => WorkerError::Job(job),
            other => WorkerError::Rpc(
                other.map_application(|job: JobError| RpcError::Internal(job.to_string())),
            ),
        }
    }
}

impl ServerFailure for WorkerError {
    /// The worker failed, not the job: it is unreachable or went away, or
    /// it is too busy to take the job (`429`, or [`JobError::Busy`] from a
    /// worker of an older version).
    fn is_server_failure(&self) -> bool {
        match self {
            WorkerError::Rpc(RpcError::ResourceExhausted(_)) => true,
            WorkerError::Rpc(error) => error.is_server_failure(),
            WorkerError::Job(JobError::Busy(_)) => true,
            _ => false,
        }
    }

    fn is_lasting(&self) -> bool {
        matches!(self, WorkerError::Rpc(error) if error.is_lasting())
    }
}

impl From<RpcError> for WorkerError {
    fn from(error: RpcError) -> WorkerError {
        WorkerError::Rpc(error)
    }
}

/// A sandbox could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// Wasmtime refused the configuration.
    #[error("the wasm engine could not start: {0}")]
    Engine(String),
    /// The cache directory could not be opened or created.
    #[error(
        "the module cache at {path} could not be opened: {source}; check its permissions or pick another --cache-dir"
    )]
    Cache {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The epoch thread could not be started.
    #[error("could not start the sandbox's clock thread: {0}")]
    Threads(std::io::Error),
    /// The configuration is not usable.
    #[error("invalid sandbox configuration: {0}")]
    Config(String),
}
