//! What a server counts when it has [`Metrics`](super::Metrics): atomics
//! only, updated on the call path without a lock, read at scrape time.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::histogram::{Histogram, LATENCY_BUCKETS_US};
use crate::conn::Io;
use crate::wire::StatusCode;

/// The statuses counted by name; any other is counted as `other`.
const STATUSES: [(u16, &str); 14] = [
    (200, "200"),
    (400, "400"),
    (403, "403"),
    (404, "404"),
    (409, "409"),
    (422, "422"),
    (426, "426"),
    (429, "429"),
    (499, "499"),
    (500, "500"),
    (501, "501"),
    (503, "503"),
    (504, "504"),
    (0, "other"),
];

/// Calls answered, by status.
#[derive(Debug, Default)]
pub(crate) struct StatusCounts([AtomicU64; STATUSES.len()]);

impl StatusCounts {
    fn add(&self, status: StatusCode) {
        let code = status.as_u16();
        let index = STATUSES
            .iter()
            .position(|&(known, _)| known == code)
            .unwrap_or(STATUSES.len() - 1);
        if let Some(count) = self.0.get(index) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn total(&self) -> u64 {
        self.0
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .sum()
    }

    /// `(status label, count)` for every status seen.
    fn seen(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        STATUSES
            .iter()
            .zip(self.0.iter())
            .map(|(&(_, label), count)| (label, count.load(Ordering::Relaxed)))
            .filter(|&(_, count)| count > 0)
    }
}

/// One function's calls: started, answered by status, and how long each
/// took from its request's arrival to its answer.
#[derive(Debug)]
pub(crate) struct CallStats {
    started: AtomicU64,
    answered: StatusCounts,
    latency: Histogram,
}

impl Default for CallStats {
    fn default() -> CallStats {
        CallStats {
            started: AtomicU64::new(0),
            answered: StatusCounts::default(),
            latency: Histogram::new(LATENCY_BUCKETS_US, 1e-6),
        }
    }
}

impl CallStats {
    /// A call began running.
    pub(crate) fn start(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    /// A call that began was answered `status` after `elapsed_us`.
    pub(crate) fn answer(&self, status: StatusCode, elapsed_us: u64) {
        self.answered.add(status);
        self.latency.observe(elapsed_us);
    }

    fn in_flight(&self) -> u64 {
        // Read the answers first: a call answered between the two loads
        // then reads as still in flight, never as a negative count.
        let answered = self.answered.total();
        self.started
            .load(Ordering::Relaxed)
            .saturating_sub(answered)
    }
}

/// Everything one server counts.
#[derive(Debug)]
pub(crate) struct ServerStats {
    /// The `server` label: the address it listens on.
    pub(crate) addr: String,
    /// Connections accepted from the listener.
    pub(crate) accepted: AtomicU64,
    /// Connections that completed the handshake.
    pub(crate) opened: AtomicU64,
    /// Of those, closed since.
    pub(crate) closed: AtomicU64,
    /// Connections refused or failed before the handshake completed (bad
    /// token, wrong version, TLS mismatch, too slow).
    pub(crate) refused: AtomicU64,
    /// Connections closed mid-handshake to make room for newer ones.
    pub(crate) evicted: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    /// Calls answered without running: no such function, a role that may
    /// not call it, a schema that does not match. The function's name is
    /// the caller's to choose, so it is not a label: an attacker could
    /// grow the scrape without bound.
    pub(crate) refused_calls: StatusCounts,
    /// The registered functions, fixed before serving; the built-in
    /// introspection call is one of them.
    pub(crate) functions: Vec<(Arc<str>, Arc<CallStats>)>,
}

impl ServerStats {
    pub(crate) fn new(addr: String, functions: Vec<(Arc<str>, Arc<CallStats>)>) -> ServerStats {
        ServerStats {
            addr,
            accepted: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            refused_calls: StatusCounts::default(),
            functions,
        }
    }

    /// A call refused before it ran.
    pub(crate) fn refuse_call(&self, status: StatusCode) {
        self.refused_calls.add(status);
    }

    /// `io`, counting the bytes read and written into this server's
    /// totals.
    pub(crate) fn count_bytes(self: &Arc<Self>, io: Box<dyn Io>) -> Box<dyn Io> {
        Box::new(Counted {
            io,
            stats: Arc::clone(self),
        })
    }
}

/// Writes every server's families, once each, with a `server` label.
pub(crate) fn encode(
    servers: &[Arc<ServerStats>],
    encoder: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    type Read = fn(&ServerStats) -> u64;
    let counters: [(&str, &str, Read); 6] = [
        (
            "rpc_connections_accepted",
            "Connections accepted from the listener.",
            |s| load(&s.accepted),
        ),
        (
            "rpc_connections_opened",
            "Connections that completed the handshake.",
            |s| load(&s.opened),
        ),
        (
            "rpc_connections_refused",
            "Connections refused or failed before the handshake completed (bad token or version, TLS mismatch, too slow, or closed to make room for newer handshakes).",
            |s| load(&s.refused) + load(&s.evicted),
        ),
        (
            "rpc_received_bytes",
            "Bytes received on open connections (after TLS).",
            |s| load(&s.bytes_in),
        ),
        (
            "rpc_sent_bytes",
            "Bytes sent on open connections (before TLS).",
            |s| load(&s.bytes_out),
        ),
        ("rpc_calls_started", "Calls that began running.", |s| {
            s.functions
                .iter()
                .map(|(_, calls)| load(&calls.started))
                .sum()
        }),
    ];
    for (name, help, read) in counters {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for server in servers {
            ConstCounter::new(read(server))
                .encode(family.encode_family(&[("server", server.addr.as_str())])?)?;
        }
    }

    let mut open = encoder.encode_descriptor(
        "rpc_connections_open",
        "Connections open now (past the handshake).",
        None,
        MetricType::Gauge,
    )?;
    for server in servers {
        let now = load(&server.opened).saturating_sub(load(&server.closed));
        ConstGauge::new(now).encode(open.encode_family(&[("server", server.addr.as_str())])?)?;
    }

    let mut in_flight = encoder.encode_descriptor(
        "rpc_calls_in_flight",
        "Calls running now, by function.",
        None,
        MetricType::Gauge,
    )?;
    for server in servers {
        for (function, calls) in &server.functions {
            ConstGauge::new(calls.in_flight()).encode(
                in_flight
                    .encode_family(&[("server", server.addr.as_str()), ("function", function)])?,
            )?;
        }
    }

    let mut answered = encoder.encode_descriptor(
        "rpc_calls",
        "Calls answered, by function and status.",
        None,
        MetricType::Counter,
    )?;
    for server in servers {
        for (function, calls) in &server.functions {
            for (status, count) in calls.answered.seen() {
                ConstCounter::new(count).encode(answered.encode_family(&[
                    ("server", server.addr.as_str()),
                    ("function", function),
                    ("status", status),
                ])?)?;
            }
        }
    }

    let mut refused = encoder.encode_descriptor(
        "rpc_calls_refused",
        "Calls answered without running (no such function, role not allowed, schema mismatch), by status.",
        None,
        MetricType::Counter,
    )?;
    for server in servers {
        for (status, count) in server.refused_calls.seen() {
            ConstCounter::new(count).encode(
                refused.encode_family(&[("server", server.addr.as_str()), ("status", status)])?,
            )?;
        }
    }

    let mut latency = encoder.encode_descriptor(
        "rpc_call_duration_seconds",
        "Time from a call's request arriving to its answer being queued, by function.",
        None,
        MetricType::Histogram,
    )?;
    for server in servers {
        for (function, calls) in &server.functions {
            calls.latency.encode(
                latency
                    .encode_family(&[("server", server.addr.as_str()), ("function", function)])?,
            )?;
        }
    }
    Ok(())
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// A stream that adds what passes through it to its server's byte counts.
struct Counted {
    io: Box<dyn Io>,
    stats: Arc<ServerStats>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        if read > 0 {
            self.stats
                .bytes_in
                .fetch_add(read as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = &polled {
            self.stats
                .bytes_out
                .fetch_add(*written as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(written)) = &polled {
            self.stats
                .bytes_out
                .fetch_add(*written as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
