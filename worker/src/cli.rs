//! Parsing the command line and dispatching to one file per subcommand.

mod coordinator;
mod error;
mod map;
mod options;
mod run;
mod serve;
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
    /// More log output on stderr (-v: info, -vv: debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes of run and submit: the program's own, or 124 deadline \
exceeded, 125 job failed (limit, trap, invalid module), 69 worker unreachable or refusing, \
64 bad arguments or file, 70 internal error.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve jobs over the network.
    Serve(serve::ServeArgs),
    /// Run a module here, in the same sandbox a worker uses.
    Run(run::RunArgs),
    /// Ship a module to a worker (if it lacks it) and run it there.
    Submit(submit::SubmitArgs),
    /// Run one module over many inputs across a pool of workers.
    Map(map::MapArgs),
    /// Keep a directory of live workers for clients to find.
    Coordinator(coordinator::CoordinatorArgs),
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
    };
    result.unwrap_or_else(|error| error.report())
}

/// Logs to stderr at warn, info or debug level.
pub(crate) fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
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
    // WASI exit codes are 0..=255 in practice; anything else reads as 1.
    ExitCode::from(u8::try_from(output.exit_code).unwrap_or(1))
}

/// Reads a module (binary or WAT), or says why not.
pub(crate) fn read_module(path: &std::path::Path) -> Result<Module, CliError> {
    Module::from_file(path)
        .map_err(|error| CliError::Usage(format!("cannot read {}: {error}", path.display())))
}
