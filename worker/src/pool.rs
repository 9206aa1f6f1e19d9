//! Jobs spread over many workers: a [`rpc_core::Pool`] that ships modules
//! lazily (once per worker), sends a job whose worker failed to another,
//! and fans one module out over many inputs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use rpc_core::{Pool, PoolConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::{Module, WorkerClient, decode_output, typed_request};
use crate::error::WorkerError;
use crate::job::{CallOutput, Command, RunOutput};

/// Runs jobs on whichever of several workers is expected to answer first,
/// and on another when a worker dies, hangs or leaves mid-job (jobs are
/// deterministic functions of module and input, so running one again is
/// safe). Each job gets exactly one result.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use futures_util::StreamExt;
/// use worker::{Command, Module, Progress, WorkerPool};
///
/// let pool = WorkerPool::new(["10.0.0.1:7070", "10.0.0.2:7070", "10.0.0.3:7070"]);
/// let module = Module::from_file("guest-wordfreq.wasm")?;
/// let inputs = ["some text", "more text"].map(|text| Command::new().stdin(text));
/// let progress = Progress::default();
/// let mut jobs = pool.map(&module, inputs, 16, &progress);
/// while let Some(job) = jobs.next().await {
///     println!("{:?} answered: {:?}", job.worker, job.result.map(|output| output.exit_code));
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct WorkerPool {
    pool: Pool,
    job_timeout: Duration,
}

/// The defaults for a pool of workers: an attempt may take as long as a job
/// may run by default plus queueing, a job up to ten minutes in all.
pub fn worker_pool_config() -> PoolConfig {
    PoolConfig {
        attempt_timeout: Duration::from_secs(120),
        deadline: Duration::from_secs(600),
        ..PoolConfig::default()
    }
}

impl WorkerPool {
    /// A pool over the workers at `addrs`, with [`worker_pool_config`].
    pub fn new<I, S>(addrs: I) -> WorkerPool
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        WorkerPool::with_config(addrs, worker_pool_config())
    }

    /// A pool over the workers at `addrs`, with `config` (tokens go in
    /// `config.client`).
    pub fn with_config<I, S>(addrs: I, config: PoolConfig) -> WorkerPool
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let job_timeout = config.attempt_timeout;
        WorkerPool {
            pool: Pool::new(addrs, config),
            job_timeout,
        }
    }

    /// The underlying pool: its servers' status, or a new address list.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Runs `module` as a WASI command on one worker (shipping the module
    /// there first if it lacks it).
    ///
    /// # Errors
    ///
    /// The job's own [`WorkerError::Job`], or the last worker failure once
    /// the pool's attempts or deadline ran out.
    pub async fn run(&self, module: &Module, command: Command) -> Result<RunOutput, WorkerError> {
        self.run_reporting(module, command).await.result
    }

    /// Like [`run`](WorkerPool::run), saying which worker gave the result.
    pub async fn run_reporting(&self, module: &Module, command: Command) -> Dispatched<RunOutput> {
        // The attempts are sequential: the last one tried is the one whose
        // result the pool returns.
        let last = std::sync::Mutex::new(None::<String>);
        let result = self
            .pool
            .dispatch(|client| {
                if let Ok(mut last) = last.lock() {
                    *last = Some(client.addr().to_owned());
                }
                let command = command.clone();
                async move { self.worker(client).run(module, command).await }
            })
            .await;
        let worker = last.into_inner().ok().flatten();
        // A worker behind a relay is named by the relay's receipt.
        let worker = match &result {
            Ok(output) => output.receipt.relayed_to.clone().or(worker),
            Err(_) => worker,
        };
        Dispatched { worker, result }
    }

    /// Calls a typed export on one worker; see [`WorkerClient::call`].
    ///
    /// # Errors
    ///
    /// As for [`WorkerPool::run`], and [`WorkerError::Encode`] or
    /// [`WorkerError::Decode`] for the input and output.
    pub async fn call<In, Out>(
        &self,
        module: &Module,
        name: &str,
        input: &In,
    ) -> Result<Out, WorkerError>
    where
        In: Serialize + ?Sized,
        Out: DeserializeOwned,
    {
        let request = typed_request(module, name, input)?;
        let output: CallOutput = self
            .pool
            .dispatch(|client| {
                let request = request.clone();
                async move { self.worker(client).call_raw(module, request).await }
            })
            .await?;
        decode_output(&output)
    }

    /// Runs `module` once per command, at most `concurrency` at a time over
    /// the pool, yielding the results in the order of the commands, each
    /// with the worker that gave it. `progress` counts them as they go, for
    /// a progress bar.
    pub fn map<'a, I>(
        &'a self,
        module: &'a Module,
        commands: I,
        concurrency: usize,
        progress: &'a Progress,
    ) -> impl Stream<Item = Dispatched<RunOutput>> + 'a
    where
        I: IntoIterator<Item = Command>,
        I::IntoIter: 'a,
    {
        futures_util::stream::iter(commands)
            .map(move |command| progress.track(self.run_reporting(module, command)))
            .buffered(concurrency.max(1))
    }

    /// Like [`map`](WorkerPool::map), yielding `(index, result)` as jobs
    /// complete.
    pub fn map_unordered<'a, I>(
        &'a self,
        module: &'a Module,
        commands: I,
        concurrency: usize,
        progress: &'a Progress,
    ) -> impl Stream<Item = (usize, Dispatched<RunOutput>)> + 'a
    where
        I: IntoIterator<Item = Command>,
        I::IntoIter: 'a,
    {
        futures_util::stream::iter(commands.into_iter().enumerate())
            .map(move |(index, command)| async move {
                (
                    index,
                    progress.track(self.run_reporting(module, command)).await,
                )
            })
            .buffer_unordered(concurrency.max(1))
    }

    fn worker(&self, client: rpc_core::Client) -> WorkerClient {
        WorkerClient::new(client).timeout(self.job_timeout)
    }
}

/// Counts a fan-out's jobs: finished, failed, in flight. Read it from
/// another task while the jobs run.
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    failed: AtomicU64,
    in_flight: AtomicU64,
}

/// A reading of a [`Progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressCount {
    /// Jobs with a result (success or a job error).
    pub done: u64,
    /// Of those, how many failed.
    pub failed: u64,
    /// Jobs sent and not yet answered.
    pub in_flight: u64,
}

impl Progress {
    /// The counts now.
    pub fn count(&self) -> ProgressCount {
        ProgressCount {
            done: self.done.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }

    async fn track<T>(&self, job: impl Future<Output = Dispatched<T>>) -> Dispatched<T> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let dispatched = job.await;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if dispatched.result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.done.fetch_add(1, Ordering::Relaxed);
        dispatched
    }
}

/// A job's result from a [`WorkerPool`], with the worker that gave it.
#[derive(Debug)]
pub struct Dispatched<T> {
    /// The address of the worker whose answer this is (for a worker behind
    /// a relay, the name it registered with); `None` when no worker could
    /// be tried.
    pub worker: Option<String>,
    /// The job's output, or why it has none.
    pub result: Result<T, WorkerError>,
}
