//! The wasmtime engine every job of a worker shares: which wasm features
//! are on, how instances are allocated, and the clock that interrupts
//! guests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::job::JobError;
use crate::limits::Limits;

/// Fiber stack beyond the wasm stack limit, for host functions (WASI) and
/// the runtime below the guest.
const HOST_STACK: usize = 4 << 20;

/// How often the engine's epoch advances: the resolution of wall-clock
/// limits and how quickly a cancelled guest stops.
pub(crate) const TICK: Duration = Duration::from_millis(5);

/// Builds the engine for `slots` jobs at a time under `limits`.
pub(crate) fn build(limits: &Limits, slots: u32) -> Result<Engine, wasmtime::Error> {
    let mut config = Config::new();
    // What current toolchains emit (Rust, clang, emscripten-style C++ and
    // CPython builds for wasm32-wasip1).
    config
        .wasm_bulk_memory(true)
        .wasm_multi_value(true)
        .wasm_reference_types(true)
        .wasm_simd(true)
        .wasm_exceptions(true)
        // One memory per module: what every toolchain emits, and what each
        // job's slot holds.
        .wasm_multi_memory(false);
    config
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(limits.stack_bytes)
        // Guests run on fiber stacks (so a job can be paused and moved
        // between threads): the wasm stack limit, plus room for the host
        // functions and the runtime beneath the guest. Reserved, not
        // committed: a job touches only what it uses.
        .async_stack_size(limits.stack_bytes.saturating_add(HOST_STACK));
    // Instances come from a pool of pre-reserved slots: instantiating is
    // a few page-table updates, not mmap calls, and resets reuse memory.
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool(limits, slots)));
    Engine::new(&config)
}

/// What one job's store can hold at once, which the pool reserves for each
/// of the `slots` jobs that may run at a time. Sized for everything a job
/// the engine admits can need, so that a job that got a slot never fails
/// because the pool ran dry. A module that wants more (two memories, five
/// tables) is refused when it is shipped, not when it runs.
pub(crate) mod per_job {
    /// Linear memories: one (multi-memory is off; see [`super::build`]).
    pub(crate) const MEMORIES: u32 = 1;
    /// GC heaps: one per store, made the first time the guest needs one
    /// (exception handling allocates its exceptions there). Under the
    /// pooling allocator a GC heap is backed by a slot of the memory pool.
    pub(crate) const GC_HEAPS: u32 = 1;
    /// Tables a module may define or import; real toolchains use one or two.
    pub(crate) const TABLES: u32 = 4;
    /// Core instances: the module's own (WASI is host functions).
    pub(crate) const INSTANCES: u32 = 1;
    /// Fiber stacks: one for the guest, and one for a host function that
    /// calls WASI's own (`poll_oneoff` on descriptors).
    pub(crate) const STACKS: u32 = 2;
}

/// The pooling allocator's configuration for `slots` jobs at a time.
fn pool(limits: &Limits, slots: u32) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::default();
    // The pool's slots span all of a 32-bit memory, so that a module
    // declaring more than the limit compiles, then is refused by the
    // job's limiter with "resource exhausted: memory" (the limit is per job;
    // a job may ask for less).
    let max_memory = usize::try_from(limits.memory_bytes.max(4 << 30)).unwrap_or(usize::MAX);
    let table_elements = usize::try_from(limits.table_elements).unwrap_or(usize::MAX);
    // A GC heap takes a slot of the memory pool, so the memory pool holds
    // both kinds for every job.
    let memory_slots = per_job::MEMORIES + per_job::GC_HEAPS;
    pool.total_core_instances(slots.saturating_mul(per_job::INSTANCES))
        .total_memories(slots.saturating_mul(memory_slots))
        .total_gc_heaps(slots.saturating_mul(per_job::GC_HEAPS))
        .total_tables(slots.saturating_mul(per_job::TABLES))
        .total_stacks(slots.saturating_mul(per_job::STACKS))
        .max_memories_per_module(per_job::MEMORIES)
        .max_tables_per_module(per_job::TABLES)
        .max_memory_size(max_memory)
        .table_elements(table_elements)
        .max_core_instance_size(16 << 20);
    pool
}

/// Checks that `bytes` are a core WebAssembly module this engine accepts,
/// with an error a person can act on.
pub(crate) fn validate(engine: &Engine, bytes: &[u8], max_len: u64) -> Result<(), JobError> {
    check_len(bytes, max_len)?;
    let (Some(magic), Some(version)) = (bytes.get(..4), bytes.get(4..8)) else {
        return Err(JobError::InvalidModule(format!(
            "{} bytes is too short for a WebAssembly module (it needs at least the 8-byte header)",
            bytes.len()
        )));
    };
    if magic != b"\0asm" {
        return Err(JobError::InvalidModule(format!(
            "not a WebAssembly module: it starts with {magic:02x?}, not 00 61 73 6d (\"\\0asm\")"
        )));
    }
    match version {
        [1, 0, 0, 0] => {}
        [_, _, 1, 0] => {
            return Err(JobError::InvalidModule(
                "this is a WebAssembly component; the worker runs core modules \
                 (build for wasm32-wasip1)"
                    .into(),
            ));
        }
        other => {
            return Err(JobError::InvalidModule(format!(
                "unsupported WebAssembly version {other:02x?} (expected 01 00 00 00)"
            )));
        }
    }
    wasmtime::Module::validate(engine, bytes)
        .map_err(|error| JobError::InvalidModule(format!("{error:#}")))
}

/// Refuses a module longer than `max_len` bytes.
pub(crate) fn check_len(bytes: &[u8], max_len: u64) -> Result<(), JobError> {
    if bytes.len() as u64 > max_len {
        return Err(JobError::InvalidModule(format!(
            "the module is {} bytes, more than the {max_len} this worker accepts",
            bytes.len()
        )));
    }
    Ok(())
}

/// Advances the engine's epoch every [`TICK`] until dropped.
#[derive(Debug)]
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    pub(crate) fn start(engine: &Engine) -> std::io::Result<EpochTicker> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let engine = engine.clone();
        std::thread::Builder::new()
            .name("worker-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        build(&Limits::default(), 2).unwrap()
    }

    #[test]
    fn garbage_truncated_and_foreign_bytes_are_refused_with_reasons() {
        let engine = engine();
        let cases: [(&[u8], &str); 6] = [
            (b"", "too short"),
            (b"\0asm\x01\0", "too short"),
            (b"\x7fELF\x02\x01\x01\0", "not a WebAssembly module"),
            (b"\0asm\x0d\0\x01\0", "component"),
            (b"\0asm\x02\0\0\0", "unsupported WebAssembly version"),
            (b"\0asm\x01\0\0\0\x01\x05\x01\x60", "unexpected end"),
        ];
        for (bytes, expected) in cases {
            let error = validate(&engine, bytes, 1 << 20).unwrap_err().to_string();
            assert!(error.contains(expected), "{bytes:?}: {error}");
        }
        let error = validate(&engine, &[0; 100], 99).unwrap_err().to_string();
        assert!(error.contains("more than the 99"), "{error}");
        validate(&engine, b"\0asm\x01\0\0\0", 8).unwrap();
    }
}
