//! `worker submit --to ADDR FILE.wasm [-- ARGS...]`: ships a module to a
//! worker (only if it lacks it) and runs it there with this process's stdin,
//! printing the job's output and exiting with its exit code. With several
//! `--to`, the job goes to the least loaded worker, and to another if that
//! one fails.

use std::path::PathBuf;
use std::process::ExitCode;

use std::io::IsTerminal;

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::error::CliError;
use super::json;
use super::options::{JobArgs, TargetArgs};
use super::{exit_code, finish};

#[derive(Debug, Args)]
pub(crate) struct SubmitArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Mount the directory the worker grants as NAME (read-only, at /NAME);
    /// repeatable.
    #[arg(long = "dir", value_name = "NAME")]
    dirs: Vec<String>,
    /// Print one JSON document (exit code, output, receipt, the worker that
    /// ran it, or the error's kind and whose fault) instead of the
    /// program's output; the exit code is the same.
    #[arg(long)]
    json: bool,
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
        let spinner = shipping_spinner(module.bytes().len(), &workers);
        let job = pool.run_reporting(&module, command).await;
        spinner.finish_and_clear();
        let result = job
            .result
            .map_err(|error| CliError::from_worker(&workers, error));
        if self.json {
            json::print(&json::job(None, job.worker.as_deref(), &result));
            return Ok(match &result {
                Ok(output) => exit_code(output),
                Err(error) => {
                    eprintln!("worker: {error}");
                    ExitCode::from(error.exit_code())
                }
            });
        }
        result.map(|output| finish(&output))
    }
}

/// Modules at least this large get a spinner while they ship.
const LARGE_MODULE: usize = 1 << 20;

/// On a terminal, for a large module: a spinner with the module's size
/// and the time so far, while it is offered, shipped if the worker lacks
/// it, and run. Hidden otherwise.
fn shipping_spinner(len: usize, workers: &str) -> ProgressBar {
    if len < LARGE_MODULE || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
        spinner.set_style(style);
    }
    spinner.set_message(format!(
        "shipping a {:.1} MiB module to {workers} (if it lacks it) and running it",
        len as f64 / f64::from(1u32 << 20)
    ));
    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    spinner
}
