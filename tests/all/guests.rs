//! The Rust guest programs in `examples/guests`, built for wasm32-wasip1
//! and run on a worker: the real toolchain's output, not hand-written WAT.

use std::path::PathBuf;
use std::process::Command as Process;
use std::sync::OnceLock;

use rpc_core::Client;
use serde::{Deserialize, Serialize};
use worker::{
    Command, JobError, Module, Sandbox, SandboxConfig, WorkerClient, WorkerError, worker_server,
};

/// Builds the guests once per test run, in a target directory of their own
/// (the outer `cargo test` holds the lock on its own).
pub(crate) fn guests() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("guests");
        let status = Process::new(env!("CARGO"))
            .current_dir(&root)
            .args(["build", "--release", "--target", "wasm32-wasip1"])
            .args(["-p", "guest-wordfreq", "-p", "guest-stats"])
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("cargo runs");
        assert!(
            status.success(),
            "building the guests failed; is the target installed? \
             (rustup target add wasm32-wasip1)"
        );
        target.join("wasm32-wasip1").join("release")
    })
}

async fn worker() -> (rpc_core::Server, WorkerClient) {
    let sandbox = Sandbox::new(SandboxConfig {
        concurrency: 2,
        ..SandboxConfig::default()
    })
    .unwrap();
    let handle = worker_server(sandbox).bind("127.0.0.1:0").await.unwrap();
    let client = WorkerClient::new(Client::new(handle.local_addr().to_string()));
    (handle, client)
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Summary {
    count: u64,
    mean: f64,
    min: f64,
    max: f64,
    stddev: f64,
}

#[tokio::test]
async fn a_rust_wasi_command_gets_args_and_stdin_and_returns_its_exit_code() {
    let module = Module::from_file(guests().join("guest-wordfreq.wasm")).unwrap();
    let (_handle, worker) = worker().await;
    let output = worker
        .run(
            &module,
            Command::new()
                .args(["-n", "2"])
                .stdin("the cat and the dog and the end"),
        )
        .await
        .unwrap();
    assert_eq!(output.exit_code, 0);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "      3 the\n      2 and\n"
    );
    let empty = worker.run(&module, Command::new()).await.unwrap();
    assert_eq!(empty.exit_code, 1);
    assert!(String::from_utf8_lossy(&empty.stderr).contains("no words"));
    let bad = worker
        .run(&module, Command::new().args(["--bogus"]))
        .await
        .unwrap();
    assert_eq!(bad.exit_code, 2);
}

#[tokio::test]
async fn a_rust_library_is_called_with_typed_input_and_output() {
    let module = Module::from_file(guests().join("guest_stats.wasm")).unwrap();
    let (_handle, worker) = worker().await;
    let summary: Summary = worker
        .call(
            &module,
            "summarize",
            &vec![2.0f64, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0],
        )
        .await
        .unwrap();
    assert_eq!(
        summary,
        Summary {
            count: 8,
            mean: 5.0,
            min: 2.0,
            max: 9.0,
            stddev: 2.0
        }
    );
    let primes: u32 = worker
        .call(&module, "count_primes", &100_000u32)
        .await
        .unwrap();
    assert_eq!(primes, 9592);

    // A panic in the guest is a trap, with the panic message.
    match worker.call::<_, ()>(&module, "fail", "out of ideas").await {
        Err(WorkerError::Job(JobError::Trap { stderr, .. })) => {
            assert!(String::from_utf8_lossy(&stderr).contains("out of ideas"));
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    // Input of the wrong type is caught by the guest's decoder.
    match worker
        .call::<_, Summary>(&module, "summarize", &"not a list")
        .await
    {
        Err(WorkerError::Job(JobError::Trap { stderr, .. })) => {
            assert!(String::from_utf8_lossy(&stderr).contains("did not decode"));
        }
        other => panic!("expected a trap, got {other:?}"),
    }
}
