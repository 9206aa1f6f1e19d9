//! `worker run FILE.wasm [-- ARGS...]`: runs a module here, in the sandbox a
//! worker uses, with this process's stdin, stdout, stderr and exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use worker::{RunRequest, Sandbox, SandboxConfig};

use super::options::{CacheArgs, GrantArgs, JobArgs, LimitArgs};
use super::{EXIT_INTERNAL, EXIT_USAGE, finish, job_failed, read_module};

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The module: a .wasm file (or WAT text) built for wasm32-wasip1.
    file: PathBuf,
    #[command(flatten)]
    job: JobArgs,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    cache: CacheArgs,
    /// Here every granted directory is also mounted for the program.
    #[command(flatten)]
    grants: GrantArgs,
}

pub(crate) async fn run(args: RunArgs) -> ExitCode {
    let limits = match args.limits.limits() {
        Ok(limits) => limits,
        Err(message) => {
            eprintln!("worker: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let Some(module) = read_module(&args.file) else {
        return ExitCode::from(EXIT_USAGE);
    };
    let command = match args.job.command().await {
        Ok(command) => args
            .grants
            .dirs
            .iter()
            .fold(command, |command, (name, _)| command.dir(name)),
        Err(error) => {
            eprintln!("worker: cannot read stdin: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let config = SandboxConfig {
        limits,
        concurrency: 1,
        cache_dir: args.cache.dir(),
        dirs: args.grants.dirs,
        ..SandboxConfig::default()
    };
    let sandbox = match Sandbox::new(config) {
        Ok(sandbox) => sandbox,
        Err(error) => {
            eprintln!("worker: {error}");
            return ExitCode::from(EXIT_INTERNAL);
        }
    };
    let module = match sandbox.add_module(module.bytes().clone()).await {
        Ok(module) => module,
        Err(error) => return job_failed(&error),
    };
    match sandbox.run(RunRequest { module, command }, None).await {
        Ok(output) => finish(&output),
        Err(error) => job_failed(&error),
    }
}
