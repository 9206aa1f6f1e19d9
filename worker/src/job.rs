//! What a client sends to run a job, and what comes back: the worker's wire
//! types, postcard-encoded as the arguments and results of the worker's
//! functions ([`RUN_METHOD`], [`CALL_METHOD`], [`STATUS_METHOD`]).

use std::fmt;

use bytes::Bytes;
use rpc_core::ContentHash;
use serde::{Deserialize, Serialize};

use crate::limits::JobLimits;

/// The function that runs a WASI command: [`RunRequest`] in, [`RunOutput`]
/// out, [`JobError`] as its error.
pub const RUN_METHOD: &str = "worker.run";
/// The function that calls a typed export: [`CallRequest`] in,
/// [`CallOutput`] out, [`JobError`] as its error.
pub const CALL_METHOD: &str = "worker.call";
/// The function that reports the worker's load and caches: `()` in,
/// [`WorkerStatus`] out.
pub const STATUS_METHOD: &str = "worker.status";

/// Runs a module as a WASI command (its `_start`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequest {
    /// The module, already shipped to the worker.
    pub module: ContentHash,
    /// What to run it with.
    pub command: Command,
}

/// The inputs of a WASI command: arguments, environment, stdin, limits.
///
/// ```
/// use worker::Command;
///
/// let command = Command::new()
///     .args(["--verbose", "input.smt2"])
///     .env("LANG", "C")
///     .stdin("(check-sat)");
/// assert_eq!(command.args.len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The program's arguments, without the program name (the worker passes
    /// the module hash as `argv[0]`).
    pub args: Vec<String>,
    /// Environment variables the program sees; nothing of the worker's own
    /// environment leaks in.
    pub env: Vec<(String, String)>,
    /// Everything the program reads from stdin.
    pub stdin: Bytes,
    /// Tighter limits than the worker's, if wanted.
    pub limits: JobLimits,
    /// Link imports the worker does not provide as functions that trap when
    /// called, instead of refusing the module.
    pub stub_unknown_imports: bool,
    /// Directories the operator granted (by name) that the program sees,
    /// read-only, at `/NAME`.
    pub dirs: Vec<String>,
}

impl Command {
    /// No arguments, no environment, empty stdin, the worker's limits.
    pub fn new() -> Command {
        Command::default()
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Command {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets what the program reads from stdin.
    pub fn stdin(mut self, stdin: impl Into<Bytes>) -> Command {
        self.stdin = stdin.into();
        self
    }

    /// Asks for tighter limits.
    pub fn limits(mut self, limits: JobLimits) -> Command {
        self.limits = limits;
        self
    }

    /// Links unknown imports as functions that trap when called.
    pub fn stub_unknown_imports(mut self) -> Command {
        self.stub_unknown_imports = true;
        self
    }

    /// Mounts the directory the worker's operator granted as `name`,
    /// read-only, at `/name`.
    pub fn dir(mut self, name: impl Into<String>) -> Command {
        self.dirs.push(name.into());
        self
    }
}

/// What a WASI command produced. A non-zero exit code is a result, not a
/// failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOutput {
    /// The code the program exited with (0 if `_start` returned).
    pub exit_code: i32,
    /// What it wrote to stdout.
    pub stdout: Bytes,
    /// What it wrote to stderr.
    pub stderr: Bytes,
    /// What the job used.
    pub receipt: Receipt,
}

/// Calls a typed export: the guest receives `input` (postcard-encoded by the
/// caller) and returns its output bytes. See the crate docs for the ABI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRequest {
    /// The module, already shipped to the worker.
    pub module: ContentHash,
    /// The exported function to call.
    pub export: String,
    /// Its encoded input.
    pub input: Bytes,
    /// Tighter limits than the worker's, if wanted.
    pub limits: JobLimits,
    /// As in [`Command::stub_unknown_imports`].
    pub stub_unknown_imports: bool,
}

impl CallRequest {
    /// Calls `export` of `module` with `input`, under the worker's limits.
    pub fn new(
        module: ContentHash,
        export: impl Into<String>,
        input: impl Into<Bytes>,
    ) -> CallRequest {
        CallRequest {
            module,
            export: export.into(),
            input: input.into(),
            limits: JobLimits::default(),
            stub_unknown_imports: false,
        }
    }
}

/// What a typed export returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallOutput {
    /// The encoded output.
    pub output: Bytes,
    /// What the guest wrote to stderr (logs, panic messages).
    pub stderr: Bytes,
    /// What the job used.
    pub receipt: Receipt,
}

/// What a job used, returned with every result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Fuel burned: roughly the wasm instructions executed.
    pub fuel: u64,
    /// Time the job took once it had a slot, from setting up its store to
    /// the end, in microseconds.
    pub wall_time_us: u64,
    /// Time spent waiting for a free slot, in microseconds.
    pub queued_us: u64,
    /// Time instantiation took, in microseconds.
    pub instantiate_us: u64,
    /// The largest linear memory the job reached, in bytes.
    pub peak_memory_bytes: u64,
    /// Where the compiled module came from.
    pub module: ModuleOrigin,
    /// How long compiling the module took when it was compiled (by this job
    /// or an earlier one), in microseconds; 0 if it came from the disk cache.
    pub compile_us: u64,
    /// Stdout went past the output limit and was cut.
    pub stdout_truncated: bool,
    /// Stderr went past the output limit and was cut.
    pub stderr_truncated: bool,
    /// The worker that ran the job, when it went through a coordinator's
    /// relay (a worker that accepts no connections); `None` when the client
    /// reached the worker directly.
    pub relayed_to: Option<String>,
}

/// Where the compiled module a job ran came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModuleOrigin {
    /// Compiled for this job.
    #[default]
    Compiled,
    /// Already compiled, in memory.
    Memory,
    /// Loaded from the worker's disk cache, not recompiled.
    Disk,
}

impl fmt::Display for ModuleOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModuleOrigin::Compiled => "compiled now",
            ModuleOrigin::Memory => "memory cache",
            ModuleOrigin::Disk => "disk cache",
        })
    }
}

/// A limit a job ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resource {
    /// Linear memory (`memory.grow` was refused, then the guest failed).
    Memory,
    /// Table elements.
    Table,
    /// Fuel: the job did more work than allowed.
    Fuel,
    /// Wasm stack: recursion too deep.
    Stack,
    /// Stdout or stderr went past the output limit.
    Output,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Memory => "memory",
            Resource::Table => "table",
            Resource::Fuel => "fuel (cpu)",
            Resource::Stack => "stack",
            Resource::Output => "output",
        })
    }
}

/// Why a job did not produce a result. Each says what happened and what to
/// do; the failed job's stderr (its last 4 KiB) comes along where the guest
/// ran, because that is where a guest says why it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum JobError {
    /// The worker does not hold the module: ship it first.
    #[error("module {0} is not on this worker; send it first")]
    ModuleNotFound(ContentHash),
    /// The module is not one the worker can run.
    #[error("invalid module: {0}")]
    InvalidModule(String),
    /// The module imports something the worker does not provide. Ask for
    /// `stub_unknown_imports` if the program never calls it.
    #[error(
        "the module imports {module}::{name}, which this worker does not provide \
         (set stub_unknown_imports if the program never calls it)"
    )]
    UnknownImport {
        /// The import's module name.
        module: String,
        /// The import's field name.
        name: String,
    },
    /// The module has no such export, or it has the wrong type.
    #[error("bad export {name:?}: {reason}")]
    BadExport {
        /// The export asked for.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The job ran past its wall-clock limit. (A call whose own deadline
    /// passes is answered `504`, [`RpcError::DeadlineExceeded`](rpc_core::RpcError::DeadlineExceeded).)
    #[error("deadline exceeded after {elapsed_ms} ms")]
    DeadlineExceeded {
        /// How long it ran.
        elapsed_ms: u64,
        /// The end of its stderr.
        stderr: Bytes,
    },
    /// The job ran into a limit.
    #[error("resource exhausted: {resource}")]
    ResourceExhausted {
        /// Which one.
        resource: Resource,
        /// The end of its stderr.
        stderr: Bytes,
    },
    /// The guest trapped (`unreachable`, out-of-bounds access, a Rust
    /// panic, ...).
    #[error("trap: {message}")]
    Trap {
        /// Wasmtime's description, with the wasm backtrace.
        message: String,
        /// The end of its stderr.
        stderr: Bytes,
    },
    /// The job was cancelled by its caller.
    #[error("cancelled")]
    Cancelled,
    /// The guest broke the typed-call ABI (bad pointers, undecodable
    /// output).
    #[error("the guest broke the call ABI: {0}")]
    Abi(String),
    /// The worker failed for a reason of its own (a bug or the machine).
    #[error("worker error: {0}")]
    Internal(String),
    /// The job asked for a directory the worker's operator did not grant.
    #[error("no directory named {0:?} is granted on this worker")]
    DirNotGranted(String),
    /// The worker cannot take the job now (its queue or a budget is full,
    /// or its engine had no instance slot free): the worker's condition,
    /// not the job's fault. Send it again later or to another worker; a
    /// [`WorkerPool`](crate::WorkerPool) does. [`Sandbox`](crate::Sandbox)
    /// returns it; a worker server answers it as status `429` with
    /// "worker busy: " and the reason
    /// ([`RpcError::ResourceExhausted`](rpc_core::RpcError::ResourceExhausted)).
    #[error("worker busy: {0}")]
    Busy(String),
    /// The caller may not do this, whatever its token's role allows (a
    /// relayed worker returning a job it did not take, say).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The job wrote more to stdout or stderr than the output limit and
    /// was stopped there; what it wrote up to the limit comes back, and the
    /// receipt's `stdout_truncated`/`stderr_truncated` say which was cut.
    #[error(
        "resource exhausted: output ({} went past the output limit; what fit is returned)",
        if receipt.stdout_truncated { "stdout" } else { "stderr" }
    )]
    OutputLimit {
        /// What it wrote to stdout, up to the limit.
        stdout: Bytes,
        /// What it wrote to stderr, up to the limit.
        stderr: Bytes,
        /// What the job used.
        receipt: Box<Receipt>,
    },
}

/// Who a failed job's failure belongs to: what to fix, and whether sending
/// the job again could help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The caller asked for something wrong (a module that is not there or
    /// not valid, an export that does not exist, a directory not granted):
    /// change the request.
    Caller,
    /// The guest program broke a limit, trapped or broke the call ABI: fix
    /// the program or raise the limit.
    Guest,
    /// The worker or its machine failed, or is too busy: not the job's
    /// doing; another worker or a later attempt may succeed.
    Host,
}

impl Fault {
    /// `"caller"`, `"guest"` or `"host"`: as PROTOCOL.md section 16 and the
    /// command line's `--json` name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Caller => "caller",
            Fault::Guest => "guest",
            Fault::Host => "host",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl JobError {
    /// The variant's name in snake case (`"trap"`, `"resource_exhausted"`,
    /// ...), stable for scripts and logs.
    ///
    /// ```
    /// use worker::{Fault, JobError};
    ///
    /// let error = JobError::InvalidModule("not wasm".into());
    /// assert_eq!((error.kind(), error.fault()), ("invalid_module", Fault::Caller));
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            JobError::ModuleNotFound(_) => "module_not_found",
            JobError::InvalidModule(_) => "invalid_module",
            JobError::UnknownImport { .. } => "unknown_import",
            JobError::BadExport { .. } => "bad_export",
            JobError::DeadlineExceeded { .. } => "deadline_exceeded",
            JobError::ResourceExhausted { .. } => "resource_exhausted",
            JobError::Trap { .. } => "trap",
            JobError::Cancelled => "cancelled",
            JobError::Abi(_) => "abi",
            JobError::Internal(_) => "internal",
            JobError::DirNotGranted(_) => "directory_not_granted",
            JobError::Busy(_) => "busy",
            JobError::Forbidden(_) => "forbidden",
            JobError::OutputLimit { .. } => "output_limit",
        }
    }

    /// Whose failure this is.
    pub fn fault(&self) -> Fault {
        match self {
            JobError::ModuleNotFound(_)
            | JobError::InvalidModule(_)
            | JobError::UnknownImport { .. }
            | JobError::BadExport { .. }
            | JobError::Cancelled
            | JobError::DirNotGranted(_)
            | JobError::Forbidden(_) => Fault::Caller,
            JobError::DeadlineExceeded { .. }
            | JobError::ResourceExhausted { .. }
            | JobError::Trap { .. }
            | JobError::Abi(_)
            | JobError::OutputLimit { .. } => Fault::Guest,
            JobError::Internal(_) | JobError::Busy(_) => Fault::Host,
        }
    }

    /// The guest's stderr (its tail, or all of it up to the output limit
    /// for [`JobError::OutputLimit`]), where the job got far enough to have
    /// one.
    pub fn stderr(&self) -> &[u8] {
        match self {
            JobError::DeadlineExceeded { stderr, .. }
            | JobError::ResourceExhausted { stderr, .. }
            | JobError::Trap { stderr, .. }
            | JobError::OutputLimit { stderr, .. } => stderr,
            _ => &[],
        }
    }
}

/// A worker's load and caches, from [`STATUS_METHOD`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// How many jobs may run at once.
    pub concurrency: u32,
    /// Jobs running now.
    pub running: u32,
    /// The most jobs that ever ran at once.
    pub peak_running: u32,
    /// Jobs waiting for a slot now.
    pub queued: u32,
    /// Jobs finished (any outcome) since start.
    pub finished: u64,
    /// Modules compiled since start.
    pub compiled: u64,
    /// Compiled modules loaded from the disk cache since start.
    pub disk_hits: u64,
    /// Compiled modules in memory now.
    pub modules_in_memory: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example encodings in PROTOCOL.md, section 16.
    #[test]
    fn encodings_match_the_protocol_document() {
        let request = RunRequest {
            module: ContentHash::from_bytes([0xab; 32]),
            command: Command::new()
                .args(["-n", "5"])
                .env("LANG", "C")
                .stdin("hi"),
        };
        let mut expected = vec![0xab; 32];
        expected.extend_from_slice(&[
            0x02, 0x02, b'-', b'n', 0x01, b'5', // args
            0x01, 0x04, b'L', b'A', b'N', b'G', 0x01, b'C', // env
            0x02, b'h', b'i', // stdin
            0x00, 0x00, 0x00, 0x00, // limits: none
            0x00, // stub_unknown_imports: false
            0x00, // dirs: none
        ]);
        assert_eq!(postcard::to_allocvec(&request).unwrap(), expected);

        let error = JobError::ResourceExhausted {
            resource: Resource::Memory,
            stderr: Bytes::from_static(b"oom"),
        };
        assert_eq!(
            postcard::to_allocvec(&error).unwrap(),
            [0x05, 0x00, 0x03, b'o', b'o', b'm']
        );
        let exit = RunOutput {
            exit_code: -1,
            stdout: Bytes::new(),
            stderr: Bytes::new(),
            receipt: Receipt::default(),
        };
        let encoded = postcard::to_allocvec(&exit).unwrap();
        assert_eq!(encoded[..3], [0x01, 0x00, 0x00]);
    }
}
