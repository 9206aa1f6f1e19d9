//! The threads jobs run on: a fixed number, each with a stack large enough
//! for the wasm stack limit, so at most that many jobs run at once and a
//! busy guest never blocks the async reactor.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

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

/// A fixed pool of job threads fed by a queue.
#[derive(Debug)]
pub(crate) struct JobThreads {
    queue: Mutex<mpsc::Sender<Work>>,
    pub(crate) load: Arc<Load>,
    pub(crate) size: u32,
}

impl JobThreads {
    pub(crate) fn start(size: u32, wasm_stack: usize) -> std::io::Result<JobThreads> {
        let (sender, receiver) = mpsc::channel::<Work>();
        let receiver = Arc::new(Mutex::new(receiver));
        let load = Arc::new(Load::default());
        for index in 0..size {
            let receiver = Arc::clone(&receiver);
            let load = Arc::clone(&load);
            std::thread::Builder::new()
                .name(format!("worker-job-{index}"))
                .stack_size(wasm_stack.saturating_add(HOST_STACK))
                .spawn(move || {
                    loop {
                        let work = {
                            let receiver = crate::lock(&receiver);
                            receiver.recv()
                        };
                        let Ok(work) = work else { break };
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
            queue: Mutex::new(sender),
            load,
            size,
        })
    }

    /// Queues `work`; it runs when a thread is free, and `deliver` gets its
    /// result once the job no longer counts as running.
    pub(crate) fn submit<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
        deliver: impl FnOnce(R) + Send + 'static,
    ) {
        self.load.queued.fetch_add(1, Ordering::Relaxed);
        let work: Work = Box::new(move || {
            let result = work();
            Box::new(move || deliver(result))
        });
        let sent = crate::lock(&self.queue).send(work);
        if sent.is_err() {
            // All threads are gone; the caller's channel reports it.
            self.load.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
