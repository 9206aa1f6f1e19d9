//! `worker submit --to ADDR FILE.wasm [-- ARGS...]`: ships a module to a
//! worker (only if it lacks it) and runs it there with this process's stdin,
//! printing the job's output and exiting with its exit code. With several
//! `--to`, the job goes to the least loaded worker, and to another if that
//! one fails.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::error::CliError;
use super::finish;
use super::options::{JobArgs, TargetArgs};

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

impl SubmitArgs {
    /// Runs the job on the workers; the program's exit code, or why the job
    /// has no result.
    pub(crate) async fn execute(self) -> Result<ExitCode, CliError> {
        let (pool, module) = self.target.open(&self.file).await?;
        let command = self
            .job
            .command(self.dirs.iter().map(String::as_str))
            .await?;
        let workers = self.target.describe();
        match pool.run(&module, command).await {
            Ok(output) => Ok(finish(&output)),
            Err(error) => Err(CliError::from_worker(&workers, error)),
        }
    }
}
