//! A pool of servers: spreads requests over them by expected cost (power of
//! two choices over outstanding requests times a moving average of round
//! trips), takes failing servers out of rotation with backoff, and sends a
//! request that failed because its server did to another one.

mod discovery;
mod member;

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::{Client, ClientConfig};
use crate::error::RpcError;
pub use discovery::{DnsResolver, ResolveFuture, Resolver};
use member::Member;
pub use member::MemberStatus;

/// Settings of a [`Pool`]. Every field has a default.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// How each server's client connects (token, timeouts, TLS).
    pub client: ClientConfig,
    /// The longest one attempt on one server may take before the pool gives
    /// up on that server (a server that accepts but never answers) and
    /// tries another. The default is 30 s.
    pub attempt_timeout: Duration,
    /// The longest a request may take across all its attempts. The default
    /// is 120 s.
    pub deadline: Duration,
    /// Attempts per request at most. The default is 8.
    pub max_attempts: u32,
    /// How long a failed server first stays out of rotation; each failure in
    /// a row doubles it. The default is 200 ms.
    pub eject_initial: Duration,
    /// The longest a failed server stays out before it is tried again. The
    /// default is 10 s.
    pub eject_max: Duration,
    /// How often every server is pinged: one that does not answer within
    /// the interval is taken out of rotation and its requests in flight are
    /// sent to another server (each still gets one result); one that is
    /// out and answers is taken back at once. `None` checks servers only
    /// through the requests they serve. The default is 1 s.
    pub health_interval: Option<Duration>,
}

impl Default for PoolConfig {
    fn default() -> PoolConfig {
        PoolConfig {
            client: ClientConfig::default(),
            attempt_timeout: Duration::from_secs(30),
            deadline: Duration::from_secs(120),
            max_attempts: 8,
            eject_initial: Duration::from_millis(200),
            eject_max: Duration::from_secs(10),
            health_interval: Some(Duration::from_secs(1)),
        }
    }
}

/// Errors a pool can sort: a failure of the server (it is unreachable, went
/// away mid-request, is shutting down) means another server may succeed; any
/// other error is the request's own answer.
pub trait ServerFailure {
    /// Whether the server, not the request, failed.
    fn is_server_failure(&self) -> bool;

    /// Whether this server failure lasts until someone changes a
    /// configuration (a certificate that is not trusted, say): asking the
    /// same server again soon is pointless, and once every server of the
    /// pool failed so, the request fails at once. The default is `false`.
    fn is_lasting(&self) -> bool {
        false
    }
}

impl<E> ServerFailure for RpcError<E> {
    fn is_server_failure(&self) -> bool {
        // A server whose certificate is not trusted (expired, say) fails
        // like one that cannot be reached: another may do.
        matches!(self, RpcError::Unavailable(_) | RpcError::Tls(_))
    }

    fn is_lasting(&self) -> bool {
        matches!(self, RpcError::Tls(_))
    }
}

/// Clients to several servers offering the same functions, used as one.
/// Cheap to clone; clones share servers and statistics.
///
/// A request goes to the cheaper of two servers drawn at random, cost being
/// its outstanding requests times its moving-average round trip, so slow
/// or busy servers get less. A server that fails (or takes longer than
/// [`PoolConfig::attempt_timeout`]) is taken out of rotation with a
/// doubling backoff, then given one request to prove it is back. A request
/// whose server failed is sent to another one, until it gets an answer, runs
/// out of attempts or passes [`PoolConfig::deadline`]; so requests sent
/// through a pool must be safe to repeat (idempotent, or deterministic jobs).
///
/// ```no_run
/// use rpc_core::{Pool, PoolConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rpc_core::RpcError> {
/// let pool = Pool::new(["10.0.0.1:7000", "10.0.0.2:7000"], PoolConfig::default());
/// let sum: i64 = pool.call("add", &(2, 3)).await?;
/// println!("2 + 3 = {sum}");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Pool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    members: RwLock<Arc<Vec<Arc<Member>>>>,
    config: PoolConfig,
    /// Set once the health checks run (they start with the first request,
    /// inside a runtime).
    health_started: AtomicBool,
}

impl Pool {
    /// A pool over `addrs` (host:port). Connections open on first use.
    pub fn new<I, S>(addrs: I, mut config: PoolConfig) -> Pool
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        // Another server is a better bet than waiting for this one.
        config.client.max_reconnects = config.client.max_reconnects.or(Some(0));
        let pool = Pool {
            inner: Arc::new(Inner {
                members: RwLock::new(Arc::new(Vec::new())),
                config,
                health_started: AtomicBool::new(false),
            }),
        };
        pool.set_addresses(addrs);
        pool
    }

    /// Replaces the servers: those still listed keep their connection and
    /// statistics, new ones are added, the others are dropped (their
    /// requests in flight finish). For discovery that re-resolves names.
    pub fn set_addresses<I, S>(&self, addrs: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let old = self.members();
        let mut members: Vec<Arc<Member>> = Vec::new();
        for addr in addrs {
            let addr = addr.into();
            if members.iter().any(|member| member.addr == addr) {
                continue;
            }
            let member = match old.iter().find(|member| member.addr == addr) {
                Some(member) => Arc::clone(member),
                None => Arc::new(Member::new(
                    addr.clone(),
                    Client::with_config(addr.clone(), self.inner.config.client.clone()),
                )),
            };
            members.push(member);
        }
        *self
            .inner
            .members
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(members);
    }

    /// What the pool knows about each server.
    pub fn status(&self) -> Vec<MemberStatus> {
        self.members()
            .iter()
            .map(|member| member.status())
            .collect()
    }

    /// A collector of the members' health for [`Metrics`](crate::metrics::Metrics),
    /// labelled `pool="name"`: `rpc_pool_member_healthy` (1 in rotation, 0
    /// ejected), `rpc_pool_member_outstanding`, `rpc_pool_member_rtt_seconds`
    /// and `rpc_pool_member_picks_total`, each with a `member` label.
    ///
    /// ```
    /// use rpc_core::metrics::Metrics;
    /// use rpc_core::{Pool, PoolConfig};
    ///
    /// let pool = Pool::new(["10.0.0.1:7070", "10.0.0.2:7070"], PoolConfig::default());
    /// let metrics = Metrics::new();
    /// metrics.register_collector(pool.collector("workers"));
    /// assert!(metrics.encode().contains(r#"rpc_pool_member_healthy{pool="workers",member="10.0.0.1:7070"} 1"#));
    /// ```
    pub fn collector(&self, name: impl Into<String>) -> PoolCollector {
        PoolCollector {
            name: name.into(),
            pool: self.clone(),
        }
    }

    /// Calls `method` on one of the servers, on another if that one fails.
    ///
    /// # Errors
    ///
    /// The function's answer if it was an error, or the last server failure
    /// once attempts or the deadline ran out.
    pub async fn call<A, R>(&self, method: &str, args: &A) -> Result<R, RpcError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.dispatch(|client| async move { client.call(method, args).await })
            .await
    }

    /// Runs `request` with the client of a server chosen as above, again
    /// with another server's while it reports a [server
    /// failure](ServerFailure).
    ///
    /// # Errors
    ///
    /// The request's own error, or the last server failure (or
    /// `unavailable` if no server could be tried) once attempts or the
    /// deadline ran out.
    pub async fn dispatch<T, E, F, Fut>(&self, request: F) -> Result<T, E>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: ServerFailure + From<RpcError>,
    {
        self.start_health_checks();
        let config = &self.inner.config;
        let deadline = Instant::now() + config.deadline;
        let mut last_failure = None;
        // Servers that failed in a way that lasts (a TLS misconfiguration):
        // when they are all of them, waiting for one to come back is
        // pointless.
        let mut lasting: Vec<Arc<Member>> = Vec::new();
        for _ in 0..config.max_attempts {
            let Some(member) = self.pick(deadline).await else {
                break;
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let started = Instant::now();
            member.start();
            let attempt = tokio::time::timeout(
                config.attempt_timeout.min(remaining),
                request(member.client.clone()),
            );
            // A server that health checks find silent (stopped, cut off)
            // would hold the request until its timeout: give up on it
            // then; dropping the attempt cancels it there.
            let attempt = tokio::select! {
                attempt = attempt => attempt,
                () = member.fell_silent() => Ok(Err(E::from(RpcError::Unavailable(format!(
                    "{} stopped answering health checks", member.addr
                ))))),
            };
            let elapsed = started.elapsed();
            match attempt {
                Ok(Ok(value)) => {
                    member.finish(elapsed, true);
                    return Ok(value);
                }
                Ok(Err(error)) if !error.is_server_failure() => {
                    member.finish(elapsed, false);
                    member.answered();
                    return Err(error);
                }
                Ok(Err(error)) => {
                    member.finish(elapsed, false);
                    tracing::debug!(server = %member.addr, "server failed; trying another");
                    if error.is_lasting() {
                        member.eject(config.eject_max, config.eject_max);
                        if !lasting.iter().any(|known| Arc::ptr_eq(known, &member)) {
                            lasting.push(Arc::clone(&member));
                        }
                    } else {
                        member.eject(config.eject_initial, config.eject_max);
                    }
                    last_failure = Some(error);
                    let members = self.members();
                    if members
                        .iter()
                        .all(|m| lasting.iter().any(|known| Arc::ptr_eq(known, m)))
                    {
                        break;
                    }
                }
                Err(_) => {
                    member.finish(elapsed, false);
                    tracing::debug!(server = %member.addr, "server too slow; trying another");
                    member.eject(config.eject_initial, config.eject_max);
                    last_failure = Some(E::from(RpcError::Unavailable(format!(
                        "{} did not answer within {:?}",
                        member.addr, config.attempt_timeout
                    ))));
                }
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        Err(last_failure.unwrap_or_else(|| {
            E::from(RpcError::Unavailable(
                "no server of the pool could take the request".into(),
            ))
        }))
    }

    /// Starts pinging the servers every [`PoolConfig::health_interval`],
    /// once, until the pool is dropped.
    fn start_health_checks(&self) {
        let Some(interval) = self.inner.config.health_interval else {
            return;
        };
        if self.inner.health_started.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(inner) = pool.upgrade() else { return };
                let backoff = (inner.config.eject_initial, inner.config.eject_max);
                let members = Pool { inner }.members();
                let checks = members
                    .iter()
                    .map(|member| check(member, interval, backoff));
                futures_util::future::join_all(checks).await;
            }
        });
    }

    fn members(&self) -> Arc<Vec<Arc<Member>>> {
        Arc::clone(
            &self
                .inner
                .members
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// The cheaper of two available servers drawn at random; if none is
    /// available, waits for the first to come back, until `deadline`.
    async fn pick(&self, deadline: Instant) -> Option<Arc<Member>> {
        loop {
            let members = self.members();
            let now = Instant::now();
            let available: Vec<&Arc<Member>> = members
                .iter()
                .filter(|member| member.available(now))
                .collect();
            let chosen = match available.len() {
                0 => None,
                1 => available.first().copied(),
                n => {
                    let a = random_below(n);
                    let b = (a + 1 + random_below(n - 1)) % n;
                    match (available.get(a), available.get(b)) {
                        (Some(a), Some(b)) => Some(if b.cost() < a.cost() { *b } else { *a }),
                        _ => None,
                    }
                }
            };
            if let Some(member) = chosen
                && member.admit(now)
            {
                return Some(Arc::clone(member));
            }
            // None available (or lost a race for a probe): wait for the
            // first to come back.
            let next = members
                .iter()
                .filter_map(|member| member.ejected_until())
                .min()
                .unwrap_or(now + Duration::from_millis(10))
                .max(now + Duration::from_millis(1));
            if members.is_empty() || next >= deadline {
                return None;
            }
            tokio::time::sleep_until(next.into()).await;
        }
    }
}

/// Pings one server: out of rotation if it does not answer within
/// `within` (and its requests in flight go elsewhere), back in if it was
/// out and answers.
async fn check(member: &Member, within: Duration, (initial, max): (Duration, Duration)) {
    match tokio::time::timeout(within, member.client.ping()).await {
        Ok(Ok(_)) => {
            if member.ejected_until().is_some() {
                tracing::debug!(server = %member.addr, "answers pings again; back in rotation");
                member.answered();
            }
        }
        _ => {
            if member.ejected_until().is_none() {
                tracing::debug!(server = %member.addr, "does not answer pings; out of rotation");
                member.eject(initial, max);
            }
            member.declare_silent();
        }
    }
}

/// A number in `0..n` (n > 0) from a per-thread xorshift generator: enough
/// randomness for load balancing, no dependency.
fn random_below(n: usize) -> usize {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0x9e37_79b9_7f4a_7c15, |d| d.subsec_nanos().into());
            let local = 0u8;
            seed ^ (&local as *const u8 as u64) | 1
        });
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        usize::try_from(x % n as u64).unwrap_or(0)
    })
}

/// A pool's members' health, read on every scrape; from [`Pool::collector`].
#[derive(Debug)]
pub struct PoolCollector {
    name: String,
    pool: Pool,
}

impl prometheus_client::collector::Collector for PoolCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::MetricType;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;

        let members = self.pool.status();
        let labels =
            |member: &MemberStatus| [("pool", self.name.clone()), ("member", member.addr.clone())];
        let mut healthy = encoder.encode_descriptor(
            "rpc_pool_member_healthy",
            "1 while a pool member is in rotation, 0 while it is ejected after failures.",
            None,
            MetricType::Gauge,
        )?;
        for member in &members {
            ConstGauge::new(i64::from(member.healthy))
                .encode(healthy.encode_family(&labels(member))?)?;
        }
        let mut outstanding = encoder.encode_descriptor(
            "rpc_pool_member_outstanding",
            "Requests sent to a pool member and not yet answered.",
            None,
            MetricType::Gauge,
        )?;
        for member in &members {
            ConstGauge::new(member.outstanding)
                .encode(outstanding.encode_family(&labels(member))?)?;
        }
        let mut rtt = encoder.encode_descriptor(
            "rpc_pool_member_rtt_seconds",
            "Moving average of a pool member's round trips (0 until measured).",
            None,
            MetricType::Gauge,
        )?;
        for member in &members {
            ConstGauge::new(member.rtt.as_secs_f64())
                .encode(rtt.encode_family(&labels(member))?)?;
        }
        let mut picks = encoder.encode_descriptor(
            "rpc_pool_member_picks",
            "Requests given to a pool member, in all.",
            None,
            MetricType::Counter,
        )?;
        for member in &members {
            ConstCounter::new(member.picks).encode(picks.encode_family(&labels(member))?)?;
        }
        Ok(())
    }
}
