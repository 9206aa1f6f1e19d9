//! The scrape endpoint: `GET /metrics` over HTTP/1.1 with hyper.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::Metrics;

/// The content type of a scrape: OpenMetrics text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Connections served at once; a new one past this closes the oldest.
const MAX_CONNECTIONS: usize = 8;
/// How long a scraper has to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection may last, whatever it does.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// A running metrics endpoint, from [`Metrics::serve`]. Dropping it leaves
/// it running until the runtime stops; [`stop`](MetricsEndpoint::stop)
/// stops it.
#[derive(Debug)]
pub struct MetricsEndpoint {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsEndpoint {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting scrapes.
    pub fn stop(self) {
        self.task.abort();
    }
}

pub(super) async fn serve(
    metrics: Metrics,
    addr: impl ToSocketAddrs,
) -> std::io::Result<MetricsEndpoint> {
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let task = tokio::spawn(
        accept(listener, metrics).instrument(tracing::info_span!("metrics", addr = %local_addr)),
    );
    Ok(MetricsEndpoint { local_addr, task })
}

async fn accept(listener: TcpListener, metrics: Metrics) {
    let open = Arc::new(Mutex::new(Open::default()));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        let id = lock(&open).next_id();
        let open_for_task = Arc::clone(&open);
        let task = tokio::spawn(async move {
            let service = service_fn(move |request| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&metrics, &request)) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
            lock(&open_for_task).remove(id);
        });
        // Scrapers are few and quick: when every place is taken, the
        // oldest connection makes room, so that connections left open
        // (or opened to hold places) cannot keep a scraper out.
        if let Some(oldest) = lock(&open).insert(id, task.abort_handle()) {
            oldest.abort();
        }
    }
}

/// The connections being served, oldest first.
#[derive(Default)]
struct Open {
    connections: VecDeque<(u64, AbortHandle)>,
    next: u64,
}

impl Open {
    fn next_id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Adds a connection; the oldest one to close if that makes too many.
    fn insert(&mut self, id: u64, handle: AbortHandle) -> Option<AbortHandle> {
        self.connections.push_back((id, handle));
        if self.connections.len() > MAX_CONNECTIONS {
            self.connections.pop_front().map(|(_, oldest)| oldest)
        } else {
            None
        }
    }

    fn remove(&mut self, id: u64) {
        self.connections.retain(|(open, _)| *open != id);
    }
}

fn lock(open: &Mutex<Open>) -> std::sync::MutexGuard<'_, Open> {
    open.lock().unwrap_or_else(PoisonError::into_inner)
}

fn respond(metrics: &Metrics, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            OPENMETRICS_CONTENT_TYPE,
            Bytes::from(metrics.encode()),
        ),
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            Bytes::from_static(b"use GET\n"),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"metrics are at /metrics\n"),
        ),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
