//! The worker under load: jobs that overlap, jobs right after others were
//! stopped, and a mixed crowd of clients. A correct job never fails for
//! the host's reasons (a slot another job has not let go of yet), and
//! nothing the host runs out of is ever blamed on the guest.

use std::time::Duration;

use rpc_core::{Client, RpcError};
use tokio::task::JoinSet;
use worker::{
    Command, JobError, Limits, Module, Sandbox, SandboxConfig, WorkerClient, WorkerError,
    worker_server,
};

const WASI: &str = r#"
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
"#;

/// Throws 42 as an exception, catches it and prints "caught 42\n": a module
/// that needs a GC heap besides its linear memory, as C++ and Python builds
/// with exceptions do.
pub(crate) fn exceptions() -> Module {
    wat(&format!(
        r#"(module {WASI}
          (tag $oops (param i32))
          (memory (export "memory") 1)
          (data (i32.const 16) "caught 4?\n")
          (func $thrower (throw $oops (i32.const 42)))
          (func (export "_start") (local $caught i32)
            (local.set $caught
              (block $handler (result i32)
                (try_table (catch $oops $handler) (call $thrower))
                (i32.const 0)))
            (if (i32.ne (local.get $caught) (i32.const 42)) (then unreachable))
            ;; The digit printed comes from the caught value: 42 % 10.
            (i32.store8 (i32.const 24)
              (i32.add (i32.const 48) (i32.rem_u (local.get $caught) (i32.const 10))))
            (i32.store (i32.const 0) (i32.const 16))
            (i32.store (i32.const 4) (i32.const 10))
            (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#
    ))
}

/// Catches an exception, then spins until stopped: holds a GC heap and a
/// memory for as long as it is allowed to run.
fn exceptions_then_spin() -> Module {
    wat(r#"(module
          (tag $oops)
          (memory 1)
          (func (export "_start")
            (block $handler
              (try_table (catch $oops $handler) (throw $oops)))
            (loop $forever (br $forever))))"#)
}

/// Exits with 7 at once.
fn trivial() -> Module {
    wat(r#"(module
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          (func (export "_start") (call $exit (i32.const 7))))"#)
}

/// Traps with `unreachable`.
fn trapping() -> Module {
    wat(r#"(module (memory 1) (func (export "_start") unreachable))"#)
}

fn wat(text: &str) -> Module {
    Module::new(wat::parse_str(text).unwrap())
}

struct TestWorker {
    sandbox: Sandbox,
    client: WorkerClient,
    _handle: rpc_core::Server,
}

async fn start(concurrency: u32) -> TestWorker {
    let sandbox = Sandbox::new(SandboxConfig {
        concurrency,
        limits: Limits {
            memory_bytes: 64 << 20,
            wall_time: Duration::from_secs(30),
            ..Limits::default()
        },
        ..SandboxConfig::default()
    })
    .unwrap();
    let handle = worker_server(sandbox.clone())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = WorkerClient::new(Client::new(handle.local_addr().to_string()));
    TestWorker {
        sandbox,
        client,
        _handle: handle,
    }
}

fn assert_caught(result: Result<worker::RunOutput, WorkerError>) {
    match result {
        Ok(output) => {
            assert_eq!(output.exit_code, 0);
            assert_eq!(output.stdout, &b"caught 42\n"[..]);
        }
        Err(error) => panic!("a correct job failed: {error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_with_exceptions_all_succeed_when_they_overlap() {
    let module = exceptions();
    for concurrency in [1, 2, 4] {
        let worker = start(concurrency).await;
        worker.client.upload(&module).await.unwrap();
        let mut jobs = JoinSet::new();
        for _ in 0..4 * concurrency {
            let client = worker.client.clone();
            let module = module.clone();
            jobs.spawn(async move { client.run(&module, Command::new()).await });
        }
        while let Some(result) = jobs.join_next().await {
            assert_caught(result.unwrap());
        }
        let status = worker.sandbox.status();
        assert_eq!(status.finished, u64::from(4 * concurrency));
        assert!(status.peak_running <= concurrency, "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_right_after_jobs_stopped_by_their_deadline_succeeds() {
    let worker = start(2).await;
    let spin = exceptions_then_spin();
    let good = exceptions();
    worker.client.upload(&spin).await.unwrap();
    worker.client.upload(&good).await.unwrap();
    let stopped = worker.client.clone().timeout(Duration::from_millis(15));
    for round in 0..100 {
        let mut jobs = JoinSet::new();
        for _ in 0..2 {
            let stopped = stopped.clone();
            let spin = spin.clone();
            jobs.spawn(async move { stopped.run(&spin, Command::new()).await });
        }
        while let Some(result) = jobs.join_next().await {
            match result.unwrap() {
                Err(WorkerError::Rpc(RpcError::DeadlineExceeded)) => {}
                other => panic!("round {round}: expected the deadline, got {other:?}"),
            }
        }
        let result = worker.client.run(&good, Command::new()).await;
        if let Err(error) = &result {
            panic!("round {round}: the job after stopped ones failed: {error}");
        }
        assert_caught(result);
    }
    crate::support::eventually("every slot is free again", || {
        let status = worker.sandbox.status();
        status.running == 0 && status.queued == 0
    })
    .await;
}

/// What each kind of job in the mixed load must end with.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Trivial,
    Exceptions,
    DeadlineStopped,
    Trapping,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_mixed_jobs_from_32_clients_each_end_once_with_their_own_outcome() {
    const CLIENTS: usize = 32;
    const JOBS: usize = 2_000;
    let worker = start(2).await;
    let modules = [trivial(), exceptions(), exceptions_then_spin(), trapping()];
    for module in &modules {
        worker.client.upload(module).await.unwrap();
    }
    let addr = worker._handle.local_addr().to_string();
    let mut clients = JoinSet::new();
    for index in 0..CLIENTS {
        // Each client has its own connection, like separate programs.
        let client = WorkerClient::new(Client::new(addr.clone()));
        let stopped = client.clone().timeout(Duration::from_millis(20));
        let modules = modules.clone();
        clients.spawn(async move {
            let mut ended = 0usize;
            for job in (index..JOBS).step_by(CLIENTS) {
                let kind = [
                    Kind::Trivial,
                    Kind::Exceptions,
                    Kind::DeadlineStopped,
                    Kind::Trapping,
                ][job % 4];
                let module = &modules[job % 4];
                let result = match kind {
                    Kind::DeadlineStopped => stopped.run(module, Command::new()).await,
                    _ => client.run(module, Command::new()).await,
                };
                match (kind, result) {
                    (Kind::Trivial, Ok(output)) => assert_eq!(output.exit_code, 7),
                    (Kind::Exceptions, result) => assert_caught(result),
                    (Kind::DeadlineStopped, Err(WorkerError::Rpc(RpcError::DeadlineExceeded))) => {}
                    (Kind::Trapping, Err(WorkerError::Job(JobError::Trap { message, .. }))) => {
                        assert!(message.contains("unreachable"), "{message}");
                    }
                    (kind, other) => panic!("job {job} ({kind:?}) ended with {other:?}"),
                }
                ended += 1;
            }
            ended
        });
    }
    let mut ended = 0;
    while let Some(count) = clients.join_next().await {
        ended += count.unwrap();
    }
    assert_eq!(ended, JOBS);
    crate::support::eventually("no slot is left taken", || {
        let status = worker.sandbox.status();
        status.running == 0 && status.queued == 0
    })
    .await;
    let status = worker.client.status().await.unwrap();
    assert_eq!((status.running, status.queued), (0, 0), "{status:?}");
    assert!(status.peak_running <= 2, "{status:?}");
}

/// On a runtime with a single thread, a guest that never stops still
/// leaves the server answering: its job runs one slice there, then moves
/// to a thread of its own.
#[tokio::test(flavor = "current_thread")]
async fn a_guest_that_spins_never_holds_up_the_servers_runtime() {
    let worker = start(2).await;
    let spin = wat(r#"(module (func (export "_start") (loop $forever (br $forever))))"#);
    worker.client.upload(&spin).await.unwrap();
    let spinning = {
        let client = worker.client.clone().timeout(Duration::from_secs(3));
        let spin = spin.clone();
        tokio::spawn(async move { client.run(&spin, Command::new()).await })
    };
    crate::support::eventually("the guest to spin", || worker.sandbox.status().running == 1).await;
    // Meanwhile, on the same single-threaded runtime, the server answers.
    let answered = tokio::time::timeout(Duration::from_secs(1), async {
        let status = worker.client.status().await.unwrap();
        let output = worker.client.run(&trivial(), Command::new()).await.unwrap();
        (status, output)
    })
    .await;
    let (status, output) = answered.expect("the server answered while the guest spun");
    assert_eq!(status.running, 1, "{status:?}");
    assert_eq!(output.exit_code, 7);
    assert!(matches!(
        spinning.await.unwrap(),
        Err(WorkerError::Rpc(RpcError::DeadlineExceeded))
    ));
}
