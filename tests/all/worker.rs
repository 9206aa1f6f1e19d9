//! The worker over real TCP: shipping modules, both kinds of job, and every
//! hostile job ending with its own status while good jobs keep working.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rpc_core::{Client, RpcError, Server};
use worker::wire::CallRequest;
use worker::{
    Command, JobError, JobLimits, Limits, Module, ModuleOrigin, Resource, Sandbox, SandboxConfig,
    WorkerClient, WorkerError, worker_server,
};

const WASI: &str = r#"
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
"#;

/// Prints "hello\n" and exits with 10.
pub(crate) fn hello() -> Module {
    wat(&format!(
        r#"(module {WASI}
          (memory (export "memory") 1)
          (data (i32.const 16) "hello\n")
          (func (export "_start")
            (i32.store (i32.const 0) (i32.const 16))
            (i32.store (i32.const 4) (i32.const 6))
            (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
            (call $proc_exit (i32.const 10))))"#
    ))
}

/// Copies stdin to stdout.
pub(crate) fn cat() -> Module {
    wat(&format!(
        r#"(module {WASI}
          (memory (export "memory") 1)
          (func (export "_start") (local $n i32)
            (loop $more
              (i32.store (i32.const 0) (i32.const 1024))
              (i32.store (i32.const 4) (i32.const 4096))
              (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
              (local.set $n (i32.load (i32.const 8)))
              (if (i32.gt_u (local.get $n) (i32.const 0)) (then
                (i32.store (i32.const 4) (local.get $n))
                (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 12)))
                (br $more))))))"#
    ))
}

pub(crate) fn spin_forever() -> Module {
    wat(r#"(module (func (export "_start") (loop $forever (br $forever))))"#)
}

/// Counts to `n` and returns: a job that takes a little CPU time.
fn count_to(n: u32) -> Module {
    wat(&format!(
        r#"(module (func (export "_start") (local $i i32)
          (loop $more
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br_if $more (i32.lt_u (local.get $i) (i32.const {n}))))))"#
    ))
}

fn grow_memory_forever() -> Module {
    wat(r#"(module (memory 1)
      (func (export "_start")
        (loop $more (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
        unreachable))"#)
}

fn recurse_forever() -> Module {
    wat(r#"(module (func $deeper (export "_start") (call $deeper)))"#)
}

fn flood_stdout() -> Module {
    wat(&format!(
        r#"(module {WASI}
          (memory (export "memory") 2)
          (func (export "_start")
            (i32.store (i32.const 0) (i32.const 0))
            (i32.store (i32.const 4) (i32.const 65536))
            (loop $more
              (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
              (br $more))))"#
    ))
}

/// Imports a host hook the worker lacks; calls it only if `call` is set.
fn host_hook(call: bool) -> Module {
    let body = if call { "(call $hook)" } else { "" };
    wat(&format!(
        r#"(module (import "env" "host_hook" (func $hook))
          (func (export "_start") {body}))"#
    ))
}

/// A typed-call guest written by hand: `echo` returns its input,
/// `bad_pointer` returns an output outside its memory.
pub(crate) fn echo_guest() -> Module {
    wat(r#"(module
      (memory (export "memory") 2)
      (global $next (mut i32) (i32.const 1024))
      (func (export "rpc_alloc") (param $len i32) (result i32) (local $at i32)
        (local.set $at (global.get $next))
        (global.set $next (i32.add (global.get $next) (local.get $len)))
        (local.get $at))
      (func (export "echo") (param $ptr i32) (param $len i32) (result i64)
        (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
                (i64.extend_i32_u (local.get $len))))
      (func (export "bad_pointer") (param i32 i32) (result i64)
        (i64.const 0x7fff000000000010))
      (func (export "trap") (param i32 i32) (result i64) unreachable))"#)
}

/// A module with `functions` functions of arithmetic: takes a while to
/// compile.
fn big_module(functions: usize) -> Module {
    let mut text = String::from("(module (func (export \"_start\"))");
    for i in 0..functions {
        text.push_str(&format!(
            "(func (export \"f{i}\") (param i64) (result i64) (local.get 0)"
        ));
        for k in 0..40 {
            text.push_str(&format!(
                " (i64.const {k}) (i64.mul) (i64.const {i}) (i64.xor) (local.get 0) (i64.add)"
            ));
        }
        text.push(')');
    }
    text.push(')');
    wat(&text)
}

/// A valid module of at least `len` bytes, almost all of it a data segment.
pub(crate) fn huge_module(len: usize) -> Module {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = u8::try_from(n & 0x7f).unwrap();
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let pages = len / 65536 + 1;
    let mut wasm = b"\0asm\x01\0\0\0".to_vec();
    wasm.extend_from_slice(&[1, 4, 1, 0x60, 0, 0]); // type: () -> ()
    wasm.extend_from_slice(&[3, 2, 1, 0]); // one function of type 0
    let mut memory = vec![1, 0];
    leb(pages, &mut memory);
    wasm.push(5);
    leb(memory.len(), &mut wasm);
    wasm.extend_from_slice(&memory);
    wasm.extend_from_slice(&[7, 10, 1, 6]);
    wasm.extend_from_slice(b"_start");
    wasm.extend_from_slice(&[0, 0]);
    wasm.extend_from_slice(&[10, 4, 1, 2, 0, 0x0b]); // empty body
    let mut data = vec![1, 0, 0x41, 0, 0x0b];
    leb(len, &mut data);
    let header = data.len();
    data.resize(header + len, 0xab);
    wasm.push(11);
    leb(data.len(), &mut wasm);
    wasm.extend_from_slice(&data);
    Module::new(wasm)
}

fn wat(text: &str) -> Module {
    Module::new(wat::parse_str(text).unwrap())
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("worker-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

struct TestWorker {
    sandbox: Sandbox,
    handle: Server,
    client: WorkerClient,
}

async fn start(config: SandboxConfig) -> TestWorker {
    let sandbox = Sandbox::new(config).unwrap();
    let handle = worker_server(sandbox.clone())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = WorkerClient::new(Client::new(handle.local_addr().to_string()));
    TestWorker {
        sandbox,
        handle,
        client,
    }
}

fn small_worker() -> SandboxConfig {
    SandboxConfig {
        concurrency: 2,
        limits: Limits {
            memory_bytes: 64 << 20,
            wall_time: Duration::from_secs(20),
            fuel: 2_000_000_000,
            output_bytes: 1 << 20,
            ..Limits::default()
        },
        ..SandboxConfig::default()
    }
}

/// A good job still gets its correct result.
async fn assert_serves(client: &WorkerClient) {
    let output = client.run(&hello(), Command::new()).await.unwrap();
    assert_eq!(output.exit_code, 10);
    assert_eq!(output.stdout, &b"hello\n"[..]);
}

fn job_error(result: Result<impl std::fmt::Debug, WorkerError>) -> JobError {
    match result {
        Err(WorkerError::Job(error)) => error,
        other => panic!("expected a job error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_command_runs_with_stdin_and_its_exit_code_is_a_result() {
    let worker = start(small_worker()).await;
    let hello = hello();
    let first = worker.client.run(&hello, Command::new()).await.unwrap();
    assert_eq!((first.exit_code, &first.stdout[..]), (10, &b"hello\n"[..]));
    assert_eq!(first.receipt.module, ModuleOrigin::Compiled);
    assert!(first.receipt.fuel > 0);
    assert!(first.receipt.peak_memory_bytes >= 65536);
    // The second run ships nothing and compiles nothing.
    assert!(!worker.client.upload(&hello).await.unwrap());
    let second = worker.client.run(&hello, Command::new()).await.unwrap();
    assert_eq!(second.receipt.module, ModuleOrigin::Memory);
    assert_eq!(worker.sandbox.status().compiled, 1);

    let input = Bytes::from((0..100_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    let output = worker
        .client
        .run(&cat(), Command::new().stdin(input.clone()))
        .await
        .unwrap();
    assert_eq!(output.exit_code, 0);
    assert_eq!(output.stdout, input);
}

#[tokio::test]
async fn a_typed_export_is_called_with_encoded_input() {
    let worker = start(small_worker()).await;
    let guest = echo_guest();
    let value = (7u32, String::from("seven"), vec![1.5f64, 2.5]);
    let echoed: (u32, String, Vec<f64>) = worker.client.call(&guest, "echo", &value).await.unwrap();
    assert_eq!(echoed, value);

    let missing = worker.client.call::<_, ()>(&guest, "nope", &()).await;
    assert!(matches!(job_error(missing), JobError::BadExport { ref name, .. } if name == "nope"));
    let bad = worker
        .client
        .call::<_, ()>(&guest, "bad_pointer", &())
        .await;
    assert!(matches!(job_error(bad), JobError::Abi(_)));
    let trap = worker.client.call::<_, ()>(&guest, "trap", &()).await;
    match job_error(trap) {
        JobError::Trap { message, .. } => assert!(message.contains("unreachable"), "{message}"),
        other => panic!("{other:?}"),
    }
    // A typed call on a command module names what is missing.
    let request = CallRequest::new(hello().hash(), "_start", Bytes::new());
    let wrong = worker.client.call_raw(&hello(), request).await;
    assert!(
        matches!(job_error(wrong), JobError::BadExport { ref name, .. } if name == "rpc_alloc")
    );
    assert_serves(&worker.client).await;
}

#[tokio::test]
async fn hostile_jobs_end_with_their_own_status_and_the_worker_goes_on() {
    let worker = start(small_worker()).await;
    let client = &worker.client;

    // An infinite loop: the wall clock stops it...
    let started = Instant::now();
    let limits = JobLimits {
        wall_time_ms: Some(200),
        ..JobLimits::default()
    };
    let spin = client
        .run(&spin_forever(), Command::new().limits(limits))
        .await;
    assert!(matches!(job_error(spin), JobError::DeadlineExceeded { .. }));
    assert!(started.elapsed() < Duration::from_secs(5));
    // ... or its fuel runs out first.
    let limits = JobLimits {
        fuel: Some(1_000_000),
        ..JobLimits::default()
    };
    let spin = client
        .run(&spin_forever(), Command::new().limits(limits))
        .await;
    assert!(matches!(
        job_error(spin),
        JobError::ResourceExhausted {
            resource: Resource::Fuel,
            ..
        }
    ));
    assert_serves(client).await;

    let grow = client.run(&grow_memory_forever(), Command::new()).await;
    assert!(matches!(
        job_error(grow),
        JobError::ResourceExhausted {
            resource: Resource::Memory,
            ..
        }
    ));
    // A module whose initial memory is over the limit never starts.
    let big_memory = wat(r#"(module (memory 2000) (func (export "_start")))"#);
    let refused = client.run(&big_memory, Command::new()).await;
    assert!(matches!(
        job_error(refused),
        JobError::ResourceExhausted {
            resource: Resource::Memory,
            ..
        }
    ));
    let recurse = client.run(&recurse_forever(), Command::new()).await;
    assert!(matches!(
        job_error(recurse),
        JobError::ResourceExhausted {
            resource: Resource::Stack,
            ..
        }
    ));
    let started = Instant::now();
    let flood = client.run(&flood_stdout(), Command::new()).await;
    match job_error(flood) {
        // Stopped at the limit, with everything it wrote up to it.
        JobError::OutputLimit {
            stdout,
            stderr,
            receipt,
        } => {
            assert_eq!(stdout.len(), 1 << 20, "stdout is kept up to the limit");
            assert!(stderr.is_empty());
            assert!(receipt.stdout_truncated && !receipt.stderr_truncated);
            assert!(receipt.fuel > 0, "{receipt:?}");
        }
        other => panic!("expected the output limit, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a flood ends at the limit"
    );
    assert_serves(client).await;

    // Unknown imports: refused by name, or stubbed on request.
    let refused = client.run(&host_hook(false), Command::new()).await;
    match job_error(refused) {
        JobError::UnknownImport { module, name } => {
            assert_eq!((module.as_str(), name.as_str()), ("env", "host_hook"));
        }
        other => panic!("{other:?}"),
    }
    let stubbed = client
        .run(&host_hook(false), Command::new().stub_unknown_imports())
        .await
        .unwrap();
    assert_eq!(stubbed.exit_code, 0);
    let called = client
        .run(&host_hook(true), Command::new().stub_unknown_imports())
        .await;
    assert!(matches!(job_error(called), JobError::Trap { .. }));
    assert_serves(client).await;
}

#[tokio::test]
async fn invalid_and_oversized_modules_are_refused_before_compiling() {
    let mut config = small_worker();
    config.limits.module_bytes = 4096;
    let worker = start(config).await;
    let client = &worker.client;
    let valid = hello().bytes().to_vec();
    let cases: [(Vec<u8>, &str); 4] = [
        (
            b"garbage, not wasm at all".to_vec(),
            "not a WebAssembly module",
        ),
        (valid[..valid.len() - 5].to_vec(), "unexpected end"),
        (b"\0ASM\x01\0\0\0".to_vec(), "not a WebAssembly module"),
        (b"\0asm\x0d\0\x01\0".to_vec(), "component"),
    ];
    for (bytes, expected) in cases {
        match client.upload(&Module::new(bytes)).await {
            Err(WorkerError::Rpc(RpcError::BadRequest(message))) => {
                assert!(message.contains(expected), "{message}");
            }
            other => panic!("expected a bad request, got {other:?}"),
        }
    }
    match client.upload(&Module::new(vec![0u8; 5000])).await {
        Err(WorkerError::Rpc(RpcError::ResourceExhausted(message))) => {
            assert!(message.contains("4096"), "{message}");
        }
        other => panic!("expected resource exhausted, got {other:?}"),
    }
    assert_eq!(worker.sandbox.status().compiled, 0);
    assert_serves(client).await;
}

#[tokio::test]
async fn a_cancelled_job_stops_its_guest() {
    let worker = start(small_worker()).await;
    let spin = spin_forever();
    worker.client.upload(&spin).await.unwrap();
    let job = worker.client.run(&spin, Command::new());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), job)
            .await
            .is_err()
    );
    // Dropping the call sent a cancel; the guest stops within ticks.
    let sandbox = worker.sandbox.clone();
    crate::support::eventually("the cancelled guest stops", move || {
        sandbox.status().running == 0
    })
    .await;
    assert_serves(&worker.client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_jobs_on_two_slots_all_finish_two_at_a_time() {
    let worker = start(small_worker()).await;
    let module = count_to(200_000);
    worker.client.upload(&module).await.unwrap();
    let mut jobs = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let client = worker.client.clone();
        let module = module.clone();
        jobs.spawn(async move { client.run(&module, Command::new()).await });
    }
    let mut done = 0;
    while let Some(result) = jobs.join_next().await {
        assert_eq!(result.unwrap().unwrap().exit_code, 0);
        done += 1;
    }
    assert_eq!(done, 100);
    let status = worker.client.status().await.unwrap();
    assert_eq!(status.peak_running, 2, "{status:?}");
    assert_eq!(status.finished, 100);
    assert_eq!(status.compiled, 1);
}

#[tokio::test]
async fn a_restarted_worker_loads_compiled_modules_from_disk() {
    let dir = temp_dir("restart");
    let config = SandboxConfig {
        cache_dir: Some(dir.clone()),
        ..small_worker()
    };
    let module = big_module(1500);
    let first = start(config.clone()).await;
    let output = first.client.run(&module, Command::new()).await.unwrap();
    assert_eq!(output.receipt.module, ModuleOrigin::Compiled);
    assert!(output.receipt.compile_us > 0);
    first.handle.shutdown(Duration::from_secs(1)).await;

    // A new worker on the same directory: the module is held already and
    // its compiled form loads from disk.
    let second = start(config.clone()).await;
    assert!(
        !second.client.upload(&module).await.unwrap(),
        "not sent again"
    );
    let output = second.client.run(&module, Command::new()).await.unwrap();
    assert_eq!(output.receipt.module, ModuleOrigin::Disk);
    assert_eq!(output.receipt.compile_us, 0);
    assert_eq!(second.sandbox.status().compiled, 0);
    second.handle.shutdown(Duration::from_secs(1)).await;

    // A tampered artifact is detected and the module compiled again.
    let compiled_dir = std::fs::read_dir(dir.join("compiled"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let artifact = compiled_dir.join(module.hash().to_string());
    let mut bytes = std::fs::read(&artifact).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&artifact, &bytes).unwrap();
    let third = start(config).await;
    let output = third.client.run(&module, Command::new()).await.unwrap();
    assert_eq!(output.receipt.module, ModuleOrigin::Compiled);
    assert_eq!(third.sandbox.status().compiled, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mb_module_is_shipped_in_chunks_and_runs() {
    let worker = start(SandboxConfig {
        concurrency: 1,
        ..SandboxConfig::default()
    })
    .await;
    let module = huge_module(64 << 20);
    assert!(module.bytes().len() > 64 << 20);
    assert!(worker.client.upload(&module).await.unwrap());
    let output = worker.client.run(&module, Command::new()).await.unwrap();
    assert_eq!(output.exit_code, 0);
    assert!(output.receipt.peak_memory_bytes > 64 << 20);
    assert!(!worker.client.upload(&module).await.unwrap());
    assert_serves(&worker.client).await;
}

#[tokio::test]
async fn bytes_that_do_not_match_their_hash_are_refused() {
    let worker = start(small_worker()).await;
    let client = Client::new(worker.handle.local_addr().to_string());
    let claimed = hello().hash();
    let error = client
        .send_program_as(claimed, spin_forever().bytes().clone())
        .await
        .unwrap_err();
    assert!(
        matches!(error, RpcError::BadRequest(ref m) if m.contains("hash")),
        "{error}"
    );
    assert!(!worker.sandbox.has_module(&claimed));
    assert_serves(&worker.client).await;
}

#[tokio::test]
async fn jobs_see_only_what_they_are_given() {
    // `environ_sizes_get` reports what the job was given and nothing of the
    // worker's own environment.
    let module = wat(r#"(module
      (import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (func (export "_start")
        (drop (call $sizes (i32.const 0) (i32.const 4)))
        (call $exit (i32.load (i32.const 0)))))"#);
    let sandbox = Sandbox::new(small_worker()).unwrap();
    let hash = sandbox.add_module(module.bytes().clone()).await.unwrap();
    let request = |command| worker::wire::RunRequest {
        module: hash,
        command,
    };
    let none = sandbox.run(request(Command::new()), None).await.unwrap();
    assert_eq!(none.exit_code, 0);
    let two = sandbox
        .run(request(Command::new().env("A", "1").env("B", "2")), None)
        .await
        .unwrap();
    assert_eq!(two.exit_code, 2);
}

/// Opens `/data/hello.txt` (the first preopened directory is fd 3) for
/// reading, then tries to create it for writing. Exits 0 if reading works
/// and writing is refused, 1 if it cannot read, 2 if it could write.
fn read_then_write_data() -> Module {
    wat(r#"(module
      (import "wasi_snapshot_preview1" "path_open"
        (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (data (i32.const 100) "hello.txt")
      (func (export "_start")
        (if (i32.ne (call $open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 9)
                      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 200))
                    (i32.const 0))
          (then (call $exit (i32.const 1))))
        (if (i32.eq (call $open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 9)
                      (i32.const 1) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 200))
                    (i32.const 0))
          (then (call $exit (i32.const 2))))
        (call $exit (i32.const 0))))"#)
}

#[tokio::test]
async fn a_granted_directory_is_read_only_and_others_do_not_exist() {
    let dir = temp_dir("granted");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hello.txt"), "contents").unwrap();
    let worker = start(SandboxConfig {
        dirs: vec![("data".into(), dir.clone())],
        ..small_worker()
    })
    .await;
    let module = read_then_write_data();
    let granted = worker
        .client
        .run(&module, Command::new().dir("data"))
        .await
        .unwrap();
    assert_eq!(granted.exit_code, 0, "read allowed, write refused");
    assert_eq!(
        std::fs::read_to_string(dir.join("hello.txt")).unwrap(),
        "contents"
    );
    // Without asking, the job has no filesystem.
    let none = worker.client.run(&module, Command::new()).await.unwrap();
    assert_eq!(none.exit_code, 1);
    // A directory the operator did not grant is refused by name.
    let refused = worker.client.run(&module, Command::new().dir("etc")).await;
    assert!(matches!(job_error(refused), JobError::DirNotGranted(ref name) if name == "etc"));
    // Granting something that is not a plain name or not a directory fails
    // at startup.
    for dirs in [
        vec![("../up".to_owned(), dir.clone())],
        vec![("file".to_owned(), dir.join("hello.txt"))],
    ] {
        let config = SandboxConfig {
            dirs,
            ..small_worker()
        };
        assert!(Sandbox::new(config).is_err());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn modules_using_exceptions_simd_and_multi_value_run() {
    // What current C++ and Python builds emit: exception handling, SIMD,
    // multi-value returns, bulk memory and reference types.
    let module = wat(r#"(module
      (tag $oops (param i32))
      (memory 1)
      (table 1 funcref)
      (func $pair (result i32 i32) (i32.const 20) (i32.const 22))
      (func $thrower (throw $oops (i32.const 42)))
      (func (export "_start") (local $caught i32)
        (local.set $caught
          (block $handler (result i32)
            (try_table (catch $oops $handler) (call $thrower))
            (i32.const 0)))
        (if (i32.ne (local.get $caught) (i32.const 42)) (then unreachable))
        (if (i32.ne (i32x4.extract_lane 3 (i32x4.add (i32x4.splat (i32.const 40))
                                                     (i32x4.splat (i32.const 2))))
                    (i32.const 42))
          (then unreachable))
        (if (i32.ne (i32.add (call $pair)) (i32.const 42)) (then unreachable))
        (memory.fill (i32.const 0) (i32.const 7) (i32.const 100))
        (if (i32.ne (i32.load8_u (i32.const 99)) (i32.const 7)) (then unreachable))
        (if (i32.eqz (ref.is_null (table.get (i32.const 0)))) (then unreachable))))"#);
    let worker = start(small_worker()).await;
    let output = worker.client.run(&module, Command::new()).await.unwrap();
    assert_eq!(output.exit_code, 0);
}
