//! What a client connection shares with its reader task: whether it is
//! still open, the calls in flight, and pings waiting for their pong. Both
//! [`super::connection`] and [`super::reader`] depend on it; it depends on
//! neither.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio::sync::oneshot;

use super::in_flight::{Failed, InFlight, PendingCall, Waiter};
use crate::conn;
use crate::error::RpcError;

/// Queues frames for the connection's writer, with the registrations of
/// calls.
pub(super) type Outbox = conn::Outbox<PendingCall>;

/// What the connection shares with its reader task.
#[derive(Debug)]
pub(super) struct ConnectionState {
    /// False once the connection failed or the server sent `GoAway`: new
    /// calls go to a new connection.
    open: AtomicBool,
    in_flight: Mutex<InFlight>,
    /// Wakes the reader when the connection is dropped.
    pub(super) dropped: tokio::sync::Notify,
    /// Wakes the reader when a call's deadline is earlier than all others.
    pub(super) deadline_moved: tokio::sync::Notify,
    /// Pings sent by [`Connection::ping`](super::connection::Connection::ping), by nonce, waiting for their pong.
    pub(super) pings: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    next_nonce: AtomicU64,
}

impl ConnectionState {
    pub(super) fn new() -> ConnectionState {
        ConnectionState {
            open: AtomicBool::new(true),
            in_flight: Mutex::new(InFlight::default()),
            dropped: tokio::sync::Notify::new(),
            deadline_moved: tokio::sync::Notify::new(),
            pings: Mutex::new(HashMap::new()),
            // Keepalive pings use nonce 0; these start above it.
            next_nonce: AtomicU64::new(1),
        }
    }

    /// Whether new calls may still use the connection.
    pub(super) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// The connection's owner let go of it: no new calls, and the reader
    /// is woken to end.
    pub(super) fn mark_dropped(&self) {
        self.open.store(false, Ordering::Release);
        self.dropped.notify_one();
    }

    /// A nonce for a ping of [`Connection::ping`](super::connection::Connection::ping).
    pub(super) fn next_nonce(&self) -> u64 {
        self.next_nonce.fetch_add(1, Ordering::Relaxed)
    }

    pub(super) fn take(&self, id: u64) -> Option<Waiter> {
        self.lock().take(id)
    }

    /// Adds calls whose opening frames are about to be written.
    pub(super) fn register(&self, calls: &mut Vec<PendingCall>) {
        let registered = self.lock().register(calls);
        if registered.deadline_moved {
            self.deadline_moved.notify_one();
        }
        for (waiter, failed) in registered.refused {
            let _ = waiter.send(Err(failed));
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, InFlight> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the connection unusable and fails the calls in flight with ids
    /// above `after` (all of them for 0) as unavailable: they never reached a
    /// server that will answer.
    pub(super) fn fail_from(&self, after: u64, reason: &str, unprocessed: bool) {
        self.open.store(false, Ordering::Release);
        // Pings waiting on a connection that ends are answered "no".
        self.pings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        let failed = self.lock().close_after(after, reason);
        for waiter in failed {
            let _ = waiter.send(Err(Failed {
                error: RpcError::Unavailable(reason.to_owned()),
                unprocessed,
            }));
        }
    }
}
