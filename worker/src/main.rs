//! The `worker` command line: `serve`, `run` and `submit`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(args.verbose, args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("worker: could not start the async runtime: {error}");
            return ExitCode::from(cli::EXIT_INTERNAL);
        }
    };
    runtime.block_on(cli::main(args))
}
