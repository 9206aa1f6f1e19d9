//! A relayed worker's side of supernodes: find them in the directory,
//! measure the round trip to each, attach to the fastest with room (to
//! several, for several routes), open the connections they ask for, and
//! replace one that dies.

mod link;

use std::collections::VecDeque;
use std::time::Duration;

use rpc_core::relay::JoinedIntake;
use rpc_core::{Client, ClientConfig, MAX_ROUTES_PER_ADDRESS};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::coordinator::{CoordinatorResolver, join_when};
use crate::directory::Registration;
use crate::warnings::WarnOnChange;
use link::{Ended, Event};

/// Supernodes whose round trip is measured at most, per attachment.
const MAX_MEASURED: usize = 8;
/// The default for [`AttachConfig::routes`]: two supernodes, so that
/// clients have a route left while one that died is replaced, and choose
/// the faster of two from where they are.
pub const DEFAULT_RELAY_ROUTES: usize = 2;

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
    /// Supernodes it attaches to at once, each a route clients may take
    /// (at least 1, at most [`MAX_ROUTES_PER_ADDRESS`]; [`DEFAULT_RELAY_ROUTES`]).
    /// It registers them all, as `name@a,name@b`, and clients keep the
    /// fastest from where they are.
    pub routes: usize,
    /// Whether the worker's server speaks TLS. Its routes are then
    /// `tls://name@supernode`, whatever the supernode speaks: TLS runs end
    /// to end, from the client through the supernode to the worker.
    pub serves_tls: bool,
}

/// A relayed worker at work: attached (or attaching) to its supernodes and
/// registered through them. Dropping it stops both.
#[derive(Debug)]
pub struct Attachment {
    tasks: Vec<JoinHandle<()>>,
    route: watch::Receiver<Option<String>>,
}

impl Attachment {
    /// The address clients reach it at now (`name@supernode`, or with
    /// several routes `name@a,name@b`), if it is attached.
    pub fn route(&self) -> Option<String> {
        self.route.borrow().clone()
    }

    /// The routes of [`route`](Self::route), one address each.
    pub fn routes(&self) -> Vec<String> {
        self.route()
            .map(|route| route.split(',').map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Waits until it is attached at an address other than `not` (any
    /// address, with `None`), for at most `within`; the address.
    pub async fn attached(&mut self, not: Option<&str>, within: Duration) -> Option<String> {
        self.attached_where(within, |route| route != not.unwrap_or_default())
            .await
    }

    /// Waits until its address satisfies `wanted`, for at most `within`;
    /// the address.
    pub async fn attached_where(
        &mut self,
        within: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let found = timeout(
            within,
            self.route
                .wait_for(|route| route.as_deref().is_some_and(&wanted)),
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
/// to the `config.routes` fastest supernodes with room that
/// `config.directories` list, hands the connections they ask it to open
/// for clients to `intake` (the worker's server, made with
/// [`ServerBuilder::serve_joined`](rpc_core::ServerBuilder::serve_joined)),
/// and registers with every directory as `name@supernode` (one route per
/// supernode, separated by commas), calling `registration` with that
/// address for the rest. When a supernode goes away, the worker keeps its
/// other routes, attaches to the next supernode and registers again at
/// once. With no supernode listed it attaches to the directories
/// themselves, and leaves them as soon as one is.
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
///     routes: worker::DEFAULT_RELAY_ROUTES,
///     serves_tls: false,
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
    mut config: AttachConfig,
    registration: impl Fn(String) -> Registration + Send + Sync + 'static,
) -> Attachment {
    config.routes = config.routes.clamp(1, MAX_ROUTES_PER_ADDRESS);
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
        let (events, reports) = mpsc::channel(MAX_ROUTES_PER_ADDRESS * 2);
        let mut attaching = Attaching {
            config,
            intake,
            route: route_sender,
            changed,
            warnings: WarnOnChange::default(),
            held: Vec::new(),
            shunned: VecDeque::new(),
            events,
        };
        attaching.run(reports).await;
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
    /// The supernodes it is attached or attaching to, in the order they
    /// took it.
    held: Vec<Held>,
    /// Supernodes lost or that refused lately: measured last.
    shunned: VecDeque<String>,
    /// Where each attachment's task reports.
    events: mpsc::Sender<Event>,
}

/// One supernode the worker is attached (or attaching) to.
struct Held {
    addr: String,
    /// A directory standing in, because no supernode was listed.
    fallback: bool,
    /// Whether it has taken the worker yet.
    attached: bool,
    /// Set to make the task stop polling (between polls) after
    /// [`link::RETIRE_AFTER`].
    retire: watch::Sender<bool>,
    /// `None` once retired: the task then ends by itself.
    task: Option<JoinHandle<()>>,
}

impl Held {
    /// Lets the task finish on its own: it keeps opening the connections
    /// it is asked for a while, then stops between two polls.
    fn retire(mut self) {
        self.retire.send_replace(true);
        self.task = None;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Attaching {
    async fn run(&mut self, mut reports: mpsc::Receiver<Event>) {
        // While short of routes, look for more: often while nothing is
        // found or something was just lost, then less and less often
        // (up to `slowest`), so that many workers short of supernodes do
        // not keep the directories busy.
        let quick = self.config.heartbeat / 2;
        let slowest = self.config.heartbeat * 8;
        let mut pause = quick;
        let mut next_fill = tokio::time::Instant::now();
        let mut retry = tokio::time::interval(quick);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.real_routes() < self.config.routes && tokio::time::Instant::now() >= next_fill {
                let started = self.fill().await;
                pause = if started || self.held.is_empty() {
                    quick
                } else {
                    (pause * 2).min(slowest)
                };
                next_fill = tokio::time::Instant::now() + pause;
            }
            self.publish();
            tokio::select! {
                report = reports.recv() => match report {
                    Some(report) => {
                        if matches!(report, Event::Ended(..)) {
                            next_fill = tokio::time::Instant::now();
                        }
                        self.take(report);
                    }
                    // Never: this loop holds a sender.
                    None => return,
                },
                _ = retry.tick() => {}
            }
        }
    }

    /// Supernodes held that are not directories standing in.
    fn real_routes(&self) -> usize {
        self.held.iter().filter(|held| !held.fallback).count()
    }

    fn take(&mut self, report: Event) {
        match report {
            Event::Attached(addr) => {
                let Some(held) = self.held.iter_mut().find(|held| held.addr == addr) else {
                    return;
                };
                held.attached = true;
                let fallback = held.fallback;
                tracing::info!(supernode = %addr, fallback, "attached");
                self.warnings.recovered();
                if !fallback && self.held.iter().any(|held| held.fallback) {
                    // The coordinator relays only when no supernode does.
                    tracing::info!("a supernode took the worker; leaving the directories' relay");
                    let (standing_in, supernodes) = std::mem::take(&mut self.held)
                        .into_iter()
                        .partition(|held| held.fallback);
                    self.held = supernodes;
                    for held in standing_in {
                        Held::retire(held);
                    }
                }
            }
            Event::Ended(addr, ended) => {
                self.held.retain(|held| held.addr != addr);
                match ended {
                    Ended::Refused(reason) => {
                        tracing::info!(supernode = %addr, %reason, "supernode refused");
                    }
                    Ended::Lost(error) => {
                        tracing::warn!(supernode = %addr, %error, "lost a supernode; attaching to another");
                    }
                }
                self.shunned.retain(|shunned| shunned != &addr);
                if self.shunned.len() >= MAX_MEASURED {
                    self.shunned.pop_front();
                }
                self.shunned.push_back(addr);
            }
        }
    }

    /// Registers the routes of the supernodes that took it, if they
    /// changed.
    fn publish(&self) {
        let routes: Vec<String> = self
            .held
            .iter()
            .filter(|held| held.attached)
            .map(|held| link::route_addr(&self.config.name, &held.addr, self.config.serves_tls))
            .collect();
        let route = (!routes.is_empty()).then(|| routes.join(","));
        if *self.route.borrow() != route {
            tracing::info!(
                route = route.as_deref().unwrap_or("none"),
                "clients reach the worker at"
            );
            self.route.send_replace(route);
            self.changed.send_replace(());
        }
    }

    /// Attaches to more supernodes, the fastest with room first, until it
    /// holds as many as it wants (or none is left to try). With none
    /// listed, and nothing held, the directories stand in. Whether it
    /// started attaching to any.
    async fn fill(&mut self) -> bool {
        let listed = self.listed_supernodes().await;
        let (candidates, fallback) = if listed.is_empty() {
            if self.held.iter().any(|held| !held.fallback) {
                return false;
            }
            let directories = self
                .config
                .directories
                .iter()
                .map(|directory| directory.addr().to_owned())
                .collect();
            (directories, true)
        } else {
            (listed, false)
        };
        let wanted = if fallback {
            self.config.routes.saturating_sub(self.held.len())
        } else {
            self.config.routes.saturating_sub(self.real_routes())
        };
        let mut candidates: Vec<String> = candidates
            .into_iter()
            .filter(|addr| !self.held.iter().any(|held| &held.addr == addr))
            .collect();
        if wanted == 0 || candidates.is_empty() {
            if self.held.is_empty() {
                self.warnings.failed(
                    "no supernode to attach to",
                    &"the directories list none that answers, and cannot be asked themselves",
                );
            }
            return false;
        }
        candidates.truncate(MAX_MEASURED);
        let mut ranked = link::measure(&self.config, candidates).await;
        // Those lost or refused lately go last: they may be back, but try
        // the others first.
        ranked.sort_by_key(|measured| self.shunned.contains(&measured.addr));
        if ranked.is_empty() && self.held.is_empty() {
            self.warnings.failed(
                "no supernode to attach to",
                &"none of those listed answered a ping",
            );
        }
        let mut started = false;
        for measured in ranked.into_iter().take(wanted) {
            started = true;
            tracing::debug!(supernode = %measured.addr, rtt = ?measured.rtt, "attaching");
            let addr = measured.addr.clone();
            let (retire, retired) = watch::channel(false);
            let task = tokio::spawn(link::serve(
                self.config.name.clone(),
                self.intake.clone(),
                measured,
                self.events.clone(),
                retired,
            ));
            self.held.push(Held {
                addr,
                fallback,
                attached: false,
                retire,
                task: Some(task),
            });
        }
        started
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
}
