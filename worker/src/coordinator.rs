//! The coordinator: a directory of live workers. Workers register (name,
//! address, capacity, load, modules held) and keep re-registering as a
//! heartbeat; clients ask it for the live ones; a worker that stops
//! heartbeating drops out after the entry's time to live.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rpc_core::{Client, PeerRole, ResolveFuture, Resolver, RpcError, Server, ServerBuilder};

use crate::directory::{Registration, WorkerEntry};
use crate::functions::{Directory, DirectoryClient, DirectoryServer};
use crate::warnings::WarnOnChange;
use crate::{lock, roles};

/// The default time a registration stays valid without a heartbeat: 6 s.
pub const DEFAULT_TTL: Duration = Duration::from_secs(6);

#[derive(Debug)]
struct Roster {
    ttl: Duration,
    workers: Mutex<HashMap<String, (Registration, Instant)>>,
}

impl Roster {
    fn register(&self, registration: Registration) -> u64 {
        let mut workers = lock(&self.workers);
        workers.insert(registration.name.clone(), (registration, Instant::now()));
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// The registrations renewed within the TTL; older ones are dropped.
    fn unexpired(
        &self,
        now: Instant,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (Registration, Instant)>> {
        let mut workers = lock(&self.workers);
        workers.retain(|_, (_, seen)| now.duration_since(*seen) < self.ttl);
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
            .map(|(registration, seen)| WorkerEntry {
                registration: registration.clone(),
                last_seen_ms: u64::try_from(now.duration_since(*seen).as_millis())
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
/// It is also the relay for workers that accept no connections
/// ([`relay_worker`](crate::relay_worker)): clients send their jobs to the
/// coordinator as if it were a worker, and it hands them over.
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
    crate::relay::add_relay(server, live)
}

impl Directory for Roster {
    async fn register(&self, registration: Registration) -> u64 {
        Roster::register(self, registration)
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
    let directory = DirectoryClient::new(client);
    tokio::spawn(async move {
        let client = directory.client();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut registered = false;
        let mut warnings = WarnOnChange::default();
        loop {
            ticker.tick().await;
            match directory.register(registration()).await {
                Ok(_) if !registered => {
                    tracing::info!(coordinator = client.addr(), "registered");
                    registered = true;
                    warnings.recovered();
                }
                Ok(_) => {}
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

/// The live workers a coordinator knows, as a [`Resolver`] for
/// [`rpc_core::Pool::follow`]: a pool that follows it tracks workers as
/// they come and go.
#[derive(Debug, Clone)]
pub struct CoordinatorResolver {
    directory: DirectoryClient,
}

impl CoordinatorResolver {
    /// Asks the coordinator `client` connects to.
    pub fn new(client: Client) -> CoordinatorResolver {
        CoordinatorResolver {
            directory: DirectoryClient::new(client),
        }
    }

    /// The live workers' addresses now, or none if the coordinator cannot
    /// be asked.
    pub async fn resolve_now(&self) -> Vec<String> {
        self.resolve().await.unwrap_or_default()
    }

    /// The live workers now.
    ///
    /// # Errors
    ///
    /// [`RpcError`] if the coordinator cannot be asked.
    pub async fn workers(&self) -> Result<Vec<WorkerEntry>, RpcError> {
        self.directory.workers().await
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
