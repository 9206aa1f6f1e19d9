//! The threads jobs run on: a fixed number, each with a stack large enough
//! for the wasm stack limit, so at most that many jobs run at once and a
//! busy guest never blocks the async reactor. Jobs wait for a thread in a
//! bounded queue, and a job whose caller left is withdrawn from it at once,
//! its inputs freed, instead of waiting for a thread to find it cancelled.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::lock;

/// A unit of work for a job thread: runs the job, and returns what hands
/// its result over, called once the job is counted as finished.
type Work = Box<dyn FnOnce() -> Box<dyn FnOnce() + Send> + Send>;

/// Native stack beyond the wasm stack limit, for the host functions and
/// the runtime below the guest.
const HOST_STACK: usize = 8 << 20;

/// Counts what the pool is doing.
#[derive(Debug, Default)]
pub(crate) struct Load {
    pub(crate) running: AtomicU32,
    pub(crate) peak_running: AtomicU32,
    pub(crate) queued: AtomicU32,
    pub(crate) finished: AtomicU64,
}

/// A fixed pool of job threads fed by a bounded queue.
#[derive(Debug)]
pub(crate) struct JobThreads {
    queue: Arc<Queue>,
    pub(crate) load: Arc<Load>,
    pub(crate) size: u32,
    max_queued: u32,
}

#[derive(Debug, Default)]
struct Queue {
    waiting: Mutex<VecDeque<Arc<Queued>>>,
    ready: Condvar,
    closed: AtomicBool,
}

/// A job in the queue: its work, until a thread takes it or its caller
/// withdraws it.
#[derive(Default)]
struct Queued {
    work: Mutex<Option<Work>>,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queued").finish_non_exhaustive()
    }
}

/// The caller's hold on a queued job: dropping it before a thread took the
/// job withdraws it, dropping its inputs at once.
#[derive(Debug)]
pub(crate) struct Ticket {
    queued: Arc<Queued>,
    load: Arc<Load>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if lock(&self.queued.work).take().is_some() {
            self.load.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The queue holds as many jobs as it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueFull {
    pub(crate) max: u32,
}

impl JobThreads {
    /// `size` threads, and a queue of at most `max_queued` jobs waiting
    /// for them.
    pub(crate) fn start(
        size: u32,
        wasm_stack: usize,
        max_queued: u32,
    ) -> std::io::Result<JobThreads> {
        let queue = Arc::new(Queue::default());
        let load = Arc::new(Load::default());
        for index in 0..size {
            let queue = Arc::clone(&queue);
            let load = Arc::clone(&load);
            std::thread::Builder::new()
                .name(format!("worker-job-{index}"))
                .stack_size(wasm_stack.saturating_add(HOST_STACK))
                .spawn(move || {
                    while let Some(work) = queue.next() {
                        load.queued.fetch_sub(1, Ordering::Relaxed);
                        let now = load.running.fetch_add(1, Ordering::Relaxed) + 1;
                        load.peak_running.fetch_max(now, Ordering::Relaxed);
                        // A panic in a job must not take its thread down.
                        let deliver = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
                        load.running.fetch_sub(1, Ordering::Relaxed);
                        load.finished.fetch_add(1, Ordering::Relaxed);
                        // Counted first, so whoever gets the result sees the
                        // job among the finished.
                        if let Ok(deliver) = deliver {
                            deliver();
                        }
                    }
                })?;
        }
        Ok(JobThreads {
            queue,
            load,
            size,
            max_queued: max_queued.max(1),
        })
    }

    /// Queues `work`; it runs when a thread is free, and `deliver` gets its
    /// result once the job no longer counts as running. Keep the ticket
    /// while waiting for the result: dropping it withdraws the job.
    ///
    /// # Errors
    ///
    /// [`QueueFull`] if as many jobs as allowed wait already.
    pub(crate) fn submit<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
        deliver: impl FnOnce(R) + Send + 'static,
    ) -> Result<Ticket, QueueFull> {
        let work: Work = Box::new(move || {
            let result = work();
            Box::new(move || deliver(result))
        });
        let queued = Arc::new(Queued {
            work: Mutex::new(Some(work)),
        });
        {
            let mut waiting = lock(&self.queue.waiting);
            if self.load.queued.load(Ordering::Relaxed) >= self.max_queued {
                return Err(QueueFull {
                    max: self.max_queued,
                });
            }
            // Withdrawn jobs leave an empty entry until a thread pops it;
            // clear them out before they pile up behind long jobs.
            if waiting.len() >= 2 * self.max_queued as usize {
                waiting.retain(|job| lock(&job.work).is_some());
            }
            self.load.queued.fetch_add(1, Ordering::Relaxed);
            waiting.push_back(Arc::clone(&queued));
        }
        self.queue.ready.notify_one();
        Ok(Ticket {
            queued,
            load: Arc::clone(&self.load),
        })
    }
}

impl Queue {
    /// The next job not withdrawn, waiting for one; `None` once closed.
    fn next(&self) -> Option<Work> {
        let mut waiting = lock(&self.waiting);
        loop {
            while let Some(job) = waiting.pop_front() {
                if let Some(work) = lock(&job.work).take() {
                    return Some(work);
                }
            }
            if self.closed.load(Ordering::Relaxed) {
                return None;
            }
            waiting = self
                .ready
                .wait(waiting)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

impl Drop for JobThreads {
    fn drop(&mut self) {
        self.queue.closed.store(true, Ordering::Relaxed);
        // Taken under the lock, so that no thread misses the wake-up.
        let _waiting = lock(&self.queue.waiting);
        self.queue.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_full_queue_refuses_and_a_withdrawn_job_frees_its_place_and_inputs() {
        let threads = JobThreads::start(1, 1 << 20, 2).unwrap();
        let (release, blocked) = mpsc::channel::<()>();
        let (started, running) = mpsc::channel::<()>();
        let busy = threads
            .submit(
                move || {
                    started.send(()).unwrap();
                    blocked.recv().unwrap();
                },
                |()| {},
            )
            .unwrap();
        running.recv().unwrap();
        let input = Arc::new(vec![0u8; 1024]);
        let held = Arc::clone(&input);
        let first = threads.submit(move || held.len(), |_| {}).unwrap();
        let _second = threads.submit(|| (), |()| {}).unwrap();
        assert_eq!(
            threads.submit(|| (), |()| {}).unwrap_err(),
            QueueFull { max: 2 }
        );
        assert_eq!(Arc::strong_count(&input), 2);
        drop(first);
        assert_eq!(
            Arc::strong_count(&input),
            1,
            "withdrawing dropped the input"
        );
        assert_eq!(threads.load.queued.load(Ordering::Relaxed), 1);
        let (done, result) = mpsc::channel();
        let _third = threads
            .submit(|| 3, move |n| done.send(n).unwrap())
            .unwrap();
        release.send(()).unwrap();
        assert_eq!(result.recv_timeout(Duration::from_secs(10)), Ok(3));
        drop(busy);
    }
}
