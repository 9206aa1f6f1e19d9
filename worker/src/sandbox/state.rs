//! What a job's store holds: its WASI context and the limiter that holds
//! its memory and tables to the limits and remembers what it refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use wasmtime::ResourceLimiter;

use super::engine::per_job;
use wasmtime_wasi::p1::WasiP1Ctx;

/// The data of one job's `Store`.
pub(crate) struct JobState {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) limiter: Limiter,
    /// What stops the guest from outside, in wasm code and in host calls.
    pub(crate) interrupt: Interrupt,
    /// The zero of the guest's monotonic clock.
    pub(crate) clock_base: Instant,
}

/// What stops a guest from outside: its caller's cancel and its deadline.
#[derive(Debug, Clone)]
pub(crate) struct Interrupt {
    pub(crate) cancelled: Arc<AtomicBool>,
    pub(crate) deadline: Instant,
}

impl Interrupt {
    /// Why the guest must stop now, if it must.
    pub(crate) fn check(&self) -> Result<(), Stopped> {
        if self.cancelled.load(Ordering::Relaxed) {
            Err(Stopped::Cancelled)
        } else if Instant::now() >= self.deadline {
            Err(Stopped::Deadline)
        } else {
            Ok(())
        }
    }
}

/// The error raised to stop a guest, in wasm code or in a host call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Stopped {
    #[error("the job was cancelled")]
    Cancelled,
    #[error("the job's deadline passed")]
    Deadline,
}

/// Holds memories and tables to their limits, and records the peak memory
/// and whether a growth was refused (to name the limit when the guest then
/// fails).
#[derive(Debug)]
pub(crate) struct Limiter {
    max_memory: usize,
    max_table: usize,
    pub(crate) peak_memory: usize,
    pub(crate) memory_refused: bool,
    pub(crate) table_refused: bool,
}

impl Limiter {
    pub(crate) fn new(max_memory: u64, max_table: u64) -> Limiter {
        Limiter {
            max_memory: usize::try_from(max_memory).unwrap_or(usize::MAX),
            max_table: usize::try_from(max_table).unwrap_or(usize::MAX),
            peak_memory: 0,
            memory_refused: false,
            table_refused: false,
        }
    }
}

/// Whether growing to `desired` is allowed; a refusal because of `limit`
/// is recorded in `refused`. The limit is checked first: the `maximum`
/// wasmtime passes may be the instance pool's capacity, which is sized to
/// the limit, and a refusal there is the limit's all the same; past only
/// the module's own maximum, the refusal is the guest's doing.
fn within(desired: usize, maximum: Option<usize>, limit: usize, refused: &mut bool) -> bool {
    if desired > limit {
        *refused = true;
        return false;
    }
    maximum.is_none_or(|max| desired <= max)
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = within(desired, maximum, self.max_memory, &mut self.memory_refused);
        if allowed {
            self.peak_memory = self.peak_memory.max(desired);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(within(
            desired,
            maximum,
            self.max_table,
            &mut self.table_refused,
        ))
    }

    fn instances(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        per_job::MEMORIES as usize
    }

    fn tables(&self) -> usize {
        per_job::TABLES as usize
    }
}
