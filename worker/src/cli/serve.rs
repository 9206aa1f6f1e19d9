//! `worker serve --listen ADDR`: runs a worker until interrupted, then
//! shuts down gracefully.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use rpc_core::ServerConfig;
use worker::{Sandbox, SandboxConfig};

use super::error::CliError;
use super::options::{CacheArgs, GrantArgs, LimitArgs, MetricsArgs, parse_size};
use super::tls::{OutboundTlsArgs, ServeTlsArgs, keep_reloading, warn_if_plaintext};

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The address to listen on. Use 0.0.0.0:PORT to accept other machines,
    /// with tokens.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// A token clients must present, as TOKEN (role `client`: runs jobs) or
    /// TOKEN:admin (also reads the worker's status); repeatable. Without
    /// any, anyone who can connect may do anything. Also read from
    /// WORKER_TOKENS (comma-separated), which keeps them out of `ps`.
    #[arg(
        long = "token",
        value_name = "TOKEN[:ROLE]",
        env = "WORKER_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    tokens: Vec<String>,
    /// Jobs run at once; more wait in a queue [default: the number of cores].
    #[arg(long, value_name = "N")]
    concurrency: Option<u32>,
    /// Jobs that may wait for a free slot; more are refused as "worker
    /// busy" (a pool sends them to another worker).
    #[arg(long, value_name = "N", default_value_t = worker::DEFAULT_MAX_QUEUED_JOBS)]
    max_queued: u32,
    /// Bytes of compiled code kept in memory.
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    memory_cache: u64,
    /// Authenticated connections served at once.
    #[arg(long, value_name = "N", default_value_t = rpc_core::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Connections still in their handshake at once (not yet
    /// authenticated); when full, the oldest is closed to make room.
    #[arg(long, value_name = "N", default_value_t = rpc_core::DEFAULT_MAX_PENDING_HANDSHAKES)]
    max_handshakes: usize,
    /// Bytes of large request payloads (uploads in progress, stdin of
    /// waiting jobs) held at once over all connections; past it, 429.
    #[arg(long, value_name = "SIZE", default_value = "512M", value_parser = parse_size)]
    max_request_bytes: u64,
    /// Seconds in-flight jobs get to finish on Ctrl-C or SIGTERM.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    grace: u64,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    grants: GrantArgs,
    /// Register with the coordinator at ADDR, and keep registering as a
    /// heartbeat; repeat it to join several coordinators (so that none is
    /// a single point of failure).
    #[arg(long, value_name = "ADDR")]
    join: Vec<String>,
    /// Listen nowhere: take jobs from the coordinator at ADDR over an
    /// outbound connection (for a worker behind NAT or a firewall); clients
    /// reach it through the coordinator.
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["join", "advertise"])]
    relay_via: Option<String>,
    /// `auto`: listen nowhere and be reached through supernodes: ask the
    /// coordinators of --join for supernodes, attach to the --relay-routes
    /// with the shortest round trip and room, and register as
    /// NAME@SUPERNODE (one route each; clients take the fastest); replace
    /// one at once if it goes away. With no supernode listed, the
    /// coordinator relays. With --advertise too, it also listens on
    /// --listen and registers that address as one more route, for the
    /// clients that can reach it.
    #[arg(long, value_name = "MODE", requires = "join", conflicts_with_all = ["relay_via", "supernode"])]
    relay: Option<RelayMode>,
    /// Supernodes a worker with --relay auto attaches to at once, each a
    /// route to it (1 to 8).
    #[arg(long, value_name = "N", default_value_t = worker::DEFAULT_RELAY_ROUTES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=8))]
    relay_routes: usize,
    /// Relay for workers that cannot accept connections (they attach with
    /// --relay auto, with a token of role `worker` here). Registered with
    /// the coordinators as a supernode.
    #[arg(long)]
    supernode: bool,
    /// Relayed workers attached at once, as a supernode.
    #[arg(long, value_name = "N", default_value_t = rpc_core::relay::DEFAULT_MAX_RELAYED_WORKERS)]
    supernode_max_workers: usize,
    /// Relayed connections open at once, as a supernode.
    #[arg(long, value_name = "N", default_value_t = rpc_core::relay::DEFAULT_MAX_ROUTES)]
    supernode_max_routes: usize,
    /// Relayed bytes a second, both ways over every relayed connection, as
    /// a supernode [default: no limit].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    supernode_max_rate: Option<u64>,
    /// The address clients should use to reach this worker, as told to the
    /// coordinator [default: --listen, which must then not be 0.0.0.0].
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// This worker's name at the coordinator [default: the advertised
    /// address].
    #[arg(long)]
    name: Option<String>,
    /// The token to present to the coordinator.
    #[arg(long, env = "COORDINATOR_TOKEN", hide_env_values = true)]
    coordinator_token: Option<String>,
    #[command(flatten)]
    tls: ServeTlsArgs,
    #[command(flatten)]
    outbound: OutboundTlsArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
}

/// How a worker that listens nowhere is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RelayMode {
    /// Through the supernode with the shortest round trip.
    Auto,
}

impl ServeArgs {
    /// The server's configuration from the flags, counting into `metrics`.
    fn server_config(&self, metrics: Option<rpc_core::metrics::Metrics>) -> ServerConfig {
        ServerConfig {
            max_connections: self.max_connections,
            max_pending_handshakes: self.max_handshakes,
            max_request_bytes: self.max_request_bytes,
            metrics,
            ..ServerConfig::default()
        }
    }

    /// Serves jobs (or takes them through a coordinator) until SIGINT or
    /// SIGTERM, then drains.
    pub(crate) async fn execute(self) -> Result<ExitCode, CliError> {
        serve(self).await
    }
}

async fn serve(args: ServeArgs) -> Result<ExitCode, CliError> {
    let limits = match args.limits.limits() {
        Ok(limits) => limits,
        Err(message) => return Err(CliError::Usage(message)),
    };
    let tokens: Vec<(String, String)> = args
        .tokens
        .iter()
        .map(|token| match token.split_once(':') {
            Some((token, role)) => (token.to_owned(), role.to_owned()),
            None => (token.clone(), worker::roles::CLIENT_ROLE.to_owned()),
        })
        .collect();
    let cache_dir = args.cache.dir();
    let config = SandboxConfig {
        limits,
        concurrency: args.concurrency.unwrap_or_else(worker::default_concurrency),
        cache_dir: cache_dir.clone(),
        memory_cache_bytes: args.memory_cache,
        dirs: args.grants.dirs.clone(),
        max_queued_jobs: args.max_queued,
    };
    let concurrency = config.concurrency;
    let sandbox = match Sandbox::new(config) {
        Ok(sandbox) => sandbox,
        Err(error) => return Err(CliError::Internal(error.to_string())),
    };
    if let Some(coordinator) = &args.relay_via {
        // No server of its own: the jobs, cache and load are what it has
        // to count.
        let metrics = args.metrics.start().await?;
        if let Some((metrics, _)) = &metrics {
            metrics.register_collector(sandbox.metrics_collector());
        }
        let name = args
            .name
            .clone()
            .unwrap_or_else(|| format!("relayed-{}", std::process::id()));
        let tls = match args.outbound.client_tls(coordinator, args.tls.identity()) {
            Ok(tls) => tls,
            Err(message) => return Err(CliError::Usage(message)),
        };
        let client = rpc_core::Client::with_config(
            coordinator.clone(),
            rpc_core::ClientConfig {
                name: name.clone(),
                token: args.coordinator_token.clone(),
                timeout: None,
                max_payload_len: 1 << 30,
                tls,
                insecure_plaintext: args.outbound.insecure_plaintext,
                ..rpc_core::ClientConfig::default()
            },
        );
        let tasks = worker::relay_worker(sandbox, client, name.clone(), HEARTBEAT);
        println!(
            "worker {name} taking jobs through the coordinator at {coordinator} (concurrency {concurrency}, listening nowhere)"
        );
        shutdown_signal().await;
        for task in tasks {
            task.abort();
        }
        return Ok(ExitCode::SUCCESS);
    }
    let tls = match args.tls.server_tls() {
        Ok(tls) => tls,
        Err(message) => return Err(CliError::Usage(message)),
    };
    if args.relay.is_some() {
        return serve_relayed(args, sandbox, &tokens, tls).await;
    }
    let metrics = args.metrics.start().await?;
    let server_config = args.server_config(metrics.as_ref().map(|(metrics, _)| metrics.clone()));
    // Checked before binding: a worker that joins must be reachable at the
    // address it advertises.
    if !args.join.is_empty() {
        let advertised = args.advertise.clone();
        let unreachable = match &advertised {
            Some(addr) => {
                let host = addr.trim_start_matches("tls://");
                host.starts_with("0.0.0.0") || host.starts_with("[::]")
            }
            None => args.listen.ip().is_unspecified(),
        };
        if unreachable {
            let shown = advertised.unwrap_or_else(|| args.listen.to_string());
            return Err(CliError::Usage(format!(
                "with --join, give --advertise HOST:PORT: clients cannot reach {shown}"
            )));
        }
    }
    let mut server =
        worker::configured_worker_server(sandbox.clone(), server_config, &tokens, tls.clone());
    let supernode = args.supernode.then(|| {
        rpc_core::relay::Supernode::new(rpc_core::relay::SupernodeConfig {
            max_workers: args.supernode_max_workers,
            max_routes: args.supernode_max_routes,
            max_bytes_per_sec: args.supernode_max_rate,
            ..rpc_core::relay::SupernodeConfig::default()
        })
    });
    if let Some(supernode) = &supernode {
        server = worker::add_supernode(server, supernode.clone());
    }
    let served = server.bind(args.listen).await;
    let handle = match served {
        Ok(handle) => handle,
        Err(error) => return Err(CliError::Unavailable(error.to_string())),
    };
    let cache = cache_dir.map_or("memory only".to_owned(), |dir| dir.display().to_string());
    let scheme = if tls.is_some() { "tls://" } else { "" };
    println!(
        "worker listening on {scheme}{} (concurrency {concurrency}, {} token(s), cache: {cache})",
        handle.local_addr(),
        tokens.len(),
    );
    if supernode.is_some() {
        println!(
            "worker relaying as a supernode for up to {} workers",
            args.supernode_max_workers
        );
    }
    warn_if_plaintext(
        handle.local_addr(),
        tls.is_some(),
        !tokens.is_empty(),
        "the modules clients ship, every job's stdin and arguments, and every result",
    );
    let interval = args.tls.check_interval();
    let _reloading = tls.clone().map(|tls| keep_reloading(tls, interval));
    if tokens.is_empty()
        && !args.tls.requires_client_certificates()
        && !handle.local_addr().ip().is_loopback()
    {
        eprintln!(
            "worker: warning: no --token given; anyone who can reach this port may do anything \
             here: run jobs, ship modules, read the worker's status"
        );
    }
    let mut beats = Vec::new();
    if !args.join.is_empty() {
        let advertise = args
            .advertise
            .clone()
            .unwrap_or_else(|| handle.local_addr().to_string());
        // Clients learn from the scheme that this worker speaks TLS.
        let advertise = match (&tls, advertise.strip_prefix("tls://")) {
            (Some(_), None) => format!("tls://{advertise}"),
            _ => advertise,
        };
        let name = args.name.clone().unwrap_or_else(|| advertise.clone());
        for coordinator in &args.join {
            let outbound = match args.outbound.client_tls(coordinator, args.tls.identity()) {
                Ok(tls) => tls,
                Err(message) => return Err(CliError::Usage(message)),
            };
            let client = rpc_core::Client::with_config(
                coordinator.clone(),
                rpc_core::ClientConfig {
                    name: name.clone(),
                    token: args.coordinator_token.clone(),
                    tls: outbound,
                    insecure_plaintext: args.outbound.insecure_plaintext,
                    ..rpc_core::ClientConfig::default()
                },
            );
            println!("worker joining the coordinator at {coordinator} as {name}");
            let sandbox = sandbox.clone();
            let (name, advertise) = (name.clone(), advertise.clone());
            let supernode = supernode.clone();
            beats.push(worker::join(client, HEARTBEAT, move || {
                let status = sandbox.status();
                worker::wire::Registration {
                    name: name.clone(),
                    addr: advertise.clone(),
                    capacity: status.concurrency,
                    running: status.running,
                    modules: sandbox.ready_modules(),
                    supernode: supernode.as_ref().map(worker::wire::SupernodeOffer::of),
                }
            }));
        }
    }
    shutdown_signal().await;
    for beat in &beats {
        beat.abort();
    }
    println!("worker shutting down (in-flight jobs get {} s)", args.grace);
    handle.shutdown(Duration::from_secs(args.grace)).await;
    Ok(ExitCode::SUCCESS)
}

/// Serves `sandbox` through supernodes (`--relay auto`): listens nowhere,
/// attaches to the fastest supernode the coordinators list, and registers
/// as NAME@SUPERNODE.
async fn serve_relayed(
    args: ServeArgs,
    sandbox: Sandbox,
    tokens: &[(String, String)],
    tls: Option<rpc_core::tls::ServerTls>,
) -> Result<ExitCode, CliError> {
    let metrics = args.metrics.start().await?;
    let server_config = args.server_config(metrics.as_ref().map(|(metrics, _)| metrics.clone()));
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("relayed-{}", std::process::id()));
    // With --advertise, reachable directly too: that address is one more
    // route, and clients that can reach it take it when it is faster.
    let direct = match &args.advertise {
        Some(advertise) => Some(direct_route(advertise, tls.is_some())?),
        None => None,
    };
    let direct_tls = tls.is_some();
    let server = worker::configured_worker_server(sandbox.clone(), server_config, tokens, tls);
    let served = match &direct {
        Some(_) => match tokio::net::TcpListener::bind(args.listen).await {
            Ok(listener) => server.serve_and_join(listener),
            Err(error) => {
                return Err(CliError::Unavailable(format!(
                    "could not listen on {}: {error}",
                    args.listen
                )));
            }
        },
        None => server.serve_joined(),
    };
    let (handle, intake) = match served {
        Ok(served) => served,
        Err(error) => return Err(CliError::Unavailable(error.to_string())),
    };
    let first = args.join.first().map(String::as_str).unwrap_or_default();
    let outbound = match args.outbound.client_tls(first, args.tls.identity()) {
        Ok(tls) => tls,
        Err(message) => return Err(CliError::Usage(message)),
    };
    let client = rpc_core::ClientConfig {
        name: name.clone(),
        token: args.coordinator_token.clone(),
        tls: outbound,
        insecure_plaintext: args.outbound.insecure_plaintext,
        ..rpc_core::ClientConfig::default()
    };
    let directories = args
        .join
        .iter()
        .map(|addr| rpc_core::Client::with_config(addr.clone(), client.clone()))
        .collect();
    let config = worker::AttachConfig {
        name: name.clone(),
        directories,
        client,
        heartbeat: HEARTBEAT,
        routes: args.relay_routes,
        serves_tls: direct_tls,
    };
    let registered = name.clone();
    let registered_direct = direct.clone();
    let mut attachment = worker::relay_through_supernodes(intake, config, move |relayed| {
        let status = sandbox.status();
        worker::wire::Registration {
            name: registered.clone(),
            addr: match &registered_direct {
                Some(direct) => format!("{direct},{relayed}"),
                None => relayed,
            },
            capacity: status.concurrency,
            running: status.running,
            modules: sandbox.ready_modules(),
            supernode: None,
        }
    });
    match &direct {
        Some(direct) => println!(
            "worker {name} listening on {} (route {direct}) and reached through supernodes the \
             coordinator(s) at {} list",
            handle.local_addr(),
            args.join.join(", ")
        ),
        None => println!(
            "worker {name} listening nowhere: reached through a supernode the coordinator(s) at {} \
             list",
            args.join.join(", ")
        ),
    }
    let mut shown: Option<String> = None;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            route = attachment.attached(shown.as_deref(), Duration::from_secs(3600)) => {
                if let Some(route) = route {
                    let all = match &direct {
                        Some(direct) => format!("{direct},{route}"),
                        None => route.clone(),
                    };
                    println!("worker {name} attached: clients reach it at {all}");
                    shown = Some(route);
                }
            }
        }
    }
    drop(attachment);
    println!("worker shutting down (in-flight jobs get {} s)", args.grace);
    handle.shutdown(Duration::from_secs(args.grace)).await;
    Ok(ExitCode::SUCCESS)
}

/// The route a worker that is relayed, and listens too, registers for
/// itself: `advertise`, with `tls://` when it serves TLS.
fn direct_route(advertise: &str, tls: bool) -> Result<String, CliError> {
    let host = advertise.trim_start_matches("tls://");
    if host.starts_with("0.0.0.0") || host.starts_with("[::]") || host.contains(',') {
        return Err(CliError::Usage(format!(
            "--advertise {advertise}: give one HOST:PORT that clients can reach"
        )));
    }
    Ok(if tls {
        format!("tls://{host}")
    } else {
        advertise.to_owned()
    })
}

/// How often a worker re-registers with its coordinator.
const HEARTBEAT: Duration = Duration::from_secs(2);

pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults spelled as sizes on the command line are the
    /// library's.
    #[test]
    fn the_serving_defaults_are_the_librarys() {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let parsed = <Only as clap::Parser>::try_parse_from(["worker"]).expect("no arguments");
        assert_eq!(
            parsed.serve.memory_cache,
            SandboxConfig::default().memory_cache_bytes
        );
        assert_eq!(
            parsed.serve.max_request_bytes,
            ServerConfig::default().max_request_bytes
        );
        assert_eq!(
            parsed.serve.max_connections,
            ServerConfig::default().max_connections
        );
    }
}
