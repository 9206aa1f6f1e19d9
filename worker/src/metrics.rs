//! What a worker counts for [`rpc_core::metrics`]: jobs by outcome, their
//! queueing, run time, fuel and compiles, the module cache, and (on a
//! coordinator) relayed jobs. The counters are atomics a [`Sandbox`](crate::Sandbox) keeps
//! whether or not anyone scrapes them, a few adds per job; a server with
//! [`ServerConfig::metrics`](rpc_core::ServerConfig::metrics) registers
//! their collector, and [`Sandbox::metrics_collector`](crate::Sandbox::metrics_collector) gives it to anyone
//! else (a relayed worker, an embedding program).
//!
//! | Family | Type | Labels |
//! |---|---|---|
//! | `worker_jobs_total` | counter | `kind` (`run`, `call`), `outcome` (`ok` or the error's kind) |
//! | `worker_job_queue_seconds` | histogram | |
//! | `worker_job_run_seconds` | histogram | |
//! | `worker_job_fuel` | histogram | |
//! | `worker_module_compile_seconds` | histogram | |
//! | `worker_module_cache_total` | counter | `result` (`hit`, `miss`), `tier` (`memory`, `disk`; none for a miss) |
//! | `worker_module_cache_bytes` | gauge | `tier` (`memory`) |
//! | `worker_module_cache_modules` | gauge | `tier` (`memory`) |
//! | `worker_jobs_running`, `worker_jobs_queued`, `worker_slots` | gauge | |
//! | `worker_relayed_jobs_total` | counter | `outcome` (`ok`, or the error's kind) |
//! | `worker_relay_queue` | gauge | |

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rpc_core::metrics::prometheus_client::collector::Collector;
use rpc_core::metrics::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use rpc_core::metrics::prometheus_client::metrics::MetricType;
use rpc_core::metrics::prometheus_client::metrics::counter::ConstCounter;
use rpc_core::metrics::prometheus_client::metrics::gauge::ConstGauge;
use rpc_core::metrics::{Histogram, LATENCY_BUCKETS_US};

use crate::job::{JobError, ModuleOrigin, Receipt, WorkerStatus};

/// Fuel buckets: a thousand to a hundred billion units.
const FUEL_BUCKETS: &[u64] = &[
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
    10_000_000_000,
    100_000_000_000,
];

/// Every outcome a job can have: `ok`, or one of [`JobError::kind`].
const OUTCOMES: [&str; 15] = [
    "ok",
    "module_not_found",
    "invalid_module",
    "unknown_import",
    "bad_export",
    "deadline_exceeded",
    "resource_exhausted",
    "trap",
    "cancelled",
    "abi",
    "internal",
    "directory_not_granted",
    "busy",
    "forbidden",
    "output_limit",
];

/// Jobs counted by outcome.
#[derive(Debug, Default)]
struct Outcomes([AtomicU64; OUTCOMES.len()]);

impl Outcomes {
    fn add(&self, outcome: &str) {
        let index = OUTCOMES.iter().position(|&known| known == outcome);
        if let Some(count) = index.and_then(|index| self.0.get(index)) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn seen(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        OUTCOMES
            .iter()
            .zip(&self.0)
            .map(|(&outcome, count)| (outcome, count.load(Ordering::Relaxed)))
            .filter(|&(_, count)| count > 0)
    }
}

/// A worker's job counters.
#[derive(Debug)]
pub(crate) struct JobStats {
    runs: Outcomes,
    calls: Outcomes,
    queued: Histogram,
    run_time: Histogram,
    fuel: Histogram,
    compile: Histogram,
    /// Modules compiled for a job, found compiled in memory, loaded from
    /// the disk cache.
    origins: [AtomicU64; 3],
}

impl Default for JobStats {
    fn default() -> JobStats {
        JobStats {
            runs: Outcomes::default(),
            calls: Outcomes::default(),
            queued: Histogram::new(LATENCY_BUCKETS_US, 1e-6),
            run_time: Histogram::new(LATENCY_BUCKETS_US, 1e-6),
            fuel: Histogram::new(FUEL_BUCKETS, 1.0),
            compile: Histogram::new(LATENCY_BUCKETS_US, 1e-6),
            origins: Default::default(),
        }
    }
}

impl JobStats {
    /// Counts a finished WASI command.
    pub(crate) fn record_run(&self, result: Result<&Receipt, &JobError>) {
        self.record(&self.runs, result);
    }

    /// Counts a finished typed call.
    pub(crate) fn record_call(&self, result: Result<&Receipt, &JobError>) {
        self.record(&self.calls, result);
    }

    fn record(&self, outcomes: &Outcomes, result: Result<&Receipt, &JobError>) {
        match result {
            Ok(receipt) => {
                outcomes.add("ok");
                self.queued.observe(receipt.queued_us);
                self.run_time.observe(receipt.wall_time_us);
                self.fuel.observe(receipt.fuel);
                let origin = match receipt.module {
                    ModuleOrigin::Compiled => {
                        self.compile.observe(receipt.compile_us);
                        0
                    }
                    ModuleOrigin::Memory => 1,
                    ModuleOrigin::Disk => 2,
                };
                if let Some(count) = self.origins.get(origin) {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(error) => outcomes.add(error.kind()),
        }
    }
}

/// A sandbox's job counters, module cache and load, read on every
/// scrape; from [`Sandbox::metrics_collector`](crate::Sandbox::metrics_collector).
pub struct SandboxCollector {
    pub(crate) stats: Arc<JobStats>,
    /// Reads the sandbox's load and cache now.
    pub(crate) load: Box<dyn Fn() -> Load + Send + Sync>,
}

impl std::fmt::Debug for SandboxCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxCollector")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// A sandbox's load and cache at one moment.
pub(crate) struct Load {
    pub(crate) status: WorkerStatus,
    /// Bytes of compiled code in the memory cache.
    pub(crate) cache_memory_bytes: u64,
}

impl Collector for SandboxCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = &self.stats;
        let mut jobs = encoder.encode_descriptor(
            "worker_jobs",
            "Jobs finished, by kind (run, call) and outcome (ok, or the error's kind).",
            None,
            MetricType::Counter,
        )?;
        for (kind, outcomes) in [("run", &stats.runs), ("call", &stats.calls)] {
            for (outcome, count) in outcomes.seen() {
                ConstCounter::new(count)
                    .encode(jobs.encode_family(&[("kind", kind), ("outcome", outcome)])?)?;
            }
        }
        let histograms = [
            (
                "worker_job_queue_seconds",
                "Time jobs that ran waited for a slot.",
                &stats.queued,
            ),
            (
                "worker_job_run_seconds",
                "Wall time of jobs that ran, once they had a slot.",
                &stats.run_time,
            ),
            ("worker_job_fuel", "Fuel jobs that ran burned.", &stats.fuel),
            (
                "worker_module_compile_seconds",
                "Time compiling the module took, for jobs that compiled it.",
                &stats.compile,
            ),
        ];
        for (name, help, histogram) in histograms {
            histogram.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Histogram,
            )?)?;
        }

        let load = |index: usize| {
            stats
                .origins
                .get(index)
                .map_or(0, |count| count.load(Ordering::Relaxed))
        };
        let mut cache = encoder.encode_descriptor(
            "worker_module_cache",
            "Modules jobs asked for: found compiled (hit, by tier) or compiled for them (miss).",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(load(1))
            .encode(cache.encode_family(&[("result", "hit"), ("tier", "memory")])?)?;
        ConstCounter::new(load(2))
            .encode(cache.encode_family(&[("result", "hit"), ("tier", "disk")])?)?;
        ConstCounter::new(load(0)).encode(cache.encode_family(&[("result", "miss")])?)?;

        let Load {
            status,
            cache_memory_bytes,
        } = (self.load)();
        let gauges: [Gauge<'_>; 5] = [
            (
                "worker_module_cache_bytes",
                "Bytes of compiled code in the cache.",
                &[("tier", "memory")],
                cache_memory_bytes,
            ),
            (
                "worker_module_cache_modules",
                "Compiled modules in the cache.",
                &[("tier", "memory")],
                u64::from(status.modules_in_memory),
            ),
            (
                "worker_jobs_running",
                "Jobs running now.",
                &[],
                u64::from(status.running),
            ),
            (
                "worker_jobs_queued",
                "Jobs waiting for a slot now.",
                &[],
                u64::from(status.queued),
            ),
            (
                "worker_slots",
                "Jobs that may run at once.",
                &[],
                u64::from(status.concurrency),
            ),
        ];
        for (name, help, labels, value) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            if labels.is_empty() {
                ConstGauge::new(value).encode(family)?;
            } else {
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// A gauge to write: name, help, labels and value.
type Gauge<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], u64);

/// A coordinator's relay counters.
#[derive(Debug, Default)]
pub(crate) struct RelayStats {
    outcomes: Outcomes,
}

impl RelayStats {
    /// Counts a relayed job's result.
    pub(crate) fn record<T>(&self, result: &Result<T, JobError>) {
        match result {
            Ok(_) => self.outcomes.add("ok"),
            Err(error) => self.outcomes.add(error.kind()),
        }
    }

    /// Counts a relayed job that failed before a worker answered it.
    pub(crate) fn record_error(&self, error: &JobError) {
        self.outcomes.add(error.kind());
    }

    /// Writes the relay's families; `queued` jobs wait for a relayed
    /// worker now.
    pub(crate) fn encode(
        &self,
        queued: u64,
        encoder: &mut DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let mut jobs = encoder.encode_descriptor(
            "worker_relayed_jobs",
            "Jobs relayed to workers that accept no connections, by outcome.",
            None,
            MetricType::Counter,
        )?;
        for (outcome, count) in self.outcomes.seen() {
            ConstCounter::new(count).encode(jobs.encode_family(&[("outcome", outcome)])?)?;
        }
        ConstGauge::new(queued).encode(encoder.encode_descriptor(
            "worker_relay_queue",
            "Jobs waiting for a relayed worker to take them.",
            None,
            MetricType::Gauge,
        )?)
    }
}
