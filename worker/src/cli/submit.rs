//! `worker submit --to ADDR FILE.wasm [-- ARGS...]`: ships a module to a
//! worker (only if it lacks it) and runs it there with this process's stdin,
//! printing the job's output and exiting with its exit code. With several
//! `--to`, the job goes to the least loaded worker, and to another if that
//! one fails.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use rpc_core::RpcError;
use worker::WorkerError;

use super::options::{JobArgs, TargetArgs};
use super::{
    EXIT_DEADLINE, EXIT_INTERNAL, EXIT_JOB_FAILED, EXIT_UNAVAILABLE, EXIT_USAGE, finish, job_failed,
};

#[derive(Debug, Args)]
pub(crate) struct SubmitArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Mount the directory the worker grants as NAME (read-only, at /NAME);
    /// repeatable.
    #[arg(long = "dir", value_name = "NAME")]
    dirs: Vec<String>,
    /// The module: a .wasm file built for wasm32-wasip1.
    file: PathBuf,
    #[command(flatten)]
    job: JobArgs,
}

pub(crate) async fn submit(args: SubmitArgs) -> ExitCode {
    let (pool, module) = match args.target.open(&args.file).await {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let command = match args.job.command().await {
        Ok(command) => args
            .dirs
            .iter()
            .fold(command, |command, name| command.dir(name)),
        Err(error) => {
            eprintln!("worker: cannot read stdin: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let workers = args.target.describe();
    match pool.run(&module, command).await {
        Ok(output) => finish(&output),
        Err(error) => report(&workers, &error),
    }
}

/// Prints why a job has no result and picks the exit code.
pub(crate) fn report(workers: &str, error: &WorkerError) -> ExitCode {
    match error {
        WorkerError::Job(error) => job_failed(error),
        WorkerError::Rpc(RpcError::DeadlineExceeded) => {
            eprintln!("worker: deadline exceeded");
            ExitCode::from(EXIT_DEADLINE)
        }
        WorkerError::Rpc(RpcError::ResourceExhausted(reason))
            if reason.starts_with("worker busy") =>
        {
            // Every worker tried was too busy: the workers' condition.
            eprintln!("worker: {workers}: {reason}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
        WorkerError::Rpc(error @ (RpcError::BadRequest(_) | RpcError::ResourceExhausted(_))) => {
            // The worker refused the module (invalid, too large) or the job.
            eprintln!("worker: {workers}: {error}");
            ExitCode::from(EXIT_JOB_FAILED)
        }
        WorkerError::Rpc(error) => {
            eprintln!("worker: {workers}: {error}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
        error => {
            eprintln!("worker: {error}");
            ExitCode::from(EXIT_INTERNAL)
        }
    }
}
