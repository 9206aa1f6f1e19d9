//! The worker on loopback, each number next to a floor measured in the same
//! run:
//!
//! - a trivial cached job end to end (p50, p99 sequential; jobs per second
//!   with 64 in flight) against a plain rpc call of the same shape, and the
//!   worker's answer with no job behind it (what the protocol alone costs);
//! - the worker-side cost alone (queue hand-off, store, WASI context,
//!   instantiate, run) against bare wasmtime instantiating from an
//!   `InstancePre` and calling an empty function;
//! - a large module: first submission (transfer + compile) against later
//!   ones (memory cache) and one after a restart (disk cache);
//! - a CPU-heavy Rust function in the sandbox against the same function
//!   compiled natively.
//!
//! Floor and job are measured in alternation (call by call for latency,
//! round by round for throughput), so that both see the same machine.
//!
//! How a job is run, and why. A job is a wasmtime async call: the guest runs
//! on a fiber stack from the pooling allocator (sized for the wasm stack
//! limit plus host room, so no thread needs a big stack) and yields every
//! 100 000 units of fuel, a few tens of microseconds. Its first slice runs
//! right where the call arrived, inside the server's task for the
//! connection: a trivial job is done there, with no hand-off between
//! threads and its answer written in the same batch as its neighbours'.
//! Only a job still running after its first slice moves to a blocking
//! thread, so a long guest never holds a runtime thread for more than one
//! slice. The alternatives measured worse here: the previous design (every
//! job handed to a job thread and back) pays two cross-thread wake-ups per
//! job, and yielding once so that each job gets a task of its own (spread
//! over both cores) loses the write batching: one `writev` per answer.
//!
//! Run with `cargo bench -p worker --bench worker` (needs
//! `rustup target add wasm32-wasip1` for the CPU-heavy guest). Set
//! `WORKER_BENCH_FUNCTIONS=60000` for a ~24 MiB module in the cache rows;
//! `WORKER_BENCH=cache` runs only those, `WORKER_BENCH=jobs` only the
//! trivial-job rows (for a profiler).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rpc_core::{Client, Server};
use tokio::sync::Semaphore;
use worker::wire::RunRequest;
use worker::{Command, Module, ModuleOrigin, Sandbox, SandboxConfig, WorkerClient, worker_server};

const SEQUENTIAL: usize = 2_000;
const PIPELINED: usize = 20_000;
const IN_FLIGHT: usize = 64;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let trivial = Module::new(wat::parse_str(r#"(module (func (export "_start")))"#).unwrap());
    if std::env::var("WORKER_BENCH").as_deref() == Ok("cache") {
        cache_rows().await;
        return;
    }
    if std::env::var("WORKER_BENCH").as_deref() == Ok("sandbox") {
        sandbox_row(&trivial, SEQUENTIAL * 50).await;
        return;
    }

    // Floor: an rpc call that carries a request and answers at once.
    let floor = Server::builder()
        .function("noop", |request: RunRequest| async move {
            Ok::<_, ()>(request.command.args.len() as u32)
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let floor_client = Client::new(floor.local_addr().to_string());
    let request = RunRequest {
        module: trivial.hash(),
        command: Command::new(),
    };
    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    let server = worker_server(sandbox.clone())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let worker = WorkerClient::new(Client::new(server.local_addr().to_string()));
    worker.upload(&trivial).await.unwrap();
    let floor_call = || {
        let client = floor_client.clone();
        let request = request.clone();
        async move {
            let _: u32 = client.call("noop", &request).await.unwrap();
        }
    };
    let job = || {
        let worker = worker.clone();
        let trivial = trivial.clone();
        async move {
            worker.run(&trivial, Command::new()).await.unwrap();
        }
    };
    // Floor and job in alternation, so that both see the same machine.
    let (floor_latency, job_latency) = paired_latencies(SEQUENTIAL, floor_call, job).await;
    let (floor_rate, job_rate) = paired_rates(PIPELINED, |_| floor_call(), |_| job()).await;
    // Between the two: the worker's answer, with no job behind it.
    let answers = Server::builder()
        .function(worker::wire::RUN_METHOD, |_: RunRequest| async move {
            Ok::<_, worker::JobError>(worker::RunOutput {
                exit_code: 0,
                stdout: Default::default(),
                stderr: Default::default(),
                receipt: Default::default(),
            })
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let answerer = WorkerClient::new(Client::new(answers.local_addr().to_string()));
    let answer = || {
        let answerer = answerer.clone();
        let trivial = trivial.clone();
        async move {
            answerer.run(&trivial, Command::new()).await.unwrap();
        }
    };
    let (_, answer_latency) = paired_latencies(SEQUENTIAL, floor_call, answer).await;
    let (answer_floor_rate, answer_rate) =
        paired_rates(PIPELINED, |_| floor_call(), |_| answer()).await;
    println!(
        "trivial cached job, end to end over loopback (floor: an rpc call of the same request)"
    );
    println!(
        "  p50 {:>8.1} us   floor {:>8.1} us   ratio {:.2}x",
        job_latency.p50,
        floor_latency.p50,
        job_latency.p50 / floor_latency.p50
    );
    println!(
        "  p99 {:>8.1} us   floor {:>8.1} us   ratio {:.2}x",
        job_latency.p99,
        floor_latency.p99,
        job_latency.p99 / floor_latency.p99
    );
    println!(
        "  {IN_FLIGHT} in flight: {:>8.0} jobs/s   floor {:>8.0} calls/s   ratio {:.2}x",
        job_rate,
        floor_rate,
        job_rate / floor_rate
    );

    println!(
        "  the same answer with no job behind it (a function returning a RunOutput): p50 {:.1} us, {IN_FLIGHT} in flight {:.2}x the floor's calls/s",
        answer_latency.p50,
        answer_rate / answer_floor_rate
    );

    // The job's own time on the server, from its receipts.
    let mut walls = Vec::with_capacity(SEQUENTIAL);
    for _ in 0..SEQUENTIAL {
        let output = worker.run(&trivial, Command::new()).await.unwrap();
        walls.push(output.receipt.wall_time_us as f64);
    }
    println!(
        "  the job itself on the server (receipt wall_time_us, whole microseconds): p50 {:.0} us",
        percentile(&mut walls, 0.5)
    );

    sandbox_row(&trivial, SEQUENTIAL).await;

    if std::env::var("WORKER_BENCH").as_deref() == Ok("jobs") {
        return;
    }
    cache_rows().await;

    // CPU-heavy: the same Rust function, native and in the sandbox.
    match stats_guest() {
        Some(stats) => {
            let limit = 3_000_000u32;
            let started = Instant::now();
            let native = guest_stats::count_primes(std::hint::black_box(limit));
            let native_ms = started.elapsed().as_secs_f64() * 1000.0;
            worker.upload(&stats).await.unwrap();
            let _: u32 = worker.call(&stats, "count_primes", &1000u32).await.unwrap();
            let started = Instant::now();
            let sandboxed: u32 = worker.call(&stats, "count_primes", &limit).await.unwrap();
            let sandbox_ms = started.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(native, sandboxed);
            println!(
                "\ncount_primes({limit}) = {native}: CPU-bound Rust, native vs in the sandbox (fuel on)"
            );
            println!(
                "  native {native_ms:>8.1} ms   sandbox {sandbox_ms:>8.1} ms   ratio {:.2}x",
                sandbox_ms / native_ms
            );
        }
        None => println!("\n(count_primes skipped: `rustup target add wasm32-wasip1` first)"),
    }
    server.shutdown(Duration::from_secs(1)).await;
    answers.shutdown(Duration::from_secs(1)).await;
    floor.shutdown(Duration::from_secs(1)).await;
}

/// The worker-side cost alone, in process: `Sandbox::run` of a cached
/// trivial module against bare wasmtime.
async fn sandbox_row(trivial: &Module, count: usize) {
    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    let hash = sandbox.add_module(trivial.bytes().clone()).await.unwrap();
    let mut instantiate = Vec::new();
    let local = latencies(count, || {
        let sandbox = sandbox.clone();
        async move {
            let request = RunRequest {
                module: hash,
                command: Command::new(),
            };
            sandbox.run(request, None).await.unwrap()
        }
    })
    .await;
    for _ in 0..SEQUENTIAL {
        let request = RunRequest {
            module: hash,
            command: Command::new(),
        };
        instantiate.push(
            sandbox
                .run(request, None)
                .await
                .unwrap()
                .receipt
                .instantiate_us as f64,
        );
    }
    let bare = bare_wasmtime(trivial.bytes(), count);
    println!(
        "\nworker-side cost of a trivial job, in process (floor: bare wasmtime instantiate + call)"
    );
    println!(
        "  Sandbox::run p50 {:>7.1} us   floor {:>7.1} us   ratio {:.1}x   (instantiation alone, from receipts: p50 {:.0} us, whole microseconds)",
        local.p50,
        bare.p50,
        local.p50 / bare.p50,
        percentile(&mut instantiate, 0.5)
    );
}

/// A large module: ship + compile, then a restart (disk), then cache hits.
async fn cache_rows() {
    // WORKER_BENCH_FUNCTIONS=60000 makes a ~24 MiB module that compiles for
    // about 20 s here.
    let functions = std::env::var("WORKER_BENCH_FUNCTIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(12_000);
    let big = big_module(functions);
    let dir = std::env::temp_dir().join(format!("worker-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = SandboxConfig {
        cache_dir: Some(dir.clone()),
        ..SandboxConfig::default()
    };
    // A fresh directory: shipped and compiled. Then a new worker on the
    // same directory: its first run loads from disk, its second from memory.
    let (first, first_origin, compile_us) = timed_job(&config, &big, 0).await;
    let (restarted, restart_origin, _) = timed_job(&config, &big, 0).await;
    let (cached, cached_origin, _) = timed_job(&config, &big, 1).await;
    println!(
        "\na {:.1} MiB module (compiles in {:.0} ms)",
        big.bytes().len() as f64 / (1 << 20) as f64,
        compile_us as f64 / 1000.0
    );
    println!(
        "  first submission (ship + compile)  {:>8.1} ms  ({first_origin})",
        first
    );
    println!(
        "  next submission                    {:>8.1} ms  ({cached_origin})  first/next {:.0}x",
        cached,
        first / cached
    );
    println!(
        "  after a restart                    {:>8.1} ms  ({restart_origin})  first/restart {:.0}x",
        restarted,
        first / restarted
    );
    let _ = std::fs::remove_dir_all(&dir);
}

struct Latency {
    p50: f64,
    p99: f64,
}

async fn latencies<F, Fut>(count: usize, mut call: F) -> Latency
where
    F: FnMut() -> Fut,
    Fut: Future,
{
    for _ in 0..count / 10 {
        call().await;
    }
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        call().await;
        samples.push(started.elapsed().as_secs_f64() * 1e6);
    }
    Latency {
        p50: percentile(&mut samples, 0.50),
        p99: percentile(&mut samples, 0.99),
    }
}

/// Latencies of `floor` and `job`, called in alternation.
async fn paired_latencies<F, FFut, J, JFut>(count: usize, floor: F, job: J) -> (Latency, Latency)
where
    F: Fn() -> FFut,
    FFut: Future,
    J: Fn() -> JFut,
    JFut: Future,
{
    for _ in 0..count / 10 {
        floor().await;
        job().await;
    }
    let (mut floors, mut jobs) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for _ in 0..count {
        let started = Instant::now();
        floor().await;
        floors.push(started.elapsed().as_secs_f64() * 1e6);
        let started = Instant::now();
        job().await;
        jobs.push(started.elapsed().as_secs_f64() * 1e6);
    }
    let latency = |samples: &mut Vec<f64>| Latency {
        p50: percentile(samples, 0.50),
        p99: percentile(samples, 0.99),
    };
    (latency(&mut floors), latency(&mut jobs))
}

/// Calls per second of `floor` and of `job`, `IN_FLIGHT` at a time, in ten
/// alternating rounds of `count / 10` each.
async fn paired_rates<F, FFut, J, JFut>(count: usize, floor: F, job: J) -> (f64, f64)
where
    F: Fn(usize) -> FFut,
    FFut: Future<Output = ()> + Send + 'static,
    J: Fn(usize) -> JFut,
    JFut: Future<Output = ()> + Send + 'static,
{
    let round = count / 10;
    let (mut floor_secs, mut job_secs) = (0.0, 0.0);
    for _ in 0..10 {
        floor_secs += round as f64 / rate(round, &floor).await;
        job_secs += round as f64 / rate(round, &job).await;
    }
    let total = (round * 10) as f64;
    (total / floor_secs, total / job_secs)
}

/// Calls per second with `IN_FLIGHT` at a time.
async fn rate<F, Fut>(count: usize, call: &F) -> f64
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let permit = Arc::clone(&permits).acquire_owned().await.unwrap();
        let work = call(i);
        tasks.spawn(async move {
            work.await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    count as f64 / started.elapsed().as_secs_f64()
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[((samples.len() - 1) as f64 * p) as usize]
}

/// Instantiating from an `InstancePre` and calling `_start`, nothing else.
fn bare_wasmtime(bytes: &[u8], count: usize) -> Latency {
    use wasmtime::{
        Config, Engine, InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig, Store,
    };
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(
        PoolingAllocationConfig::default(),
    ));
    let engine = Engine::new(&config).unwrap();
    let module = Module::new(&engine, bytes).unwrap();
    let pre = Linker::<()>::new(&engine).instantiate_pre(&module).unwrap();
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let mut store = Store::new(&engine, ());
        let instance = pre.instantiate(&mut store).unwrap();
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .unwrap();
        start.call(&mut store, ()).unwrap();
        samples.push(started.elapsed().as_secs_f64() * 1e6);
    }
    Latency {
        p50: percentile(&mut samples, 0.50),
        p99: percentile(&mut samples, 0.99),
    }
}

/// Starts a worker on `config`, runs `module` `warmups + 1` times and
/// returns the last run's time in ms, origin and compile time.
async fn timed_job(
    config: &SandboxConfig,
    module: &Module,
    warmups: usize,
) -> (f64, ModuleOrigin, u64) {
    let sandbox = Sandbox::new(config.clone()).unwrap();
    let server = worker_server(sandbox).bind("127.0.0.1:0").await.unwrap();
    let worker = WorkerClient::new(Client::new(server.local_addr().to_string()))
        .timeout(Duration::from_secs(600));
    let mut last = (0.0, ModuleOrigin::Compiled, 0);
    for _ in 0..=warmups {
        let started = Instant::now();
        let output = worker.run(module, Command::new()).await.unwrap();
        last = (
            started.elapsed().as_secs_f64() * 1000.0,
            output.receipt.module,
            output.receipt.compile_us,
        );
    }
    server.shutdown(Duration::from_secs(1)).await;
    last
}

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
    Module::new(wat::parse_str(&text).unwrap())
}

/// The `guest-stats` module, built for wasm32-wasip1 in its own target
/// directory; `None` if the target is not installed.
fn stats_guest() -> Option<Module> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("guests");
    let status = std::process::Command::new(env!("CARGO"))
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip1",
            "-p",
            "guest-stats",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    Module::from_file(target.join("wasm32-wasip1/release/guest_stats.wasm")).ok()
}
