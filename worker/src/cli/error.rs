//! The one way a subcommand fails: a [`CliError`] that knows its exit code
//! and is printed once, by [`CliError::report`].

use std::io::Write;
use std::process::ExitCode;

use rpc_core::RpcError;
use worker::{JobError, WorkerError};

/// Exit code when a job ran past its deadline (as `timeout(1)`).
pub(crate) const EXIT_DEADLINE: u8 = 124;
/// Exit code when a job failed in the sandbox: a limit, a trap, a bad module.
pub(crate) const EXIT_JOB_FAILED: u8 = 125;
/// Exit code when the worker could not be reached or refused the request.
pub(crate) const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code for a failure of this program itself.
pub(crate) const EXIT_INTERNAL: u8 = 70;
/// Exit code for bad arguments or unreadable files.
pub(crate) const EXIT_USAGE: u8 = 64;

/// Why a subcommand stopped without its result.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// Bad arguments, or a file that cannot be read: fix the command line.
    #[error("{0}")]
    Usage(String),
    /// The worker or coordinator could not be reached, refused us, or is
    /// too busy: try again later or elsewhere.
    #[error("{0}")]
    Unavailable(String),
    /// The job's deadline passed.
    #[error("{0}")]
    Deadline(String),
    /// The worker refused the module or the job itself (invalid, too
    /// large): the job's fault, as a failed job.
    #[error("{0}")]
    Refused(String),
    /// The job ran and failed: its own error says whose fault.
    #[error("{0}")]
    Job(JobError),
    /// This program failed.
    #[error("{0}")]
    Internal(String),
}

impl CliError {
    /// The exit code documented for this failure.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Unavailable(_) => EXIT_UNAVAILABLE,
            CliError::Deadline(_) => EXIT_DEADLINE,
            CliError::Refused(_) => EXIT_JOB_FAILED,
            CliError::Job(JobError::DeadlineExceeded { .. }) => EXIT_DEADLINE,
            CliError::Job(JobError::Internal(_)) => EXIT_INTERNAL,
            CliError::Job(_) => EXIT_JOB_FAILED,
            CliError::Internal(_) => EXIT_INTERNAL,
        }
    }

    /// Prints the failure once on stderr (a failed job's own output first)
    /// and gives the exit code.
    pub(crate) fn report(&self) -> ExitCode {
        let mut stderr = std::io::stderr().lock();
        if let CliError::Job(error) = self {
            if let JobError::OutputLimit { stdout, .. } = error {
                // What the program printed up to the limit is still its
                // output.
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(stdout).and_then(|()| out.flush());
            }
            let _ = stderr.write_all(error.stderr());
        }
        let _ = writeln!(stderr, "worker: {self}");
        ExitCode::from(self.exit_code())
    }

    /// Why a job sent to `workers` has no result.
    pub(crate) fn from_worker(workers: &str, error: WorkerError) -> CliError {
        match error {
            WorkerError::Job(error) => CliError::Job(error),
            WorkerError::Rpc(RpcError::DeadlineExceeded) => {
                CliError::Deadline("deadline exceeded".into())
            }
            // Every worker tried was too busy: the workers' condition.
            WorkerError::Rpc(RpcError::ResourceExhausted(reason))
                if reason.starts_with("worker busy") =>
            {
                CliError::Unavailable(format!("{workers}: {reason}"))
            }
            // The worker refused the module (invalid, too large) or the job.
            WorkerError::Rpc(
                error @ (RpcError::BadRequest(_) | RpcError::ResourceExhausted(_)),
            ) => CliError::Refused(format!("{workers}: {error}")),
            WorkerError::Rpc(error) => CliError::Unavailable(format!("{workers}: {error}")),
            error => CliError::Internal(error.to_string()),
        }
    }
}
