//! A sandbox behind an rpc server: the worker's functions and its program
//! store.

use std::net::SocketAddr;

use rpc_core::ServerBuilder;
use rpc_core::tls::ServerTls;
use std::sync::Arc;

use rpc_core::{Context, Failure, PeerRole, ServeError, Server, ServerConfig, StatusCode};

use crate::functions::{Jobs, JobsServer, Status, StatusServer};
use rpc_core::ContentHash;
use tracing::Instrument;

use crate::job::{
    CallOutput, CallRequest, Fault, JobError, Receipt, RunOutput, RunRequest, WorkerStatus,
};
use crate::roles;
use crate::sandbox::Sandbox;

/// A server that runs jobs in `sandbox`: it serves [`Jobs`] (`worker.run`
/// and `worker.call`, for the [client and admin roles](crate::roles)) and
/// [`Status`] (`worker.status`, admin only), and keeps modules shipped by clients in
/// the sandbox's cache (validated before they are accepted). Add tokens or
/// a configuration, then bind it; without tokens, anyone who can connect
/// may do everything. The payload limit is raised to the sandbox's module
/// size limit if lower, so the largest module it accepts can be shipped.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use worker::{Sandbox, SandboxConfig, worker_server};
///
/// let sandbox = Sandbox::new(SandboxConfig::default())?;
/// let handle = worker_server(sandbox)
///     .token("s3cret", "client")
///     .bind("127.0.0.1:7070")
///     .await?;
/// # drop(handle);
/// # Ok(())
/// # }
/// ```
pub fn worker_server(sandbox: Sandbox) -> ServerBuilder {
    worker_server_with(sandbox, ServerConfig::default())
}

fn worker_server_with(sandbox: Sandbox, mut config: ServerConfig) -> ServerBuilder {
    config.max_payload_len = config.max_payload_len.max(sandbox.limits().module_bytes);
    let functions = Arc::new(SandboxFunctions(sandbox.clone()));
    Server::builder()
        .config(config)
        .collector(sandbox.metrics_collector())
        .role(PeerRole::Worker)
        .anonymous_roles(roles::ALL)
        .data_roles(roles::NONE)
        .programs(sandbox.program_store())
        .program_roles(roles::RUNS_JOBS)
        .service(JobsServer::from_arc(Arc::clone(&functions)))
        .service(StatusServer::from_arc(functions))
}

/// The worker's functions, served by its sandbox.
struct SandboxFunctions(Sandbox);

impl Jobs for SandboxFunctions {
    async fn run(
        &self,
        context: Context,
        request: RunRequest,
    ) -> Result<RunOutput, Failure<JobError>> {
        let deadline = context.deadline().map(|deadline| deadline.into_std());
        let span = job_span("run", &request.module, "_start");
        let result = self.0.run(request, deadline).instrument(span.clone()).await;
        log_job(&span, result.as_ref().map(|output| &output.receipt));
        result.map_err(answer)
    }

    async fn call(
        &self,
        context: Context,
        request: CallRequest,
    ) -> Result<CallOutput, Failure<JobError>> {
        let deadline = context.deadline().map(|deadline| deadline.into_std());
        let span = job_span("call", &request.module, &request.export);
        let result = self
            .0
            .call(request, deadline)
            .instrument(span.clone())
            .await;
        log_job(&span, result.as_ref().map(|output| &output.receipt));
        result.map_err(answer)
    }
}

impl Status for SandboxFunctions {
    async fn status(&self) -> WorkerStatus {
        self.0.status()
    }
}

/// A job's span: what ran (`run` or `call`, the module's hash, the
/// export), then what it used or why it failed. Inside the server's
/// `call` span, which carries the function, stream id and peer.
fn job_span(kind: &'static str, module: &ContentHash, export: &str) -> tracing::Span {
    tracing::info_span!(
        "job",
        kind,
        module = %module,
        export,
        outcome = tracing::field::Empty,
        cache = tracing::field::Empty,
        fuel = tracing::field::Empty,
        wall_time_us = tracing::field::Empty,
        queued_us = tracing::field::Empty,
        compile_us = tracing::field::Empty,
        peak_memory_bytes = tracing::field::Empty,
    )
}

/// Records a finished job's receipt (or its error's kind) on its span and
/// logs it: `info` for a job that ran or failed by its own doing, `warn`
/// for one the worker failed.
fn log_job(span: &tracing::Span, result: Result<&Receipt, &JobError>) {
    match result {
        Ok(receipt) => {
            span.record("outcome", "ok");
            span.record("cache", tracing::field::display(receipt.module));
            span.record("fuel", receipt.fuel);
            span.record("wall_time_us", receipt.wall_time_us);
            span.record("queued_us", receipt.queued_us);
            span.record("compile_us", receipt.compile_us);
            span.record("peak_memory_bytes", receipt.peak_memory_bytes);
            tracing::info!(parent: span, "job finished");
        }
        Err(error) => {
            span.record("outcome", error.kind());
            if error.fault() == Fault::Host {
                tracing::warn!(parent: span, fault = %error.fault(), %error, "job failed");
            } else {
                tracing::info!(parent: span, fault = %error.fault(), %error, "job failed");
            }
        }
    }
}

/// How a job error is answered: a worker too busy to take the job (its
/// queue full, or no instance slot) answers `429` with the reason, as any
/// server out of room does, so that callers and pools treat it as the
/// worker's condition; everything else is the job's own error (`422`).
pub(crate) fn answer(error: JobError) -> Failure<JobError> {
    match error {
        JobError::Busy(reason) => Failure::Status(
            StatusCode::RESOURCE_EXHAUSTED,
            format!("worker busy: {reason}"),
        ),
        other => Failure::Error(other),
    }
}

/// Serves `sandbox` on `addr` with `config` and `tokens` (token, role; see
/// [`roles`](crate::roles)), over TLS if `tls` is given; with no tokens
/// (and no client certificates required), anyone who can connect may run
/// jobs.
///
/// # Errors
///
/// [`ServeError`] if the configuration is invalid or the address cannot be
/// bound.
pub async fn serve(
    sandbox: Sandbox,
    addr: SocketAddr,
    config: ServerConfig,
    tokens: &[(String, String)],
    tls: Option<ServerTls>,
) -> Result<Server, ServeError> {
    configured_worker_server(sandbox, config, tokens, tls)
        .bind(addr)
        .await
}

/// The server [`serve`] binds, to bind or serve another way (as a
/// supernode with [`add_supernode`](crate::add_supernode), or listening
/// nowhere with
/// [`serve_joined`](rpc_core::ServerBuilder::serve_joined)).
pub fn configured_worker_server(
    sandbox: Sandbox,
    config: ServerConfig,
    tokens: &[(String, String)],
    tls: Option<ServerTls>,
) -> ServerBuilder {
    let mut server = worker_server_with(sandbox, config);
    for (token, role) in tokens {
        server = server.token(token, role.clone());
    }
    if let Some(tls) = tls {
        server = server.tls(tls);
    }
    server
}
