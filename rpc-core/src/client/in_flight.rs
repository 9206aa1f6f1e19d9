//! The calls in flight on a client connection: who waits for each response,
//! and when each call's deadline passes.
//!
//! Deadlines are kept in order here and enforced by the connection's reader
//! with a single timer, rather than by a timer per call.

use std::collections::BTreeSet;

use rustc_hash::FxHashMap;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::connection::Failed;
use crate::conn::Reply;

/// Receives the response of one call, or why it failed.
pub(super) type Waiter = oneshot::Sender<Result<Reply, Failed>>;

#[derive(Debug, Default)]
pub(super) struct InFlight {
    /// Keyed by stream ids this client chose, so a fast hash is safe.
    waiters: FxHashMap<u64, (Waiter, Option<Instant>)>,
    /// The deadlines of the calls in `waiters` that have one, earliest first.
    deadlines: BTreeSet<(Instant, u64)>,
}

impl InFlight {
    /// Adds a call. Returns whether its deadline is now the earliest, in
    /// which case the timer enforcing deadlines must be moved earlier.
    pub(super) fn insert(&mut self, id: u64, waiter: Waiter, deadline: Option<Instant>) -> bool {
        self.waiters.insert(id, (waiter, deadline));
        let Some(deadline) = deadline else {
            return false;
        };
        self.deadlines.insert((deadline, id));
        self.deadlines.first() == Some(&(deadline, id))
    }

    /// Removes a call, returning its waiter if it was still waiting.
    pub(super) fn take(&mut self, id: u64) -> Option<Waiter> {
        let (waiter, deadline) = self.waiters.remove(&id)?;
        if let Some(deadline) = deadline {
            self.deadlines.remove(&(deadline, id));
        }
        Some(waiter)
    }

    /// Removes the calls with ids above `after`.
    pub(super) fn take_after(&mut self, after: u64) -> Vec<Waiter> {
        let ids: Vec<u64> = self
            .waiters
            .keys()
            .copied()
            .filter(|id| *id > after)
            .collect();
        ids.into_iter().filter_map(|id| self.take(id)).collect()
    }

    /// Removes the calls whose deadline is at or before `now`.
    pub(super) fn take_expired(&mut self, now: Instant) -> Vec<(u64, Waiter)> {
        let mut expired = Vec::new();
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            if let Some(waiter) = self.take(id) {
                expired.push((id, waiter));
            }
        }
        expired
    }

    /// The earliest deadline of a call in flight.
    pub(super) fn earliest(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn waiter() -> Waiter {
        oneshot::channel().0
    }

    #[test]
    fn deadlines_expire_in_order_and_leave_with_their_calls() {
        let now = Instant::now();
        let mut in_flight = InFlight::default();
        assert!(in_flight.insert(1, waiter(), Some(now + Duration::from_secs(2))));
        assert!(!in_flight.insert(3, waiter(), Some(now + Duration::from_secs(3))));
        assert!(in_flight.insert(5, waiter(), Some(now + Duration::from_secs(1))));
        assert!(!in_flight.insert(7, waiter(), None));
        assert_eq!(in_flight.earliest(), Some(now + Duration::from_secs(1)));

        assert!(in_flight.take(5).is_some());
        assert_eq!(in_flight.earliest(), Some(now + Duration::from_secs(2)));

        let expired = in_flight.take_expired(now + Duration::from_secs(2));
        let ids: Vec<u64> = expired.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [1]);
        assert_eq!(in_flight.take_after(2).len(), 2, "3 and 7 are left");
        assert_eq!(in_flight.earliest(), None);
    }
}
