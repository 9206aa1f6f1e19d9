//! Prometheus metrics: a [`Metrics`] registry that servers count into when
//! [`ServerConfig::metrics`](crate::ServerConfig::metrics) holds it, and
//! an HTTP endpoint that serves it for scraping.
//!
//! Counting costs a few relaxed atomic adds per call and no lock: each
//! function's counters are made when the server starts and found with the
//! function itself. Reading them (a scrape) takes the locks.
//!
//! | Family | Type | Labels |
//! |---|---|---|
//! | `rpc_connections_accepted_total` | counter | `server` |
//! | `rpc_connections_opened_total` | counter | `server` |
//! | `rpc_connections_refused_total` | counter | `server` |
//! | `rpc_connections_open` | gauge | `server` |
//! | `rpc_received_bytes_total`, `rpc_sent_bytes_total` | counter | `server` |
//! | `rpc_calls_started_total` | counter | `server` |
//! | `rpc_calls_total` | counter | `server`, `function`, `status` |
//! | `rpc_calls_in_flight` | gauge | `server`, `function` |
//! | `rpc_calls_refused_total` | counter | `server`, `status` |
//! | `rpc_call_duration_seconds` | histogram | `server`, `function` |
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use rpc_core::metrics::Metrics;
//! use rpc_core::{Client, Server, ServerConfig};
//!
//! let metrics = Metrics::new();
//! let server = Server::builder()
//!     .config(ServerConfig { metrics: Some(metrics.clone()), ..ServerConfig::default() })
//!     .function("add", |(a, b): (i64, i64)| async move { Ok::<_, ()>(a + b) })
//!     .bind("127.0.0.1:0")
//!     .await?;
//! let client = Client::new(server.local_addr().to_string());
//! let _: i64 = client.call("add", &(2i64, 3i64)).await?;
//! assert!(metrics.encode().contains(r#"function="add",status="200"} 1"#));
//! // GET http://127.0.0.1:9100/metrics (port 0 here: any free port)
//! let endpoint = metrics.serve("127.0.0.1:0").await?;
//! # endpoint.stop();
//! # server.shutdown(std::time::Duration::from_secs(1)).await;
//! # Ok(())
//! # }
//! ```

mod endpoint;
mod histogram;
pub(crate) mod server;

use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;

pub use endpoint::{MetricsEndpoint, OPENMETRICS_CONTENT_TYPE};
pub use histogram::{Histogram, LATENCY_BUCKETS_US};
/// The `prometheus-client` crate this module builds on, for writing
/// [`Collector`]s and registering metrics of one's own.
pub use prometheus_client;

use server::ServerStats;

/// A registry of metrics: the servers that count into it, and anything
/// registered with [`register_collector`](Metrics::register_collector) or
/// [`with_registry`](Metrics::with_registry). Cheap to clone; clones share
/// it.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    servers: Arc<Mutex<Vec<Arc<ServerStats>>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// An empty registry, with the servers' families ready for servers to
    /// join.
    pub fn new() -> Metrics {
        let servers = Arc::new(Mutex::new(Vec::new()));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ServersCollector {
            servers: Arc::clone(&servers),
        }));
        Metrics {
            registry: Arc::new(Mutex::new(registry)),
            servers,
        }
    }

    /// Adds a collector, asked for its metrics on every scrape.
    pub fn register_collector(&self, collector: impl Collector) {
        self.register_boxed(Box::new(collector));
    }

    pub(crate) fn register_boxed(&self, collector: Box<dyn Collector>) {
        self.with_registry(|registry| registry.register_collector(collector));
    }

    /// Runs `f` on the registry, to register metrics of one's own.
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut registry)
    }

    /// Everything, in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        self.with_registry(|registry| {
            // Writing to a String cannot fail; a collector's error leaves
            // what was written before it.
            let _ = prometheus_client::encoding::text::encode(&mut text, registry);
        });
        text
    }

    /// Serves [`encode`](Metrics::encode) over HTTP at `GET /metrics` on
    /// `addr`, with a few connections at a time and short timeouts. Bind
    /// it to an address only the scraper reaches: it has no
    /// authentication.
    ///
    /// # Errors
    ///
    /// If `addr` cannot be bound.
    pub async fn serve(
        &self,
        addr: impl tokio::net::ToSocketAddrs,
    ) -> std::io::Result<MetricsEndpoint> {
        endpoint::serve(self.clone(), addr).await
    }

    /// A server starting to count into this registry.
    pub(crate) fn add_server(&self, stats: Arc<ServerStats>) {
        self.servers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(stats);
    }
}

#[derive(Debug)]
struct ServersCollector {
    servers: Arc<Mutex<Vec<Arc<ServerStats>>>>,
}

impl Collector for ServersCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let servers = self
            .servers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        server::encode(&servers, &mut encoder)
    }
}
