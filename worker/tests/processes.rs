//! Real `worker serve` processes on 127.0.0.1-3, as three hosts: a pool
//! loses none of 1,000 jobs when one is killed (SIGKILL) mid-run, and takes
//! the restarted one back.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command as Process, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use rpc_core::{Client, ClientConfig, PoolConfig};
use worker::{Command, Module, Progress, WorkerClient, WorkerPool};

/// A worker process; killed when dropped.
struct WorkerProcess(Child);

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `worker serve` on `addr` and waits until it listens.
fn spawn_worker(addr: &str) -> WorkerProcess {
    spawn(
        &[
            "serve",
            "--listen",
            addr,
            "--no-disk-cache",
            "--concurrency",
            "2",
        ],
        "listening",
    )
}

/// Waits (up to 10 s) until the coordinator lists `count` workers; returns
/// how many it lists.
async fn registered(resolver: &worker::CoordinatorResolver, count: usize) -> usize {
    let mut listed = 0;
    for _ in 0..100 {
        listed = resolver.workers().await.map_or(0, |w| w.len());
        if listed == count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    listed
}

/// Runs `jobs` copies of `cat` with `input` over the pool and checks that
/// each answers it.
async fn echo_all(
    pool: &WorkerPool,
    module: &Module,
    input: &'static str,
    jobs: usize,
    concurrency: usize,
    progress: &Progress,
) {
    let outputs: Vec<_> = pool
        .map(
            module,
            (0..jobs).map(|_| Command::new().stdin(input)),
            concurrency,
            progress,
        )
        .collect()
        .await;
    assert!(
        outputs
            .iter()
            .all(|o| o.as_ref().is_ok_and(|o| o.stdout == input))
    );
}

/// A free port on `ip`, found by binding it and letting it go.
fn free_addr(ip: &str) -> String {
    let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
    listener.local_addr().unwrap().to_string()
}

fn cat() -> Module {
    Module::new(
        wat::parse_str(
            r#"(module
              (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
              (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
              (memory (export "memory") 1)
              (func (export "_start") (local $n i32)
                (loop $more
                  (i32.store (i32.const 0) (i32.const 1024))
                  (i32.store (i32.const 4) (i32.const 4096))
                  (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
                  (local.set $n (i32.load (i32.const 8)))
                  (if (i32.gt_u (local.get $n) (i32.const 0)) (then
                    (i32.store (i32.const 4) (local.get $n))
                    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 12)))
                    (br $more))))))"#,
        )
        .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_process_loses_no_job_and_is_taken_back() {
    let addrs: Vec<String> = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
        .iter()
        .map(|ip| free_addr(ip))
        .collect();
    let _a = spawn_worker(&addrs[0]);
    let _b = spawn_worker(&addrs[1]);
    let mut c = Some(spawn_worker(&addrs[2]));
    let config = PoolConfig {
        client: ClientConfig {
            connect_timeout: Duration::from_millis(500),
            ..ClientConfig::default()
        },
        attempt_timeout: Duration::from_secs(20),
        deadline: Duration::from_secs(60),
        eject_initial: Duration::from_millis(100),
        eject_max: Duration::from_millis(500),
        ..PoolConfig::default()
    };
    let pool = WorkerPool::with_config(addrs.clone(), config);
    let module = cat();
    let progress = Progress::default();
    let commands = (0..1000).map(|i| Command::new().stdin(format!("job {i}")));
    let killer = async {
        while progress.count().done < 150 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        drop(c.take()); // SIGKILL, jobs in flight
    };
    let (outputs, ()) = tokio::join!(
        pool.map(&module, commands, 24, &progress)
            .collect::<Vec<_>>(),
        killer
    );
    assert_eq!(outputs.len(), 1000);
    for (i, output) in outputs.into_iter().enumerate() {
        let output = output.unwrap_or_else(|error| panic!("job {i}: {error}"));
        assert_eq!(output.stdout, format!("job {i}").as_bytes(), "job {i}");
    }
    assert_eq!(progress.count().failed, 0);

    // Restarted on the same address, it is taken back and given jobs.
    let _c = spawn_worker(&addrs[2]);
    let direct = WorkerClient::new(Client::new(addrs[2].clone()));
    let mut back = false;
    for _ in 0..60 {
        echo_all(&pool, &module, "again", 30, 6, &progress).await;
        if direct.status().await.unwrap().finished > 0 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        back,
        "the restarted worker got no job: {:?}",
        pool.pool().status()
    );
}

/// Starts a process with `args` and waits for its first line of output.
fn spawn(args: &[&str], expect: &str) -> WorkerProcess {
    let mut child = Process::new(env!("CARGO_BIN_EXE_worker"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the worker binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains(expect), "unexpected first line: {line:?}");
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    });
    WorkerProcess(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_found_through_a_coordinator_process_survive_its_restart() {
    let coordinator_addr = free_addr("127.0.0.1");
    let coordinator = spawn(
        &["coordinator", "--listen", &coordinator_addr, "--ttl", "4"],
        "coordinator listening",
    );
    let mut workers = Vec::new();
    for ip in ["127.0.0.2", "127.0.0.3"] {
        let addr = free_addr(ip);
        workers.push(spawn(
            &[
                "serve",
                "--listen",
                &addr,
                "--no-disk-cache",
                "--join",
                &coordinator_addr,
            ],
            "listening",
        ));
    }
    // And one that listens nowhere.
    workers.push(spawn(
        &[
            "serve",
            "--relay-via",
            &coordinator_addr,
            "--name",
            "natted",
            "--no-disk-cache",
        ],
        "listening nowhere",
    ));
    let resolver = worker::CoordinatorResolver::new(Client::new(coordinator_addr.clone()));
    assert_eq!(registered(&resolver, 3).await, 3, "all three register");
    let pool = WorkerPool::new(resolver.resolve_now().await);
    pool.pool()
        .follow(resolver.clone(), Duration::from_millis(200));
    let module = cat();
    let progress = Progress::default();
    let outputs: Vec<_> = pool
        .map(
            &module,
            (0..300).map(|i| Command::new().stdin(format!("{i}"))),
            16,
            &progress,
        )
        .collect()
        .await;
    let mut relayed = 0;
    for (i, output) in outputs.into_iter().enumerate() {
        let output = output.unwrap();
        assert_eq!(output.stdout, i.to_string().as_bytes());
        relayed += usize::from(output.receipt.relayed_to.as_deref() == Some("natted"));
    }
    assert!(relayed > 0, "the relayed worker took no job");

    // The coordinator restarts: workers register again, clients go on.
    drop(coordinator);
    // Direct workers keep serving while the coordinator is down (relayed
    // jobs fail over to them).
    echo_all(&pool, &module, "x", 50, 8, &progress).await;
    let _coordinator = spawn(
        &["coordinator", "--listen", &coordinator_addr, "--ttl", "4"],
        "coordinator listening",
    );
    assert_eq!(
        registered(&resolver, 3).await,
        3,
        "the workers register with the new coordinator"
    );
    echo_all(&pool, &module, "y", 50, 8, &progress).await;
}

/// `worker map --coordinator` with no coordinator running fails within the
/// connect timeout, saying what to check (it used to wait out the 300 s
/// job timeout).
#[tokio::test]
async fn map_through_a_coordinator_that_is_down_fails_at_once() {
    let dir = std::env::temp_dir().join(format!("worker-map-down-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let module = dir.join("cat.wasm");
    std::fs::write(&module, cat().bytes()).unwrap();
    let down = free_addr("127.0.0.1");
    let started = std::time::Instant::now();
    let mut child = Process::new(env!("CARGO_BIN_EXE_worker"))
        .args(["map", "--coordinator", &down, "--lines"])
        .arg(&module)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"one\ntwo\n").unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(69), "{stderr}");
    assert!(stderr.contains("cannot ask the coordinator"), "{stderr}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends `signal` (`STOP`, `CONT`) to a process.
fn signal(process: &WorkerProcess, signal: &str) {
    let status = Process::new("kill")
        .args([&format!("-{signal}"), &process.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A worker process frozen with SIGSTOP (alive to TCP, answering nothing)
/// holds none of a 200-job map: once it misses its health pings, the jobs
/// it holds go to the others, each with one result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_worker_process_holds_no_job_hostage() {
    let addrs: Vec<String> = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
        .iter()
        .map(|ip| free_addr(ip))
        .collect();
    let workers: Vec<WorkerProcess> = addrs.iter().map(|addr| spawn_worker(addr)).collect();
    let config = PoolConfig {
        attempt_timeout: Duration::from_secs(60),
        deadline: Duration::from_secs(120),
        ..worker::worker_pool_config()
    };
    let pool = WorkerPool::with_config(addrs.clone(), config);
    let module = cat();
    let progress = Progress::default();
    // Every worker connected and holding the module.
    echo_all(&pool, &module, "warm\n", 60, 12, &progress).await;
    signal(&workers[1], "STOP");
    let started = std::time::Instant::now();
    let progress = Progress::default();
    echo_all(&pool, &module, "line\n", 200, 32, &progress).await;
    let took = started.elapsed();
    signal(&workers[1], "CONT");
    eprintln!("200 jobs with one of three worker processes stopped: {took:?}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert_eq!(progress.count().failed, 0);
}
