//! Parsing the command line and dispatching to one file per subcommand.

mod coordinator;
mod error;
mod json;
mod map;
mod options;
mod run;
mod serve;
mod status;
mod submit;
mod tls;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use worker::{Module, RunOutput};

use error::CliError;

/// Runs WebAssembly programs in a sandbox, here or on remote workers.
///
/// `run` and `submit` exit with the program's own exit code. When the job
/// itself fails they print why and exit with 124 (deadline exceeded), 125
/// (a limit, a trap or an invalid module), 69 (worker unreachable or
/// refusing), 64 (bad arguments or file) or 70 (internal error).
#[derive(Debug, Parser)]
#[command(name = "worker", version, about, long_about = None, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    /// More log output on stderr (-v: info, -vv: debug). `RUST_LOG`, when
    /// set, takes precedence (e.g. `RUST_LOG=worker=debug,rpc_core=info`).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    /// How log lines look: `text` for people, `json` for one JSON object
    /// per line with the fields of every enclosing span (function, stream
    /// id, peer; for jobs the module hash and the receipt).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes of run and submit: the program's own, or 124 deadline \
exceeded, 125 job failed (limit, trap, invalid module), 69 worker unreachable or refusing, \
64 bad arguments or file, 70 internal error.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve jobs over the network.
    Serve(Box<serve::ServeArgs>),
    /// Run a module here, in the same sandbox a worker uses.
    Run(run::RunArgs),
    /// Ship a module to a worker (if it lacks it) and run it there.
    Submit(submit::SubmitArgs),
    /// Run one module over many inputs across a pool of workers.
    Map(map::MapArgs),
    /// Keep a directory of live workers for clients to find.
    Coordinator(coordinator::CoordinatorArgs),
    /// Show workers' load and caches (needs a token whose role may ask).
    Status(status::StatusArgs),
}

pub(crate) use error::EXIT_INTERNAL;

/// Runs the subcommand; a failure is printed here, once, with its exit
/// code.
pub(crate) async fn main(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(args) => args.execute().await,
        Command::Run(args) => args.execute().await,
        Command::Submit(args) => args.execute().await,
        Command::Map(args) => args.execute().await,
        Command::Coordinator(args) => args.execute().await,
        Command::Status(args) => args.execute().await,
    };
    result.unwrap_or_else(|error| error.report())
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logs to stderr: what `RUST_LOG` selects, or else warn, info or debug
/// by `-v`, as text or JSON lines.
pub(crate) fn init_logging(verbose: u8, format: LogFormat) {
    use tracing_subscriber::EnvFilter;

    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let (filter, bad_filter) = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => match EnvFilter::try_new(&directives) {
            Ok(filter) => (filter, None),
            Err(error) => (EnvFilter::new(default), Some(error)),
        },
        _ => (EnvFilter::new(default), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
    if let Some(error) = bad_filter {
        tracing::warn!(%error, "RUST_LOG is not a valid filter; logging at {default}");
    }
}

/// Prints a job's output and turns its exit code into this process's.
pub(crate) fn finish(output: &RunOutput) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    let _ = stdout.write_all(&output.stdout);
    let _ = stdout.flush();
    let _ = stderr.write_all(&output.stderr);
    let receipt = &output.receipt;
    if receipt.stdout_truncated || receipt.stderr_truncated {
        let _ = writeln!(stderr, "worker: output truncated at the output limit");
    }
    tracing::info!(
        fuel = receipt.fuel,
        wall_time_us = receipt.wall_time_us,
        peak_memory_bytes = receipt.peak_memory_bytes,
        module = %receipt.module,
        compile_us = receipt.compile_us,
        "job finished"
    );
    exit_code(output)
}

/// The program's exit code as this process's.
pub(crate) fn exit_code(output: &RunOutput) -> ExitCode {
    // WASI exit codes are 0..=255 in practice; anything else reads as 1.
    ExitCode::from(u8::try_from(output.exit_code).unwrap_or(1))
}

/// Reads a module (binary or WAT), or says why not.
pub(crate) fn read_module(path: &std::path::Path) -> Result<Module, CliError> {
    Module::from_file(path)
        .map_err(|error| CliError::Usage(format!("cannot read {}: {error}", path.display())))
}
