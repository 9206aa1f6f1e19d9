//! The module cache: shipped modules by SHA-256, compiled once, kept
//! compiled in memory (bounded, least recently used out first) and on disk
//! (so a restarted worker does not compile again).

mod disk;
mod memory;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use rpc_core::{ContentHash, ProgramRejected};
use tokio::sync::{OnceCell, Semaphore};
use wasmtime::{Engine, InstancePre, Linker, Module, UnknownImportError};

use crate::job::{JobError, ModuleOrigin};
use crate::lock;
use crate::sandbox::engine;
use crate::sandbox::state::JobState;
use disk::DiskCache;
use memory::Lru;

/// A compiled module, ready to instantiate.
pub(crate) struct Compiled {
    pub(crate) module: Module,
    /// Linked against the worker's imports, or why it cannot be.
    pub(crate) pre: Result<InstancePre<JobState>, JobError>,
    /// How long compiling took (0 if loaded from disk).
    pub(crate) compile_us: u64,
}

/// Modules compiled (or loaded from disk) at the same time, at most.
const COMPILES_AT_ONCE: usize = 2;

type Loading = Arc<OnceCell<Result<(Arc<Compiled>, ModuleOrigin), JobError>>>;

/// Modules and their compiled forms. See the module docs.
pub(crate) struct ModuleCache {
    engine: Engine,
    linker: Arc<Linker<JobState>>,
    disk: Option<Arc<DiskCache>>,
    /// Shipped modules, when there is no disk cache.
    sources: Mutex<Lru<Bytes>>,
    compiled: Mutex<Lru<Compiled>>,
    loading: Mutex<HashMap<ContentHash, Loading>>,
    /// Bounds compilations at once: each already uses every core, and a
    /// burst of new modules must not queue hundreds of compilers.
    compiling: Semaphore,
    max_module_bytes: u64,
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
        max_module_bytes: u64,
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
            compiling: Semaphore::new(COMPILES_AT_ONCE),
            max_module_bytes,
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
        if len <= self.max_module_bytes {
            Ok(())
        } else {
            Err(ProgramRejected::too_large(len, self.max_module_bytes))
        }
    }

    /// Validates a module whose bytes hash to `hash` (size included), then
    /// keeps it.
    pub(crate) async fn insert(
        self: &Arc<Self>,
        hash: ContentHash,
        bytes: Bytes,
    ) -> Result<(), ProgramRejected> {
        let cache = Arc::clone(self);
        let stored = tokio::task::spawn_blocking(move || {
            engine::validate(&cache.engine, &bytes, cache.max_module_bytes)
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

    /// The compiled module, from memory, from disk, or compiled now (once,
    /// however many jobs ask at the same time).
    pub(crate) async fn get(
        self: &Arc<Self>,
        hash: ContentHash,
    ) -> Result<(Arc<Compiled>, ModuleOrigin), JobError> {
        if let Some(compiled) = lock(&self.compiled).get(&hash) {
            return Ok((compiled, ModuleOrigin::Memory));
        }
        let cell = Arc::clone(lock(&self.loading).entry(hash).or_default());
        let result = cell
            .get_or_init(|| async {
                let Ok(_permit) = self.compiling.acquire().await else {
                    return Err(JobError::Internal("the compiler queue closed".into()));
                };
                let cache = Arc::clone(self);
                tokio::task::spawn_blocking(move || cache.load(hash))
                    .await
                    .unwrap_or_else(|error| Err(JobError::Internal(error.to_string())))
            })
            .await
            .clone();
        lock(&self.loading).remove(&hash);
        result
    }

    /// Loads from disk or compiles; runs on a blocking thread.
    fn load(&self, hash: ContentHash) -> Result<(Arc<Compiled>, ModuleOrigin), JobError> {
        if let Some(module) = self.load_artifact(&hash) {
            self.disk_hits.fetch_add(1, Ordering::Relaxed);
            return Ok((self.keep(hash, module, 0), ModuleOrigin::Disk));
        }
        let source = match &self.disk {
            Some(disk) => disk
                .read_module(&hash)
                .map_err(|error| JobError::Internal(format!("reading the module: {error}")))?,
            None => lock(&self.sources).get(&hash).map(|bytes| (*bytes).clone()),
        };
        let source = source.ok_or(JobError::ModuleNotFound(hash))?;
        let started = Instant::now();
        let module = Module::from_binary(&self.engine, &source)
            .map_err(|error| JobError::InvalidModule(format!("{error:#}")))?;
        let compile_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.compiles.fetch_add(1, Ordering::Relaxed);
        tracing::info!(module = %hash, compile_us, "compiled a module");
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
            module,
            pre,
            compile_us,
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
