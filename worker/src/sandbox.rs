//! The sandbox: compiles and caches modules and runs jobs under hard
//! limits, in a fixed number of slots.
//!
//! A job is a future (wasmtime's async support: the guest runs on a fiber
//! stack and yields every few tens of microseconds of guest time). Its
//! first slice runs right where the call arrived, on the async runtime:
//! a short job, the common case, is done there without a hand-off between
//! threads. A job still running after its first slice moves to a blocking
//! thread of its own, so a long guest never holds up the runtime's threads.

mod cache;
mod engine;
mod exec;
mod output;
mod poll;
mod slots;
mod state;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rpc_core::{ContentHash, InsertFuture, ProgramRejected, ProgramStore};
use wasmtime::{Engine, Linker};

use crate::error::SandboxError;
use crate::job::{CallOutput, CallRequest, Command, JobError, RunOutput, RunRequest, WorkerStatus};
use crate::limits::Limits;
use crate::metrics::{JobStats, Load, SandboxCollector};
use cache::ModuleCache;
use engine::EpochTicker;
use exec::{CommandInputs, Env, Interrupt};
use slots::{Slot, Slots};
use state::JobState;

/// How a [`Sandbox`] is set up.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The most any job gets.
    pub limits: Limits,
    /// Jobs that run at once; more wait in a queue. Defaults to the number
    /// of cores.
    pub concurrency: u32,
    /// Where shipped modules and compiled code are kept across restarts;
    /// `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Bytes of compiled code kept in memory (and, without a cache
    /// directory, of shipped modules). Defaults to 1 GiB.
    pub memory_cache_bytes: u64,
    /// Host directories a job may ask for by name ([`Command::dir`]); it
    /// sees them read-only at `/NAME`. None by default: jobs get no
    /// filesystem at all.
    pub dirs: Vec<(String, PathBuf)>,
    /// Jobs that may wait for a free slot; past them a job is refused at
    /// once with [`JobError::Busy`]. A job whose caller leaves stops
    /// waiting, and its inputs are freed. The default is
    /// [`DEFAULT_MAX_QUEUED_JOBS`], 1024.
    pub max_queued_jobs: u32,
}

/// The default for [`SandboxConfig::max_queued_jobs`]: 1024.
pub const DEFAULT_MAX_QUEUED_JOBS: u32 = 1024;

impl Default for SandboxConfig {
    fn default() -> SandboxConfig {
        SandboxConfig {
            limits: Limits::default(),
            concurrency: default_concurrency(),
            cache_dir: None,
            memory_cache_bytes: 1 << 30,
            dirs: Vec::new(),
            max_queued_jobs: DEFAULT_MAX_QUEUED_JOBS,
        }
    }
}

/// The number of cores, or 1 if unknown.
pub fn default_concurrency() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
}

/// Compiles, caches and runs WebAssembly modules under hard limits. Cheap
/// to clone; clones share everything.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use worker::{Command, RunRequest, Sandbox, SandboxConfig};
///
/// let sandbox = Sandbox::new(SandboxConfig::default())?;
/// let module = sandbox
///     .add_module(r#"(module (func (export "_start")))"#.as_bytes().to_vec().into())
///     .await?;
/// let output = sandbox.run(RunRequest { module, command: Command::new() }, None).await?;
/// assert_eq!(output.exit_code, 0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Arc<Linker<JobState>>,
    cache: Arc<ModuleCache>,
    limits: Limits,
    dirs: Vec<(String, PathBuf)>,
    slots: Slots,
    /// Jobs counted by outcome, for metrics.
    stats: Arc<JobStats>,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("limits", &self.inner.limits)
            .field("concurrency", &self.inner.slots.size)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Starts a sandbox: the engine, its job threads and its cache.
    ///
    /// # Errors
    ///
    /// [`SandboxError`] if the engine, the cache directory or the threads
    /// cannot be set up.
    pub fn new(config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        if config.concurrency == 0 {
            return Err(SandboxError::Config(
                "concurrency must be at least 1".into(),
            ));
        }
        for (name, path) in &config.dirs {
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err(SandboxError::Config(format!(
                    "{name:?} cannot name a directory: use a plain name like `data`"
                )));
            }
            if !path.is_dir() {
                return Err(SandboxError::Config(format!(
                    "{} (granted as {name:?}) is not a directory",
                    path.display()
                )));
            }
        }
        let limits = config.limits;
        let engine = engine::build(&limits, config.concurrency)
            .map_err(|error| SandboxError::Engine(format!("{error:#}")))?;
        let mut linker = Linker::<JobState>::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |state: &mut JobState| &mut state.wasi)
            .and_then(|()| poll::shadow(&mut linker))
            .map_err(|error| SandboxError::Engine(format!("{error:#}")))?;
        let linker = Arc::new(linker);
        let cache = ModuleCache::new(
            engine.clone(),
            Arc::clone(&linker),
            config.cache_dir.as_deref(),
            config.memory_cache_bytes,
            &limits,
        )
        .map_err(|source| SandboxError::Cache {
            path: config.cache_dir.clone().unwrap_or_default(),
            source,
        })?;
        let slots = Slots::new(config.concurrency, config.max_queued_jobs);
        let ticker = EpochTicker::start(&engine).map_err(SandboxError::Threads)?;
        Ok(Sandbox {
            inner: Arc::new(Inner {
                engine,
                linker,
                cache: Arc::new(cache),
                limits,
                dirs: config.dirs,
                slots,
                stats: Arc::new(JobStats::default()),
                _ticker: ticker,
            }),
        })
    }

    /// The limits jobs run under at most.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Validates and keeps a module (binary, or WAT text for tests and
    /// experiments), returning its hash for [`RunRequest::module`].
    ///
    /// # Errors
    ///
    /// [`JobError::InvalidModule`] saying what is wrong with it.
    pub async fn add_module(&self, bytes: Bytes) -> Result<ContentHash, JobError> {
        let bytes = if bytes.starts_with(b"\0asm") {
            bytes
        } else {
            match wat::parse_bytes(&bytes) {
                Ok(binary) => Bytes::from(binary.into_owned()),
                Err(error) => {
                    return Err(JobError::InvalidModule(format!(
                        "neither a binary module nor valid WAT text: {error}"
                    )));
                }
            }
        };
        let hash = ContentHash::of(&bytes);
        if !self.inner.cache.contains(&hash) {
            self.inner
                .cache
                .insert(hash, bytes)
                .await
                .map_err(|rejected| JobError::InvalidModule(rejected.message().to_owned()))?;
        }
        Ok(hash)
    }

    /// The modules compiled and in memory now (ready to run at once).
    pub fn ready_modules(&self) -> Vec<ContentHash> {
        self.inner.cache.compiled_modules()
    }

    /// Whether the sandbox holds the module.
    pub fn has_module(&self, hash: &ContentHash) -> bool {
        self.inner.cache.contains(hash)
    }

    /// The store a server ships modules into: validates each before keeping
    /// it. Plug it in with [`rpc_core::ServerBuilder::programs`].
    pub fn program_store(&self) -> impl ProgramStore + use<> {
        Programs(Arc::clone(&self.inner.cache))
    }

    /// Runs a WASI command. `deadline`, if sooner than the wall-time limit,
    /// ends it early. Dropping the future cancels the job, stopping the
    /// guest within a few milliseconds.
    ///
    /// # Errors
    ///
    /// [`JobError`] saying why the job has no result.
    pub async fn run(
        &self,
        request: RunRequest,
        deadline: Option<Instant>,
    ) -> Result<RunOutput, JobError> {
        let result = self.run_uncounted(request, deadline).await;
        let receipt = result.as_ref().map(|output| &output.receipt);
        self.inner.stats.record_run(receipt);
        result
    }

    async fn run_uncounted(
        &self,
        request: RunRequest,
        deadline: Option<Instant>,
    ) -> Result<RunOutput, JobError> {
        let RunRequest {
            module,
            command:
                Command {
                    args,
                    env,
                    stdin,
                    limits,
                    stub_unknown_imports,
                    dirs,
                },
        } = request;
        let limits = self.inner.limits.for_job(&limits);
        let dirs = dirs
            .into_iter()
            .map(|name| {
                self.inner
                    .dirs
                    .iter()
                    .find(|(granted, _)| *granted == name)
                    .cloned()
                    .ok_or(JobError::DirNotGranted(name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.execute(module, limits, stub_unknown_imports, deadline, move |job| {
            exec::run_command(
                job,
                CommandInputs {
                    args,
                    vars: env,
                    stdin,
                    dirs,
                },
            )
        })
        .await
    }

    /// Calls a typed export with encoded input; see the crate docs for the
    /// guest side. Deadline and cancellation as in [`Sandbox::run`].
    ///
    /// # Errors
    ///
    /// [`JobError`] saying why the call has no result.
    pub async fn call(
        &self,
        request: CallRequest,
        deadline: Option<Instant>,
    ) -> Result<CallOutput, JobError> {
        let CallRequest {
            module,
            export,
            input,
            limits,
            stub_unknown_imports,
        } = request;
        let limits = self.inner.limits.for_job(&limits);
        let result = self
            .execute(module, limits, stub_unknown_imports, deadline, move |job| {
                exec::call_export(job, export, input)
            })
            .await;
        let receipt = result.as_ref().map(|output| &output.receipt);
        self.inner.stats.record_call(receipt);
        result
    }

    /// A collector of this sandbox's jobs (by outcome, queueing, run time,
    /// fuel, compiles), its module cache and its load, for
    /// [`rpc_core::metrics::Metrics`]; see [`metrics`](crate::metrics) for
    /// the families. A [`worker_server`](crate::worker_server) with
    /// [`ServerConfig::metrics`](rpc_core::ServerConfig::metrics) registers
    /// it itself.
    pub fn metrics_collector(&self) -> SandboxCollector {
        let sandbox = self.clone();
        SandboxCollector {
            stats: Arc::clone(&self.inner.stats),
            load: Box::new(move || Load {
                status: sandbox.status(),
                cache_memory_bytes: sandbox.cache_memory_bytes(),
            }),
        }
    }

    /// What the sandbox is doing and has cached.
    pub fn status(&self) -> WorkerStatus {
        let load = &self.inner.slots.load;
        let cache = &self.inner.cache;
        WorkerStatus {
            concurrency: self.inner.slots.size,
            running: load.running.load(Ordering::Relaxed),
            peak_running: load.peak_running.load(Ordering::Relaxed),
            queued: load.queued.load(Ordering::Relaxed),
            finished: load.finished.load(Ordering::Relaxed),
            compiled: cache.compiles.load(Ordering::Relaxed),
            disk_hits: cache.disk_hits.load(Ordering::Relaxed),
            modules_in_memory: u32::try_from(cache.in_memory()).unwrap_or(u32::MAX),
        }
    }

    /// Bytes of compiled code its cache holds in memory now.
    pub(crate) fn cache_memory_bytes(&self) -> u64 {
        self.inner.cache.memory_bytes()
    }

    /// Gets the compiled module, waits for a slot, and runs the job: its
    /// first slice here, the rest on a blocking thread if there is more.
    async fn execute<T, F>(
        &self,
        module: ContentHash,
        limits: Limits,
        stub_unknown_imports: bool,
        deadline: Option<Instant>,
        work: impl FnOnce(Env) -> F,
    ) -> Result<T, JobError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, JobError>> + Send + 'static,
    {
        let (compiled, origin) = self.inner.cache.get(module).await?;
        let queued_at = Instant::now();
        let queue_full = |full: slots::QueueFull| {
            JobError::Busy(format!(
                "{} jobs already wait for a slot, the most this worker queues",
                full.max
            ))
        };
        let waiting = self.inner.slots.acquire();
        let slot = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline.into(), waiting).await {
                Ok(slot) => slot.map_err(queue_full)?,
                Err(_) => {
                    return Err(JobError::DeadlineExceeded {
                        elapsed_ms: 0,
                        stderr: Bytes::new(),
                    });
                }
            },
            None => waiting.await.map_err(queue_full)?,
        };
        let now = Instant::now();
        let queued_us =
            u64::try_from(now.duration_since(queued_at).as_micros()).unwrap_or(u64::MAX);
        let wall = now
            .checked_add(limits.wall_time)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        let deadline = deadline.map_or(wall, |deadline| deadline.min(wall));
        if now >= deadline {
            return Err(JobError::DeadlineExceeded {
                elapsed_ms: 0,
                stderr: Bytes::new(),
            });
        }
        let starts_inline = compiled.starts_inline;
        let cancel = StopGuestOnDrop(Arc::new(AtomicBool::new(false)));
        let env = Env {
            engine: self.inner.engine.clone(),
            linker: Arc::clone(&self.inner.linker),
            compiled,
            origin,
            limits,
            stub_unknown_imports,
            interrupt: Interrupt {
                cancelled: Arc::clone(&cancel.0),
                deadline,
            },
            queued_us,
        };
        let job = InSlot {
            job: Box::pin(work(env)),
            _slot: slot,
        };
        let result = run_sliced(job, starts_inline).await;
        drop(cancel);
        result
    }
}

/// A job and the slot it holds, dropped in that order: the store and its
/// instance are gone before the slot is free again.
struct InSlot<F> {
    job: Pin<Box<F>>,
    _slot: Slot,
}

impl<F: Future> Future for InSlot<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<F::Output> {
        self.job.as_mut().poll(cx)
    }
}

/// Runs the job's first slice on this thread (if `inline`) and, if it is
/// not done, the rest on a blocking thread. Either way the job (its store,
/// then its slot) is dropped before its result is returned.
async fn run_sliced<T, F>(job: InSlot<F>, inline: bool) -> Result<T, JobError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, JobError>> + Send + 'static,
{
    if !inline {
        return on_own_thread(job).await;
    }
    let mut job = Some(job);
    let first = std::future::poll_fn(|cx| {
        let polled = job
            .as_mut()
            .map_or(Poll::Ready(None), |job| Pin::new(job).poll(cx).map(Some));
        Poll::Ready(polled)
    })
    .await;
    let Some(job) = job.take() else {
        return Err(JobError::Internal("the job ran twice".into()));
    };
    if let Poll::Ready(Some(result)) = first {
        drop(job);
        return result;
    }
    on_own_thread(job).await
}

/// Runs the job to its end on a blocking thread. The caller leaving does
/// not wait for it; the job's cancel flag stops the guest.
async fn on_own_thread<T, F>(job: InSlot<F>) -> Result<T, JobError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, JobError>> + Send + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return Err(JobError::Internal(
            "the sandbox runs jobs on a Tokio runtime; call it from within one".into(),
        ));
    };
    tokio::task::spawn_blocking(move || runtime.block_on(job))
        .await
        .unwrap_or_else(|_| Err(JobError::Internal("the job's thread failed".into())))
}

/// Sets the flag when dropped: a job whose caller went away stops.
struct StopGuestOnDrop(Arc<AtomicBool>);

impl Drop for StopGuestOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The sandbox's cache as a server's program store.
struct Programs(Arc<ModuleCache>);

impl ProgramStore for Programs {
    fn contains(&self, hash: &ContentHash) -> bool {
        self.0.contains(hash)
    }

    fn accepts(&self, len: u64) -> Result<(), ProgramRejected> {
        self.0.accepts(len)
    }

    fn insert(&self, hash: ContentHash, program: Bytes) -> InsertFuture {
        let cache = Arc::clone(&self.0);
        Box::pin(async move { cache.insert(hash, program).await })
    }
}
