//! Options shared by the subcommands: limits and the environment of a job.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use rpc_core::metrics::{Metrics, MetricsEndpoint};
use worker::{Command, Limits};

use super::tls::ConnectTlsArgs;

use super::error::CliError;

/// The sandbox's limits. Defaults are finite and safe for untrusted code.
#[derive(Debug, Clone, Args)]
pub(crate) struct LimitArgs {
    /// Linear memory per job (e.g. 512M, 2G).
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    memory: u64,
    /// Fuel per job: roughly the wasm instructions it may execute.
    #[arg(long, value_name = "UNITS", default_value_t = worker::DEFAULT_FUEL)]
    fuel: u64,
    /// Wall-clock time per job, in seconds (queueing excluded).
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    wall_time: f64,
    /// Wasm stack per job (deep recursion past it traps).
    #[arg(long, value_name = "SIZE", default_value = "1M", value_parser = parse_size)]
    stack: u64,
    /// Bytes of stdout, and separately of stderr, kept per job; a job
    /// writing more is stopped.
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = parse_size)]
    max_output: u64,
    /// The largest module accepted.
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = parse_size)]
    max_module: u64,
    /// The most functions a module may define (compile time and memory
    /// grow with them); more is refused before compiling.
    #[arg(long, value_name = "N", default_value_t = worker::DEFAULT_MAX_FUNCTIONS)]
    max_functions: u32,
    /// The most bytes of code a module may carry; more is refused before
    /// compiling.
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
    max_code: u64,
    /// The longest a module may take to compile, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    compile_timeout: f64,
}

impl LimitArgs {
    pub(crate) fn limits(&self) -> Result<Limits, String> {
        if !(self.wall_time.is_finite() && self.wall_time > 0.0) {
            return Err(format!(
                "--wall-time must be positive, not {}",
                self.wall_time
            ));
        }
        if !(self.compile_timeout.is_finite() && self.compile_timeout > 0.0) {
            return Err(format!(
                "--compile-timeout must be positive, not {}",
                self.compile_timeout
            ));
        }
        Ok(Limits {
            memory_bytes: self.memory,
            fuel: self.fuel,
            wall_time: Duration::from_secs_f64(self.wall_time),
            stack_bytes: usize::try_from(self.stack).map_err(|_| "--stack is too large")?,
            output_bytes: self.max_output,
            module_bytes: self.max_module,
            max_functions: self.max_functions,
            max_code_bytes: self.max_code,
            compile_timeout: Duration::from_secs_f64(self.compile_timeout),
            ..Limits::default()
        })
    }
}

/// What the job sees.
#[derive(Debug, Clone, Args)]
pub(crate) struct JobArgs {
    /// An environment variable for the program (KEY=VALUE); repeatable.
    /// Nothing of this process's environment is passed otherwise.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Link imports the worker lacks as functions that trap if called
    /// (for programs that import host hooks they never call).
    #[arg(long)]
    stub_unknown_imports: bool,
    /// The program's arguments (after `--`).
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

impl JobArgs {
    /// The command, with this process's stdin unless it is a terminal, and
    /// the directories named `dirs` mounted.
    pub(crate) async fn command<'a>(
        &self,
        dirs: impl IntoIterator<Item = &'a str>,
    ) -> Result<Command, CliError> {
        let stdin = read_stdin()
            .await
            .map_err(|error| CliError::Usage(format!("cannot read stdin: {error}")))?;
        let command = self.command_without_stdin().stdin(stdin);
        Ok(dirs.into_iter().fold(command, Command::dir))
    }

    /// The command with empty stdin.
    pub(crate) fn command_without_stdin(&self) -> Command {
        let mut command = Command::new().args(self.args.iter().cloned());
        for (key, value) in &self.env {
            command = command.env(key, value);
        }
        if self.stub_unknown_imports {
            command = command.stub_unknown_imports();
        }
        command
    }
}

/// Which workers to use, and how.
#[derive(Debug, Clone, Args)]
pub(crate) struct TargetArgs {
    /// A worker's address (HOST:PORT, or tls://HOST:PORT); repeat it for a
    /// pool, over which jobs are spread and re-sent when a worker fails.
    #[arg(
        long = "to",
        value_name = "ADDR",
        required_unless_present = "coordinator"
    )]
    pub(crate) to: Vec<String>,
    /// Find the workers through the coordinator at ADDR (and follow them as
    /// they come and go) instead of listing them with --to; repeat it for
    /// several coordinators, whose lists are merged (one down loses
    /// nothing).
    #[arg(long, value_name = "ADDR", conflicts_with = "to")]
    coordinator: Vec<String>,
    /// The token to present, if the workers require one.
    #[arg(long, env = "WORKER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// How long one job may take on one worker, in seconds, shipping and
    /// queueing included; past it the worker stops the job and another is
    /// tried.
    #[arg(long, value_name = "SECONDS", default_value_t = 300.0)]
    timeout: f64,
    #[command(flatten)]
    tls: ConnectTlsArgs,
}

impl TargetArgs {
    /// Where the jobs go, for messages.
    pub(crate) fn describe(&self) -> String {
        if self.coordinator.is_empty() {
            self.to.join(", ")
        } else {
            format!("workers of {}", self.coordinator.join(", "))
        }
    }

    /// The pool and the module at `file`. The module is read first: a
    /// file that cannot be read is found before any worker is asked.
    pub(crate) async fn open(
        &self,
        file: &std::path::Path,
    ) -> Result<(worker::WorkerPool, worker::Module), CliError> {
        let module = super::read_module(file)?;
        let pool = self.pool().await?;
        Ok((pool, module))
    }

    /// How to connect to the workers (and the coordinator): token, TLS and
    /// the per-job timeout.
    pub(crate) fn client_config(&self) -> Result<rpc_core::ClientConfig, CliError> {
        if !(self.timeout.is_finite() && self.timeout > 0.0) {
            return Err(CliError::Usage("--timeout must be positive".into()));
        }
        let addrs: Vec<&str> = self
            .to
            .iter()
            .map(String::as_str)
            .chain(self.coordinator.iter().map(String::as_str))
            .collect();
        Ok(rpc_core::ClientConfig {
            name: "worker-cli".into(),
            token: self.token.clone(),
            timeout: Some(Duration::from_secs_f64(self.timeout)),
            max_payload_len: 1 << 30,
            tls: self.tls.client_tls(&addrs).map_err(CliError::Usage)?,
            insecure_plaintext: self.tls.insecure_plaintext,
            ..rpc_core::ClientConfig::default()
        })
    }

    /// The pool: the --to workers, or the coordinator's (asked once now,
    /// then followed).
    pub(crate) async fn pool(&self) -> Result<worker::WorkerPool, CliError> {
        let mut config = worker::worker_pool_config();
        config.client = self.client_config()?;
        let timeout = Duration::from_secs_f64(self.timeout);
        config.attempt_timeout = timeout;
        config.deadline = timeout.saturating_mul(3);
        if self.coordinator.is_empty() {
            return Ok(worker::WorkerPool::with_config(self.to.clone(), config));
        }
        let coordinator = self.coordinator.join(", ");
        // A lookup is quick or the coordinator is down: one connection
        // attempt, and no job-sized deadline.
        let lookups = rpc_core::ClientConfig {
            timeout: Some(LOOKUP_TIMEOUT),
            max_reconnects: Some(0),
            ..config.client.clone()
        };
        let resolver = worker::CoordinatorResolver::union(
            self.coordinator
                .iter()
                .map(|addr| rpc_core::Client::with_config(addr.clone(), lookups.clone())),
        );
        let workers = rpc_core::Resolver::resolve(&resolver)
            .await
            .map_err(|error| {
                CliError::Unavailable(format!(
                    "cannot ask the coordinator at {coordinator}: {error}; check that it runs \
                 (worker coordinator) and that this address reaches it"
                ))
            })?;
        if workers.is_empty() {
            return Err(CliError::Unavailable(format!(
                "the coordinator at {coordinator} knows no live worker"
            )));
        }
        let pool = worker::WorkerPool::with_config(workers, config);
        pool.pool().follow(resolver, Duration::from_secs(2));
        Ok(pool)
    }
}

/// Where to serve Prometheus metrics.
#[derive(Debug, Clone, Args)]
pub(crate) struct MetricsArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics (connections, calls
    /// by function and status, latencies, bytes, jobs by outcome, queue
    /// and run time, fuel, module cache, relayed jobs). No authentication:
    /// bind it where only the scraper reaches, e.g. 127.0.0.1:9100.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
}

impl MetricsArgs {
    /// The registry for the server's configuration, served at --metrics;
    /// `None` without --metrics. Keep the endpoint for as long as it
    /// should serve.
    pub(crate) async fn start(&self) -> Result<Option<(Metrics, MetricsEndpoint)>, CliError> {
        let Some(addr) = self.metrics else {
            return Ok(None);
        };
        let metrics = Metrics::new();
        let endpoint = metrics.serve(addr).await.map_err(|error| {
            CliError::Unavailable(format!("cannot serve metrics on {addr}: {error}"))
        })?;
        println!("metrics at http://{}/metrics", endpoint.local_addr());
        Ok(Some((metrics, endpoint)))
    }
}

/// How long asking a coordinator for its workers may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// All of stdin, or nothing when it is a terminal (jobs are not
/// interactive: their stdin is complete before they start).
pub(crate) async fn read_stdin() -> std::io::Result<Vec<u8>> {
    use std::io::IsTerminal;
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    if !std::io::stdin().is_terminal() {
        tokio::io::stdin().read_to_end(&mut bytes).await?;
    }
    Ok(bytes)
}

/// Where modules and compiled code are kept across runs.
#[derive(Debug, Clone, Args)]
pub(crate) struct CacheArgs {
    /// The module cache directory [default: $XDG_CACHE_HOME/rpc-worker or
    /// ~/.cache/rpc-worker].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Keep modules in memory only (a restart compiles them again).
    #[arg(long, conflicts_with = "cache_dir")]
    no_disk_cache: bool,
}

impl CacheArgs {
    pub(crate) fn dir(&self) -> Option<PathBuf> {
        if self.no_disk_cache {
            return None;
        }
        self.cache_dir.clone().or_else(default_cache_dir)
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("rpc-worker"))
}

/// Parses `1024`, `64K`, `512M`, `2G` (powers of 1024; `KiB`/`MB`-style
/// suffixes too).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 512M"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown size unit {other:?}; use K, M or G")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text} is too large"))
}

/// Directories granted to jobs, read-only.
#[derive(Debug, Clone, Args)]
pub(crate) struct GrantArgs {
    /// Grant the host directory PATH to jobs, read-only, as NAME: a job
    /// that asks for it sees it at /NAME. Repeatable. Without it jobs have
    /// no filesystem at all.
    #[arg(long = "dir", value_name = "NAME=PATH", value_parser = parse_grant)]
    pub(crate) dirs: Vec<(String, PathBuf)>,
}

fn parse_grant(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => {
            Ok((name.to_owned(), PathBuf::from(path)))
        }
        _ => Err(format!("{text:?} is not NAME=PATH")),
    }
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999999G").is_err());
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_env("=x").is_err());
    }

    /// The command line spells its defaults as sizes people read ("1G");
    /// they must be the library's, so that `worker serve` and an embedded
    /// `Sandbox` enforce the same limits.
    #[test]
    fn the_default_limits_are_the_librarys() {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            limits: LimitArgs,
        }
        let parsed = <Only as clap::Parser>::try_parse_from(["worker"]).expect("no arguments");
        assert_eq!(parsed.limits.limits(), Ok(Limits::default()));
    }
}
