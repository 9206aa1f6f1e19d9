//! `worker map --to ADDR... FILE.wasm [INPUT...] [-- ARGS...]`: runs one
//! module over many inputs across a pool of workers, each input the stdin
//! of one job (an INPUT file each, or each line with `--lines`), printing
//! their outputs (or, with `--json`, one JSON document per job) in input
//! order, with a progress bar when stderr is a terminal.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use worker::{Progress, ProgressCount, RunOutput};

use super::error::{CliError, EXIT_JOB_FAILED};
use super::json;
use super::options::{JobArgs, TargetArgs, read_stdin};

#[derive(Debug, Args)]
pub(crate) struct MapArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Jobs in flight at once across the pool.
    #[arg(long, value_name = "N", default_value_t = 32)]
    concurrency: usize,
    /// One job per line (of the INPUT files, or of stdin without any)
    /// instead of one per file.
    #[arg(long)]
    lines: bool,
    /// Print one JSON document per job, one per line in input order (see
    /// `submit --json`), instead of the programs' output.
    #[arg(long)]
    json: bool,
    /// The module: a .wasm file built for wasm32-wasip1.
    file: PathBuf,
    /// Input files, each the stdin of one job [default: stdin, with --lines].
    inputs: Vec<PathBuf>,
    #[command(flatten)]
    job: JobArgs,
}

impl MapArgs {
    /// Runs the module over every input across the pool. Failed inputs are
    /// reported as they come; the exit code says whether any failed
    /// (125) or exited non-zero (1).
    pub(crate) async fn execute(self) -> Result<ExitCode, CliError> {
        map(self).await
    }
}

async fn map(args: MapArgs) -> Result<ExitCode, CliError> {
    let inputs = inputs(&args).await.map_err(CliError::Usage)?;
    let (pool, module) = args.target.open(&args.file).await?;
    let total = inputs.len() as u64;
    let base = args.job.command_without_stdin();
    let commands = inputs.into_iter().map(|input| base.clone().stdin(input));
    let progress = Progress::default();
    let bar = progress_bar(total);
    let workers = args.target.describe();
    let mut results = pool.map(&module, commands, args.concurrency, &progress);
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let (mut failed, mut nonzero, mut index) = (false, false, 0u64);
    loop {
        tokio::select! {
            job = results.next() => {
                let Some(job) = job else { break };
                let result = job.result.map_err(|error| CliError::from_worker(&workers, error));
                match &result {
                    Ok(output) => nonzero |= output.exit_code != 0,
                    Err(_) => failed = true,
                }
                bar.suspend(|| {
                    if args.json {
                        json::print(&json::job(Some(index), job.worker.as_deref(), &result));
                    } else {
                        print_job(index, &result);
                    }
                });
                update_bar(&bar, progress.count());
                index += 1;
            }
            _ = ticker.tick() => update_bar(&bar, progress.count()),
        }
    }
    bar.finish_and_clear();
    let count = progress.count();
    eprintln!("worker: {} jobs, {} failed", count.done, count.failed);
    Ok(if failed {
        ExitCode::from(EXIT_JOB_FAILED)
    } else if nonzero {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A job's output as the program wrote it, or why it has none, on stderr.
fn print_job(index: u64, result: &Result<RunOutput, CliError>) {
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    match result {
        Ok(output) => {
            let _ = stdout
                .write_all(&output.stdout)
                .and_then(|()| stdout.flush());
            let _ = stderr.write_all(&output.stderr);
            if output.exit_code != 0 {
                let _ = writeln!(
                    stderr,
                    "worker: input {index} exited with {}",
                    output.exit_code
                );
            }
        }
        Err(error) => {
            if let CliError::Job(job) = error {
                let _ = stderr.write_all(job.stderr());
            }
            let _ = writeln!(stderr, "worker: input {index}: {error}");
        }
    }
}

/// A bar on stderr when it is a terminal (jobs done of all, failed, in
/// flight, rate and time left); hidden otherwise.
fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    // Short enough for an 80-column terminal, where a wrapped bar would
    // be redrawn over two lines.
    if let Ok(style) = ProgressStyle::with_template("[{bar:16}] {pos}/{len} done, {msg}, ETA {eta}")
    {
        bar.set_style(style.progress_chars("#>."));
    }
    bar
}

fn update_bar(bar: &ProgressBar, count: ProgressCount) {
    bar.set_position(count.done);
    let rate = count.done as f64 / bar.elapsed().as_secs_f64().max(1e-3);
    bar.set_message(format!(
        "{} failed, {} running, {rate:.0} jobs/s",
        count.failed, count.in_flight
    ));
}

/// The inputs: one per file, or one per line of the files or of stdin.
async fn inputs(args: &MapArgs) -> Result<Vec<Bytes>, String> {
    let mut blobs = Vec::new();
    if args.inputs.is_empty() {
        if !args.lines {
            return Err("give INPUT files, or --lines to read one job per line of stdin".into());
        }
        blobs.push(
            read_stdin()
                .await
                .map_err(|error| format!("cannot read stdin: {error}"))?,
        );
    }
    for path in &args.inputs {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        blobs.push(bytes);
    }
    if !args.lines {
        return Ok(blobs.into_iter().map(Bytes::from).collect());
    }
    Ok(blobs
        .iter()
        .flat_map(|blob| blob.split(|&b| b == b'\n'))
        .filter(|line| !line.is_empty())
        .map(|line| {
            let mut line = line.to_vec();
            line.push(b'\n');
            Bytes::from(line)
        })
        .collect())
}
