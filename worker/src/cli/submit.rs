//! `worker submit --to ADDR FILE.wasm [-- ARGS...]`: ships a module to a
//! worker (only if it lacks it) and runs it there with this process's stdin,
//! printing the job's output and exiting with its exit code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use rpc_core::{Client, ClientConfig, RpcError};
use worker::{WorkerClient, WorkerError};

use super::options::JobArgs;
use super::{
    EXIT_DEADLINE, EXIT_INTERNAL, EXIT_JOB_FAILED, EXIT_UNAVAILABLE, EXIT_USAGE, finish,
    job_failed, read_module,
};

#[derive(Debug, Args)]
pub(crate) struct SubmitArgs {
    /// The worker's address (HOST:PORT).
    #[arg(long, value_name = "ADDR")]
    to: String,
    /// The token to present, if the worker requires one.
    #[arg(long, env = "WORKER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// How long to wait for the result, in seconds, shipping and queueing
    /// included; the worker stops the job when it passes.
    #[arg(long, value_name = "SECONDS", default_value_t = 300.0)]
    timeout: f64,
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
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        eprintln!("worker: --timeout must be positive");
        return ExitCode::from(EXIT_USAGE);
    }
    let Some(module) = read_module(&args.file) else {
        return ExitCode::from(EXIT_USAGE);
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
    let timeout = Duration::from_secs_f64(args.timeout);
    let config = ClientConfig {
        name: "worker-submit".into(),
        token: args.token,
        timeout: Some(timeout),
        max_payload_len: 1 << 30,
        ..ClientConfig::default()
    };
    let worker = WorkerClient::new(Client::with_config(args.to.clone(), config)).timeout(timeout);
    match worker.run(&module, command).await {
        Ok(output) => finish(&output),
        Err(WorkerError::Job(error)) => job_failed(&error),
        Err(WorkerError::Rpc(RpcError::DeadlineExceeded)) => {
            eprintln!("worker: deadline exceeded after {timeout:?}");
            ExitCode::from(EXIT_DEADLINE)
        }
        Err(WorkerError::Rpc(
            error @ (RpcError::BadRequest(_) | RpcError::ResourceExhausted(_)),
        )) => {
            // The worker refused the module (invalid, too large) or the job.
            eprintln!("worker: {}: {error}", args.to);
            ExitCode::from(EXIT_JOB_FAILED)
        }
        Err(WorkerError::Rpc(error)) => {
            eprintln!("worker: {}: {error}", args.to);
            ExitCode::from(EXIT_UNAVAILABLE)
        }
        Err(error) => {
            eprintln!("worker: {error}");
            ExitCode::from(EXIT_INTERNAL)
        }
    }
}
