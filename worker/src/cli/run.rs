//! `worker run FILE.wasm [-- ARGS...]`: runs a module here, in the sandbox a
//! worker uses, with this process's stdin, stdout, stderr and exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use worker::wire::RunRequest;
use worker::{Sandbox, SandboxConfig};

use super::error::CliError;
use super::options::{CacheArgs, GrantArgs, JobArgs, LimitArgs};
use super::{finish, read_module};

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

impl RunArgs {
    /// Runs the module here; the program's exit code, or why it has none.
    pub(crate) async fn execute(self) -> Result<ExitCode, CliError> {
        let limits = self.limits.limits().map_err(CliError::Usage)?;
        let module = read_module(&self.file)?;
        let dirs = self.grants.dirs.iter().map(|(name, _)| name.as_str());
        let command = self.job.command(dirs).await?;
        let config = SandboxConfig {
            limits,
            concurrency: 1,
            cache_dir: self.cache.dir(),
            dirs: self.grants.dirs,
            ..SandboxConfig::default()
        };
        let sandbox =
            Sandbox::new(config).map_err(|error| CliError::Internal(error.to_string()))?;
        let module = sandbox
            .add_module(module.bytes().clone())
            .await
            .map_err(CliError::Job)?;
        let output = sandbox
            .run(RunRequest { module, command }, None)
            .await
            .map_err(CliError::Job)?;
        Ok(finish(&output))
    }
}
