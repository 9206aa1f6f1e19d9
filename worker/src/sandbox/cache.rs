//! The module cache: shipped modules by SHA-256, compiled once, kept
//! compiled in memory (bounded, least recently used out first) and on disk
//! (so a restarted worker does not compile again).

mod cost;
mod disk;
mod memory;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use rpc_core::{ContentHash, ProgramRejected};
use tokio::sync::Semaphore;
use wasmtime::{Engine, InstancePre, Linker, Module, UnknownImportError};

use crate::job::{JobError, ModuleOrigin};
use crate::limits::Limits;
use crate::lock;
use crate::sandbox::engine;
use crate::sandbox::state::JobState;
use cost::CompileCost;
use disk::DiskCache;
use memory::Lru;

/// A compiled module, ready to instantiate.
pub(crate) struct Compiled {
    pub(crate) module: Module,
    /// Linked against the worker's imports, or why it cannot be.
    pub(crate) pre: Result<InstancePre<JobState>, JobError>,
    /// How long compiling took (0 if loaded from disk).
    pub(crate) compile_us: u64,
    /// The module's hash in hex: the program name (`argv[0]`) its jobs
    /// see, formatted once.
    pub(crate) name: String,
    /// Whether instantiating it is cheap enough for a job's first slice to
    /// run where the call arrived (see [`Compiled::instantiates_quickly`]).
    pub(crate) starts_inline: bool,
}

/// A compiled image (code and data) up to this size, and tables up to this
/// many elements, instantiate in microseconds.
const QUICK_IMAGE_BYTES: u64 = 4 << 20;
const QUICK_TABLE_ELEMENTS: u64 = 10_000;

impl Compiled {
    /// Whether instantiating `module` is cheap: instantiation (data and
    /// element segments copied in) is not wasm code, so it does not yield;
    /// a job of a module with a large image or table starts on a thread of
    /// its own instead of on the async runtime.
    fn instantiates_quickly(module: &Module, image_bytes: u64) -> bool {
        let tables = module
            .resources_required()
            .max_initial_table_size
            .unwrap_or(0);
        image_bytes <= QUICK_IMAGE_BYTES && tables <= QUICK_TABLE_ELEMENTS
    }
}

/// Large modules compiled (or loaded from disk) at the same time, at most:
/// each compile already uses every core, and its memory grows with the
/// module.
const LARGE_COMPILES_AT_ONCE: usize = 1;
/// Small modules compiled at the same time, at most, in a lane of their
/// own, so that they never wait behind a large one.
const SMALL_COMPILES_AT_ONCE: usize = 2;
/// Modules whose compile failed, remembered so that they are not compiled
/// again.
const FAILURES_REMEMBERED: u64 = 4096;

type Loaded = Result<(Arc<Compiled>, ModuleOrigin), JobError>;
/// What the cache holds of a module not compiled in memory.
enum Found {
    /// Its compiled form, from disk.
    Compiled(Arc<Compiled>),
    /// Only its bytes.
    Source(Bytes),
}

/// A compile in progress: its own task, shared by every job waiting for it;
/// a job that stops waiting does not stop it or start another.
type Loading = Shared<BoxFuture<'static, Loaded>>;

/// Modules and their compiled forms. See the module docs.
pub(crate) struct ModuleCache {
    engine: Engine,
    linker: Arc<Linker<JobState>>,
    disk: Option<Arc<DiskCache>>,
    /// Shipped modules, when there is no disk cache.
    sources: Mutex<Lru<Bytes>>,
    compiled: Mutex<Lru<Compiled>>,
    loading: Mutex<HashMap<ContentHash, Loading>>,
    /// Modules whose compile failed, and why.
    failed: Mutex<Lru<JobError>>,
    /// Bound compiles at once, in two lanes by size: a burst of new modules
    /// must not start hundreds of compilers, and a small module must not
    /// wait for a large one.
    large_lane: Semaphore,
    small_lane: Semaphore,
    limits: Limits,
    pub(crate) compiles: AtomicU64,
    pub(crate) disk_hits: AtomicU64,
}

impl ModuleCache {
    /// A cache for `engine`'s modules; on disk under `dir` if given, and
    /// holding up to `memory_budget` bytes of compiled code in memory (and,
    /// without a disk, as much again of shipped modules).
    pub(crate) fn new(
        engine: Engine,
        linker: Arc<Linker<JobState>>,
        dir: Option<&Path>,
        memory_budget: u64,
        limits: &Limits,
    ) -> std::io::Result<ModuleCache> {
        let disk = match dir {
            Some(dir) => Some(Arc::new(DiskCache::open(
                dir,
                engine.precompile_compatibility_hash(),
            )?)),
            None => None,
        };
        Ok(ModuleCache {
            engine,
            linker,
            disk,
            sources: Mutex::new(Lru::new(memory_budget)),
            compiled: Mutex::new(Lru::new(memory_budget)),
            loading: Mutex::new(HashMap::new()),
            failed: Mutex::new(Lru::new(FAILURES_REMEMBERED)),
            large_lane: Semaphore::new(LARGE_COMPILES_AT_ONCE),
            small_lane: Semaphore::new(SMALL_COMPILES_AT_ONCE),
            limits: limits.clone(),
            compiles: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
        })
    }

    /// Whether the module is held (shipped and kept).
    pub(crate) fn contains(&self, hash: &ContentHash) -> bool {
        match &self.disk {
            Some(disk) => disk.has_module(hash),
            None => lock(&self.sources).get(hash).is_some(),
        }
    }

    /// Whether a module of `len` bytes may be shipped.
    pub(crate) fn accepts(&self, len: u64) -> Result<(), ProgramRejected> {
        if len <= self.limits.module_bytes {
            Ok(())
        } else {
            Err(ProgramRejected::too_large(len, self.limits.module_bytes))
        }
    }

    /// Validates a module whose bytes hash to `hash` (size and compile cost
    /// included), then keeps it.
    pub(crate) async fn insert(
        self: &Arc<Self>,
        hash: ContentHash,
        bytes: Bytes,
    ) -> Result<(), ProgramRejected> {
        let cache = Arc::clone(self);
        let stored = tokio::task::spawn_blocking(move || {
            // Size first, then what compiling and instantiating would cost
            // (which names a limit), then everything else.
            engine::check_len(&bytes, cache.limits.module_bytes)
                .and_then(|()| CompileCost::of(&bytes).check(&cache.limits))
                .and_then(|()| engine::validate(&cache.engine, &bytes, cache.limits.module_bytes))
                .map_err(|error| ProgramRejected::invalid(error.to_string()))?;
            match &cache.disk {
                Some(disk) => disk.write_module(&hash, &bytes).map_err(|error| {
                    tracing::error!(%error, "could not write a module to the cache");
                    ProgramRejected::unavailable(format!("the worker could not store it: {error}"))
                }),
                None => {
                    let len = bytes.len() as u64;
                    lock(&cache.sources).insert(hash, Arc::new(bytes), len);
                    Ok(())
                }
            }
        })
        .await;
        stored.unwrap_or_else(|error| Err(ProgramRejected::unavailable(error.to_string())))
    }

    /// The compiled module, from memory, from disk, or compiled now: once,
    /// however many jobs ask at the same time or give up waiting, and
    /// waited for at most the compile timeout.
    pub(crate) async fn get(
        self: &Arc<Self>,
        hash: ContentHash,
    ) -> Result<(Arc<Compiled>, ModuleOrigin), JobError> {
        if let Some(compiled) = lock(&self.compiled).get(&hash) {
            return Ok((compiled, ModuleOrigin::Memory));
        }
        if let Some(error) = lock(&self.failed).get(&hash) {
            return Err((*error).clone());
        }
        let loading = lock(&self.loading)
            .entry(hash)
            .or_insert_with(|| self.start_loading(hash))
            .clone();
        let timeout = self.limits.compile_timeout;
        tokio::time::timeout(timeout, loading)
            .await
            .unwrap_or_else(|_| Err(too_slow(timeout)))
    }

    /// Starts loading or compiling a module in a task of its own.
    fn start_loading(self: &Arc<Self>, hash: ContentHash) -> Loading {
        let cache = Arc::clone(self);
        let task = tokio::spawn(async move {
            let loaded = cache.load(hash).await;
            if let Err(error @ JobError::InvalidModule(_)) = &loaded {
                lock(&cache.failed).insert(hash, Arc::new(error.clone()), 1);
            }
            lock(&cache.loading).remove(&hash);
            loaded
        });
        async move {
            task.await
                .unwrap_or_else(|error| Err(JobError::Internal(error.to_string())))
        }
        .boxed()
        .shared()
    }

    /// Loads the module from the disk cache, or compiles it in the lane
    /// its size calls for.
    async fn load(self: &Arc<Self>, hash: ContentHash) -> Loaded {
        let finder = Arc::clone(self);
        let found = tokio::task::spawn_blocking(move || finder.find(hash))
            .await
            .unwrap_or_else(|error| Err(JobError::Internal(error.to_string())))?;
        let source = match found {
            Found::Compiled(compiled) => return Ok((compiled, ModuleOrigin::Disk)),
            Found::Source(source) => source,
        };
        // Checked again: the module may have been shipped under laxer limits.
        let cost = CompileCost::of(&source);
        cost.check(&self.limits)?;
        let lane = if cost.is_small() {
            &self.small_lane
        } else {
            &self.large_lane
        };
        let Ok(_permit) = lane.acquire().await else {
            return Err(JobError::Internal("the compiler queue closed".into()));
        };
        let compiler = Arc::clone(self);
        tokio::task::spawn_blocking(move || compiler.compile(hash, &source))
            .await
            .unwrap_or_else(|error| Err(JobError::Internal(error.to_string())))
    }

    /// The compiled module from the disk cache, or else the module's bytes
    /// to compile; runs on a blocking thread.
    fn find(&self, hash: ContentHash) -> Result<Found, JobError> {
        if let Some(module) = self.load_artifact(&hash) {
            self.disk_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Found::Compiled(self.keep(hash, module, 0)));
        }
        let source = match &self.disk {
            Some(disk) => disk
                .read_module(&hash)
                .map_err(|error| JobError::Internal(format!("reading the module: {error}")))?,
            None => lock(&self.sources).get(&hash).map(|bytes| (*bytes).clone()),
        };
        source
            .map(Found::Source)
            .ok_or(JobError::ModuleNotFound(hash))
    }

    /// Compiles a module (and keeps the artifact on disk); runs on a
    /// blocking thread.
    fn compile(&self, hash: ContentHash, source: &[u8]) -> Loaded {
        let started = Instant::now();
        let module = Module::from_binary(&self.engine, source)
            .map_err(|error| JobError::InvalidModule(format!("{error:#}")))?;
        let took = started.elapsed();
        let compile_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.compiles.fetch_add(1, Ordering::Relaxed);
        tracing::info!(module = %hash, compile_us, "compiled a module");
        if took > self.limits.compile_timeout {
            return Err(too_slow(self.limits.compile_timeout));
        }
        if let Some(disk) = &self.disk {
            match module.serialize() {
                Ok(artifact) => {
                    if let Err(error) = disk.write_artifact(&hash, &artifact) {
                        tracing::warn!(%error, "could not write a compiled module to the cache");
                    }
                }
                Err(error) => tracing::warn!(%error, "could not serialize a compiled module"),
            }
        }
        Ok((self.keep(hash, module, compile_us), ModuleOrigin::Compiled))
    }

    /// An intact artifact this cache wrote, deserialized.
    #[allow(unsafe_code)]
    fn load_artifact(&self, hash: &ContentHash) -> Option<Module> {
        let disk = self.disk.as_ref()?;
        let artifact = match disk.read_artifact(hash) {
            Ok(artifact) => artifact?,
            Err(error) => {
                tracing::warn!(%error, "could not read a compiled module; recompiling");
                return None;
            }
        };
        // SAFETY: wasmtime requires the bytes to come from `serialize` of a
        // compatible engine. `read_artifact` returns only files whose MAC,
        // keyed by this cache's private key, proves that this cache wrote
        // them from `Module::serialize`, under a directory named after the
        // engine's compatibility hash (and wasmtime checks compatibility
        // again). Artifacts never come from the network.
        match unsafe { Module::deserialize(&self.engine, &artifact) } {
            Ok(module) => Some(module),
            Err(error) => {
                tracing::warn!(%error, "a cached compiled module did not load; recompiling");
                None
            }
        }
    }

    fn keep(&self, hash: ContentHash, module: Module, compile_us: u64) -> Arc<Compiled> {
        let pre = self.linker.instantiate_pre(&module).map_err(link_error);
        let image = module.image_range();
        let size = (image.end.addr() - image.start.addr()) as u64;
        let compiled = Arc::new(Compiled {
            starts_inline: Compiled::instantiates_quickly(&module, size),
            module,
            pre,
            compile_us,
            name: hash.to_string(),
        });
        lock(&self.compiled).insert(hash, Arc::clone(&compiled), size);
        compiled
    }

    /// The modules compiled in memory now.
    pub(crate) fn compiled_modules(&self) -> Vec<ContentHash> {
        lock(&self.compiled).keys()
    }

    /// Compiled modules in memory now.
    pub(crate) fn in_memory(&self) -> usize {
        lock(&self.compiled).len()
    }

    /// Bytes of compiled code in memory now.
    pub(crate) fn memory_bytes(&self) -> u64 {
        lock(&self.compiled).bytes()
    }
}

/// A module took longer to compile than allowed.
fn too_slow(timeout: Duration) -> JobError {
    JobError::InvalidModule(format!(
        "compiling the module takes longer than the {} s this worker allows \
         (its operator can raise --compile-timeout)",
        timeout.as_secs_f64()
    ))
}

/// Names the import a module wants and the worker lacks.
pub(crate) fn link_error(error: wasmtime::Error) -> JobError {
    match error.downcast_ref::<UnknownImportError>() {
        Some(unknown) => JobError::UnknownImport {
            module: unknown.module().to_owned(),
            name: unknown.name().to_owned(),
        },
        None => JobError::InvalidModule(format!("{error:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_with_a_large_table_or_image_start_on_a_thread_of_their_own() {
        let engine = Engine::default();
        let module = |text: &str| Module::new(&engine, wat::parse_str(text).unwrap()).unwrap();
        let small = module(r#"(module (table 10 funcref) (func (export "_start")))"#);
        assert!(Compiled::instantiates_quickly(&small, 64 << 10));
        let table = module(r#"(module (table 50000 funcref) (func (export "_start")))"#);
        assert!(!Compiled::instantiates_quickly(&table, 64 << 10));
        assert!(!Compiled::instantiates_quickly(&small, 8 << 20));
    }
}
