//! The relaying side: the workers attached to a supernode, the tickets it
//! hands them, and the connections it joins, within budgets for the whole
//! process.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore, oneshot, watch};
use tokio::time::{Instant, timeout};

use super::Ticket;
use super::preamble::{self, read_frame, write_message};
use super::splice::{Bandwidth, splice};
use crate::wire::{DecodeError, Join, Message, Route, StatusCode, TICKET_LEN};

/// The default for [`SupernodeConfig::max_workers`]: 64.
pub const DEFAULT_MAX_RELAYED_WORKERS: usize = 64;
/// The default for [`SupernodeConfig::max_routes`]: 1024.
pub const DEFAULT_MAX_ROUTES: usize = 1024;

/// Limits of a [`Supernode`], each for the whole process.
#[derive(Clone, Debug)]
pub struct SupernodeConfig {
    /// Relayed workers attached at once; a further one is refused until
    /// one leaves. The default is [`DEFAULT_MAX_RELAYED_WORKERS`], 64.
    pub max_workers: usize,
    /// Relayed connections open at once, over every worker. The default
    /// is [`DEFAULT_MAX_ROUTES`], 1024.
    pub max_routes: usize,
    /// Connections that asked for a worker and wait for it to dial back:
    /// the budget of peers nobody has authenticated yet. The default is
    /// 128.
    pub max_waiting_routes: usize,
    /// Relayed bytes a second, both ways and over every connection, on
    /// average (bursts up to one second's worth). `None`, the default,
    /// relays as fast as the network goes.
    pub max_bytes_per_sec: Option<u64>,
    /// How long a worker has to dial back once asked. The default is 5 s.
    pub route_timeout: Duration,
    /// How long a worker that stopped asking for connections stays
    /// attached (it may be between two polls). The default is 3 s.
    pub attach_grace: Duration,
}

impl Default for SupernodeConfig {
    fn default() -> Self {
        SupernodeConfig {
            max_workers: DEFAULT_MAX_RELAYED_WORKERS,
            max_routes: DEFAULT_MAX_ROUTES,
            max_waiting_routes: 128,
            max_bytes_per_sec: None,
            route_timeout: Duration::from_secs(5),
            attach_grace: Duration::from_secs(3),
        }
    }
}

/// Why a worker could not attach to a supernode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    /// Every place for a relayed worker is taken.
    #[error(
        "this supernode relays for {max} workers already, its limit: attach to another supernode"
    )]
    Full {
        /// [`SupernodeConfig::max_workers`].
        max: usize,
    },
    /// The name is empty or longer than 1024 bytes.
    #[error("a relayed worker's name must be 1 to 1024 bytes")]
    InvalidName,
    /// Another caller is attached under the name now: names are bound to
    /// who attached them until they stop polling (and the grace ends).
    #[error("another worker is attached under this name here: choose another name")]
    Taken,
}

/// The relaying side: workers attached to this server, and the
/// connections it joins to them. Cheap to clone; give it to
/// [`ServerBuilder::supernode`](crate::ServerBuilder::supernode) so the
/// server answers `Route` and `Join` frames.
#[derive(Clone, Debug)]
pub struct Supernode {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: SupernodeConfig,
    workers: Mutex<HashMap<String, Attached>>,
    tickets: Mutex<HashMap<Ticket, oneshot::Sender<TcpStream>>>,
    routes: Arc<Semaphore>,
    waiting: Arc<Semaphore>,
    bandwidth: Option<Bandwidth>,
    relayed_bytes: std::sync::atomic::AtomicU64,
}

/// A relayed worker as its supernode sees it.
#[derive(Debug)]
struct Attached {
    dials: VecDeque<Ticket>,
    ready: Arc<Notify>,
    /// Its polls waiting now.
    polling: usize,
    /// When its last poll ended (it is attached while it polls, and for
    /// the grace after).
    idle_since: Instant,
    /// Who attached it: only the same caller may poll under its name
    /// while it is alive.
    owner: u64,
}

impl Attached {
    fn is_alive(&self, grace: Duration) -> bool {
        self.polling > 0 || self.idle_since.elapsed() < grace
    }
}

impl Supernode {
    /// A supernode with `config`'s limits.
    pub fn new(config: SupernodeConfig) -> Supernode {
        Supernode {
            inner: Arc::new(Inner {
                routes: Arc::new(Semaphore::new(config.max_routes.max(1))),
                waiting: Arc::new(Semaphore::new(config.max_waiting_routes.max(1))),
                bandwidth: config.max_bytes_per_sec.map(Bandwidth::new),
                workers: Mutex::default(),
                tickets: Mutex::default(),
                relayed_bytes: Default::default(),
                config,
            }),
        }
    }

    /// Its limits.
    pub fn config(&self) -> &SupernodeConfig {
        &self.inner.config
    }

    /// Relayed workers attached now.
    pub fn attached(&self) -> usize {
        let grace = self.inner.config.attach_grace;
        self.workers()
            .values()
            .filter(|worker| worker.is_alive(grace))
            .count()
    }

    /// Its state for [`Metrics`](crate::metrics::Metrics), read on every
    /// scrape: `rpc_supernode_attached_workers` and
    /// `rpc_supernode_max_workers`, `rpc_supernode_connections` and
    /// `rpc_supernode_max_connections` (relayed connections open, and the
    /// cap), and `rpc_supernode_relayed_bytes` (a counter, both ways). A
    /// server made with [`ServerBuilder::supernode`](crate::ServerBuilder::supernode)
    /// registers it itself.
    ///
    /// ```
    /// use rpc_core::metrics::Metrics;
    /// use rpc_core::relay::{Supernode, SupernodeConfig};
    ///
    /// let supernode = Supernode::new(SupernodeConfig::default());
    /// let metrics = Metrics::new();
    /// metrics.register_collector(supernode.collector());
    /// assert!(metrics.encode().contains("rpc_supernode_attached_workers 0"));
    /// ```
    pub fn collector(&self) -> SupernodeCollector {
        SupernodeCollector {
            supernode: self.clone(),
        }
    }

    /// Relayed connections open now.
    pub fn routes_open(&self) -> usize {
        self.inner.config.max_routes.max(1) - self.inner.routes.available_permits()
    }

    /// Connections waiting for their worker to dial back now.
    #[cfg(test)]
    pub(crate) fn waiting_routes(&self) -> usize {
        self.inner.config.max_waiting_routes.max(1) - self.inner.waiting.available_permits()
    }

    /// Tickets handed out and not yet used.
    #[cfg(test)]
    pub(crate) fn tickets_outstanding(&self) -> usize {
        self.tickets().len()
    }

    /// Bytes relayed so far, both ways, counted as they pass.
    pub fn relayed_bytes(&self) -> u64 {
        self.inner
            .relayed_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A relayed worker's long poll: attaches `worker` (or keeps it
    /// attached) and returns the tickets of the connections it should open
    /// now, waiting up to `wait` for one. An empty list means none came in
    /// time: poll again. The call that attaches returns at once, with no
    /// tickets, to confirm the attachment. The worker stays attached while
    /// it polls and for [`SupernodeConfig::attach_grace`] after.
    ///
    /// `owner` says who is polling ([`Context::principal`](crate::Context::principal)
    /// in a function that serves this): while the worker is attached, only
    /// the same owner may poll under its name, so one caller cannot take
    /// another's connections by naming itself as it.
    ///
    /// # Errors
    ///
    /// [`AttachError`] if the name is not valid, taken by another owner,
    /// or no place is left.
    pub async fn wait_for_dials(
        &self,
        worker: &str,
        owner: u64,
        wait: Duration,
    ) -> Result<Vec<Ticket>, AttachError> {
        if worker.is_empty() || worker.len() > crate::wire::MAX_NAME_LEN {
            return Err(AttachError::InvalidName);
        }
        let ready = {
            let mut workers = self.workers();
            let grace = self.inner.config.attach_grace;
            match workers.get(worker) {
                Some(attached) if attached.owner == owner => {}
                Some(attached) if attached.is_alive(grace) => return Err(AttachError::Taken),
                // Gone past its grace: the name is free again, and what
                // was queued for the old owner is not handed to the new.
                Some(_) => {
                    workers.remove(worker);
                }
                None => {}
            }
            if !workers.contains_key(worker) {
                workers.retain(|_, attached| attached.is_alive(grace));
                if workers.len() >= self.inner.config.max_workers {
                    return Err(AttachError::Full {
                        max: self.inner.config.max_workers,
                    });
                }
                tracing::info!(worker, "relayed worker attached");
                workers.insert(
                    worker.to_owned(),
                    Attached {
                        dials: VecDeque::new(),
                        ready: Arc::new(Notify::new()),
                        polling: 0,
                        idle_since: Instant::now(),
                        owner,
                    },
                );
                // The first poll returns at once: it confirms the
                // attachment, so the worker can say where it is reached.
                return Ok(Vec::new());
            }
            let attached = workers
                .entry(worker.to_owned())
                .or_insert_with(|| Attached {
                    dials: VecDeque::new(),
                    ready: Arc::new(Notify::new()),
                    polling: 0,
                    idle_since: Instant::now(),
                    owner,
                });
            attached.polling += 1;
            Arc::clone(&attached.ready)
        };
        let _polling = Polling {
            supernode: self,
            worker,
        };
        let deadline = Instant::now() + wait;
        loop {
            let notified = ready.notified();
            let dials: Vec<Ticket> = match self.workers().get_mut(worker) {
                Some(attached) => attached.dials.drain(..).collect(),
                None => Vec::new(),
            };
            if !dials.is_empty() {
                return Ok(dials);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Attached>> {
        self.inner
            .workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn tickets(&self) -> std::sync::MutexGuard<'_, HashMap<Ticket, oneshot::Sender<TcpStream>>> {
        self.inner
            .tickets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the first frame of a connection that starts with `Route` or
    /// `Join` (as [`peek_relay_kind`] found), within `within`.
    pub(crate) async fn read_request(
        &self,
        socket: &mut TcpStream,
        within: Duration,
    ) -> Result<Message, Option<DecodeError>> {
        match timeout(within, read_frame(socket)).await {
            Ok(Ok(frame)) => Ok(frame.message),
            Ok(Err(error)) => Err(Some(error)),
            Err(_) => Err(None),
        }
    }

    /// Relays, joins or refuses a connection whose first frame
    /// [`read_request`](Self::read_request) read.
    pub(crate) async fn serve_request(
        &self,
        socket: TcpStream,
        addr: SocketAddr,
        request: Result<Message, Option<DecodeError>>,
        shutdown: watch::Receiver<Option<Instant>>,
    ) {
        match request {
            Ok(Message::Route(route)) => {
                // A relayed connection ends with the server: at the end of
                // its shutdown's grace.
                tokio::select! {
                    () = self.route(socket, addr, route) => {}
                    () = shutdown_deadline(shutdown) => {}
                }
            }
            Ok(Message::Join(join)) => self.join_ticket(socket, join),
            Ok(other) => {
                let message = format!("expected Route or Join, got {}", other.kind());
                preamble::refuse(socket, StatusCode::BAD_REQUEST, message).await;
            }
            Err(Some(error)) => {
                let status = error.status();
                preamble::refuse(socket, status, error.to_string()).await;
            }
            // Silent past the handshake timeout.
            Err(None) => {}
        }
    }

    /// Asks the worker `route` names to dial back, and joins its
    /// connection to `client`'s.
    async fn route(&self, client: TcpStream, addr: SocketAddr, route: Route) {
        let inner = &self.inner;
        let Ok(waiting) = Arc::clone(&inner.waiting).try_acquire_owned() else {
            let message = "too many connections wait for their worker here; try again later";
            preamble::refuse(client, StatusCode::UNAVAILABLE, message.into()).await;
            return;
        };
        let Ok(place) = Arc::clone(&inner.routes).try_acquire_owned() else {
            let message = format!(
                "this supernode relays {} connections, its limit; try again later",
                inner.config.max_routes
            );
            preamble::refuse(client, StatusCode::UNAVAILABLE, message).await;
            return;
        };
        let mut ticket = [0u8; TICKET_LEN];
        if let Err(error) = getrandom::fill(&mut ticket) {
            let message = format!("the supernode could not make a ticket: {error}");
            preamble::refuse(client, StatusCode::INTERNAL, message).await;
            return;
        }
        let (sender, joined) = oneshot::channel();
        let asked = {
            let mut workers = self.workers();
            match workers.get_mut(&route.worker) {
                Some(attached) if attached.is_alive(inner.config.attach_grace) => {
                    self.tickets().insert(ticket, sender);
                    attached.dials.push_back(ticket);
                    attached.ready.notify_one();
                    true
                }
                _ => false,
            }
        };
        if !asked {
            let message = format!(
                "no worker named {:?} is attached to this supernode; look it up again",
                route.worker
            );
            preamble::refuse(client, StatusCode::NOT_FOUND, message).await;
            return;
        }
        let worker = match timeout(inner.config.route_timeout, joined).await {
            Ok(Ok(worker)) => worker,
            _ => {
                self.tickets().remove(&ticket);
                let message = format!(
                    "the worker {:?} did not dial back within {} ms",
                    route.worker,
                    inner.config.route_timeout.as_millis()
                );
                preamble::refuse(client, StatusCode::DEADLINE_EXCEEDED, message).await;
                return;
            }
        };
        drop(waiting);
        let mut client = client;
        if write_message(&mut client, Message::Routed).await.is_err() {
            return;
        }
        tracing::debug!(peer = %addr, worker = %route.worker, "relaying");
        splice(
            client,
            &[],
            worker,
            &[],
            inner.bandwidth.as_ref(),
            &inner.relayed_bytes,
        )
        .await;
        drop(place);
    }

    /// Hands a worker's connection to the client its ticket was made for.
    fn join_ticket(&self, socket: TcpStream, join: Join) {
        let waiter = self.tickets().remove(&join.ticket);
        match waiter {
            Some(waiter) => {
                // A client that gave up drops the connection with it.
                let _ = waiter.send(socket);
            }
            None => {
                tokio::spawn(preamble::refuse(
                    socket,
                    StatusCode::NOT_FOUND,
                    "the ticket is unknown or already used".into(),
                ));
            }
        }
    }
}

/// Resolves when the server's shutdown grace is over.
async fn shutdown_deadline(mut shutdown: watch::Receiver<Option<Instant>>) {
    let deadline = loop {
        if let Some(deadline) = *shutdown.borrow_and_update() {
            break deadline;
        }
        if shutdown.changed().await.is_err() {
            return std::future::pending().await;
        }
    };
    tokio::time::sleep_until(deadline).await;
}

/// Marks a worker's poll as ended when it is done or dropped (its caller
/// left).
struct Polling<'a> {
    supernode: &'a Supernode,
    worker: &'a str,
}

impl Drop for Polling<'_> {
    fn drop(&mut self) {
        if let Some(attached) = self.supernode.workers().get_mut(self.worker) {
            attached.polling = attached.polling.saturating_sub(1);
            attached.idle_since = Instant::now();
        }
    }
}

/// A supernode's load and limits, read on every scrape; from
/// [`Supernode::collector`].
#[derive(Debug)]
pub struct SupernodeCollector {
    supernode: Supernode,
}

impl prometheus_client::collector::Collector for SupernodeCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::MetricType;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;

        let config = self.supernode.config();
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let gauges = [
            (
                "rpc_supernode_attached_workers",
                "Relayed workers attached to this supernode now.",
                count(self.supernode.attached()),
            ),
            (
                "rpc_supernode_max_workers",
                "Relayed workers this supernode takes at most.",
                count(config.max_workers),
            ),
            (
                "rpc_supernode_connections",
                "Connections this supernode relays now.",
                count(self.supernode.routes_open()),
            ),
            (
                "rpc_supernode_max_connections",
                "Connections this supernode relays at most at once.",
                count(config.max_routes),
            ),
        ];
        for (name, help, value) in gauges {
            ConstGauge::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Gauge,
            )?)?;
        }
        ConstCounter::new(self.supernode.relayed_bytes()).encode(encoder.encode_descriptor(
            "rpc_supernode_relayed_bytes",
            "Bytes relayed, both ways over every connection, as they pass.",
            None,
            MetricType::Counter,
        )?)
    }
}
