//! The job slots of a sandbox: at most that many jobs hold a store at once,
//! the rest wait for one in a bounded queue. A job's slot is what the
//! engine's instance pool reserves for it (see
//! [`engine::per_job`](super::engine::per_job)), so a job that got a slot
//! never finds the pool dry. A waiting job whose caller left leaves the
//! queue at once, its inputs freed with its future.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Counts what the slots are doing.
#[derive(Debug, Default)]
pub(crate) struct Load {
    pub(crate) running: AtomicU32,
    pub(crate) peak_running: AtomicU32,
    pub(crate) queued: AtomicU32,
    pub(crate) finished: AtomicU64,
}

/// A fixed number of job slots and the queue in front of them.
#[derive(Debug)]
pub(crate) struct Slots {
    permits: Arc<Semaphore>,
    pub(crate) load: Arc<Load>,
    pub(crate) size: u32,
    max_queued: u32,
}

/// The queue holds as many jobs as it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueFull {
    pub(crate) max: u32,
}

/// A job's hold on a slot. Dropping it frees the slot and counts the job
/// as finished: drop it only once the job's store is gone.
#[derive(Debug)]
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    load: Arc<Load>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.load.running.fetch_sub(1, Ordering::Relaxed);
        self.load.finished.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts a job as queued while it waits.
struct Waiting<'a>(&'a Load);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Slots {
    /// `size` slots, and a queue of at most `max_queued` jobs waiting for
    /// them.
    pub(crate) fn new(size: u32, max_queued: u32) -> Slots {
        Slots {
            permits: Arc::new(Semaphore::new(size as usize)),
            load: Arc::new(Load::default()),
            size,
            max_queued: max_queued.max(1),
        }
    }

    /// A free slot, waiting for one (first come, first served) if none is.
    ///
    /// # Errors
    ///
    /// [`QueueFull`] if as many jobs as allowed wait already.
    pub(crate) async fn acquire(&self) -> Result<Slot, QueueFull> {
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let before = self.load.queued.fetch_add(1, Ordering::Relaxed);
                let waiting = Waiting(&self.load);
                if before >= self.max_queued {
                    return Err(QueueFull {
                        max: self.max_queued,
                    });
                }
                let permit = Arc::clone(&self.permits).acquire_owned().await;
                drop(waiting);
                // The semaphore is never closed.
                permit.map_err(|_| QueueFull {
                    max: self.max_queued,
                })?
            }
        };
        let now = self.load.running.fetch_add(1, Ordering::Relaxed) + 1;
        self.load.peak_running.fetch_max(now, Ordering::Relaxed);
        Ok(Slot {
            _permit: permit,
            load: Arc::clone(&self.load),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_full_queue_refuses_and_a_withdrawn_job_frees_its_place() {
        let slots = Slots::new(1, 2);
        let busy = slots.acquire().await.unwrap();
        let input = Arc::new(vec![0u8; 1024]);
        let held = Arc::clone(&input);
        let slots = Arc::new(slots);
        let waiting = |slots: &Arc<Slots>| {
            let slots = Arc::clone(slots);
            tokio::spawn(async move { slots.acquire().await.map(drop) })
        };
        let first = {
            let slots = Arc::clone(&slots);
            tokio::spawn(async move {
                let _input = held;
                slots.acquire().await.map(drop)
            })
        };
        let second = waiting(&slots);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(slots.load.queued.load(Ordering::Relaxed), 2);
        assert_eq!(slots.acquire().await.unwrap_err(), QueueFull { max: 2 });
        assert_eq!(slots.load.queued.load(Ordering::Relaxed), 2);
        first.abort();
        let _ = first.await;
        assert_eq!(
            Arc::strong_count(&input),
            1,
            "withdrawing dropped the input"
        );
        assert_eq!(slots.load.queued.load(Ordering::Relaxed), 1);
        let third = waiting(&slots);
        drop(busy);
        assert!(second.await.unwrap().is_ok());
        assert!(third.await.unwrap().is_ok());
        let load = &slots.load;
        assert_eq!(load.running.load(Ordering::Relaxed), 0);
        assert_eq!(load.queued.load(Ordering::Relaxed), 0);
        assert_eq!(load.finished.load(Ordering::Relaxed), 3);
        assert_eq!(load.peak_running.load(Ordering::Relaxed), 1);
    }
}
