//! Runs one job: a store with the job's limits, an instance, the guest's
//! entry point, and a result or a precise reason why there is none. A job
//! is a future: the guest runs on a fiber and yields every
//! [`SLICE_FUEL`] units of fuel, so that whoever polls it can move it
//! elsewhere between two slices.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use wasmtime::{
    Engine, Instance, Linker, PoolConcurrencyLimitError, Store, Trap, UpdateDeadline, WasmBacktrace,
};
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use super::output::BoundedOutput;
use super::poll::JobClock;
pub(crate) use super::state::Interrupt;
use super::state::{JobState, Limiter, Stopped};
use crate::job::{CallOutput, JobError, ModuleOrigin, Receipt, Resource, RunOutput};
use crate::limits::Limits;
use crate::sandbox::cache::{Compiled, link_error};

/// How much of a failed job's stderr comes back with the error.
const STDERR_TAIL: usize = 4096;

/// Fuel (about one unit per wasm instruction) a guest burns between two
/// yields: a few tens of microseconds of guest time. Short enough that a
/// job's first slice can run on the thread that received it without
/// holding that thread up, long enough that yielding costs a CPU-bound
/// guest well under 1%.
pub(crate) const SLICE_FUEL: u64 = 100_000;

/// Everything a job needs besides its own inputs.
pub(crate) struct Env {
    pub(crate) engine: Engine,
    pub(crate) linker: Arc<Linker<JobState>>,
    pub(crate) compiled: Arc<Compiled>,
    pub(crate) origin: ModuleOrigin,
    pub(crate) limits: Limits,
    pub(crate) stub_unknown_imports: bool,
    pub(crate) interrupt: Interrupt,
    pub(crate) queued_us: u64,
}

/// A job's store and what it records, between start and result.
struct Job {
    store: Store<JobState>,
    stdout: BoundedOutput,
    stderr: BoundedOutput,
    instance: Instance,
    started: Instant,
    instantiate_us: u64,
}

/// The inputs of a WASI command.
pub(crate) struct CommandInputs {
    pub(crate) args: Vec<String>,
    pub(crate) vars: Vec<(String, String)>,
    pub(crate) stdin: Bytes,
    pub(crate) dirs: Vec<(String, PathBuf)>,
}

/// Runs a WASI command: `_start` with arguments, environment and stdin.
pub(crate) async fn run_command(env: Env, inputs: CommandInputs) -> Result<RunOutput, JobError> {
    let env = &env;
    let CommandInputs {
        args,
        vars,
        stdin,
        dirs,
    } = inputs;
    let mut builder = WasiCtxBuilder::new();
    builder
        .stdin(MemoryInputPipe::new(stdin))
        .arg(&env.compiled.name)
        .args(&args);
    for (key, value) in vars {
        builder.env(key, value);
    }
    for (name, path) in &dirs {
        builder
            .preopened_dir(path, format!("/{name}"), FsPerms::ReadOnly)
            .map_err(|error| {
                JobError::Internal(format!(
                    "the granted directory {name:?} ({}) cannot be opened: {error:#}",
                    path.display()
                ))
            })?;
    }
    let mut job = start(env, builder).await?;
    let entry = job
        .instance
        .get_typed_func::<(), ()>(&mut job.store, "_start")
        .map_err(|error| JobError::BadExport {
            name: "_start".into(),
            reason: format!(
                "{error:#}; a WASI command exports `_start` (build a binary crate for \
                 wasm32-wasip1), a library is run with a typed call"
            ),
        })?;
    let exit_code = match entry.call_async(&mut job.store, ()).await {
        Ok(()) => 0,
        Err(error) => match error.downcast_ref::<I32Exit>() {
            Some(exit) => exit.0,
            None => return Err(job.failure(env, error)),
        },
    };
    // A write past the limit that the guest survived still cut the output.
    let receipt = job.receipt(env);
    Ok(RunOutput {
        exit_code,
        stdout: job.stdout.take(),
        stderr: job.stderr.take(),
        receipt,
    })
}

/// Calls a typed export: `rpc_alloc(len) -> ptr` receives the input, then
/// `export(ptr, len) -> (out_ptr << 32 | out_len)` returns the output.
pub(crate) async fn call_export(
    env: Env,
    export: String,
    input: Bytes,
) -> Result<CallOutput, JobError> {
    let env = &env;
    let export = export.as_str();
    let mut builder = WasiCtxBuilder::new();
    builder.arg(&env.compiled.name);
    let mut job = start(env, builder).await?;
    let instance = job.instance;
    let abi_hint = "export it with rpc_guest::export! (see the worker crate docs for the ABI)";
    if let Ok(initialize) = instance.get_typed_func::<(), ()>(&mut job.store, "_initialize")
        && let Err(error) = initialize.call_async(&mut job.store, ()).await
    {
        return Err(job.failure(env, error));
    }
    let memory = instance
        .get_memory(&mut job.store, "memory")
        .ok_or_else(|| JobError::BadExport {
            name: "memory".into(),
            reason: "the module exports no memory named `memory`".into(),
        })?;
    let alloc = instance
        .get_typed_func::<i32, i32>(&mut job.store, "rpc_alloc")
        .map_err(|error| JobError::BadExport {
            name: "rpc_alloc".into(),
            reason: format!("{error:#}; {abi_hint}"),
        })?;
    let function = instance
        .get_typed_func::<(i32, i32), i64>(&mut job.store, export)
        .map_err(|error| JobError::BadExport {
            name: export.into(),
            reason: format!("{error:#}; {abi_hint}"),
        })?;
    let len = i32::try_from(input.len())
        .map_err(|_| JobError::Abi(format!("an input of {} bytes is over 2 GiB", input.len())))?;
    let ptr = match alloc.call_async(&mut job.store, len).await {
        Ok(ptr) => ptr,
        Err(error) => return Err(job.failure(env, error)),
    };
    memory
        .write(&mut job.store, ptr as u32 as usize, &input)
        .map_err(|_| {
            JobError::Abi(format!(
                "rpc_alloc({len}) returned {ptr}, which is not inside the guest's memory"
            ))
        })?;
    let packed = match function.call_async(&mut job.store, (ptr, len)).await {
        Ok(packed) => packed as u64,
        Err(error) => return Err(job.failure(env, error)),
    };
    let (out_ptr, out_len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
    if out_len as u64 > env.limits.output_bytes {
        return Err(JobError::ResourceExhausted {
            resource: Resource::Output,
            stderr: job.stderr.tail(STDERR_TAIL),
        });
    }
    let output = memory
        .data(&job.store)
        .get(out_ptr..out_ptr.saturating_add(out_len))
        .map(Bytes::copy_from_slice)
        .ok_or_else(|| {
            JobError::Abi(format!(
                "the output ({out_len} bytes at {out_ptr}) is not inside the guest's memory"
            ))
        })?;
    let receipt = job.receipt(env);
    Ok(CallOutput {
        output,
        stderr: job.stderr.take(),
        receipt,
    })
}

/// Makes the store with the job's limits and instantiates the module.
async fn start(env: &Env, mut wasi: WasiCtxBuilder) -> Result<Job, JobError> {
    // A table declared larger than the limit would be refused by the
    // instance pool (sized to the limit) with a message about the pool:
    // name the limit instead.
    let required = env.compiled.module.resources_required();
    if required
        .max_initial_table_size
        .is_some_and(|elements| elements > env.limits.table_elements)
    {
        return Err(JobError::ResourceExhausted {
            resource: Resource::Table,
            stderr: Bytes::new(),
        });
    }
    let stdout = BoundedOutput::new(env.limits.output_bytes);
    let stderr = BoundedOutput::new(env.limits.output_bytes);
    let clock_base = Instant::now();
    wasi.stdout(stdout.clone())
        .stderr(stderr.clone())
        .monotonic_clock(JobClock(clock_base));
    let state = JobState {
        wasi: wasi.build_p1(),
        limiter: Limiter::new(env.limits.memory_bytes, env.limits.table_elements),
        interrupt: env.interrupt.clone(),
        clock_base,
    };
    let mut store = Store::new(&env.engine, state);
    store.limiter(|state| &mut state.limiter);
    store
        .set_fuel(env.limits.fuel)
        .map_err(|error| JobError::Internal(format!("{error:#}")))?;
    store
        .fuel_async_yield_interval(Some(SLICE_FUEL))
        .map_err(|error| JobError::Internal(format!("{error:#}")))?;
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|store| match store.data().interrupt.check() {
        Ok(()) => Ok(UpdateDeadline::Continue(1)),
        Err(stopped) => Err(wasmtime::Error::new(stopped)),
    });
    // The guest's clock and the receipt's wall time start together.
    let started = clock_base;
    let instance = match &env.compiled.pre {
        Ok(pre) => pre.instantiate_async(&mut store).await,
        Err(JobError::UnknownImport { .. }) if env.stub_unknown_imports => {
            let mut linker = Linker::clone(&env.linker);
            linker
                .define_unknown_imports_as_traps(&env.compiled.module)
                .map_err(link_error)?;
            linker
                .instantiate_async(&mut store, &env.compiled.module)
                .await
        }
        Err(error) => return Err(error.clone()),
    };
    let instance =
        instance.map_err(|error| job_failure(&stdout, &stderr, &store, started, error))?;
    let instantiate_us = micros_since(started);
    Ok(Job {
        store,
        stdout,
        stderr,
        instance,
        started,
        instantiate_us,
    })
}

impl Job {
    /// Why the guest stopped with `error`. Stopped at the output limit, the
    /// job returns what it wrote up to the limit, with its receipt.
    fn failure(&self, env: &Env, error: wasmtime::Error) -> JobError {
        let failure = job_failure(&self.stdout, &self.stderr, &self.store, self.started, error);
        match failure {
            JobError::ResourceExhausted {
                resource: Resource::Output,
                ..
            } => JobError::OutputLimit {
                stdout: self.stdout.take(),
                stderr: self.stderr.take(),
                receipt: Box::new(self.receipt(env)),
            },
            other => other,
        }
    }

    fn receipt(&self, env: &Env) -> Receipt {
        let limiter = &self.store.data().limiter;
        Receipt {
            fuel: env
                .limits
                .fuel
                .saturating_sub(self.store.get_fuel().unwrap_or(0)),
            wall_time_us: micros_since(self.started),
            queued_us: env.queued_us,
            instantiate_us: self.instantiate_us,
            peak_memory_bytes: limiter.peak_memory as u64,
            module: env.origin,
            compile_us: env.compiled.compile_us,
            stdout_truncated: self.stdout.truncated(),
            stderr_truncated: self.stderr.truncated(),
            relayed_to: None,
        }
    }
}

/// Says precisely why a guest stopped: the limit it hit, or its trap.
fn job_failure(
    stdout: &BoundedOutput,
    stderr: &BoundedOutput,
    store: &Store<JobState>,
    started: Instant,
    error: wasmtime::Error,
) -> JobError {
    let tail = stderr.tail(STDERR_TAIL);
    // The host's pool ran dry: never the guest's fault. The pool is sized
    // so that an admitted job cannot see this; if it does, it is a bug of
    // the worker's sizing, reported as the worker's condition.
    if let Some(exhausted) = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<PoolConcurrencyLimitError>())
    {
        tracing::error!(%exhausted, "the instance pool refused an admitted job");
        return JobError::Busy(format!(
            "the worker had no free instance slot ({exhausted}); send the job again"
        ));
    }
    // A host call failed for the host's reasons (its I/O), not the guest's.
    if error.downcast_ref::<Trap>().is_none()
        && let Some(io) = error
            .chain()
            .find_map(|cause| cause.downcast_ref::<std::io::Error>())
    {
        return JobError::Internal(format!("a host call failed: {io}"));
    }
    match error.downcast_ref::<Stopped>() {
        Some(Stopped::Cancelled) => return JobError::Cancelled,
        Some(Stopped::Deadline) => {
            return JobError::DeadlineExceeded {
                elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                stderr: tail,
            };
        }
        None => {}
    }
    let limiter = &store.data().limiter;
    let resource = if stdout.truncated() || stderr.truncated() {
        Some(Resource::Output)
    } else {
        match error.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => Some(Resource::Fuel),
            Some(Trap::StackOverflow) => Some(Resource::Stack),
            _ if limiter.memory_refused => Some(Resource::Memory),
            _ if limiter.table_refused => Some(Resource::Table),
            _ => None,
        }
    };
    if let Some(resource) = resource {
        return JobError::ResourceExhausted {
            resource,
            stderr: tail,
        };
    }
    let mut message = error.root_cause().to_string();
    if let Some(backtrace) = error.downcast_ref::<WasmBacktrace>() {
        message.push('\n');
        message.push_str(&backtrace.to_string());
    }
    JobError::Trap {
        message,
        stderr: tail,
    }
}

fn micros_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}
