//! Byte budgets that hold for the whole server: a limit per connection is
//! no limit when a peer can open a thousand connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A number of bytes the server may hold for one purpose, shared by every
/// connection.
#[derive(Debug)]
pub(crate) struct Budget {
    used: AtomicU64,
    max: u64,
    /// What the bytes are, for the refusal message.
    what: &'static str,
}

/// Bytes taken from a [`Budget`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Held {
    budget: Arc<Budget>,
    bytes: u64,
}

/// A budget cannot take more bytes now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exhausted {
    what: &'static str,
    wanted: u64,
    used: u64,
    max: u64,
}

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server already holds {} of the {} it allows for {}, and {} more do not fit; try again later",
            self.used, self.max, self.what, self.wanted
        )
    }
}

impl Budget {
    pub(crate) fn new(what: &'static str, max: u64) -> Arc<Budget> {
        Arc::new(Budget {
            used: AtomicU64::new(0),
            max,
            what,
        })
    }

    /// Takes `bytes` if they fit.
    pub(crate) fn try_take(self: &Arc<Self>, bytes: u64) -> Result<Held, Exhausted> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let after = used.saturating_add(bytes);
            if after > self.max {
                return Err(self.exhausted(bytes, used));
            }
            match self
                .used
                .compare_exchange_weak(used, after, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(self.held(bytes)),
                Err(now) => used = now,
            }
        }
    }

    /// Checks that `bytes` more would fit now, without taking them: for
    /// work that usually finishes at once, whose bytes are taken with
    /// [`take`](Self::take) only if it has to wait.
    pub(crate) fn check(&self, bytes: u64) -> Result<(), Exhausted> {
        let used = self.used.load(Ordering::Relaxed);
        if used.saturating_add(bytes) > self.max {
            return Err(self.exhausted(bytes, used));
        }
        Ok(())
    }

    /// Takes `bytes` that [`check`](Self::check) found room for; concurrent
    /// takers may pass the limit by what they checked at the same time.
    pub(crate) fn take(self: &Arc<Self>, bytes: u64) -> Held {
        self.used.fetch_add(bytes, Ordering::Relaxed);
        self.held(bytes)
    }

    /// Bytes held now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn held(self: &Arc<Self>, bytes: u64) -> Held {
        Held {
            budget: Arc::clone(self),
            bytes,
        }
    }

    fn exhausted(&self, wanted: u64, used: u64) -> Exhausted {
        Exhausted {
            what: self.what,
            wanted,
            used,
            max: self.max,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_taken_up_to_the_limit_and_given_back_when_dropped() {
        let budget = Budget::new("uploads", 100);
        // The unit goes in the name: bytes here.
        let first = budget.try_take(60).unwrap();
        let refused = budget.try_take(41).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "the server already holds 60 of the 100 it allows for uploads, and 41 more do not fit; try again later"
        );
        assert!(budget.check(41).is_err());
        let second = budget.try_take(40).unwrap();
        assert_eq!(budget.used(), 100);
        drop(first);
        drop(second);
        assert_eq!(budget.used(), 0);
        let taken = budget.take(10);
        assert_eq!(budget.used(), 10);
        drop(taken);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn many_threads_never_take_more_than_the_limit() {
        let budget = Budget::new("test", 1000);
        let held: Vec<Held> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..1000)
                            .filter_map(|_| budget.try_take(3).ok())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|worker| worker.join().unwrap())
                .collect()
        });
        assert_eq!(held.len(), 333);
        assert_eq!(budget.used(), 999);
    }
}
