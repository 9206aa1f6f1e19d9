//! The coordinator's side of relaying: clients send it jobs as if it were a
//! worker; relayed workers take them by long polling and return results.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rpc_core::{
    ContentHash, Context, Failure, InsertFuture, ProgramRejected, ProgramStore, ServerBuilder,
};
use tokio::sync::{Notify, oneshot};

use crate::functions::{Jobs, JobsServer, Relaying, RelayingServer};
use rpc_core::metrics::prometheus_client::collector::Collector;
use rpc_core::metrics::prometheus_client::encoding::DescriptorEncoder;

use crate::job::{CallOutput, CallRequest, JobError, RunOutput, RunRequest};
use crate::metrics::RelayStats;
use crate::server::answer;
use crate::{lock, roles};

use super::{RelayDone, RelayOutcome, RelayTask, RelayedJob};

/// How long a poll waits for a job before answering "none".
const POLL_WAIT: Duration = Duration::from_secs(10);

/// Cancellations kept for one connection that does not collect them (a
/// worker of an older version); past them the oldest are dropped.
const MAX_CANCELLATIONS_KEPT: usize = 1024;
/// Connections with uncollected cancellations kept at most (those of
/// workers that left without collecting theirs); past them one is dropped.
const MAX_CANCELLED_CONNECTIONS: usize = 4096;

/// The coordinator's side: a queue of jobs for relayed workers, their
/// waiting clients, and the modules clients shipped.
#[derive(Default)]
pub(crate) struct Relay {
    queue: Mutex<VecDeque<Pending>>,
    ready: Notify,
    waiting: Mutex<HashMap<u64, oneshot::Sender<RelayDone>>>,
    /// Jobs handed out and not yet done, with the worker that took them
    /// (if it drops out of the directory, they go back in the queue for
    /// another) and the connection it took them on (only it may answer).
    taken: Mutex<HashMap<u64, Taken>>,
    next_id: AtomicU64,
    modules: RelayModules,
    /// Jobs taken on each connection whose callers stopped waiting, until
    /// that connection collects them.
    cancelled: Mutex<HashMap<String, VecDeque<u64>>>,
    cancel_ready: Notify,
}

/// A job waiting for a relayed worker, with its caller's deadline.
#[derive(Clone)]
struct Pending {
    task: RelayTask,
    deadline: Option<tokio::time::Instant>,
}

/// A job a relayed worker took.
struct Taken {
    worker: String,
    taker: String,
    pending: Pending,
}

/// Names the connection a call came on, as far as the coordinator can
/// tell: the peer's name and address.
fn taker(context: &Context) -> String {
    format!("{}@{:?}", context.peer_name(), context.peer_addr())
}

/// A relayed worker answered a job with the other kind's result.
fn mismatched() -> JobError {
    JobError::Internal("the relayed worker answered with the wrong kind of result".into())
}

impl Relay {
    /// Relays a job for a module clients shipped here; returns the worker
    /// that ran it and what came of it.
    async fn relay(
        &self,
        module: ContentHash,
        job: RelayedJob,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(String, RelayOutcome), JobError> {
        if !self.modules.contains(&module) {
            return Err(JobError::ModuleNotFound(module));
        }
        let done = self.submit(job, deadline).await?;
        Ok((done.worker, done.outcome))
    }

    /// Queues a job and waits for a relayed worker's result. Dropping the
    /// future (the client cancelled or its deadline passed) withdraws the
    /// job if no worker took it yet, and tells the worker that took it to
    /// stop it otherwise.
    async fn submit(
        &self,
        job: RelayedJob,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<RelayDone, JobError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        lock(&self.waiting).insert(id, sender);
        let task = RelayTask {
            id,
            job,
            timeout_ms: None,
        };
        lock(&self.queue).push_back(Pending { task, deadline });
        self.ready.notify_one();
        let _withdraw = Withdraw { relay: self, id };
        receiver
            .await
            .map_err(|_| JobError::Internal("the relayed job was dropped".into()))
    }

    /// The next job still wanted for `worker`, waiting up to
    /// [`POLL_WAIT`] for one. Meanwhile, every second, jobs taken by workers
    /// no longer `live` are put back in the queue.
    async fn poll(
        &self,
        worker: &str,
        taker: &str,
        live: &(dyn Fn() -> HashSet<String> + Sync),
    ) -> Option<RelayTask> {
        let until = tokio::time::Instant::now() + POLL_WAIT;
        loop {
            self.requeue_lost(&live());
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut queue = lock(&self.queue);
                let waiting = lock(&self.waiting);
                let now = tokio::time::Instant::now();
                while let Some(pending) = queue.pop_front() {
                    let left = pending
                        .deadline
                        .map(|deadline| deadline.saturating_duration_since(now));
                    if !waiting.contains_key(&pending.task.id) || left == Some(Duration::ZERO) {
                        continue;
                    }
                    let mut task = pending.task.clone();
                    // Rounded up: a job with 0.4 ms left still gets to start.
                    task.timeout_ms = left.map(|left| {
                        u64::try_from(left.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)
                    });
                    let taken = Taken {
                        worker: worker.to_owned(),
                        taker: taker.to_owned(),
                        pending,
                    };
                    lock(&self.taken).insert(task.id, taken);
                    return Some(task);
                }
            }
            let wake = until.min(tokio::time::Instant::now() + Duration::from_secs(1));
            if tokio::time::timeout_at(wake, notified).await.is_err()
                && tokio::time::Instant::now() >= until
            {
                return None;
            }
        }
    }

    /// Hands a result to its waiting client, if it comes from the
    /// connection that took the job; `false` (and nothing changes)
    /// otherwise.
    fn done(&self, caller: &str, done: RelayDone) -> bool {
        {
            let mut taken = lock(&self.taken);
            match taken.get(&done.id) {
                Some(taken_by) if taken_by.taker == caller && taken_by.worker == done.worker => {
                    taken.remove(&done.id);
                }
                _ => return false,
            }
        }
        if let Some(waiter) = lock(&self.waiting).remove(&done.id) {
            let _ = waiter.send(done);
        }
        true
    }

    /// The ids of jobs taken on connection `taker` whose callers stopped
    /// waiting, as soon as there is one, waiting up to [`POLL_WAIT`].
    async fn cancelled(&self, taker: &str) -> Vec<u64> {
        let until = tokio::time::Instant::now() + POLL_WAIT;
        loop {
            let notified = self.cancel_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(ids) = lock(&self.cancelled).remove(taker) {
                return ids.into();
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return Vec::new();
            }
        }
    }

    /// The caller of job `id` stopped waiting: withdraw it, and if a worker
    /// took it, tell that worker's connection to stop it.
    fn withdraw(&self, id: u64) {
        lock(&self.waiting).remove(&id);
        let Some(taken) = lock(&self.taken).remove(&id) else {
            return;
        };
        {
            let mut cancelled = lock(&self.cancelled);
            if cancelled.len() >= MAX_CANCELLED_CONNECTIONS
                && !cancelled.contains_key(&taken.taker)
                && let Some(gone) = cancelled.keys().next().cloned()
            {
                cancelled.remove(&gone);
            }
            let ids = cancelled.entry(taken.taker).or_default();
            if ids.len() >= MAX_CANCELLATIONS_KEPT {
                ids.pop_front();
            }
            ids.push_back(id);
        }
        self.cancel_ready.notify_waiters();
    }

    /// Puts back in the queue the jobs of workers that are not `live`.
    fn requeue_lost(&self, live: &HashSet<String>) {
        let lost: Vec<Pending> = {
            let mut taken = lock(&self.taken);
            let lost_ids: Vec<u64> = taken
                .iter()
                .filter(|(_, taken)| !live.contains(&taken.worker))
                .map(|(id, _)| *id)
                .collect();
            lost_ids
                .into_iter()
                .filter_map(|id| taken.remove(&id).map(|taken| taken.pending))
                .collect()
        };
        if lost.is_empty() {
            return;
        }
        tracing::warn!(
            jobs = lost.len(),
            "a relayed worker went away; its jobs go to another"
        );
        let mut queue = lock(&self.queue);
        for task in lost {
            queue.push_front(task);
            self.ready.notify_one();
        }
    }
}

/// Removes a job's waiter when its client stops waiting.
struct Withdraw<'a> {
    relay: &'a Relay,
    id: u64,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        self.relay.withdraw(self.id);
    }
}

/// Modules clients shipped to the coordinator for relayed workers, bounded
/// in bytes (oldest out first). Relayed workers validate them.
#[derive(Default, Clone)]
struct RelayModules {
    modules: Arc<Mutex<Held>>,
}

/// The modules, oldest first, and their total size.
#[derive(Default)]
struct Held {
    by_hash: HashMap<ContentHash, Bytes>,
    oldest_first: VecDeque<ContentHash>,
    bytes: u64,
}

/// At most this many bytes of modules wait at a coordinator.
const RELAY_MODULE_BYTES: u64 = 1 << 30;

impl RelayModules {
    fn get(&self, hash: &ContentHash) -> Option<Bytes> {
        lock(&self.modules).by_hash.get(hash).cloned()
    }
}

impl ProgramStore for RelayModules {
    fn contains(&self, hash: &ContentHash) -> bool {
        lock(&self.modules).by_hash.contains_key(hash)
    }

    fn accepts(&self, len: u64) -> Result<(), ProgramRejected> {
        if len <= RELAY_MODULE_BYTES {
            Ok(())
        } else {
            Err(ProgramRejected::too_large(len, RELAY_MODULE_BYTES))
        }
    }

    fn insert(&self, hash: ContentHash, program: Bytes) -> InsertFuture {
        let mut held = lock(&self.modules);
        let len = program.len() as u64;
        if held.by_hash.insert(hash, program).is_none() {
            held.oldest_first.push_back(hash);
            held.bytes += len;
        }
        while held.bytes > RELAY_MODULE_BYTES {
            let Some(oldest) = held.oldest_first.pop_front() else {
                break;
            };
            if let Some(evicted) = held.by_hash.remove(&oldest) {
                held.bytes -= evicted.len() as u64;
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Adds the relay to a coordinator's server: clients call it as a worker
/// ([`Jobs`], shipping modules to it), relayed workers through
/// [`Relaying`].
pub(crate) fn add_relay(
    server: ServerBuilder,
    live: impl Fn() -> HashSet<String> + Send + Sync + 'static,
) -> ServerBuilder {
    let hub = Arc::new(Hub {
        relay: Arc::new(Relay::default()),
        live: Box::new(live),
        stats: Arc::new(RelayStats::default()),
    });
    server
        .collector(RelayCollector {
            relay: Arc::clone(&hub.relay),
            stats: Arc::clone(&hub.stats),
        })
        .programs(hub.relay.modules.clone())
        .program_roles(roles::RUNS_JOBS)
        .service(JobsServer::from_arc(Arc::clone(&hub)))
        .service(RelayingServer::from_arc(hub))
}

/// The relay and who is live in the directory, behind the functions.
struct Hub {
    relay: Arc<Relay>,
    /// The names of the workers registered now.
    live: Box<dyn Fn() -> HashSet<String> + Send + Sync>,
    stats: Arc<RelayStats>,
}

/// The relay's counters and queue, for metrics.
struct RelayCollector {
    relay: Arc<Relay>,
    stats: Arc<RelayStats>,
}

impl std::fmt::Debug for RelayCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayCollector").finish_non_exhaustive()
    }
}

impl Collector for RelayCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let queued = lock(&self.relay.queue).len() as u64;
        self.stats.encode(queued, &mut encoder)
    }
}

impl Jobs for Hub {
    async fn run(
        &self,
        context: Context,
        request: RunRequest,
    ) -> Result<RunOutput, Failure<JobError>> {
        let (worker, outcome) = self
            .relay
            .relay(request.module, RelayedJob::Run(request), context.deadline())
            .await
            .inspect_err(|error| self.stats.record_error(error))
            .map_err(answer)?;
        let RelayOutcome::Run(result) = outcome else {
            return Err(Failure::Error(mismatched()));
        };
        self.stats.record(&result);
        result.map_err(answer).map(|mut output| {
            output.receipt.relayed_to = Some(worker);
            output
        })
    }

    async fn call(
        &self,
        context: Context,
        request: CallRequest,
    ) -> Result<CallOutput, Failure<JobError>> {
        let (worker, outcome) = self
            .relay
            .relay(
                request.module,
                RelayedJob::Call(request),
                context.deadline(),
            )
            .await
            .inspect_err(|error| self.stats.record_error(error))
            .map_err(answer)?;
        let RelayOutcome::Call(result) = outcome else {
            return Err(Failure::Error(mismatched()));
        };
        self.stats.record(&result);
        result.map_err(answer).map(|mut output| {
            output.receipt.relayed_to = Some(worker);
            output
        })
    }
}

impl Relaying for Hub {
    async fn poll(&self, context: Context, worker: String) -> Option<RelayTask> {
        // Only the connection that takes a job may answer it.
        self.relay
            .poll(&worker, &taker(&context), &*self.live)
            .await
    }

    async fn done(&self, context: Context, result: RelayDone) -> Result<(), JobError> {
        let id = result.id;
        if self.relay.done(&taker(&context), result) {
            Ok(())
        } else {
            Err(JobError::Forbidden(format!(
                "job {id} was not taken on this connection, or no one waits for it"
            )))
        }
    }

    async fn cancelled(&self, context: Context, _worker: String) -> Vec<u64> {
        self.relay.cancelled(&taker(&context)).await
    }

    async fn module(&self, hash: ContentHash) -> Result<Bytes, JobError> {
        self.relay
            .modules
            .get(&hash)
            .ok_or(JobError::ModuleNotFound(hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> RelayedJob {
        RelayedJob::Run(RunRequest {
            module: ContentHash::from_bytes([1; 32]),
            command: crate::Command::new(),
        })
    }

    fn everyone_live() -> HashSet<String> {
        HashSet::from(["w".to_owned()])
    }

    #[tokio::test]
    async fn a_taken_job_carries_what_is_left_of_its_deadline() {
        let relay = Arc::new(Relay::default());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let submitting = Arc::clone(&relay);
        let waiting = tokio::spawn(async move { submitting.submit(job(), Some(deadline)).await });
        let task = relay.poll("w", "conn", &everyone_live).await.unwrap();
        let left = task.timeout_ms.unwrap();
        assert!((29_000..=30_000).contains(&left), "{left} ms left");
        waiting.abort();

        let submitting = Arc::clone(&relay);
        let waiting = tokio::spawn(async move { submitting.submit(job(), None).await });
        let task = relay.poll("w", "conn", &everyone_live).await.unwrap();
        assert_eq!(task.timeout_ms, None, "no deadline, none carried");
        waiting.abort();
    }

    #[tokio::test]
    async fn a_job_whose_caller_left_is_reported_to_the_connection_that_took_it() {
        let relay = Arc::new(Relay::default());
        let submitting = Arc::clone(&relay);
        let waiting = tokio::spawn(async move { submitting.submit(job(), None).await });
        let task = relay.poll("w", "conn", &everyone_live).await.unwrap();
        let watching = Arc::clone(&relay);
        let watch = tokio::spawn(async move { watching.cancelled("conn").await });
        tokio::task::yield_now().await;
        // The caller goes away (its call was cancelled or timed out).
        waiting.abort();
        assert_eq!(watch.await.unwrap(), vec![task.id]);
        // Nothing is left behind, and no other connection hears of it.
        assert!(lock(&relay.taken).is_empty() && lock(&relay.waiting).is_empty());
        assert!(lock(&relay.cancelled).is_empty());

        // A job answered normally is not reported as cancelled.
        let submitting = Arc::clone(&relay);
        let waiting = tokio::spawn(async move { submitting.submit(job(), None).await });
        let task = relay.poll("w", "conn", &everyone_live).await.unwrap();
        let done = RelayDone {
            id: task.id,
            worker: "w".into(),
            outcome: RelayOutcome::Run(Err(JobError::Cancelled)),
        };
        assert!(relay.done("conn", done));
        assert!(waiting.await.unwrap().is_ok());
        assert!(lock(&relay.cancelled).is_empty());
    }

    /// Job `id` is taken on connection `taker`, then its caller leaves.
    fn take_then_withdraw(relay: &Relay, id: u64, taker: &str) {
        let pending = Pending {
            task: RelayTask {
                id,
                job: job(),
                timeout_ms: None,
            },
            deadline: None,
        };
        let taken = Taken {
            worker: "w".into(),
            taker: taker.into(),
            pending,
        };
        lock(&relay.taken).insert(id, taken);
        relay.withdraw(id);
    }

    #[test]
    fn cancellations_nobody_collects_are_bounded() {
        let relay = Relay::default();
        for id in 0..(MAX_CANCELLATIONS_KEPT as u64 + 10) {
            take_then_withdraw(&relay, id, "old");
        }
        let kept = lock(&relay.cancelled).get("old").map(VecDeque::len);
        assert_eq!(kept, Some(MAX_CANCELLATIONS_KEPT));

        // Connections that never collect theirs are bounded too.
        let first = MAX_CANCELLATIONS_KEPT as u64 + 10;
        for id in first..first + MAX_CANCELLED_CONNECTIONS as u64 + 10 {
            take_then_withdraw(&relay, id, &format!("gone-{id}"));
        }
        assert_eq!(lock(&relay.cancelled).len(), MAX_CANCELLED_CONNECTIONS);
    }
}
