//! The coordinator: a directory of live workers. Workers register (name,
//! address, capacity, load, modules held) and keep re-registering as a
//! heartbeat; clients ask it for the live ones; a worker that stops
//! heartbeating drops out after the entry's time to live.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rpc_core::{Client, PeerRole, ResolveFuture, Resolver, RpcError, Server, ServerBuilder};

use crate::directory::{MAX_REGISTRATIONS, RegisterRefused, Registration, WorkerEntry};
use crate::functions::{Directory, DirectoryClient, DirectoryServer};
use crate::warnings::WarnOnChange;
use crate::{lock, roles};

/// The default time a registration stays valid without a heartbeat: 6 s.
pub const DEFAULT_TTL: Duration = Duration::from_secs(6);

/// A registration as the directory keeps it: when it was last renewed,
/// and who registered it (only they may renew it while it lives).
#[derive(Debug)]
struct Entry {
    registration: Registration,
    seen: Instant,
    owner: u64,
}

#[derive(Debug)]
struct Roster {
    ttl: Duration,
    workers: Mutex<HashMap<String, Entry>>,
}

impl Roster {
    fn register(&self, registration: Registration, owner: u64) -> Result<u64, RegisterRefused> {
        if !registration.fits() {
            return Err(RegisterRefused::TooLarge);
        }
        let now = Instant::now();
        // Heartbeats come often: look at the one entry, and sweep expired
        // ones only when the roster looks full.
        let mut workers = lock(&self.workers);
        let live = |entry: &Entry| now.duration_since(entry.seen) < self.ttl;
        match workers.get(&registration.name) {
            Some(entry) if entry.owner != owner && live(entry) => {
                return Err(RegisterRefused::Taken);
            }
            Some(_) => {}
            None => {
                if workers.len() >= MAX_REGISTRATIONS {
                    workers.retain(|_, entry| live(entry));
                }
                if workers.len() >= MAX_REGISTRATIONS {
                    return Err(RegisterRefused::Full {
                        max: MAX_REGISTRATIONS as u64,
                    });
                }
            }
        }
        workers.insert(
            registration.name.clone(),
            Entry {
                registration,
                seen: now,
                owner,
            },
        );
        Ok(u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX))
    }

    /// The registrations renewed within the TTL; older ones are dropped.
    fn unexpired(&self, now: Instant) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        let mut workers = lock(&self.workers);
        workers.retain(|_, entry| now.duration_since(entry.seen) < self.ttl);
        workers
    }

    /// The names of the live workers (what the relay needs, without
    /// copying their registrations).
    fn live_names(&self) -> HashSet<String> {
        self.unexpired(Instant::now()).keys().cloned().collect()
    }

    fn live(&self) -> Vec<WorkerEntry> {
        let now = Instant::now();
        let workers = self.unexpired(now);
        let mut live: Vec<WorkerEntry> = workers
            .values()
            .map(|entry| WorkerEntry {
                registration: entry.registration.clone(),
                last_seen_ms: u64::try_from(now.duration_since(entry.seen).as_millis())
                    .unwrap_or(u64::MAX),
            })
            .collect();
        live.sort_by(|a, b| a.registration.name.cmp(&b.registration.name));
        live
    }
}

/// A server that is a coordinator: add tokens, then bind it. Entries live
/// `ttl` past their last heartbeat. Only the [worker role](crate::roles)
/// may register (and take relayed jobs); clients and admins look workers
/// up and send jobs to the relay. Without tokens, anyone may do anything.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let coordinator = worker::coordinator_server(worker::DEFAULT_TTL)
///     .bind("0.0.0.0:7000")
///     .await?;
/// # drop(coordinator);
/// # Ok(())
/// # }
/// ```
///
/// It relays for workers that accept no connections only when they find
/// no other supernode: it is a supernode too
/// ([`relay_through_supernodes`](crate::relay_through_supernodes)), and
/// still takes jobs for workers of the older kind
/// ([`relay_worker`](crate::relay_worker)), which it hands over.
pub fn coordinator_server(ttl: Duration) -> ServerBuilder {
    let roster = Arc::new(Roster {
        ttl,
        workers: Mutex::new(HashMap::new()),
    });
    let names = Arc::clone(&roster);
    let live = move || names.live_names();
    let server = Server::builder()
        .role(PeerRole::Coordinator)
        .anonymous_roles(roles::ALL)
        .data_roles(roles::NONE)
        .service(DirectoryServer::from_arc(roster));
    let server = crate::relay::add_relay(server, live);
    // With no supernode among the workers, relayed workers attach to the
    // coordinator itself.
    let supernode = rpc_core::relay::Supernode::new(rpc_core::relay::SupernodeConfig::default());
    crate::relay::add_supernode(server, supernode)
}

impl Directory for Roster {
    async fn register(
        &self,
        context: rpc_core::Context,
        registration: Registration,
    ) -> Result<u64, RegisterRefused> {
        Roster::register(self, registration, context.principal())
    }

    async fn workers(&self) -> Vec<WorkerEntry> {
        self.live()
    }
}

/// Registers with the coordinator at `client`'s address every `interval`
/// until the returned task is aborted; `registration` is called each time
/// for the current load and modules. A coordinator that restarts gets the
/// registration again at the next beat.
pub fn join(
    client: Client,
    interval: Duration,
    registration: impl Fn() -> Registration + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let (_never, changes) = tokio::sync::watch::channel(());
    join_when(client, interval, move || Some(registration()), changes)
}

/// [`join`], for a worker whose address changes (a relayed worker that
/// moves to another supernode): `registration` says `None` while it has
/// none (no beat is sent), and a change sent on `changes` registers at
/// once instead of at the next beat.
pub(crate) fn join_when(
    client: Client,
    interval: Duration,
    registration: impl Fn() -> Option<Registration> + Send + 'static,
    mut changes: tokio::sync::watch::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    let directory = DirectoryClient::new(client);
    tokio::spawn(async move {
        let client = directory.client();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut registered = false;
        let mut warnings = WarnOnChange::default();
        let mut watching = true;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                changed = changes.changed(), if watching => {
                    // The sender gone: beats only.
                    watching = changed.is_ok();
                }
            }
            let Some(registration) = registration() else {
                continue;
            };
            match directory.register(registration).await {
                Ok(_) if !registered => {
                    tracing::info!(coordinator = client.addr(), "registered");
                    registered = true;
                    warnings.recovered();
                }
                Ok(_) => {}
                Err(RpcError::Application(refused)) => {
                    warnings.failed("the coordinator refused the registration", &refused);
                    registered = false;
                }
                Err(error) => {
                    let what = if registered {
                        "lost the coordinator"
                    } else {
                        "cannot register with the coordinator"
                    };
                    warnings.failed(what, &error);
                    registered = false;
                }
            }
        }
    })
}

/// How long a lookup waits for one of several coordinators; see
/// [`CoordinatorResolver::union`].
pub const DIRECTORY_TIMEOUT: Duration = Duration::from_secs(2);

/// The live workers a coordinator knows (or several coordinators: the
/// union of what they know), as a [`Resolver`] for
/// [`rpc_core::Pool::follow`]: a pool that follows it tracks workers as
/// they come and go. With several, one that is down or restarting loses
/// nothing while another still lists the workers.
#[derive(Debug, Clone)]
pub struct CoordinatorResolver {
    directories: Vec<DirectoryClient>,
}

impl CoordinatorResolver {
    /// Asks the coordinator `client` connects to.
    pub fn new(client: Client) -> CoordinatorResolver {
        CoordinatorResolver::union([client])
    }

    /// Asks every coordinator the clients connect to, and lists each
    /// worker any of them knows once (by name; the first coordinator that
    /// lists a name gives its entry). A coordinator that does not answer
    /// within [`DIRECTORY_TIMEOUT`] is left out of that lookup. Workers join each of them
    /// ([`join`] once per coordinator, `worker serve --join A --join B`).
    ///
    /// ```no_run
    /// use rpc_core::Client;
    /// use worker::CoordinatorResolver;
    ///
    /// let directories = CoordinatorResolver::union([
    ///     Client::new("10.0.0.1:7000"),
    ///     Client::new("10.0.0.2:7000"),
    /// ]);
    /// # drop(directories);
    /// ```
    pub fn union(clients: impl IntoIterator<Item = Client>) -> CoordinatorResolver {
        CoordinatorResolver {
            directories: clients.into_iter().map(DirectoryClient::new).collect(),
        }
    }

    /// The live workers' addresses now, or none if no coordinator can be
    /// asked.
    pub async fn resolve_now(&self) -> Vec<String> {
        self.resolve().await.unwrap_or_default()
    }

    /// The live workers now: every worker some coordinator lists, once.
    ///
    /// # Errors
    ///
    /// [`RpcError`] if no coordinator can be asked (the last one's error).
    pub async fn workers(&self) -> Result<Vec<WorkerEntry>, RpcError> {
        // With several, one that hangs (or a client that keeps
        // reconnecting to one that is down) must not hold up the others'
        // answers for longer than a lookup takes.
        let several = self.directories.len() > 1;
        let answers =
            futures_util::future::join_all(self.directories.iter().map(|directory| async move {
                if !several {
                    return directory.workers().await;
                }
                tokio::time::timeout(DIRECTORY_TIMEOUT, directory.workers())
                    .await
                    .unwrap_or_else(|_| {
                        Err(RpcError::Unavailable(format!(
                            "the coordinator at {} did not answer within {} s",
                            directory.client().addr(),
                            DIRECTORY_TIMEOUT.as_secs()
                        )))
                    })
            }))
            .await;
        let mut last_error = None;
        let mut asked = false;
        let mut seen = HashSet::new();
        let mut workers = Vec::new();
        for answer in answers {
            match answer {
                Ok(entries) => {
                    asked = true;
                    for entry in entries {
                        if seen.insert(entry.registration.name.clone()) {
                            workers.push(entry);
                        }
                    }
                }
                Err(error) => last_error = Some(error),
            }
        }
        match (asked, last_error) {
            (false, Some(error)) => Err(error),
            _ => Ok(workers),
        }
    }
}

impl Resolver for CoordinatorResolver {
    fn resolve(&self) -> ResolveFuture<'_> {
        Box::pin(async move {
            let workers = self.workers().await.map_err(std::io::Error::other)?;
            Ok(workers
                .into_iter()
                .map(|entry| entry.registration.addr)
                .collect())
        })
    }
}
