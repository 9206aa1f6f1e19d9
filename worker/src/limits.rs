//! The limits every job runs under, and how a job may ask for tighter ones.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Hard limits on one job. The worker's limits are the most any job gets; a
/// job may ask for less with [`JobLimits`].
///
/// The defaults are finite and safe for untrusted code on a shared machine:
///
/// ```
/// use worker::Limits;
///
/// let limits = Limits::default();
/// assert_eq!(limits.memory_bytes, 1 << 30);
/// assert_eq!(limits.wall_time, std::time::Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes of linear memory a job may use (each memory).
    pub memory_bytes: u64,
    /// The most table elements a job may use (each table).
    pub table_elements: u64,
    /// The most fuel a job may burn: roughly one unit per wasm instruction,
    /// so a measure of CPU work that does not depend on the machine.
    pub fuel: u64,
    /// The longest a job may run, queueing excluded. A call's own deadline,
    /// if sooner, applies instead.
    pub wall_time: Duration,
    /// The most bytes of native stack wasm code may use. Deep recursion past
    /// it traps with "call stack exhausted".
    pub stack_bytes: usize,
    /// The most bytes a job may write to stdout, and separately to stderr;
    /// a job that writes more is stopped and its output truncated.
    pub output_bytes: u64,
    /// The largest module (in bytes) the worker accepts.
    pub module_bytes: u64,
    /// The most functions a module may define. Compiling costs time and
    /// memory in proportion to its functions and code (a module of 200,000
    /// empty functions took 16 s and 1.2 GB), so a module past this is
    /// refused when it is shipped, before any compiling.
    pub max_functions: u32,
    /// The most bytes of code (the code section) a module may carry;
    /// refused when shipped, like [`max_functions`](Self::max_functions).
    pub max_code_bytes: u64,
    /// The longest a module may take to compile. Jobs stop waiting for a
    /// compile then, and a module that took longer is refused from then on
    /// (the compile cannot be interrupted, so the static limits above keep
    /// it short).
    pub compile_timeout: Duration,
}

/// The default for [`Limits::memory_bytes`]: 1 GiB.
pub const DEFAULT_MEMORY_BYTES: u64 = 1 << 30;
/// The default for [`Limits::fuel`]: 100 billion units (minutes of CPU).
pub const DEFAULT_FUEL: u64 = 100_000_000_000;
/// The default for [`Limits::wall_time`]: 60 seconds.
pub const DEFAULT_WALL_TIME: Duration = Duration::from_secs(60);
/// The default for [`Limits::stack_bytes`]: 1 MiB.
pub const DEFAULT_STACK_BYTES: usize = 1 << 20;
/// The default for [`Limits::output_bytes`]: 16 MiB each for stdout and
/// stderr.
pub const DEFAULT_OUTPUT_BYTES: u64 = 16 << 20;
/// The default for [`Limits::module_bytes`]: 256 MiB.
pub const DEFAULT_MODULE_BYTES: u64 = 256 << 20;
/// The default for [`Limits::table_elements`]: 1 million.
pub const DEFAULT_TABLE_ELEMENTS: u64 = 1_000_000;
/// The default for [`Limits::max_functions`]: 100,000.
pub const DEFAULT_MAX_FUNCTIONS: u32 = 100_000;
/// The default for [`Limits::max_code_bytes`]: 64 MiB.
pub const DEFAULT_MAX_CODE_BYTES: u64 = 64 << 20;
/// The default for [`Limits::compile_timeout`]: 60 seconds.
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory_bytes: DEFAULT_MEMORY_BYTES,
            table_elements: DEFAULT_TABLE_ELEMENTS,
            fuel: DEFAULT_FUEL,
            wall_time: DEFAULT_WALL_TIME,
            stack_bytes: DEFAULT_STACK_BYTES,
            output_bytes: DEFAULT_OUTPUT_BYTES,
            module_bytes: DEFAULT_MODULE_BYTES,
            max_functions: DEFAULT_MAX_FUNCTIONS,
            max_code_bytes: DEFAULT_MAX_CODE_BYTES,
            compile_timeout: DEFAULT_COMPILE_TIMEOUT,
        }
    }
}

impl Limits {
    /// The limits for one job: the worker's, lowered where the job asks for
    /// less. A job can never raise a limit.
    pub fn for_job(&self, asked: &JobLimits) -> Limits {
        let lower = |mine: u64, theirs: Option<u64>| theirs.map_or(mine, |t| t.min(mine));
        Limits {
            memory_bytes: lower(self.memory_bytes, asked.memory_bytes),
            table_elements: self.table_elements,
            fuel: lower(self.fuel, asked.fuel),
            wall_time: asked.wall_time_ms.map_or(self.wall_time, |ms| {
                self.wall_time.min(Duration::from_millis(ms))
            }),
            stack_bytes: self.stack_bytes,
            output_bytes: lower(self.output_bytes, asked.output_bytes),
            ..self.clone()
        }
    }
}

/// Tighter limits a job asks for; `None` keeps the worker's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLimits {
    /// At most this many bytes of linear memory.
    pub memory_bytes: Option<u64>,
    /// At most this much fuel.
    pub fuel: Option<u64>,
    /// At most this many milliseconds of running.
    pub wall_time_ms: Option<u64>,
    /// At most this many bytes each of stdout and stderr.
    pub output_bytes: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_can_lower_limits_but_never_raise_them() {
        let worker = Limits {
            fuel: 1000,
            ..Limits::default()
        };
        let job = worker.for_job(&JobLimits {
            memory_bytes: Some(1 << 20),
            fuel: Some(u64::MAX),
            wall_time_ms: Some(5),
            output_bytes: None,
        });
        assert_eq!(job.memory_bytes, 1 << 20);
        assert_eq!(job.fuel, 1000);
        assert_eq!(job.wall_time, Duration::from_millis(5));
        assert_eq!(job.output_bytes, worker.output_bytes);
    }
}
