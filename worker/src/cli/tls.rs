//! TLS options of the subcommands, the checks that keep tokens off
//! plaintext networks, and certificate reloading while serving.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use rpc_core::tls::{ClientTls, ClientTlsFiles, ServerTls, ServerTlsFiles};

/// How this process connects to workers and coordinators.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConnectTlsArgs {
    /// Connect with TLS (also implied by any other --tls-* option, and by
    /// addresses written tls://HOST:PORT).
    #[arg(long)]
    tls: bool,
    /// PEM file of the CA that signed the servers' certificates
    /// [default: the operating system's trusted roots].
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// The name servers' certificates must be valid for [default: the host
    /// of each address].
    #[arg(long, value_name = "NAME")]
    tls_server_name: Option<String>,
    /// PEM file of this client's certificate, for servers that require one
    /// (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM file of the key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Send the token in plaintext even to addresses outside this machine,
    /// where anyone on the path can read it (refused otherwise).
    #[arg(long)]
    pub(crate) insecure_plaintext: bool,
}

impl ConnectTlsArgs {
    /// The TLS configuration, if TLS is asked for (by a flag or a tls://
    /// address among `addrs`).
    pub(crate) fn client_tls(&self, addrs: &[&str]) -> Result<Option<ClientTls>, String> {
        let asked = self.tls
            || self.tls_ca.is_some()
            || self.tls_server_name.is_some()
            || self.tls_cert.is_some()
            || addrs.iter().any(|addr| addr.starts_with("tls://"));
        if !asked {
            return Ok(None);
        }
        client_tls(ClientTlsFiles {
            ca: self.tls_ca.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            server_name: self.tls_server_name.clone(),
        })
        .map(Some)
    }
}

/// Reads a client TLS configuration, or says what is wrong with its files.
fn client_tls(files: ClientTlsFiles) -> Result<ClientTls, String> {
    ClientTls::from_files(&files).map_err(|error| describe(&error))
}

/// TLS of a process that listens (`serve`, `coordinator`), and of the
/// connections `serve` opens to its coordinator.
#[derive(Debug, Clone, Args)]
pub(crate) struct ServeTlsArgs {
    /// PEM file of this server's certificate chain: serve TLS only. Read
    /// again on SIGHUP and whenever it changes on disk.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM file of the key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM file of a CA: every client must show a certificate it signed
    /// (mutual TLS). A certificate's subject O names its role (client,
    /// admin, worker; none: client), its CN the holder.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// How often, in seconds, the certificate files are checked for
    /// changes (SIGHUP reloads them at once).
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    tls_check_interval: f64,
}

impl ServeTlsArgs {
    /// The server's TLS, if asked for.
    pub(crate) fn server_tls(&self) -> Result<Option<ServerTls>, String> {
        if !(self.tls_check_interval.is_finite() && self.tls_check_interval > 0.0) {
            return Err("--tls-check-interval must be positive".into());
        }
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        ServerTls::from_files(ServerTlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: self.tls_client_ca.clone(),
        })
        .map(|tls| Some(tls.with_default_client_roles([worker::roles::CLIENT_ROLE])))
        .map_err(|error| describe(&error))
    }

    /// How often the certificate files are checked for changes.
    pub(crate) fn check_interval(&self) -> Duration {
        Duration::from_secs_f64(self.tls_check_interval)
    }

    /// Whether clients must show a certificate (which then gates access as
    /// tokens do).
    pub(crate) fn requires_client_certificates(&self) -> bool {
        self.tls_client_ca.is_some()
    }

    /// This server's own certificate and key, shown to a coordinator that
    /// asks for a client certificate.
    pub(crate) fn identity(&self) -> (Option<PathBuf>, Option<PathBuf>) {
        (self.tls_cert.clone(), self.tls_key.clone())
    }
}

/// TLS of the connection `serve` opens to its coordinator.
#[derive(Debug, Clone, Args)]
pub(crate) struct OutboundTlsArgs {
    /// PEM file of the CA that signed the coordinator's certificate, for
    /// --join and --relay-via; connects with TLS (as does a tls://
    /// coordinator address) [default: the operating system's roots].
    #[arg(
        long = "tls-ca",
        visible_alias = "coordinator-tls-ca",
        value_name = "FILE"
    )]
    tls_ca: Option<PathBuf>,
    /// The name the coordinator's certificate must be valid for [default:
    /// the host of its address].
    #[arg(
        long = "tls-server-name",
        visible_alias = "coordinator-tls-server-name",
        value_name = "NAME"
    )]
    tls_server_name: Option<String>,
    /// Send the coordinator token in plaintext even to a coordinator
    /// outside this machine (refused otherwise).
    #[arg(long)]
    pub(crate) insecure_plaintext: bool,
}

impl OutboundTlsArgs {
    /// The TLS of the connection to the coordinator at `addr`, showing the
    /// certificate `identity` if there is one.
    pub(crate) fn client_tls(
        &self,
        addr: &str,
        identity: (Option<PathBuf>, Option<PathBuf>),
    ) -> Result<Option<ClientTls>, String> {
        if self.tls_ca.is_none() && self.tls_server_name.is_none() && !addr.starts_with("tls://") {
            return Ok(None);
        }
        let (cert, key) = identity;
        client_tls(ClientTlsFiles {
            ca: self.tls_ca.clone(),
            cert,
            key,
            server_name: self.tls_server_name.clone(),
        })
        .map(Some)
    }
}

/// A TLS error for a person: what failed and the cause underneath.
fn describe(error: &rpc_core::tls::TlsError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Warns, when `addr` is reachable from other machines and there is no TLS,
/// about what crosses the network in plaintext (`exposed`).
pub(crate) fn warn_if_plaintext(addr: SocketAddr, tls: bool, tokens: bool, exposed: &str) {
    if tls || addr.ip().is_loopback() {
        return;
    }
    let tokens = if tokens {
        "the tokens clients present (anyone who reads one can use it), "
    } else {
        ""
    };
    eprintln!(
        "worker: warning: listening on {addr} without TLS: {tokens}{exposed} cross the network \
         in plaintext, readable and alterable by anyone on the path; give --tls-cert and \
         --tls-key"
    );
}

/// Reloads `tls` on SIGHUP and whenever its files change (checked every
/// `interval`), reporting each reload on stderr; a broken new file is
/// reported and the certificate in use kept. Runs until the process ends.
pub(crate) fn keep_reloading(tls: ServerTls, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            #[cfg(unix)]
            let forced = tokio::select! {
                Some(()) = async { hangup.as_mut()?.recv().await } => true,
                _ = ticks.tick() => false,
            };
            #[cfg(not(unix))]
            let forced = {
                ticks.tick().await;
                false
            };
            let outcome = if forced {
                tls.reload().map(|()| true)
            } else {
                tls.reload_if_changed()
            };
            match outcome {
                Ok(true) => eprintln!("worker: TLS certificate reloaded; new connections use it"),
                Ok(false) => {}
                Err(error) => eprintln!(
                    "worker: the new TLS certificate cannot be used ({}); still serving the \
                     previous one",
                    describe(&error)
                ),
            }
        }
    })
}
