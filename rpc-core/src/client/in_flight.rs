//! The calls in flight on a client connection: who waits for each response,
//! and when each call's deadline passes.
//!
//! Deadlines are kept in order here and enforced by the connection's reader
//! with a single timer, rather than by a timer per call.
//!
//! Calls join the table through their [`PendingCall`], which travels with
//! the call's opening frame and is handed over by the connection's writer,
//! a batch at a time, just before the frame is written.

use std::collections::BTreeSet;

use rustc_hash::FxHashMap;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::conn::Reply;
use crate::error::RpcError;

/// Why one attempt at a request failed.
#[derive(Debug)]
pub(super) struct Failed {
    pub(super) error: RpcError,
    /// The server certainly did not process the request (it was never sent,
    /// or the server's `GoAway` excluded it), so sending it again is safe
    /// even if it is not idempotent.
    pub(super) unprocessed: bool,
}

impl Failed {
    pub(super) fn processed(error: RpcError) -> Failed {
        Failed {
            error,
            unprocessed: false,
        }
    }
}

/// Receives the response of one call, or why it failed.
pub(super) type Waiter = oneshot::Sender<Result<Reply, Failed>>;

/// A call joining the table: its stream id, who waits for its response,
/// and its deadline.
#[derive(Debug)]
pub(super) struct PendingCall {
    pub(super) id: u64,
    pub(super) waiter: Waiter,
    pub(super) deadline: Option<Instant>,
}

#[derive(Debug, Default)]
pub(super) struct InFlight {
    /// Keyed by stream ids this client chose, so a fast hash is safe.
    waiters: FxHashMap<u64, (Waiter, Option<Instant>)>,
    /// The deadlines of the calls in `waiters` that have one, earliest first.
    deadlines: BTreeSet<(Instant, u64)>,
    /// Set once the connection stops taking calls: calls with ids above
    /// `after` fail with this, including those registered later.
    closed: Option<Closing>,
}

#[derive(Debug)]
struct Closing {
    after: u64,
    reason: String,
}

/// What registering a batch of calls did.
#[derive(Debug, Default)]
pub(super) struct Registered {
    /// Calls that cannot be served, and why.
    pub(super) refused: Vec<(Waiter, Failed)>,
    /// A call's deadline is now the earliest.
    pub(super) deadline_moved: bool,
}

impl InFlight {
    /// Adds the calls of `registrations`, leaving it empty. A call whose
    /// caller already gave up is left out; one on a connection that has
    /// stopped taking calls is refused, as unprocessed: the server ended or
    /// announced in its `GoAway` that it ignores such calls.
    pub(super) fn register(&mut self, registrations: &mut Vec<PendingCall>) -> Registered {
        let mut registered = Registered::default();
        for PendingCall {
            id,
            waiter,
            deadline,
        } in registrations.drain(..)
        {
            if waiter.is_closed() {
                continue;
            }
            match &self.closed {
                Some(closing) if id > closing.after => {
                    let failed = Failed {
                        error: RpcError::Unavailable(closing.reason.clone()),
                        unprocessed: true,
                    };
                    registered.refused.push((waiter, failed));
                }
                _ => registered.deadline_moved |= self.insert(id, waiter, deadline),
            }
        }
        registered
    }

    /// Stops taking calls with ids above `after` (every call, for 0), which
    /// are refused with `reason`, and removes those in flight.
    pub(super) fn close_after(&mut self, after: u64, reason: &str) -> Vec<Waiter> {
        let after = match &self.closed {
            Some(closing) => closing.after.min(after),
            None => after,
        };
        self.closed = Some(Closing {
            after,
            reason: reason.to_owned(),
        });
        self.take_after(after)
    }

    /// Adds a call. Returns whether its deadline is now the earliest, in
    /// which case the timer enforcing deadlines must be moved earlier.
    fn insert(&mut self, id: u64, waiter: Waiter, deadline: Option<Instant>) -> bool {
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
    fn take_after(&mut self, after: u64) -> Vec<Waiter> {
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

    #[test]
    fn registration_skips_abandoned_calls_and_refuses_calls_after_closing() {
        let mut in_flight = InFlight::default();
        let (kept, _kept_answer) = oneshot::channel();
        let (abandoned, _) = oneshot::channel();
        let mut batch = vec![
            PendingCall {
                id: 1,
                waiter: kept,
                deadline: None,
            },
            PendingCall {
                id: 3,
                waiter: abandoned,
                deadline: None,
            },
        ];
        let registered = in_flight.register(&mut batch);
        assert!(batch.is_empty() && registered.refused.is_empty());
        assert!(in_flight.take(3).is_none(), "nobody waits for 3");

        // A GoAway after 1: 1 may still finish, later calls are refused.
        assert!(in_flight.close_after(1, "going away").is_empty());
        let (early, _early_answer) = oneshot::channel();
        let (late, _late_answer) = oneshot::channel();
        let mut batch = vec![
            PendingCall {
                id: 5,
                waiter: late,
                deadline: None,
            },
            PendingCall {
                id: 1,
                waiter: early,
                deadline: None,
            },
        ];
        let registered = in_flight.register(&mut batch);
        let [(_, failed)] = registered.refused.as_slice() else {
            panic!("one refusal expected: {:?}", registered.refused);
        };
        assert!(failed.unprocessed);
        assert!(matches!(&failed.error, RpcError::Unavailable(reason) if reason == "going away"));
        assert!(in_flight.take(1).is_some());

        // The connection ends: everything left fails, and nothing joins.
        assert_eq!(in_flight.close_after(0, "closed").len(), 0);
        let (next, _next_answer) = oneshot::channel();
        let mut batch = vec![PendingCall {
            id: 7,
            waiter: next,
            deadline: None,
        }];
        assert_eq!(in_flight.register(&mut batch).refused.len(), 1);
    }
}
