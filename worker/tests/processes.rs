//! Real `worker serve` processes on 127.0.0.1-3, as three hosts: a pool
//! loses none of 1,000 jobs when one is killed (SIGKILL) mid-run, and takes
//! the restarted one back.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command as Process, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rpc_core::{Client, ClientConfig, PoolConfig};
use worker::{Command, Module, Progress, WorkerClient, WorkerPool};

#[path = "processes/operate.rs"]
mod operate;
#[path = "../../tests/all/pki.rs"]
mod pki;
#[path = "processes/relay.rs"]
mod relay;
#[path = "processes/sandbox.rs"]
mod sandbox;
#[path = "processes/tls.rs"]
mod tls;

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

/// Runs the worker binary with `args` and `stdin` to the end (killed after
/// 60 s).
pub(crate) fn run_cli(args: &[&str], stdin: impl AsRef<[u8]>) -> Output {
    let mut child = Process::new(env!("CARGO_BIN_EXE_worker"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_ref())
        .unwrap();
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        let _ = Process::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    });
    let output = child.wait_with_output().unwrap();
    drop(watchdog);
    output
}

pub(crate) fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
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
            .all(|o| o.result.as_ref().is_ok_and(|o| o.stdout == input))
    );
}

/// A free address on each of 127.0.0.1-3: three hosts on one machine.
fn three_hosts() -> Vec<String> {
    ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
        .iter()
        .map(|ip| free_addr(ip))
        .collect()
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
    let addrs = three_hosts();
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
        let output = output
            .result
            .unwrap_or_else(|error| panic!("job {i}: {error}"));
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
    spawn_with(args, &[], expect)
}

/// Starts a process with `args` and environment variables `env`, and waits
/// for its first line of output.
fn spawn_with(args: &[&str], env: &[(&str, &str)], expect: &str) -> WorkerProcess {
    let mut command = Process::new(env!("CARGO_BIN_EXE_worker"));
    command.args(args).envs(env.iter().copied());
    spawn_command(command, expect)
}

/// Starts `command` (the worker binary, or something that runs it) and
/// waits for its first line of output.
fn spawn_command(mut command: Process, expect: &str) -> WorkerProcess {
    let mut child = command
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
        let output = output.result.unwrap();
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
    let addrs = three_hosts();
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

// Figures ------------------------------------------------------------------
//
// The attacks of issue 12 against a real `worker serve` process, with its
// memory, threads and a legitimate client's latency measured from outside.
// Slow (about a minute in release): run with
//   cargo test --release -p worker --test processes -- --ignored --nocapture attack_figures

/// `VmRSS` (MiB) and thread count of a process, from `/proc`.
fn rss_and_threads(process: &WorkerProcess) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", process.0.id())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:") / 1024, field("Threads:"))
}

fn figure_wat(text: &str) -> Module {
    Module::new(wat::parse_str(text).unwrap())
}

/// Sleeps in `poll_oneoff` for `seconds`.
fn sleeper(seconds: u64) -> Module {
    figure_wat(&format!(
        r#"(module
          (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (func (export "_start")
            (i32.store8 (i32.const 8) (i32.const 0))
            (i32.store (i32.const 16) (i32.const 1))
            (i64.store (i32.const 24) (i64.const {}))
            (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#,
        seconds * 1_000_000_000
    ))
}

/// Writes `kib` KiB to stdout and exits.
fn writer(kib: u32) -> Module {
    figure_wat(&format!(
        r#"(module
          (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 2)
          (func (export "_start") (local $i i32)
            (i32.store (i32.const 0) (i32.const 1024))
            (i32.store (i32.const 4) (i32.const 1024))
            (loop $more
              (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br_if $more (i32.lt_u (local.get $i) (i32.const {kib}))))))"#
    ))
}

/// A raw framed connection to `addr` after a handshake with the client
/// token.
async fn raw_session(
    addr: &str,
) -> tokio_util::codec::Framed<tokio::net::TcpStream, rpc_core::wire::FrameCodec> {
    use futures_util::SinkExt;
    use rpc_core::PeerRole;
    use rpc_core::wire::{Frame, FrameCodec, Hello, Limits, Message};
    let socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut framed = tokio_util::codec::Framed::new(socket, FrameCodec::new());
    let hello = Hello {
        peer_name: "raw".into(),
        role: PeerRole::Client,
        token: Some("ctok".into()),
        limits: Limits::default(),
    };
    framed
        .send(Frame::connection(Message::Hello(hello)))
        .await
        .unwrap();
    let welcome = framed.next().await.unwrap().unwrap();
    assert!(matches!(welcome.message, Message::Welcome(_)));
    framed
}

fn trivial_module() -> Module {
    figure_wat(r#"(module (func (export "_start")))"#)
}

fn token_client(addr: &str) -> Client {
    Client::with_config(
        addr.to_owned(),
        ClientConfig {
            token: Some("ctok".into()),
            max_payload_len: 1 << 30,
            timeout: Some(Duration::from_secs(120)),
            ..ClientConfig::default()
        },
    )
}

/// How long a legitimate job takes now.
async fn legit_job(client: &WorkerClient) -> Duration {
    let started = std::time::Instant::now();
    client.run(&trivial_module(), Command::new()).await.unwrap();
    started.elapsed()
}

/// Starts a measured worker with tokens: its large buffers are returned to
/// the system when freed (`MALLOC_MMAP_THRESHOLD_`), so RSS shows what it
/// holds, not what glibc kept.
fn measured_worker(addr: &str) -> WorkerProcess {
    spawn_with(
        &[
            "serve",
            "--listen",
            addr,
            "--no-disk-cache",
            "--concurrency",
            "2",
            "--token",
            "ctok:client",
            "--token",
            "atok:admin",
        ],
        &[("MALLOC_MMAP_THRESHOLD_", "131072")],
        "listening",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: the figures of the attacks, run by hand"]
async fn attack_figures() {
    use rpc_core::wire::{Call, Frame, Message, Payload};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    let addr = free_addr("127.0.0.1");
    let process = measured_worker(&addr);
    let client = token_client(&addr);
    let worker = WorkerClient::new(client.clone());
    println!(
        "baseline: RSS {} MiB, {} threads; a legit job {:?}",
        rss_and_threads(&process).0,
        rss_and_threads(&process).1,
        legit_job(&worker).await
    );

    // 3. Frames announcing 1 MiB before the Hello, 1,000 connections.
    let before = rss_and_threads(&process).0;
    let mut held = Vec::new();
    for _ in 0..1000 {
        let mut socket = TcpStream::connect(&addr).await.unwrap();
        let mut header = (1u32 << 20).to_be_bytes().to_vec();
        header.extend_from_slice(&[1, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let _ = socket.write_all(&header).await;
        let _ = socket.write_all(&vec![0u8; 64 << 10]).await;
        held.push(socket);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = legit_job(&worker).await;
    println!(
        "3. 1,000 unauthenticated connections announcing 1 MiB frames: RSS {before} -> {} MiB; a legit job meanwhile {during:?}",
        rss_and_threads(&process).0
    );
    drop(held);

    // 4. Silent sockets, 1,100, reopened as closed at <= 200/s, for 8 s.
    let pace = Arc::new(tokio::sync::Semaphore::new(0));
    let refill = {
        let pace = Arc::clone(&pace);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            loop {
                tick.tick().await;
                if pace.available_permits() < 200 {
                    pace.add_permits(1);
                }
            }
        })
    };
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..1100 {
        let (pace, addr) = (Arc::clone(&pace), addr.clone());
        flood.spawn(async move {
            loop {
                pace.acquire().await.unwrap().forget();
                if let Ok(mut socket) = TcpStream::connect(&addr).await {
                    let mut byte = [0u8; 1];
                    let _ = socket.read(&mut byte).await;
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (mut served, mut latencies) = (0, Vec::new());
    for _ in 0..60 {
        let started = std::time::Instant::now();
        let fresh = Client::with_config(
            addr.clone(),
            ClientConfig {
                token: Some("ctok".into()),
                max_reconnects: Some(0),
                ..ClientConfig::default()
            },
        );
        if fresh.ping().await.is_ok() {
            served += 1;
            latencies.push(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    flood.abort_all();
    refill.abort();
    latencies.sort();
    println!(
        "4. 1,100 silent sockets reopened at <= 200/s: a token holder got in {served} of 60 times, p50 {:?}, max {:?}",
        latencies
            .get(latencies.len() / 2)
            .copied()
            .unwrap_or_default(),
        latencies.last().copied().unwrap_or_default()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 5a. 16 unfinished 64 MiB uploads, 60 MiB sent each, 16 connections.
    let before = rss_and_threads(&process).0;
    let chunk = bytes::Bytes::from(vec![7u8; 512 << 10]);
    let mut uploads = Vec::new();
    let mut refused = 0;
    for _ in 0..16 {
        let mut framed = raw_session(&addr).await;
        let call = Call {
            method: worker::wire::RUN_METHOD.into(),
            timeout_ms: None,
            idempotency_key: None,
            schema_hash: None,
            payload: Payload::Chunked { len: 64 << 20 },
        };
        futures_util::SinkExt::send(&mut framed, Frame::new(1, Message::Call(call)))
            .await
            .unwrap();
        for _ in 0..120 {
            let _ = futures_util::SinkExt::send(
                &mut framed,
                Frame::new(1, Message::Chunk(chunk.clone())),
            )
            .await;
        }
        if let Ok(Some(Ok(frame))) =
            tokio::time::timeout(Duration::from_millis(200), framed.next()).await
            && matches!(frame.message, Message::Response(ref r) if r.status == rpc_core::StatusCode::RESOURCE_EXHAUSTED)
        {
            refused += 1;
        }
        uploads.push(framed);
    }
    let during = legit_job(&worker).await;
    let peak = rss_and_threads(&process).0;
    drop(uploads);
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "5. 16 unfinished 64 MiB uploads: {refused} refused (429) at the announcement; RSS {before} -> {peak} MiB, {} MiB once their clients left; a legit job meanwhile {during:?}",
        rss_and_threads(&process).0
    );

    // 5b. 40 keyed jobs with 16 MiB of stdout.
    let before = rss_and_threads(&process).0;
    let big_output = writer(16 * 1024 - 64);
    worker.upload(&big_output).await.unwrap();
    let request = worker::wire::RunRequest {
        module: big_output.hash(),
        command: Command::new(),
    };
    for _ in 0..40 {
        let output: Result<worker::RunOutput, rpc_core::RpcError<worker::JobError>> = client
            .call_with(
                worker::wire::RUN_METHOD,
                &request,
                rpc_core::CallOptions::new().idempotent(),
            )
            .await;
        assert!(output.is_ok());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "5. 40 keyed jobs with 16 MiB of stdout each: RSS {before} -> {} MiB (responses kept for retries: at most 64 MiB)",
        rss_and_threads(&process).0
    );

    // 5c. 12 queued jobs with 64 MiB of stdin; their client leaves.
    let before = rss_and_threads(&process).0;
    let attacker = WorkerClient::new(token_client(&addr));
    let slow = sleeper(30);
    attacker.upload(&slow).await.unwrap();
    let mut jobs = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let (attacker, slow) = (attacker.clone(), slow.clone());
        jobs.spawn(async move {
            let stdin = bytes::Bytes::from(vec![1u8; 64 << 20]);
            let _ = attacker.run(&slow, Command::new().stdin(stdin)).await;
        });
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let queued = rss_and_threads(&process).0;
    jobs.abort_all();
    drop(attacker);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = legit_job(&worker).await;
    println!(
        "5. 12 jobs with 64 MiB of stdin, 2 running and 10 queued: RSS {before} -> {queued} MiB; 1 s after their client left {} MiB, and a legit job took {during:?}",
        rss_and_threads(&process).0
    );

    // 6. 40 calls of a 60,000-function module, each dropped after 50 ms.
    let mut text = String::from(r#"(module (func (export "_start"))"#);
    for i in 0..60_000 {
        text.push_str(&format!(
            "(func (param i64) (result i64) (i64.add (local.get 0) (i64.const {i})))"
        ));
    }
    text.push(')');
    let bomb = figure_wat(&text);
    worker.upload(&bomb).await.unwrap();
    let (before, threads_before) = rss_and_threads(&process);
    let sampling = Arc::new(std::sync::Mutex::new((0u64, 0u64)));
    let sampler = {
        let sampling = Arc::clone(&sampling);
        let pid = process.0.id();
        tokio::spawn(async move {
            loop {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    let field = |name: &str| {
                        status
                            .lines()
                            .find_map(|l| l.strip_prefix(name))
                            .and_then(|r| r.split_whitespace().next())
                            .and_then(|v| v.parse::<u64>().ok())
                            .unwrap_or(0)
                    };
                    let mut peak = sampling.lock().unwrap();
                    peak.0 = peak.0.max(field("VmRSS:") / 1024);
                    peak.1 = peak.1.max(field("Threads:"));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let started = std::time::Instant::now();
    for _ in 0..40 {
        let _ = tokio::time::timeout(Duration::from_millis(50), worker.run(&bomb, Command::new()))
            .await;
    }
    let small = legit_job(&worker).await;
    worker.run(&bomb, Command::new()).await.unwrap();
    let compiled_in = started.elapsed();
    sampler.abort();
    let (peak_rss, peak_threads) = *sampling.lock().unwrap();
    println!(
        "6. 40 calls of a 60,000-function module dropped after 50 ms: threads {threads_before} -> peak {peak_threads}, RSS {before} -> peak {peak_rss} MiB; compiled once, ready after {compiled_in:?}; a 60-byte module's job meanwhile {small:?}"
    );

    // 7. 40 keyed jobs that run long, whose callers' connections drop
    // (no cancel sent).
    let spin = figure_wat(r#"(module (func (export "_start") (loop $l (br $l))))"#);
    worker.upload(&spin).await.unwrap();
    let request = worker::wire::RunRequest {
        module: spin.hash(),
        command: Command::new(),
    };
    let args = bytes::Bytes::from(postcard::to_allocvec(&request).unwrap());
    for key in 0..40u8 {
        let mut framed = raw_session(&addr).await;
        let call = Call {
            method: worker::wire::RUN_METHOD.into(),
            timeout_ms: Some(120_000),
            idempotency_key: Some([key; 16]),
            schema_hash: None,
            payload: Payload::from(args.clone()),
        };
        futures_util::SinkExt::send(&mut framed, Frame::new(1, Message::Call(call)))
            .await
            .unwrap();
        drop(framed);
    }
    let after_abandon = legit_job(&worker).await;
    println!(
        "7. 40 keyed 60 s jobs whose callers' connections dropped: the next job took {after_abandon:?}"
    );

    // 8. A guest asleep in poll_oneoff for 120 s, with a 5 s wall time.
    let long_sleep = sleeper(120);
    worker.upload(&long_sleep).await.unwrap();
    let started = std::time::Instant::now();
    let limits = worker::JobLimits {
        wall_time_ms: Some(5_000),
        ..worker::JobLimits::default()
    };
    let outcome = worker.run(&long_sleep, Command::new().limits(limits)).await;
    println!(
        "8. a guest sleeping 120 s in poll_oneoff with a 5 s wall time: ended after {:?} with {:?}",
        started.elapsed(),
        outcome.err().map(|error| error.to_string())
    );
    let cancelled = tokio::time::timeout(
        Duration::from_secs(1),
        worker.run(&long_sleep, Command::new()),
    )
    .await;
    assert!(cancelled.is_err());
    let started = std::time::Instant::now();
    let _ = tokio::join!(legit_job(&worker), legit_job(&worker));
    println!(
        "8. after a sleeper's caller cancelled, two jobs on the 2-slot worker took {:?}",
        started.elapsed()
    );
    println!(
        "end: RSS {} MiB, {} threads",
        rss_and_threads(&process).0,
        rss_and_threads(&process).1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_joining_two_coordinators_is_found_while_one_is_down() {
    let first = free_addr("127.0.0.1");
    let second = free_addr("127.0.0.1");
    let first_process = spawn(
        &["coordinator", "--listen", &first, "--ttl", "4"],
        "coordinator listening",
    );
    let _second_process = spawn(
        &["coordinator", "--listen", &second, "--ttl", "4"],
        "coordinator listening",
    );
    let addr = free_addr("127.0.0.2");
    let _worker = spawn(
        &[
            "serve",
            "--listen",
            &addr,
            "--no-disk-cache",
            "--join",
            &first,
            "--join",
            &second,
        ],
        "listening",
    );
    let both = worker::CoordinatorResolver::union([
        Client::new(first.clone()),
        Client::new(second.clone()),
    ]);
    assert_eq!(registered(&both, 1).await, 1);
    // The first coordinator dies; the client names both and finds the
    // worker through the second.
    drop(first_process);
    let dir = std::env::temp_dir().join(format!("worker-two-dirs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let module = dir.join("cat.wasm");
    std::fs::write(&module, cat().bytes()).unwrap();
    let output = run_cli(
        &[
            "submit",
            "--coordinator",
            &first,
            "--coordinator",
            &second,
            "--json",
            module.to_str().unwrap(),
        ],
        "through the second",
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["stdout"], "through the second");
    assert_eq!(document["worker"], addr.as_str());
}

/// The live registrations' addresses of `name` the coordinator lists.
async fn address_of(resolver: &worker::CoordinatorResolver, name: &str) -> Option<String> {
    resolver.workers().await.ok().and_then(|entries| {
        entries
            .into_iter()
            .find(|entry| entry.registration.name == name)
            .map(|entry| entry.registration.addr)
    })
}

/// Waits (up to 10 s) until the coordinator lists `name` at an address
/// other than `not`.
async fn listed_at(resolver: &worker::CoordinatorResolver, name: &str, not: &str) -> String {
    for _ in 0..100 {
        if let Some(addr) = address_of(resolver, name).await
            && addr != not
        {
            return addr;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} is not listed at a new address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_listening_nowhere_is_reached_through_a_supernode_then_the_coordinator() {
    let coordinator = free_addr("127.0.0.1");
    let _coordinator_process = spawn(
        &["coordinator", "--listen", &coordinator, "--ttl", "4"],
        "coordinator listening",
    );
    let supernode = free_addr("127.0.0.2");
    let supernode_process = spawn(
        &[
            "serve",
            "--listen",
            &supernode,
            "--no-disk-cache",
            "--supernode",
            "--join",
            &coordinator,
        ],
        "listening",
    );
    let resolver = worker::CoordinatorResolver::new(Client::new(coordinator.clone()));
    assert_eq!(registered(&resolver, 1).await, 1);
    let _relayed = spawn(
        &[
            "serve",
            "--relay",
            "auto",
            "--name",
            "r1",
            "--no-disk-cache",
            "--join",
            &coordinator,
        ],
        "listening nowhere",
    );
    let through_supernode = listed_at(&resolver, "r1", "").await;
    assert_eq!(through_supernode, format!("r1@{supernode}"));

    let dir = std::env::temp_dir().join(format!("worker-supernode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let module = dir.join("cat.wasm");
    std::fs::write(&module, cat().bytes()).unwrap();
    let submit = |to: &str, input: &str| {
        run_cli(
            &["submit", "--to", to, "--json", module.to_str().unwrap()],
            input,
        )
    };
    let output = submit(&through_supernode, "relayed");
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["stdout"], "relayed");
    assert_eq!(document["worker"], through_supernode.as_str());

    // A worker relayed that listens too registers both routes, its own
    // address first, and takes jobs sent to the pair.
    let own = free_addr("127.0.0.3");
    let _both = spawn(
        &[
            "serve",
            "--relay",
            "auto",
            "--listen",
            &own,
            "--advertise",
            &own,
            "--name",
            "r2",
            "--no-disk-cache",
            "--join",
            &coordinator,
        ],
        "listening on",
    );
    let both = listed_at(&resolver, "r2", "").await;
    assert_eq!(both, format!("{own},r2@{supernode}"));
    let output = submit(&both, "either way");
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["stdout"], "either way");

    // The only supernode dies: the worker attaches to the coordinator,
    // which relays when no supernode is left, and says so at once.
    drop(supernode_process);
    let through_coordinator = listed_at(&resolver, "r1", &through_supernode).await;
    assert_eq!(through_coordinator, format!("r1@{coordinator}"));
    let output = submit(&through_coordinator, "relayed again");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["stdout"], "relayed again");
}

/// A network namespace joined to this one by a veth pair: inside, the
/// only address reachable is `host_ip` (this side of the pair); nothing
/// outside can reach a process inside except through what it opens.
/// Deleted (with the pair) when dropped.
struct Namespace {
    name: String,
    host_ip: String,
}

impl Namespace {
    /// `None` where namespaces cannot be made (not root, no `ip`).
    fn new() -> Option<Namespace> {
        let id = std::process::id() % 100_000;
        let name = format!("rpc-test-{id}");
        let (host_if, ns_if) = (format!("rvh{id}"), format!("rvn{id}"));
        let subnet = id % 250;
        let host_ip = format!("10.77.{subnet}.1");
        let ns_ip = format!("10.77.{subnet}.2");
        let ip = |args: &[&str]| {
            Process::new("ip")
                .args(args)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        };
        let _ = ip(&["netns", "del", &name]);
        if !ip(&["netns", "add", &name]) {
            return None;
        }
        let namespace = Namespace {
            name: name.clone(),
            host_ip: host_ip.clone(),
        };
        let made = ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]) && ip(&["link", "set", &ns_if, "netns", &name])
            && ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if])
            && ip(&["link", "set", &host_if, "up"])
            && ip(&[
                "netns",
                "exec",
                &name,
                "ip",
                "addr",
                "add",
                &format!("{ns_ip}/30"),
                "dev",
                &ns_if,
            ])
            && ip(&["netns", "exec", &name, "ip", "link", "set", &ns_if, "up"])
            && ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        made.then_some(namespace)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes the pair with it.
        let _ = Process::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Starts the worker binary inside `namespace` and waits for its first
/// line of output.
fn spawn_in(namespace: &Namespace, args: &[&str], expect: &str) -> WorkerProcess {
    let mut command = Process::new("ip");
    command
        .args([
            "netns",
            "exec",
            &namespace.name,
            env!("CARGO_BIN_EXE_worker"),
        ])
        .args(args);
    spawn_command(command, expect)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_in_a_namespace_that_only_reaches_its_supernode_serves_through_it() {
    let Some(namespace) = Namespace::new() else {
        eprintln!(
            "skipped: network namespaces are unavailable here (they need root and `ip netns`); \
             the loopback version in tests/all/supernodes.rs always runs"
        );
        return;
    };
    let host = namespace.host_ip.clone();
    let coordinator = free_addr(&host);
    let _coordinator_process = spawn(
        &["coordinator", "--listen", &coordinator, "--ttl", "4"],
        "coordinator listening",
    );
    let supernode = free_addr(&host);
    let _supernode_process = spawn(
        &[
            "serve",
            "--listen",
            &supernode,
            "--no-disk-cache",
            "--supernode",
            "--join",
            &coordinator,
        ],
        "listening",
    );
    // Inside, nothing but the pair's other end is reachable, and the
    // worker listens nowhere: a supernode is its only way to be reached.
    let _relayed = spawn_in(
        &namespace,
        &[
            "serve",
            "--relay",
            "auto",
            "--name",
            "caged",
            "--no-disk-cache",
            "--join",
            &coordinator,
        ],
        "listening nowhere",
    );
    let resolver = worker::CoordinatorResolver::new(Client::new(coordinator.clone()));
    let route = listed_at(&resolver, "caged", "").await;
    assert_eq!(route, format!("caged@{supernode}"));

    let dir = std::env::temp_dir().join(format!("worker-netns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let module = dir.join("cat.wasm");
    std::fs::write(&module, cat().bytes()).unwrap();
    let output = run_cli(
        &["submit", "--to", &route, "--json", module.to_str().unwrap()],
        "from outside the cage",
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["stdout"], "from outside the cage");
    assert_eq!(document["worker"], route.as_str());
}
