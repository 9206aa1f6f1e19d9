//! Jobs relayed through a coordinator process to a worker process that
//! accepts no connections keep the caller's deadline and its cancel: the
//! guest stops on the relayed worker as it does on a direct one.

use std::time::{Duration, Instant};

use rpc_core::{Client, RpcError};
use worker::{Command, Module, WorkerClient, WorkerError};

use super::{cat, free_addr, registered, spawn};

/// Runs until stopped (the relayed worker's wall-time limit is 60 s).
fn spin() -> Module {
    Module::new(
        wat::parse_str(r#"(module (func (export "_start") (loop $forever (br $forever))))"#)
            .unwrap(),
    )
}

/// How long a good job takes to come back: the one-slot relayed worker
/// takes it only once the stopped guest has let go of the slot.
async fn good_job_after(client: &WorkerClient) -> Duration {
    let started = Instant::now();
    let output = client
        .run(&cat(), Command::new().stdin("after"))
        .await
        .unwrap();
    assert_eq!(output.stdout, &b"after"[..]);
    assert_eq!(output.receipt.relayed_to.as_deref(), Some("natted"));
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_jobs_keep_the_callers_deadline_and_stop_when_the_call_is_dropped() {
    let coordinator_addr = free_addr("127.0.0.1");
    let _coordinator = spawn(
        &["coordinator", "--listen", &coordinator_addr],
        "coordinator listening",
    );
    let _relayed = spawn(
        &[
            "serve",
            "--relay-via",
            &coordinator_addr,
            "--name",
            "natted",
            "--no-disk-cache",
            "--concurrency",
            "1",
        ],
        "listening nowhere",
    );
    let resolver = worker::CoordinatorResolver::new(Client::new(coordinator_addr.clone()));
    assert_eq!(
        registered(&resolver, 1).await,
        1,
        "the relayed worker registers"
    );
    let client = WorkerClient::new(Client::new(coordinator_addr.clone()));
    client.upload(&spin()).await.unwrap();
    client.upload(&cat()).await.unwrap();
    // A warm-up: the module is fetched and compiled on the relayed worker.
    good_job_after(&client).await;

    // The deadline travels with the job.
    let hurried = client.clone().timeout(Duration::from_millis(300));
    let result = hurried.run(&spin(), Command::new()).await;
    assert!(
        matches!(result, Err(WorkerError::Rpc(RpcError::DeadlineExceeded))),
        "{result:?}"
    );
    let waited = good_job_after(&client).await;
    assert!(
        waited < Duration::from_secs(5),
        "the stopped guest held the only slot for {waited:?}"
    );

    // Dropping the call stops the guest over there too.
    let dropped = tokio::time::timeout(
        Duration::from_millis(300),
        client.run(&spin(), Command::new()),
    )
    .await;
    assert!(dropped.is_err(), "the spinning job never ends by itself");
    let waited = good_job_after(&client).await;
    assert!(
        waited < Duration::from_secs(5),
        "the dropped job's guest held the only slot for {waited:?}"
    );
    eprintln!("a good job after a dropped relayed one came back in {waited:?}");
}
