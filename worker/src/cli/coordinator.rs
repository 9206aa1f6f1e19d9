//! `worker coordinator --listen ADDR`: the directory workers register with
//! (`worker serve --join`) and clients find them through
//! (`--coordinator`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::error::CliError;
use super::options::MetricsArgs;
use super::tls::{ServeTlsArgs, keep_reloading, warn_if_plaintext};

#[derive(Debug, Args)]
pub(crate) struct CoordinatorArgs {
    /// The address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// Seconds a worker stays listed after its last heartbeat.
    #[arg(long, value_name = "SECONDS", default_value_t = worker::DEFAULT_TTL.as_secs_f64())]
    ttl: f64,
    /// A token workers and clients must present, as TOKEN:ROLE (ROLE is
    /// `worker` for workers, `client` for those who look workers up and
    /// send jobs, `admin`) or TOKEN for a client; repeatable. Also read
    /// from COORDINATOR_TOKENS (comma-separated).
    #[arg(
        long = "token",
        value_name = "TOKEN[:ROLE]",
        env = "COORDINATOR_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    tokens: Vec<String>,
    #[command(flatten)]
    tls: ServeTlsArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
}

impl CoordinatorArgs {
    /// Serves the directory until SIGINT or SIGTERM.
    pub(crate) async fn execute(self) -> Result<ExitCode, CliError> {
        coordinator(self).await
    }
}

async fn coordinator(args: CoordinatorArgs) -> Result<ExitCode, CliError> {
    if !(args.ttl.is_finite() && args.ttl > 0.0) {
        return Err(CliError::Usage("--ttl must be positive".into()));
    }
    let metrics = args.metrics.start().await?;
    let mut server = worker::coordinator_server(Duration::from_secs_f64(args.ttl)).config(
        rpc_core::ServerConfig {
            metrics: metrics.as_ref().map(|(metrics, _)| metrics.clone()),
            ..rpc_core::ServerConfig::default()
        },
    );
    for token in &args.tokens {
        let (token, role) = token
            .split_once(':')
            .unwrap_or((token, worker::roles::CLIENT_ROLE));
        server = server.token(token, role);
    }
    let tls = match args.tls.server_tls() {
        Ok(tls) => tls,
        Err(message) => return Err(CliError::Usage(message)),
    };
    if let Some(tls) = &tls {
        server = server.tls(tls.clone());
    }
    let handle = match server.bind(args.listen).await {
        Ok(handle) => handle,
        Err(error) => return Err(CliError::Unavailable(error.to_string())),
    };
    let scheme = if tls.is_some() { "tls://" } else { "" };
    println!("coordinator listening on {scheme}{}", handle.local_addr());
    warn_if_plaintext(
        handle.local_addr(),
        tls.is_some(),
        !args.tokens.is_empty(),
        "workers' registrations, and every relayed module, job input and result,",
    );
    let interval = args.tls.check_interval();
    let _reloading = tls.map(|tls| keep_reloading(tls, interval));
    if args.tokens.is_empty()
        && !args.tls.requires_client_certificates()
        && !handle.local_addr().ip().is_loopback()
    {
        eprintln!(
            "worker: warning: no --token given; anyone who can reach this port may register \
             as a worker (and be sent other clients' jobs), take relayed jobs and look workers up"
        );
    }
    super::serve::shutdown_signal().await;
    handle.shutdown(Duration::from_secs(5)).await;
    Ok(ExitCode::SUCCESS)
}
