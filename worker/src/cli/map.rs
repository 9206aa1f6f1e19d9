//! `worker map --to ADDR... FILE.wasm [INPUT...] [-- ARGS...]`: runs one
//! module over many inputs across a pool of workers, each input the stdin
//! of one job (an INPUT file each, or each line with `--lines`), printing
//! their outputs in input order, with a progress bar on a terminal.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use futures_util::StreamExt;
use worker::{Progress, ProgressCount};

use super::error::{CliError, EXIT_JOB_FAILED};
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
    let show = std::io::stderr().is_terminal();
    let workers = args.target.describe();
    let mut results = pool.map(&module, commands, args.concurrency, &progress);
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let (mut failed, mut nonzero, mut index) = (false, false, 0u64);
    let mut stdout = std::io::stdout().lock();
    loop {
        tokio::select! {
            result = results.next() => {
                let Some(result) = result else { break };
                if show {
                    clear_bar();
                }
                match result {
                    Ok(output) => {
                        let _ = stdout.write_all(&output.stdout);
                        let _ = std::io::stderr().write_all(&output.stderr);
                        if output.exit_code != 0 {
                            nonzero = true;
                            eprintln!("worker: input {index} exited with {}", output.exit_code);
                        }
                    }
                    Err(error) => {
                        failed = true;
                        let error = CliError::from_worker(&workers, error);
                        if let CliError::Job(job) = &error {
                            let _ = std::io::stderr().write_all(job.stderr());
                        }
                        eprintln!("worker: input {index}: {error}");
                    }
                }
                index += 1;
            }
            _ = ticker.tick(), if show => draw_bar(progress.count(), total),
        }
    }
    let _ = stdout.flush();
    if show {
        clear_bar();
    }
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

fn draw_bar(count: ProgressCount, total: u64) {
    const WIDTH: u64 = 30;
    let filled = (count.done * WIDTH).checked_div(total).unwrap_or(WIDTH);
    let bar: String = (0..WIDTH)
        .map(|i| if i < filled { '#' } else { '.' })
        .collect();
    eprint!(
        "\r[{bar}] {}/{total} done, {} failed, {} running ",
        count.done, count.failed, count.in_flight
    );
    let _ = std::io::stderr().flush();
}

fn clear_bar() {
    eprint!("\r\x1b[2K");
}
