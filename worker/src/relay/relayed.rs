//! The relayed worker's side: a worker that accepts no connections keeps
//! an outbound one to the coordinator, registers through it, and takes jobs
//! from it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rpc_core::{Client, RpcError};
use tokio::sync::oneshot;

use crate::coordinator::join;
use crate::directory::Registration;
use crate::functions::RelayingClient;
use crate::job::JobError;
use crate::lock;
use crate::sandbox::Sandbox;
use crate::warnings::WarnOnChange;

use super::{RelayDone, RelayOutcome, RelayedJob};

/// Runs `sandbox` as a relayed worker of the coordinator `coordinator`
/// connects to: registers (with the coordinator's own address, where
/// clients send its jobs), then polls for jobs with as many loops as the
/// sandbox runs jobs at once. Needs no listening port. Runs until the
/// returned tasks are aborted.
pub fn relay_worker(
    sandbox: Sandbox,
    coordinator: Client,
    name: String,
    heartbeat: Duration,
) -> Vec<tokio::task::JoinHandle<()>> {
    let slots = sandbox.status().concurrency;
    let mut tasks = Vec::new();
    let registering = sandbox.clone();
    let registered_name = name.clone();
    let addr = coordinator.addr().to_owned();
    tasks.push(join(coordinator.clone(), heartbeat, move || {
        let status = registering.status();
        Registration {
            name: registered_name.clone(),
            addr: addr.clone(),
            capacity: status.concurrency,
            running: status.running,
            modules: registering.ready_modules(),
            supernode: None,
        }
    }));
    let relaying = RelayingClient::new(coordinator);
    let running = Running::default();
    tasks.push(tokio::spawn(watch_cancellations(
        relaying.clone(),
        name.clone(),
        running.clone(),
    )));
    for _ in 0..slots {
        let sandbox = sandbox.clone();
        let relaying = relaying.clone();
        let name = name.clone();
        let running = running.clone();
        tasks.push(tokio::spawn(async move {
            let mut warnings = WarnOnChange::default();
            loop {
                let polled = relaying.poll(name.clone()).await;
                if polled.is_ok() {
                    warnings.recovered();
                }
                match polled {
                    Ok(Some(task)) => {
                        let deadline = task
                            .timeout_ms
                            .map(|ms| Instant::now() + Duration::from_millis(ms));
                        let cancelled = running.start(task.id);
                        // Dropping the job's future stops its guest.
                        let outcome = tokio::select! {
                            outcome = run_relayed(&sandbox, &relaying, task.job, deadline) => outcome,
                            _ = cancelled => {
                                tracing::debug!(job = task.id, "its caller stopped waiting; stopped");
                                continue;
                            }
                        };
                        running.finish(task.id);
                        let done = RelayDone {
                            id: task.id,
                            worker: name.clone(),
                            outcome,
                        };
                        if let Err(error) = relaying.done(done).await {
                            tracing::warn!(%error, "could not return a relayed result");
                        }
                    }
                    Ok(None) => {}
                    Err(error) => {
                        warnings.failed("cannot take jobs from the coordinator", &error);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }));
    }
    tasks
}

/// The relayed jobs running on this worker, by id, with what stops each.
#[derive(Clone, Default)]
struct Running(Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>>);

impl Running {
    /// Counts job `id` as running; the receiver fires if it is cancelled.
    fn start(&self, id: u64) -> oneshot::Receiver<()> {
        let (cancel, cancelled) = oneshot::channel();
        lock(&self.0).insert(id, cancel);
        cancelled
    }

    fn finish(&self, id: u64) {
        lock(&self.0).remove(&id);
    }

    /// Stops job `id`, if it still runs here.
    fn cancel(&self, id: u64) {
        if let Some(cancel) = lock(&self.0).remove(&id) {
            let _ = cancel.send(());
        }
    }
}

/// Asks the coordinator, again and again, which jobs taken here no one
/// waits for any more, and stops them.
async fn watch_cancellations(relaying: RelayingClient, name: String, running: Running) {
    let mut warnings = WarnOnChange::default();
    loop {
        match relaying.cancelled(name.clone()).await {
            Ok(ids) => {
                warnings.recovered();
                for id in ids {
                    running.cancel(id);
                }
            }
            Err(RpcError::NotFound(_)) => {
                tracing::warn!(
                    "the coordinator cannot tell this worker of cancelled jobs (an older \
                     version); relayed jobs run until their deadline"
                );
                return;
            }
            Err(error) => {
                warnings.failed(
                    "cannot learn of cancelled jobs from the coordinator",
                    &error,
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn run_relayed(
    sandbox: &Sandbox,
    relaying: &RelayingClient,
    job: RelayedJob,
    deadline: Option<Instant>,
) -> RelayOutcome {
    let module = match &job {
        RelayedJob::Run(request) => request.module,
        RelayedJob::Call(request) => request.module,
    };
    if !sandbox.has_module(&module) {
        let fetched = relaying.module(module).await;
        let added = match fetched {
            Ok(bytes) => sandbox.add_module(bytes).await.map(|_| ()),
            Err(RpcError::Application(error)) => Err(error),
            Err(error) => Err(JobError::Internal(format!("fetching the module: {error}"))),
        };
        if let Err(error) = added {
            return match job {
                RelayedJob::Run(_) => RelayOutcome::Run(Err(error)),
                RelayedJob::Call(_) => RelayOutcome::Call(Err(error)),
            };
        }
    }
    match job {
        RelayedJob::Run(request) => RelayOutcome::Run(sandbox.run(request, deadline).await),
        RelayedJob::Call(request) => RelayOutcome::Call(sandbox.call(request, deadline).await),
    }
}
