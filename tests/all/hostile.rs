//! Attacks on the system as a whole, each performed for real over
//! loopback (bounded in count and time) and shown contained, with a
//! legitimate client served during and after: who may call what, budgets
//! that hold over every connection, time limits that hold in host calls,
//! and decoding that cannot overflow the stack.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rpc_core::wire::{Call, Frame, FrameCodec, Hello, Limits, Message, Payload};
use rpc_core::{
    CallOptions, Client, ClientConfig, Context, FunctionOptions, PeerRole, Pool, PoolConfig,
    RpcError, Server, ServerConfig, StatusCode,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_util::codec::{Encoder, Framed};
use worker::wire::{
    REGISTER_METHOD, RELAY_DONE_METHOD, RELAY_MODULE_METHOD, RELAY_POLL_METHOD, Registration,
    RelayDone, RelayOutcome, RelayTask, STATUS_METHOD, WORKERS_METHOD, WorkerEntry,
};
use worker::{
    Command, JobError, Module, Sandbox, SandboxConfig, WorkerClient, WorkerError, WorkerStatus,
    coordinator_server, worker_server,
};

use crate::support::{Counters, eventually, raw_call, raw_session, start_with};

fn wat(text: &str) -> Module {
    Module::new(wat::parse_str(text).unwrap())
}

/// Exits with 0 at once.
fn trivial() -> Module {
    wat(r#"(module (func (export "_start")))"#)
}

/// A sandbox running one job at a time under `limits`.
fn one_slot(limits: worker::Limits) -> Sandbox {
    Sandbox::new(SandboxConfig {
        concurrency: 1,
        limits,
        ..SandboxConfig::default()
    })
    .unwrap()
}

/// `sandbox` served on a free loopback port, and an anonymous client of it.
async fn serve(sandbox: &Sandbox) -> (Server, WorkerClient) {
    let server = worker_server(sandbox.clone())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = WorkerClient::new(Client::new(server.local_addr().to_string()));
    (server, client)
}

fn client_with_token(addr: &str, token: &str) -> Client {
    let config = ClientConfig {
        token: Some(token.into()),
        timeout: Some(Duration::from_secs(10)),
        ..ClientConfig::default()
    };
    Client::with_config(addr.to_owned(), config)
}

fn is_forbidden<T: std::fmt::Debug, E: std::fmt::Debug>(result: &Result<T, RpcError<E>>) -> bool {
    matches!(result, Err(RpcError::Forbidden(_)))
}

// Authorisation ----------------------------------------------------------

/// Item 1: every function of the coordinator and its relay, called with
/// each role's token. A client token can no longer register (and so
/// receive other clients' jobs), take relayed jobs or answer them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_coordinator_and_relay_function_admits_only_its_roles() {
    let coordinator = coordinator_server(Duration::from_secs(6))
        .token("wtok", "worker")
        .token("ctok", "client")
        .token("atok", "admin")
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = coordinator.local_addr().to_string();
    let module = trivial();
    for (token, role) in [("wtok", "worker"), ("ctok", "client"), ("atok", "admin")] {
        let client = client_with_token(&addr, token);
        let worker = role == "worker";
        let registration = Registration {
            name: format!("by-{role}"),
            addr: "127.0.0.1:9".into(),
            capacity: 1,
            running: 0,
            modules: Vec::new(),
            supernode: None,
        };
        let registered = client.call::<_, u64>(REGISTER_METHOD, &registration).await;
        assert_eq!(
            registered.is_ok(),
            worker,
            "{role} registers: {registered:?}"
        );
        assert_eq!(is_forbidden(&registered), !worker, "{role}: {registered:?}");

        let listed = client
            .call::<_, Vec<WorkerEntry>>(WORKERS_METHOD, &())
            .await;
        assert_eq!(is_forbidden(&listed), worker, "{role} lists: {listed:?}");

        // An admitted poll waits for a job: a short deadline ends it.
        let short = CallOptions::new().timeout(Duration::from_millis(200));
        let polled = client
            .call_with::<_, Option<RelayTask>, JobError>(RELAY_POLL_METHOD, &"w", short)
            .await;
        assert_eq!(is_forbidden(&polled), !worker, "{role} polls: {polled:?}");

        // Answering a job nobody took on this connection.
        let done = RelayDone {
            id: 7,
            worker: "w".into(),
            outcome: RelayOutcome::Run(Err(JobError::Cancelled)),
        };
        let answered = client
            .call_with::<_, (), JobError>(RELAY_DONE_METHOD, &done, CallOptions::new())
            .await;
        if worker {
            assert!(
                matches!(answered, Err(RpcError::Application(JobError::Forbidden(_)))),
                "{answered:?}"
            );
        } else {
            assert!(is_forbidden(&answered), "{role} answers: {answered:?}");
        }

        let fetched = client
            .call_with::<_, Bytes, JobError>(
                RELAY_MODULE_METHOD,
                &module.hash(),
                CallOptions::new(),
            )
            .await;
        assert_eq!(
            is_forbidden(&fetched),
            !worker,
            "{role} fetches: {fetched:?}"
        );

        let shipped = client.send_program(module.bytes().clone()).await;
        assert_eq!(is_forbidden(&shipped), worker, "{role} ships: {shipped:?}");

        let ran = WorkerClient::new(client.clone())
            .timeout(Duration::from_millis(300))
            .run(&module, Command::new())
            .await;
        let refused = matches!(ran, Err(WorkerError::Rpc(RpcError::Forbidden(_))));
        assert_eq!(refused, worker, "{role} runs: {ran:?}");

        let stored = client.send_data("x", Bytes::from_static(b"1")).await;
        assert!(
            is_forbidden(&stored),
            "no role uses the data store: {stored:?}"
        );
    }
    coordinator.shutdown(Duration::from_secs(1)).await;
}

/// Item 1, the attack itself: a client token registers its own address
/// with the coordinator to be sent other clients' jobs; then a worker
/// token answers a relayed job it did not take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_token_cannot_pose_as_a_worker_nor_a_worker_forge_another_ones_result() {
    let coordinator = coordinator_server(Duration::from_secs(6))
        .token("wtok", "worker")
        .token("ctok", "client")
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = coordinator.local_addr().to_string();
    let attacker = client_with_token(&addr, "ctok");
    let forged = Registration {
        name: "evil".into(),
        addr: "127.0.0.1:6666".into(),
        capacity: 64,
        running: 0,
        modules: Vec::new(),
        supernode: None,
    };
    let result = attacker.call::<_, u64>(REGISTER_METHOD, &forged).await;
    assert!(is_forbidden(&result), "{result:?}");
    let listed: Vec<WorkerEntry> = attacker.call(WORKERS_METHOD, &()).await.unwrap();
    assert!(
        listed.is_empty(),
        "the forged worker is not listed: {listed:?}"
    );

    // A real relayed worker takes a job; another worker token tries to
    // answer it first.
    let sandbox = one_slot(worker::Limits::default());
    let honest = client_with_token(&addr, "wtok");
    let _relayed =
        worker::relay_worker(sandbox, honest, "honest".into(), Duration::from_millis(200));
    let user = WorkerClient::new(client_with_token(&addr, "ctok"));
    let module = wat(r#"(module
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (func (export "_start") (call $exit (i32.const 3))))"#);
    let forger = client_with_token(&addr, "wtok");
    let forging = tokio::spawn(async move {
        let mut refused = 0;
        for id in 0..50u64 {
            let done = RelayDone {
                id,
                worker: "honest".into(),
                outcome: RelayOutcome::Run(Err(JobError::Cancelled)),
            };
            let answer = forger
                .call_with::<_, (), JobError>(RELAY_DONE_METHOD, &done, CallOptions::new())
                .await;
            if matches!(answer, Err(RpcError::Application(JobError::Forbidden(_)))) {
                refused += 1;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        refused
    });
    for _ in 0..5 {
        let output = user.run(&module, Command::new()).await.unwrap();
        assert_eq!(output.exit_code, 3, "the honest worker's result");
        assert_eq!(output.receipt.relayed_to.as_deref(), Some("honest"));
    }
    assert_eq!(
        forging.await.unwrap(),
        50,
        "every forged answer was refused"
    );
    coordinator.shutdown(Duration::from_secs(1)).await;
}

/// Item 2: on a worker, a client token runs jobs but may not read the
/// worker's status; an admin token may; a worker token may do neither.
#[tokio::test]
async fn a_worker_lets_each_role_do_only_its_part() {
    let server = worker_server(one_slot(worker::Limits::default()))
        .token("ctok", "client")
        .token("atok", "admin")
        .token("wtok", "worker")
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr().to_string();
    let module = trivial();
    for (token, runs, reads_status) in [
        ("ctok", true, false),
        ("atok", true, true),
        ("wtok", false, false),
    ] {
        let client = client_with_token(&addr, token);
        let ran = WorkerClient::new(client.clone())
            .run(&module, Command::new())
            .await;
        assert_eq!(ran.is_ok(), runs, "{token} runs: {ran:?}");
        let status = client.call::<_, WorkerStatus>(STATUS_METHOD, &()).await;
        assert_eq!(
            status.is_ok(),
            reads_status,
            "{token} reads status: {status:?}"
        );
        assert_eq!(is_forbidden(&status), !reads_status);
        let stored = client.send_data("x", Bytes::from_static(b"1")).await;
        assert!(is_forbidden(&stored), "{stored:?}");
    }
    server.shutdown(Duration::from_secs(1)).await;
}

// Memory and slots -------------------------------------------------------

/// The bytes of a frame header announcing `len` bytes of `kind` on stream 1.
fn header(len: u32, kind: u8) -> Vec<u8> {
    let mut bytes = len.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[1, kind, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    bytes
}

/// Item 3: before the Hello, a frame announcing 1 MiB is refused on its
/// header, not buffered, whatever its kind; 200 such connections at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_the_hello_no_frame_larger_than_a_handshake_is_buffered() {
    let counters = Arc::new(Counters::default());
    let config = ServerConfig::default();
    let server = start_with(&counters, config).await;
    let addr = server.local_addr();
    let legit = Client::with_config(
        addr.to_string(),
        ClientConfig {
            token: None,
            ..ClientConfig::default()
        },
    );
    let mut attackers = tokio::task::JoinSet::new();
    for _ in 0..200 {
        attackers.spawn(async move {
            let mut socket = TcpStream::connect(addr).await.unwrap();
            // A Call header announcing a 1 MiB frame, and only its first bytes.
            socket.write_all(&header(1 << 20, 0x10)).await.unwrap();
            socket.write_all(&[0; 100]).await.unwrap();
            let mut framed = Framed::new(socket, FrameCodec::new());
            let answer = timeout(Duration::from_secs(5), framed.next()).await;
            match answer {
                Ok(Some(Ok(Frame {
                    message: Message::Error(error),
                    ..
                }))) => error,
                other => panic!("expected an error at once, got {other:?}"),
            }
        });
    }
    let sum: i64 = legit.call("add", &(1i64, 2i64)).await.unwrap();
    assert_eq!(sum, 3, "served during the attack");
    while let Some(error) = attackers.join_next().await {
        let error = error.unwrap();
        assert_eq!(error.status, StatusCode::RESOURCE_EXHAUSTED);
        assert_eq!(
            error.message,
            "frame of 1048576 bytes exceeds the limit of 16384"
        );
    }
    let sum: i64 = legit.call("add", &(2i64, 2i64)).await.unwrap();
    assert_eq!(sum, 4);
    server.shutdown(Duration::from_secs(1)).await;
}

/// Item 4: sockets that never speak, reopened as they are closed, cannot
/// keep a token holder out: they only take handshake places (256 by
/// default), the oldest of which is closed to make room, while only
/// authenticated peers take one of the 64 connection places here (600
/// silent sockets would have held all 64 before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_cannot_lock_token_holders_out() {
    let server = Server::builder()
        .config(ServerConfig {
            max_connections: 64,
            handshake_timeout: Duration::from_secs(2),
            ..ServerConfig::default()
        })
        .token("secret", "client")
        .function(
            "add",
            |(a, b): (i64, i64)| async move { Ok::<_, ()>(a + b) },
        )
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..600 {
        let (stop, opened) = (Arc::clone(&stop), Arc::clone(&opened));
        flood.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut socket) = TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                let mut byte = [0u8; 1];
                let _ = timeout(Duration::from_secs(3), socket.read(&mut byte)).await;
            }
        });
    }
    eventually("the flood to open its sockets", || {
        opened.load(Ordering::Relaxed) >= 600
    })
    .await;
    let mut latencies = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let client = client_with_token(&addr.to_string(), "secret");
        let sum: i64 = client.call("add", &(20i64, 22i64)).await.unwrap();
        assert_eq!(sum, 42);
        latencies.push(started.elapsed());
    }
    let opened = opened.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    flood.abort_all();
    latencies.sort();
    let worst = latencies.last().copied().unwrap_or_default();
    eprintln!(
        "silent-socket flood of 600 ({opened} sockets opened): 20/20 token holders served, p50 {:?}, max {worst:?}",
        latencies[10]
    );
    assert!(
        worst < Duration::from_secs(2),
        "a token holder waited {worst:?}"
    );
    server.shutdown(Duration::from_secs(1)).await;
}

/// Item 5: unfinished uploads over many connections stay within one
/// server-wide budget (past it `429`, nothing buffered), and what a
/// departed client left behind is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_uploads_over_many_connections_share_one_budget() {
    let counters = Arc::new(Counters::default());
    let server = start_with(
        &counters,
        ServerConfig {
            max_payload_len: 4 << 20,
            max_request_bytes: 8 << 20,
            ..ServerConfig::default()
        },
    )
    .await;
    let addr = server.local_addr();
    let open_upload = |stream: u64| {
        let call = Call {
            payload: Payload::Chunked { len: 4 << 20 },
            ..raw_call("echo", &(), None)
        };
        Frame::new(stream, Message::Call(call))
    };
    // Two uploads of 4 MiB fill the 8 MiB budget; the third connection's
    // is refused at its announcement.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut framed = raw_session(addr).await;
        framed.send(open_upload(1)).await.unwrap();
        framed
            .send(Frame::new(
                1,
                Message::Chunk(Bytes::from(vec![1; 512 << 10])),
            ))
            .await
            .unwrap();
        holders.push(framed);
    }
    let mut third = raw_session(addr).await;
    third.send(open_upload(1)).await.unwrap();
    let (_, refused) = crate::support::next_response(&mut third).await;
    assert_eq!(refused.status, StatusCode::RESOURCE_EXHAUSTED);
    assert!(
        refused.message.contains("request payloads"),
        "{}",
        refused.message
    );
    // A small call is still served meanwhile.
    let legit = Client::new(addr.to_string());
    let echoed: Vec<u8> = legit.call("echo", &vec![7u8; 100]).await.unwrap();
    assert_eq!(echoed.len(), 100);
    // The holders leave: their reservations go with them.
    drop(holders);
    let mut after = raw_session(addr).await;
    let accepted = async {
        after.send(open_upload(3)).await.unwrap();
        for _ in 0..8 {
            after
                .send(Frame::new(
                    3,
                    Message::Chunk(Bytes::from(vec![2; 512 << 10])),
                ))
                .await
                .unwrap();
        }
        after
            .send(Frame::new(
                3,
                Message::ChunkEnd(rpc_core::wire::ChunkEnd { hash: None }),
            ))
            .await
            .unwrap();
        crate::support::next_response(&mut after).await
    };
    // The echo of 4 MiB of postcard bytes fails to decode as Vec<u8>
    // (400) or echoes; either way it was accepted, not refused for room.
    let (_, response) = timeout(Duration::from_secs(10), accepted).await.unwrap();
    assert_ne!(
        response.status,
        StatusCode::RESOURCE_EXHAUSTED,
        "{}",
        response.message
    );
    server.shutdown(Duration::from_secs(1)).await;
}

/// Item 5: queued jobs whose client left are dropped from the queue at
/// once, with their stdin, instead of waiting for a thread; past the
/// queue's bound a job is refused as "worker busy".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_jobs_of_a_departed_client_are_released_at_once() {
    let sandbox = Sandbox::new(SandboxConfig {
        concurrency: 1,
        max_queued_jobs: 8,
        ..SandboxConfig::default()
    })
    .unwrap();
    let server = worker_server(sandbox.clone())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr().to_string();
    let legit = WorkerClient::new(Client::new(addr.clone()));
    let sleeper = sleep_module(120);
    let trivial = trivial();
    legit.upload(&sleeper).await.unwrap();
    legit.upload(&trivial).await.unwrap();
    // The attacker fills the only slot and the queue, 4 MiB of stdin each.
    let attacker = WorkerClient::new(Client::new(addr.clone()));
    let mut jobs = tokio::task::JoinSet::new();
    let send = |jobs: &mut tokio::task::JoinSet<_>| {
        let attacker = attacker.clone();
        let sleeper = sleeper.clone();
        jobs.spawn(async move {
            let stdin = Bytes::from(vec![0u8; 4 << 20]);
            attacker.run(&sleeper, Command::new().stdin(stdin)).await
        });
    };
    // The first takes the slot before the others arrive: were they all to
    // arrive first, eight would queue and four be refused, and the slot
    // would then leave seven queued (a race a loaded CI run once lost).
    send(&mut jobs);
    eventually("the slot to be taken", || sandbox.status().running == 1).await;
    for _ in 0..11 {
        send(&mut jobs);
    }
    eventually("the queue to fill", || sandbox.status().queued == 8).await;
    // Past the bound: refused at once, as the worker's condition.
    let busy = legit.run(&trivial, Command::new()).await;
    assert!(
        matches!(&busy, Err(WorkerError::Rpc(RpcError::ResourceExhausted(reason)))
            if reason.starts_with("worker busy: 8 jobs already wait")),
        "{busy:?}"
    );
    // Three jobs past the queue were refused too.
    let mut refused = 0;
    for _ in 0..3 {
        let result = jobs.join_next().await.unwrap().unwrap();
        assert!(
            matches!(
                result,
                Err(WorkerError::Rpc(RpcError::ResourceExhausted(_)))
            ),
            "{result:?}"
        );
        refused += 1;
    }
    assert_eq!(refused, 3);
    // The attacker leaves: its queued jobs go at once, its running one
    // stops within ticks, and a legitimate job runs.
    jobs.abort_all();
    drop(attacker);
    let started = Instant::now();
    eventually("the departed client's jobs to leave the queue", || {
        let status = sandbox.status();
        status.queued == 0 && status.running == 0
    })
    .await;
    let output = legit.run(&trivial, Command::new()).await.unwrap();
    assert_eq!(output.exit_code, 0);
    eprintln!(
        "queued jobs released {:?} after their client left",
        started.elapsed()
    );
    server.shutdown(Duration::from_secs(1)).await;
}

/// Sleeps `seconds` in `poll_oneoff` (as `sleep(3)` does), then exits 0;
/// exits 1 if the sleep reports no event.
fn sleep_module(seconds: u64) -> Module {
    let nanos = seconds * 1_000_000_000;
    wat(&format!(
        r#"(module
          (import "wasi_snapshot_preview1" "poll_oneoff"
            (func $poll (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          (func (export "_start")
            ;; subscription at 0: userdata 42, clock, monotonic, relative
            (i64.store (i32.const 0) (i64.const 42))
            (i32.store8 (i32.const 8) (i32.const 0))
            (i32.store (i32.const 16) (i32.const 1))
            (i64.store (i32.const 24) (i64.const {nanos}))
            (i64.store (i32.const 32) (i64.const 0))
            (i32.store16 (i32.const 40) (i32.const 0))
            (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
            (if (i32.ne (i32.load (i32.const 128)) (i32.const 1))
              (then (call $exit (i32.const 1))))
            (if (i64.ne (i64.load (i32.const 64)) (i64.const 42))
              (then (call $exit (i32.const 2))))))"#
    ))
}

/// Item 6: callers that give up on a slow compile do not start more
/// compiles; a small module compiles meanwhile; a module with more
/// functions than allowed is refused before any compiling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_calls_share_one_compile_and_small_modules_do_not_wait() {
    let sandbox = one_slot(worker::Limits {
        max_functions: 20_000,
        ..worker::Limits::default()
    });
    let (server, client) = serve(&sandbox).await;
    let heavy = many_functions(15_000);
    client.upload(&heavy).await.unwrap();
    // 20 callers each give up 50 ms after asking.
    for _ in 0..20 {
        let _ = timeout(
            Duration::from_millis(50),
            client.run(&heavy, Command::new()),
        )
        .await;
    }
    // A small module compiles and runs while the heavy one compiles.
    let started = Instant::now();
    let output = client.run(&trivial(), Command::new()).await.unwrap();
    assert_eq!(output.exit_code, 0);
    let small_took = started.elapsed();
    let heavy_output = client.run(&heavy, Command::new()).await.unwrap();
    assert_eq!(heavy_output.exit_code, 0);
    let status = sandbox.status();
    assert_eq!(
        status.compiled, 2,
        "one compile of the heavy module, one of the small"
    );
    eprintln!(
        "20 abandoned calls: {} compiles in all; the small module ran in {small_took:?} meanwhile",
        status.compiled
    );
    // Too many functions: refused when shipped, with the limit named.
    let bomb = many_functions(20_000);
    let refused = client.upload(&bomb).await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("20001 functions, more than the 20000"),
        "{refused}"
    );
    assert_eq!(sandbox.status().compiled, 2, "nothing compiled for it");
    server.shutdown(Duration::from_secs(1)).await;
}

/// A module of `count` small functions besides an empty `_start`.
fn many_functions(count: usize) -> Module {
    let mut text = String::from(r#"(module (func (export "_start"))"#);
    for i in 0..count {
        text.push_str(&format!(
            "(func (param i64) (result i64) (i64.add (local.get 0) (i64.const {i})))"
        ));
    }
    text.push(')');
    wat(&text)
}

/// Item 7: a call with an idempotency key whose caller left is stopped
/// once no retry claims it, instead of running to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_calls_whose_caller_left_are_stopped_when_no_retry_waits() {
    let counters = Arc::new(Counters::default());
    let server = start_with(
        &counters,
        ServerConfig {
            dedup_linger: Duration::from_millis(300),
            ..ServerConfig::default()
        },
    )
    .await;
    let addr = server.local_addr();
    for i in 0..40u8 {
        let mut framed = raw_session(addr).await;
        let call = Call {
            idempotency_key: Some([i; 16]),
            ..raw_call("slow", &60_000u64, Some(120_000))
        };
        framed
            .send(Frame::new(1, Message::Call(call)))
            .await
            .unwrap();
        drop(framed);
    }
    eventually("all 40 abandoned calls to start", || {
        counters.started.load(Ordering::SeqCst) == 40
    })
    .await;
    let left = Instant::now();
    eventually("the abandoned keyed calls to be stopped", || {
        counters.dropped.load(Ordering::SeqCst) == 40
    })
    .await;
    eprintln!(
        "40 abandoned keyed calls stopped {:?} after their callers left",
        left.elapsed()
    );
    // A retry within the linger still gets the first run's result.
    let mut framed = raw_session(addr).await;
    let key = [200; 16];
    let call = || Call {
        idempotency_key: Some(key),
        ..raw_call("slow", &400u64, Some(10_000))
    };
    framed
        .send(Frame::new(1, Message::Call(call())))
        .await
        .unwrap();
    drop(framed);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut retry = raw_session(addr).await;
    retry
        .send(Frame::new(1, Message::Call(call())))
        .await
        .unwrap();
    let (_, response) = crate::support::next_response(&mut retry).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(counters.started.load(Ordering::SeqCst), 41, "ran once");
    assert_eq!(counters.finished.load(Ordering::SeqCst), 1);
    server.shutdown(Duration::from_secs(1)).await;
}

// Time -------------------------------------------------------------------

/// Item 8: a guest asleep in a host call is stopped by its wall time and by
/// its caller's cancel, and its slot goes to the next job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_asleep_in_a_host_call_is_held_to_its_deadline_and_cancel() {
    let sandbox = one_slot(worker::Limits {
        wall_time: Duration::from_secs(1),
        ..worker::Limits::default()
    });
    let (server, client) = serve(&sandbox).await;
    let started = Instant::now();
    let error = client
        .run(&sleep_module(120), Command::new())
        .await
        .unwrap_err();
    assert!(
        matches!(error, WorkerError::Job(JobError::DeadlineExceeded { .. })),
        "{error}"
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "the sleeper ran {took:?}");
    // A short sleep still works, and reports its clock event.
    let output = client.run(&sleep_module(0), Command::new()).await.unwrap();
    assert_eq!(output.exit_code, 0, "the guest saw its event");
    // Cancel: the caller gives up after 200 ms; the next job gets the slot.
    let _ = timeout(
        Duration::from_millis(200),
        client.run(&sleep_module(120), Command::new()),
    )
    .await;
    let started = Instant::now();
    let output = client.run(&trivial(), Command::new()).await.unwrap();
    assert_eq!(output.exit_code, 0);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(900),
        "the next job waited {waited:?}"
    );
    eprintln!(
        "sleeping guest stopped by its 1 s wall time after {took:?}; after a cancel the next job waited {waited:?}"
    );
    server.shutdown(Duration::from_secs(1)).await;
}

/// A TCP proxy that can be frozen: it stops moving bytes either way but
/// keeps the connections open, as a process stopped with SIGSTOP does.
async fn freezable_proxy(
    target: std::net::SocketAddr,
) -> (String, Arc<std::sync::atomic::AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let freeze = Arc::clone(&frozen);
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = TcpStream::connect(target).await else {
                continue;
            };
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            tokio::spawn(pump(in_read, out_write, Arc::clone(&freeze)));
            tokio::spawn(pump(out_read, in_write, Arc::clone(&freeze)));
        }
    });
    (addr, frozen)
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        while frozen.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let Ok(n) = from.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        while frozen.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Item 9: a server that stops answering (frozen, as under SIGSTOP) has
/// its requests in flight sent to another once it misses its health
/// pings, each request getting one result, long before the attempt
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_on_a_server_that_stops_answering_go_elsewhere() {
    let counters = Arc::new(Counters::default());
    let first = start_with(&counters, ServerConfig::default()).await;
    let second = start_with(&counters, ServerConfig::default()).await;
    let (frozen_addr, frozen) = freezable_proxy(first.local_addr()).await;
    let pool = Pool::new(
        [frozen_addr, second.local_addr().to_string()],
        PoolConfig {
            attempt_timeout: Duration::from_secs(30),
            health_interval: Some(Duration::from_millis(300)),
            ..PoolConfig::default()
        },
    );
    // Both servers are known and measured.
    for i in 0..20i64 {
        let sum: i64 = pool.call("add", &(i, 1i64)).await.unwrap();
        assert_eq!(sum, i + 1);
    }
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..40u64 {
        let pool = pool.clone();
        calls.spawn(async move { pool.call::<_, u64>("slow", &(100 + i)).await });
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    frozen.store(true, Ordering::Relaxed);
    let mut results = Vec::new();
    while let Some(result) = calls.join_next().await {
        results.push(result.unwrap().unwrap());
    }
    results.sort_unstable();
    assert_eq!(results, (100..140).collect::<Vec<u64>>(), "one result each");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    eprintln!("40 requests with one server frozen mid-run: all answered in {took:?}");
    frozen.store(false, Ordering::Relaxed);
    first.shutdown(Duration::from_secs(1)).await;
    second.shutdown(Duration::from_secs(1)).await;
}

/// Item 11: a call sent in the same write as the Hello is answered without
/// the client sending anything more.
#[tokio::test]
async fn a_call_in_the_same_write_as_the_hello_is_answered_at_once() {
    let counters = Arc::new(Counters::default());
    let server = start_with(&counters, ServerConfig::default()).await;
    let mut bytes = bytes::BytesMut::new();
    let mut codec = FrameCodec::new();
    let hello = Hello {
        peer_name: "eager".into(),
        role: PeerRole::Client,
        token: None,
        limits: Limits::default(),
    };
    codec
        .encode(Frame::connection(Message::Hello(hello)), &mut bytes)
        .unwrap();
    let call = raw_call("add", &(20i64, 22i64), Some(5_000));
    codec
        .encode(Frame::new(1, Message::Call(call)), &mut bytes)
        .unwrap();
    let mut socket = TcpStream::connect(server.local_addr()).await.unwrap();
    socket.write_all(&bytes).await.unwrap();
    let mut framed = Framed::new(socket, FrameCodec::new());
    let welcome = framed.next().await.unwrap().unwrap();
    assert!(matches!(welcome.message, Message::Welcome(_)));
    let (id, response) = timeout(
        Duration::from_secs(2),
        crate::support::next_response(&mut framed),
    )
    .await
    .expect("answered without more bytes from the client");
    assert_eq!((id, response.status), (1, StatusCode::OK));
    assert_eq!(
        postcard::from_bytes::<i64>(response.payload.inline().unwrap()).unwrap(),
        42
    );
    server.shutdown(Duration::from_secs(1)).await;
}

// Decoding ---------------------------------------------------------------

/// A user's recursive type.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Expr {
    Num(i64),
    Add(Box<Expr>, Box<Expr>),
}

fn eval(expr: &Expr) -> i64 {
    match expr {
        Expr::Num(n) => *n,
        Expr::Add(a, b) => eval(a) + eval(b),
    }
}

/// Postcard bytes of an `Expr` nested `levels` deep on the left, written
/// without building it.
fn nested_add(levels: usize) -> Bytes {
    let mut bytes = vec![0x01; levels];
    bytes.extend_from_slice(&[0x00, 0x02]);
    for _ in 0..levels {
        bytes.extend_from_slice(&[0x00, 0x02]);
    }
    Bytes::from(bytes)
}

/// Item 12: an argument nested a million levels deep is refused with
/// `400`, on a multi-threaded server whose other clients keep being served
/// (it used to overflow a runtime thread's stack and abort the process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_argument_nested_a_million_deep_is_refused_not_a_crash() {
    let server = Server::builder()
        .config(ServerConfig {
            max_payload_len: 8 << 20,
            ..ServerConfig::default()
        })
        .function_with(
            "eval",
            FunctionOptions::new(),
            |_: Context, expr: Expr| async move { Ok::<_, ()>(eval(&expr)) },
        )
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = Client::with_config(
        server.local_addr().to_string(),
        ClientConfig {
            max_payload_len: 8 << 20,
            ..ClientConfig::default()
        },
    );
    let shallow = Expr::Add(Box::new(Expr::Num(40)), Box::new(Expr::Num(2)));
    assert_eq!(client.call::<_, i64>("eval", &shallow).await.unwrap(), 42);
    let bomb = nested_add(1_000_000);
    assert!(bomb.len() > 2_000_000);
    let error = client
        .call_raw("eval", bomb, CallOptions::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RpcError::BadRequest(message) if message.contains("nested more than 128 levels")),
        "{error:?}"
    );
    // Within the limit still decodes: 60 levels of Add are 120 deep.
    let ok: i64 = rpc_core::wire::decode_value(
        &client
            .call_raw("eval", nested_add(60), CallOptions::new())
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(ok, 61);
    assert_eq!(client.call::<_, i64>("eval", &shallow).await.unwrap(), 42);
    server.shutdown(Duration::from_secs(1)).await;
}

/// Item 13: a table grown past the limit reports `resource exhausted:
/// table`, as the README promises; a module declaring one past it is
/// refused when shipped, naming the table limit.
#[tokio::test]
async fn a_table_grown_past_its_limit_is_named() {
    let sandbox = one_slot(worker::Limits {
        table_elements: 1_000,
        ..worker::Limits::default()
    });
    let grows = wat(r#"(module (table 10 funcref)
        (func (export "_start")
          (if (i32.eq (table.grow (ref.null func) (i32.const 5000)) (i32.const -1))
            (then unreachable))))"#);
    let hash = sandbox.add_module(grows.bytes().clone()).await.unwrap();
    let request = worker::wire::RunRequest {
        module: hash,
        command: Command::new(),
    };
    let error = sandbox.run(request, None).await.unwrap_err();
    assert!(
        matches!(
            error,
            JobError::ResourceExhausted {
                resource: worker::Resource::Table,
                ..
            }
        ),
        "{error}"
    );
    let declares = wat(r#"(module (table 5000 funcref) (func (export "_start")))"#);
    let refused = sandbox
        .add_module(declares.bytes().clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("a table of 5000 elements, more than the 1000 this worker allows"),
        "{refused}"
    );
    let hash = sandbox.add_module(trivial().bytes().clone()).await.unwrap();
    let request = worker::wire::RunRequest {
        module: hash,
        command: Command::new(),
    };
    assert_eq!(sandbox.run(request, None).await.unwrap().exit_code, 0);
}
