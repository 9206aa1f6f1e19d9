//! A relayed worker's side of supernodes: find them in the directory,
//! measure the round trip to each, attach to the fastest with room, open
//! the connections it asks for, and move to the next when it dies.

use std::time::Duration;

use rpc_core::relay::{JoinedIntake, join};
use rpc_core::{Client, ClientConfig, RpcError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use crate::coordinator::{CoordinatorResolver, join_when};
use crate::directory::Registration;
use crate::functions::SupernodingClient;
use crate::warnings::WarnOnChange;

/// Supernodes whose round trip is measured at most, per attachment.
const MAX_MEASURED: usize = 8;
/// How long measuring one supernode may take.
const MEASURE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the worker has to open a connection a supernode asked for.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How a relayed worker finds and reaches its supernodes.
#[derive(Debug, Clone)]
pub struct AttachConfig {
    /// The name it attaches and registers under; clients reach it as
    /// `name@supernode`.
    pub name: String,
    /// The directories it registers with and asks for supernodes. With
    /// no supernode listed, it attaches to a directory itself (a
    /// coordinator relays as a supernode when none other does).
    pub directories: Vec<Client>,
    /// How it connects to supernodes: its name, a token with the
    /// [worker role](crate::roles) there, TLS.
    pub client: ClientConfig,
    /// How often it registers (and how soon after a move it is listed at
    /// the new supernode: at once).
    pub heartbeat: Duration,
}

/// A relayed worker at work: attached (or attaching) to a supernode and
/// registered through it. Dropping it stops both.
#[derive(Debug)]
pub struct Attachment {
    tasks: Vec<JoinHandle<()>>,
    route: watch::Receiver<Option<String>>,
}

impl Attachment {
    /// The address clients reach it at now (`name@supernode`), if it is
    /// attached.
    pub fn route(&self) -> Option<String> {
        self.route.borrow().clone()
    }

    /// Waits until it is attached at an address other than `not` (any
    /// address, with `None`), for at most `within`; the address.
    pub async fn attached(&mut self, not: Option<&str>, within: Duration) -> Option<String> {
        let found = timeout(
            within,
            self.route
                .wait_for(|route| route.is_some() && route.as_deref() != not),
        )
        .await;
        match found {
            Ok(Ok(route)) => route.clone(),
            _ => None,
        }
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Runs a worker that accepts no connections through supernodes: attaches
/// to the fastest supernode with room that `config.directories` list,
/// hands the connections it opens for clients to `intake` (the worker's
/// server, made with
/// [`ServerBuilder::serve_joined`](rpc_core::ServerBuilder::serve_joined)),
/// and registers with every directory as `name@supernode`, calling
/// `registration` with that address for the rest. When the supernode goes
/// away it attaches to the next one and registers again at once.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use rpc_core::{Client, ClientConfig};
/// use worker::{AttachConfig, Sandbox, SandboxConfig, relay_through_supernodes, wire::Registration};
///
/// let sandbox = Sandbox::new(SandboxConfig::default())?;
/// let (server, intake) = worker::worker_server(sandbox.clone()).serve_joined()?;
/// let config = AttachConfig {
///     name: "behind-nat-1".into(),
///     directories: vec![Client::new("10.0.0.1:7000")],
///     client: ClientConfig::default(),
///     heartbeat: Duration::from_secs(2),
/// };
/// let attachment = relay_through_supernodes(intake, config, move |addr| {
///     let status = sandbox.status();
///     Registration {
///         name: "behind-nat-1".into(),
///         addr,
///         capacity: status.concurrency,
///         running: status.running,
///         modules: sandbox.ready_modules(),
///         supernode: None,
///     }
/// });
/// # drop((server, attachment));
/// # Ok(())
/// # }
/// ```
pub fn relay_through_supernodes(
    intake: JoinedIntake,
    config: AttachConfig,
    registration: impl Fn(String) -> Registration + Send + Sync + 'static,
) -> Attachment {
    let (route_sender, route) = watch::channel(None::<String>);
    let (changed, _) = watch::channel(());
    let registration = std::sync::Arc::new(registration);
    let mut tasks = Vec::new();
    for directory in &config.directories {
        let route = route.clone();
        let registration = std::sync::Arc::clone(&registration);
        let mut changes = changed.subscribe();
        changes.mark_unchanged();
        tasks.push(join_when(
            directory.clone(),
            config.heartbeat,
            move || route.borrow().clone().map(|addr| registration(addr)),
            changes,
        ));
    }
    tasks.push(tokio::spawn(async move {
        let mut attaching = Attaching {
            config,
            intake,
            route: route_sender,
            changed,
            warnings: WarnOnChange::default(),
        };
        attaching.run().await;
    }));
    Attachment { tasks, route }
}

/// The attaching loop's state.
struct Attaching {
    config: AttachConfig,
    intake: JoinedIntake,
    route: watch::Sender<Option<String>>,
    changed: watch::Sender<()>,
    warnings: WarnOnChange,
}

/// How serving one supernode ended.
enum Ended {
    /// It refused the worker (full): try the next.
    Refused(String),
    /// It was a directory standing in, and a supernode is listed now:
    /// measure again.
    Superseded,
    /// The connection to it failed: measure again.
    Lost(String),
}

/// A supernode measured: its address, round trip, and the client that
/// measured it (kept, connected).
struct Measured {
    addr: String,
    rtt: Duration,
    client: Client,
    /// A directory standing in as a supernode, because none was listed.
    fallback: bool,
}

impl Attaching {
    async fn run(&mut self) {
        let mut lost: Option<String> = None;
        loop {
            let mut ranked = self.measure().await;
            // The one just lost goes last: it may be back, but try the
            // others first.
            if let Some(lost) = &lost {
                ranked.sort_by_key(|measured| &measured.addr == lost);
            }
            if ranked.is_empty() {
                self.warnings.failed(
                    "no supernode to attach to",
                    &"the directories list none that answers, and cannot be asked themselves",
                );
                tokio::time::sleep(self.config.heartbeat / 2).await;
                continue;
            }
            for measured in ranked {
                match self.serve(&measured).await {
                    Ended::Refused(reason) => {
                        tracing::info!(supernode = %measured.addr, %reason, "supernode refused");
                    }
                    Ended::Superseded => break,
                    Ended::Lost(error) => {
                        tracing::warn!(supernode = %measured.addr, %error, "lost the supernode; attaching to another");
                        self.route.send_replace(None);
                        lost = Some(measured.addr);
                        break;
                    }
                }
            }
        }
    }

    /// The supernodes with room that the directories list now.
    async fn listed_supernodes(&self) -> Vec<String> {
        let resolver = CoordinatorResolver::union(self.config.directories.iter().cloned());
        match resolver.workers().await {
            Ok(entries) => entries
                .into_iter()
                .filter(|entry| {
                    entry
                        .registration
                        .supernode
                        .is_some_and(|offer| offer.has_room())
                })
                .map(|entry| entry.registration.addr)
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The supernodes the directories list with room (or the directories
    /// themselves, if they list none), fastest first.
    async fn measure(&self) -> Vec<Measured> {
        let mut candidates = self.listed_supernodes().await;
        let fallback = candidates.is_empty();
        if fallback {
            candidates = self
                .config
                .directories
                .iter()
                .map(|directory| directory.addr().to_owned())
                .collect();
        }
        candidates.truncate(MAX_MEASURED);
        let measured = futures_util::future::join_all(candidates.into_iter().map(|addr| {
            let client = Client::with_config(
                addr.clone(),
                ClientConfig {
                    max_reconnects: Some(0),
                    // Polls wait up to 10 s for a connection to open.
                    timeout: Some(Duration::from_secs(30)),
                    keepalive: Some(self.config.heartbeat),
                    ..self.config.client.clone()
                },
            );
            async move {
                // The first ping also connects; the second is the trip.
                let rtt = timeout(MEASURE_TIMEOUT, async {
                    client.ping().await?;
                    client.ping().await
                })
                .await;
                match rtt {
                    Ok(Ok(rtt)) => Some(Measured {
                        addr,
                        rtt,
                        client,
                        fallback,
                    }),
                    _ => None,
                }
            }
        }))
        .await;
        let mut ranked: Vec<Measured> = measured.into_iter().flatten().collect();
        ranked.sort_by_key(|measured| measured.rtt);
        ranked
    }

    /// Attaches to one supernode and opens the connections it asks for,
    /// until it refuses or is lost.
    async fn serve(&mut self, measured: &Measured) -> Ended {
        let dials = SupernodingClient::new(measured.client.clone());
        let dial_addr = measured
            .addr
            .strip_prefix("tls://")
            .unwrap_or(&measured.addr)
            .to_owned();
        let mut attached = false;
        loop {
            let polled = if measured.fallback && attached {
                // On a directory standing in: move as soon as a real
                // supernode is listed (the coordinator relays only when
                // none is).
                let mut check = tokio::time::interval(self.config.heartbeat);
                check.tick().await;
                let poll = dials.dials(self.config.name.clone());
                tokio::pin!(poll);
                loop {
                    tokio::select! {
                        polled = &mut poll => break polled,
                        _ = check.tick() => {
                            if !self.listed_supernodes().await.is_empty() {
                                tracing::info!("a supernode is listed; leaving the directory's relay");
                                return Ended::Superseded;
                            }
                        }
                    }
                }
            } else {
                dials.dials(self.config.name.clone()).await
            };
            match polled {
                Ok(tickets) => {
                    if !attached {
                        attached = true;
                        let route = route_addr(&self.config.name, &measured.addr);
                        tracing::info!(supernode = %measured.addr, rtt = ?measured.rtt, %route, "attached");
                        self.warnings.recovered();
                        self.route.send_replace(Some(route));
                        self.changed.send_replace(());
                    }
                    for ticket in tickets {
                        let intake = self.intake.clone();
                        let dial_addr = dial_addr.clone();
                        tokio::spawn(async move {
                            let started = Instant::now();
                            match join(&dial_addr, ticket, JOIN_TIMEOUT).await {
                                Ok(stream) => {
                                    intake.serve(stream).await;
                                }
                                Err(error) => tracing::warn!(
                                    %error,
                                    waited = ?started.elapsed(),
                                    "could not open a connection the supernode asked for"
                                ),
                            }
                        });
                    }
                }
                Err(RpcError::Application(refused)) if !attached => {
                    return Ended::Refused(refused.to_string());
                }
                Err(error) => return Ended::Lost(error.to_string()),
            }
        }
    }
}

/// The address clients use for `name` through the supernode at
/// `supernode` (`tls://` kept in front).
fn route_addr(name: &str, supernode: &str) -> String {
    match supernode.strip_prefix("tls://") {
        Some(rest) => format!("tls://{name}@{rest}"),
        None => format!("{name}@{supernode}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_keeps_the_supernodes_scheme() {
        assert_eq!(route_addr("w1", "10.0.0.1:7000"), "w1@10.0.0.1:7000");
        assert_eq!(
            route_addr("w1", "tls://relay.example:7000"),
            "tls://w1@relay.example:7000"
        );
    }
}
