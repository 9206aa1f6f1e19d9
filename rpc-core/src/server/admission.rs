//! Admission of connections in two stages, so that peers who never
//! authenticate cannot keep those who do out.
//!
//! A new connection first holds one of a few **handshake places** until its
//! handshake is done. When they are all taken, the oldest handshake that
//! has had a fair chance to finish is closed to make room: a flood of
//! sockets that never speak keeps recycling the same places while a real
//! client, which finishes its handshake in a round trip or two, gets in.
//! Only a peer whose handshake succeeded (its token checked) takes one of
//! the many **connection places**, which it holds until it leaves.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;

/// The two budgets of a server's connections.
#[derive(Debug)]
pub(crate) struct Admission {
    pending: Mutex<Pending>,
    max_pending: usize,
    /// How long a handshake keeps its place however many others wait.
    min_age: Duration,
    established: Arc<Semaphore>,
}

#[derive(Debug, Default)]
struct Pending {
    next_id: u64,
    /// By arrival: when each began, and the sender whose drop evicts it.
    handshakes: BTreeMap<u64, (Instant, oneshot::Sender<()>)>,
}

/// A handshake place, given back when dropped.
#[derive(Debug)]
pub(crate) struct HandshakePlace {
    admission: Arc<Admission>,
    id: u64,
    evicted: oneshot::Receiver<()>,
}

impl Admission {
    /// `max_pending` handshakes at once, each keeping its place at least
    /// `min_age`; `max_established` connections after their handshake.
    pub(crate) fn new(max_pending: usize, min_age: Duration, max_established: usize) -> Admission {
        Admission {
            pending: Mutex::new(Pending::default()),
            max_pending: max_pending.max(1),
            min_age,
            established: Arc::new(Semaphore::new(max_established)),
        }
    }

    /// A handshake place for a new connection. When every place is taken,
    /// the oldest handshake is closed, once it is at least `min_age` old
    /// (waiting until then if need be; connections meanwhile wait in the
    /// listen backlog).
    pub(crate) async fn begin(self: &Arc<Self>) -> HandshakePlace {
        loop {
            let wait_until = {
                let mut pending = self.lock();
                if pending.handshakes.len() < self.max_pending {
                    let id = pending.next_id;
                    pending.next_id += 1;
                    let (evict, evicted) = oneshot::channel();
                    pending.handshakes.insert(id, (Instant::now(), evict));
                    return HandshakePlace {
                        admission: Arc::clone(self),
                        id,
                        evicted,
                    };
                }
                let oldest = pending
                    .handshakes
                    .first_key_value()
                    .map(|(_, (began, _))| *began + self.min_age);
                match oldest {
                    Some(ripe) if ripe <= Instant::now() => {
                        tracing::debug!("too many handshakes pending; closing the oldest");
                        pending.handshakes.pop_first();
                        continue;
                    }
                    Some(ripe) => ripe,
                    None => Instant::now(),
                }
            };
            tokio::time::sleep_until(wait_until).await;
        }
    }

    /// A connection place for a peer whose handshake succeeded, or `None`
    /// if every one is taken.
    pub(crate) fn establish(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.established).try_acquire_owned().ok()
    }

    /// Handshakes waiting now.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.lock().handshakes.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl HandshakePlace {
    /// Resolves when the place is taken away for a newer connection.
    pub(crate) async fn evicted(&mut self) {
        let _ = (&mut self.evicted).await;
    }
}

impl Drop for HandshakePlace {
    fn drop(&mut self) {
        self.admission.lock().handshakes.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_table_closes_the_oldest_handshake_once_it_had_its_chance() {
        let admission = Arc::new(Admission::new(2, Duration::from_millis(100), 10));
        let mut first = admission.begin().await;
        let mut second = admission.begin().await;
        // Both are young: the third waits instead of evicting.
        let third = admission.begin();
        tokio::pin!(third);
        assert!((&mut third).now_or_never().is_none());
        tokio::time::advance(Duration::from_millis(100)).await;
        let third = third.await;
        assert!(first.evicted().now_or_never().is_some(), "the oldest went");
        assert!(second.evicted().now_or_never().is_none());
        assert_eq!(admission.pending(), 2);
        drop(third);
        drop(second);
        drop(first);
        assert_eq!(admission.pending(), 0);
    }

    #[tokio::test]
    async fn a_finished_handshake_gives_its_place_back_and_takes_a_connection_place() {
        let admission = Arc::new(Admission::new(1, Duration::from_secs(60), 1));
        let place = admission.begin().await;
        let connection = admission.establish().expect("a connection place");
        drop(place);
        let _next = admission
            .begin()
            .now_or_never()
            .expect("the place was given back");
        assert!(
            admission.establish().is_none(),
            "the only connection place is taken"
        );
        drop(connection);
        assert!(admission.establish().is_some());
    }
}
