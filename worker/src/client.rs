//! The client side: ship modules to a worker (only when it lacks them) and
//! run jobs on it.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use rpc_core::{CallOptions, Client, ContentHash, RpcError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::WorkerError;
use crate::functions::{JobsClient, StatusClient};
use crate::job::{CallOutput, CallRequest, Command, JobError, RunOutput, RunRequest, WorkerStatus};

/// A module ready to ship: its bytes and their SHA-256, computed once.
#[derive(Clone, Debug)]
pub struct Module {
    hash: ContentHash,
    bytes: Bytes,
}

impl Module {
    /// Wraps module bytes (binary wasm).
    pub fn new(bytes: impl Into<Bytes>) -> Module {
        let bytes = bytes.into();
        Module {
            hash: ContentHash::of(&bytes),
            bytes,
        }
    }

    /// Reads a module from a file: binary wasm, or WAT text (converted to
    /// binary here, so workers only ever receive binaries).
    ///
    /// # Errors
    ///
    /// The file could not be read, or is neither binary wasm nor valid WAT.
    pub fn from_file(path: impl AsRef<Path>) -> std::io::Result<Module> {
        let bytes = std::fs::read(path)?;
        if bytes.starts_with(b"\0asm") {
            return Ok(Module::new(bytes));
        }
        wat::parse_bytes(&bytes)
            .map(|binary| Module::new(binary.into_owned()))
            .map_err(|error| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("neither binary wasm nor valid WAT: {error}"),
                )
            })
    }

    /// The module's SHA-256, its name on every worker.
    pub fn hash(&self) -> ContentHash {
        self.hash
    }

    /// The module's bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

/// The request of a typed call: `input` encoded with postcard.
pub(crate) fn typed_request<In: Serialize + ?Sized>(
    module: &Module,
    name: &str,
    input: &In,
) -> Result<CallRequest, WorkerError> {
    let input = postcard::to_allocvec(input).map_err(WorkerError::Encode)?;
    Ok(CallRequest::new(module.hash, name, input))
}

/// A typed call's output, decoded with postcard.
pub(crate) fn decode_output<Out: DeserializeOwned>(
    output: &CallOutput,
) -> Result<Out, WorkerError> {
    rpc_core::wire::decode_value(&output.output).map_err(WorkerError::Decode)
}

/// Runs jobs on one worker over an [`rpc_core::Client`] (which reconnects
/// and multiplexes; clone it freely).
///
/// A job is sent straight away; if the worker answers that it lacks the
/// module, the module is offered by hash, its bytes sent only if still
/// needed, and the job sent again. So a module crosses the network once per
/// worker, and a cached module costs no extra round trip.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use worker::{Command, Module, WorkerClient};
///
/// let worker = WorkerClient::new(rpc_core::Client::new("127.0.0.1:7070"));
/// let module = Module::from_file("hello.wasm")?;
/// let output = worker.run(&module, Command::new().args(["world"])).await?;
/// print!("{}", String::from_utf8_lossy(&output.stdout));
/// let doubled: Vec<u32> = worker.call(&module, "double", &vec![1u32, 2, 3]).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct WorkerClient {
    jobs: JobsClient,
    options: CallOptions,
}

impl WorkerClient {
    /// Uses `client` to reach the worker.
    pub fn new(client: Client) -> WorkerClient {
        WorkerClient {
            jobs: JobsClient::new(client),
            options: CallOptions::new(),
        }
    }

    /// Gives every job this deadline (the worker stops the guest when it
    /// passes), instead of the client's default.
    pub fn timeout(mut self, timeout: Duration) -> WorkerClient {
        self.options = self.options.timeout(timeout);
        self
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        self.jobs.client()
    }

    /// Makes sure the worker holds `module`: offers its hash and sends the
    /// bytes only if asked. Returns whether the bytes were sent.
    ///
    /// # Errors
    ///
    /// [`WorkerError::Rpc`] if the worker refused the module (the message
    /// says why: not valid wasm, too large) or could not be reached.
    pub async fn upload(&self, module: &Module) -> Result<bool, WorkerError> {
        self.client()
            .send_program_as(module.hash, module.bytes.clone())
            .await
            .map_err(WorkerError::Rpc)
    }

    /// Runs `module` as a WASI command with `command`'s arguments, stdin,
    /// environment and limits.
    ///
    /// # Errors
    ///
    /// [`WorkerError`] saying why the job has no result.
    pub async fn run(&self, module: &Module, command: Command) -> Result<RunOutput, WorkerError> {
        let request = RunRequest {
            module: module.hash,
            command,
        };
        self.shipping(module, || {
            self.jobs.run_with(self.options.clone(), request.clone())
        })
        .await
    }

    /// Calls export `name` of `module` with `input`, decoding its output as
    /// `Out`. The guest side is `rpc_guest::export!(name)` on a
    /// `fn name(In) -> Out`.
    ///
    /// # Errors
    ///
    /// [`WorkerError`] saying why the call has no result.
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
        let output = self
            .call_raw(module, typed_request(module, name, input)?)
            .await?;
        decode_output(&output)
    }

    /// Calls an export with encoded input and returns everything: output,
    /// stderr and receipt.
    ///
    /// # Errors
    ///
    /// [`WorkerError`] saying why the call has no result.
    pub async fn call_raw(
        &self,
        module: &Module,
        mut request: CallRequest,
    ) -> Result<CallOutput, WorkerError> {
        request.module = module.hash;
        self.shipping(module, || {
            self.jobs.call_with(self.options.clone(), request.clone())
        })
        .await
    }

    /// The worker's load and cache counters.
    ///
    /// # Errors
    ///
    /// [`RpcError`] if the worker could not be asked.
    pub async fn status(&self) -> Result<WorkerStatus, RpcError> {
        StatusClient::new(self.client().clone()).status().await
    }

    /// Sends the job; ships the module and sends it again if the worker
    /// lacks the module.
    async fn shipping<T, F>(&self, module: &Module, send: impl Fn() -> F) -> Result<T, WorkerError>
    where
        F: Future<Output = Result<T, RpcError<JobError>>>,
    {
        match send().await {
            Err(RpcError::Application(JobError::ModuleNotFound(_))) => {
                self.upload(module).await?;
                send().await.map_err(WorkerError::from)
            }
            other => other.map_err(WorkerError::from),
        }
    }
}
