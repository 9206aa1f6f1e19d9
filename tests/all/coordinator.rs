//! The coordinator: workers register and heartbeat, clients find them,
//! dead ones expire, and a restarted coordinator is repopulated.

use std::time::Duration;

use rpc_core::{Client, ClientConfig, PoolConfig, Server};
use worker::wire::Registration;
use worker::{
    Command, CoordinatorResolver, Module, Sandbox, SandboxConfig, WorkerClient, WorkerPool,
    coordinator_server, join, worker_server,
};

const TTL: Duration = Duration::from_millis(600);
const BEAT: Duration = Duration::from_millis(100);

async fn start_worker(ip: &str, coordinator: &str) -> (Server, tokio::task::JoinHandle<()>) {
    let (server, mut beats) = start_worker_joining(ip, &[coordinator]).await;
    let beat = beats.pop().expect("one beat");
    (server, beat)
}

/// A client for lookups and heartbeats: one connection attempt, so that a
/// directory that is down is answered for at once.
fn lookup_client(coordinator: &str) -> Client {
    Client::with_config(
        coordinator.to_owned(),
        ClientConfig {
            connect_timeout: Duration::from_millis(200),
            max_retries: 0,
            max_reconnects: Some(0),
            ..ClientConfig::default()
        },
    )
}

/// A worker on `ip` that joins every coordinator of `coordinators`.
async fn start_worker_joining(
    ip: &str,
    coordinators: &[&str],
) -> (Server, Vec<tokio::task::JoinHandle<()>>) {
    let sandbox = Sandbox::new(SandboxConfig {
        concurrency: 1,
        ..SandboxConfig::default()
    })
    .unwrap();
    let handle = worker_server(sandbox.clone())
        .bind(format!("{ip}:0"))
        .await
        .unwrap();
    let addr = handle.local_addr().to_string();
    let beats = coordinators
        .iter()
        .map(|coordinator| {
            let (addr, sandbox) = (addr.clone(), sandbox.clone());
            join(lookup_client(coordinator), BEAT, move || Registration {
                name: addr.clone(),
                addr: addr.clone(),
                capacity: sandbox.status().concurrency,
                running: sandbox.status().running,
                modules: sandbox.ready_modules(),
                supernode: None,
            })
        })
        .collect();
    (handle, beats)
}

fn hello() -> Module {
    Module::new(wat::parse_str(r#"(module (func (export "_start")))"#).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_found_expire_and_survive_a_coordinator_restart() {
    let coordinator = coordinator_server(TTL).bind("127.0.0.1:0").await.unwrap();
    let coordinator_addr = coordinator.local_addr().to_string();
    let (_a, _a_beat) = start_worker("127.0.0.2", &coordinator_addr).await;
    let (b, b_beat) = start_worker("127.0.0.3", &coordinator_addr).await;
    let b_addr = b.local_addr().to_string();

    let resolver = CoordinatorResolver::new(Client::with_config(
        coordinator_addr.clone(),
        ClientConfig {
            connect_timeout: Duration::from_millis(200),
            max_retries: 0,
            ..ClientConfig::default()
        },
    ));
    for _ in 0..50 {
        if resolver.workers().await.is_ok_and(|w| w.len() == 2) {
            break;
        }
        tokio::time::sleep(BEAT).await;
    }
    let entries = resolver.workers().await.unwrap();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entries.iter().all(|e| e.registration.capacity == 1));

    let pool = WorkerPool::with_config(
        Vec::<String>::new(),
        PoolConfig {
            eject_initial: Duration::from_millis(50),
            ..worker::worker_pool_config()
        },
    );
    pool.pool()
        .follow(resolver.clone(), Duration::from_millis(100));
    let module = hello();
    crate::support::eventually("the pool learns both", {
        let pool = pool.clone();
        move || pool.pool().status().len() == 2
    })
    .await;
    for _ in 0..20 {
        pool.run(&module, Command::new()).await.unwrap();
    }

    // b stops heartbeating and goes away: it expires, and the pool drops it.
    b_beat.abort();
    b.shutdown(Duration::ZERO).await;
    tokio::time::sleep(TTL + BEAT * 3).await;
    let entries = resolver.workers().await.unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries.iter().all(|e| e.registration.addr != b_addr));
    crate::support::eventually("the pool drops b", {
        let pool = pool.clone();
        move || pool.pool().status().len() == 1
    })
    .await;
    for _ in 0..10 {
        pool.run(&module, Command::new()).await.unwrap();
    }

    // The coordinator restarts, empty: workers register again, and the pool
    // kept its workers meanwhile.
    coordinator.shutdown(Duration::ZERO).await;
    for _ in 0..5 {
        pool.run(&module, Command::new()).await.unwrap();
    }
    let _coordinator = coordinator_server(TTL)
        .bind(&coordinator_addr)
        .await
        .unwrap();
    let mut repopulated = false;
    for _ in 0..50 {
        if resolver.workers().await.is_ok_and(|w| w.len() == 1) {
            repopulated = true;
            break;
        }
        tokio::time::sleep(BEAT).await;
    }
    assert!(repopulated, "the worker did not register again");
    pool.run(&module, Command::new()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_listens_nowhere_completes_jobs_through_the_relay() {
    let coordinator = coordinator_server(TTL).bind("127.0.0.1:0").await.unwrap();
    let coordinator_addr = coordinator.local_addr().to_string();
    let sandbox = Sandbox::new(SandboxConfig {
        concurrency: 2,
        ..SandboxConfig::default()
    })
    .unwrap();
    // No server, no port: only an outbound connection to the coordinator.
    let _relayed = worker::relay_worker(
        sandbox.clone(),
        Client::new(coordinator_addr.clone()),
        "behind-nat".into(),
        BEAT,
    );
    let resolver = CoordinatorResolver::new(Client::new(coordinator_addr.clone()));
    let mut listed = Vec::new();
    for _ in 0..50 {
        listed = resolver.workers().await.unwrap();
        if !listed.is_empty() {
            break;
        }
        tokio::time::sleep(BEAT).await;
    }
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].registration.addr, coordinator_addr);

    let pool = WorkerPool::with_config(resolver.resolve_now().await, worker::worker_pool_config());
    let module = hello();
    for _ in 0..20 {
        let output = pool.run(&module, Command::new()).await.unwrap();
        assert_eq!(output.exit_code, 0);
        assert_eq!(output.receipt.relayed_to.as_deref(), Some("behind-nat"));
    }
    assert_eq!(sandbox.status().finished, 20);
    // A job's own failure comes back through the relay as itself.
    let spin = Module::new(
        wat::parse_str(r#"(module (func (export "_start") (loop $l (br $l))))"#).unwrap(),
    );
    let limits = worker::JobLimits {
        wall_time_ms: Some(100),
        ..worker::JobLimits::default()
    };
    let error = pool
        .run(&spin, Command::new().limits(limits))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            worker::WorkerError::Job(worker::JobError::DeadlineExceeded { .. })
        ),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_job_whose_worker_dies_is_finished_by_another() {
    let coordinator = coordinator_server(TTL).bind("127.0.0.1:0").await.unwrap();
    let coordinator_addr = coordinator.local_addr().to_string();
    let relayed = |name: &str| {
        let sandbox = Sandbox::new(SandboxConfig {
            concurrency: 1,
            ..SandboxConfig::default()
        })
        .unwrap();
        let tasks = worker::relay_worker(
            sandbox.clone(),
            Client::new(coordinator_addr.clone()),
            name.into(),
            BEAT,
        );
        (sandbox, tasks)
    };
    // Spins for about half a second, then exits: long enough to be killed
    // in the middle.
    let slow = Module::new(
        wat::parse_str(
            r#"(module (func (export "_start") (local $i i64)
              (loop $more
                (local.set $i (i64.add (local.get $i) (i64.const 1)))
                (br_if $more (i64.lt_u (local.get $i) (i64.const 150000000))))))"#,
        )
        .unwrap(),
    );
    let (a_box, a_tasks) = relayed("a");
    let client = WorkerClient::new(Client::new(coordinator_addr.clone()));
    let job = {
        let client = client.clone();
        let slow = slow.clone();
        tokio::spawn(async move { client.run(&slow, Command::new()).await })
    };
    crate::support::eventually("a runs the job", {
        let a_box = a_box.clone();
        move || a_box.status().running == 1
    })
    .await;
    // a dies mid-job: its polls and heartbeats stop.
    for task in a_tasks {
        task.abort();
    }
    let (_b_box, _b_tasks) = relayed("b");
    let output = job.await.unwrap().unwrap();
    assert_eq!(output.receipt.relayed_to.as_deref(), Some("b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_directories_one_down_loses_nothing_and_a_restarted_one_is_full_within_a_heartbeat()
 {
    let first = coordinator_server(TTL).bind("127.0.0.1:0").await.unwrap();
    let second = coordinator_server(TTL).bind("127.0.0.1:0").await.unwrap();
    let (first_addr, second_addr) = (
        first.local_addr().to_string(),
        second.local_addr().to_string(),
    );
    let directories = [first_addr.as_str(), second_addr.as_str()];
    let mut workers = Vec::new();
    for ip in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        workers.push(start_worker_joining(ip, &directories).await);
    }
    let both = CoordinatorResolver::union(directories.map(lookup_client));
    let only_first = CoordinatorResolver::new(lookup_client(&first_addr));
    let mut listed = false;
    for _ in 0..50 {
        listed = both.workers().await.is_ok_and(|w| w.len() == 3)
            && only_first.workers().await.is_ok_and(|w| w.len() == 3);
        if listed {
            break;
        }
        tokio::time::sleep(BEAT).await;
    }
    assert!(listed, "the directories do not list the three workers");

    let pool = WorkerPool::with_config(both.resolve_now().await, worker::worker_pool_config());
    assert_eq!(pool.pool().status().len(), 3);
    pool.pool().follow(both.clone(), BEAT);
    let module = hello();
    let progress = worker::Progress::default();
    let commands = (0..300).map(|_| Command::new());
    let outages = async {
        while progress.count().done < 50 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // The first directory dies while jobs flow.
        first.shutdown(Duration::ZERO).await;
        // The union still lists every worker, from the second.
        let listed = both.workers().await.unwrap();
        assert_eq!(listed.len(), 3, "{listed:?}");
        while progress.count().done < 150 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // It restarts empty on the same address; within a heartbeat (and
        // a little) every worker has registered there again.
        let restarted = coordinator_server(TTL).bind(&first_addr).await.unwrap();
        tokio::time::sleep(BEAT * 3).await;
        let listed = only_first.workers().await.unwrap();
        assert_eq!(listed.len(), 3, "not full again: {listed:?}");
        restarted
    };
    let (results, restarted) = tokio::join!(
        futures_util::StreamExt::collect::<Vec<_>>(pool.map(&module, commands, 8, &progress)),
        outages
    );
    assert_eq!(results.len(), 300);
    for (i, job) in results.into_iter().enumerate() {
        job.result
            .unwrap_or_else(|error| panic!("job {i}: {error}"));
    }
    assert_eq!(pool.pool().status().len(), 3);

    // With every directory down, asking fails rather than listing none.
    second.shutdown(Duration::ZERO).await;
    restarted.shutdown(Duration::ZERO).await;
    let gone = CoordinatorResolver::union([lookup_client(&second_addr)]);
    assert!(gone.workers().await.is_err());
    for (server, beats) in workers {
        beats.iter().for_each(tokio::task::JoinHandle::abort);
        server.shutdown(Duration::ZERO).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_that_is_down_does_not_hold_up_the_others_answer() {
    let live = coordinator_server(TTL).bind("127.0.0.1:0").await.unwrap();
    let live_addr = live.local_addr().to_string();
    let (_worker, _beats) = start_worker_joining("127.0.0.2", &[live_addr.as_str()]).await;
    // Nothing listens there; a client with default settings keeps trying
    // to reconnect for as long as its call may take.
    let dead_addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let union = CoordinatorResolver::union([Client::new(dead_addr), Client::new(live_addr)]);
    let mut listed = Vec::new();
    for _ in 0..20 {
        let started = std::time::Instant::now();
        listed = union.workers().await.unwrap();
        assert!(
            started.elapsed() < worker::DIRECTORY_TIMEOUT + Duration::from_secs(3),
            "the dead directory held the lookup for {:?}",
            started.elapsed()
        );
        if !listed.is_empty() {
            break;
        }
        tokio::time::sleep(BEAT).await;
    }
    assert_eq!(listed.len(), 1, "{listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_belongs_to_whoever_registered_it_and_the_directory_is_bounded() {
    use futures_util::StreamExt;
    use worker::wire::{DirectoryClient, MAX_MODULES_LISTED, MAX_REGISTRATIONS, RegisterRefused};

    let coordinator = coordinator_server(Duration::from_secs(30))
        .token("token-a", "worker")
        .token("token-b", "worker")
        .token("ctok", "client")
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = coordinator.local_addr().to_string();
    let directory = |token: &str| {
        DirectoryClient::new(Client::with_config(
            addr.clone(),
            ClientConfig {
                token: Some(token.into()),
                ..ClientConfig::default()
            },
        ))
    };
    let entry = |name: &str, addr: &str| Registration {
        name: name.into(),
        addr: addr.into(),
        capacity: 1,
        running: 0,
        modules: Vec::new(),
        supernode: None,
    };
    let refused = |result: Result<u64, rpc_core::RpcError<RegisterRefused>>| match result {
        Err(rpc_core::RpcError::Application(refused)) => refused,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let (a, b) = (directory("token-a"), directory("token-b"));
    a.register(entry("w1", "10.0.0.1:7070")).await.unwrap();
    // Another token cannot take the name over (and be sent its jobs)...
    assert_eq!(
        refused(b.register(entry("w1", "10.6.6.6:7070")).await),
        RegisterRefused::Taken
    );
    // ... while the one that registered it renews it.
    a.register(entry("w1", "10.0.0.1:7070")).await.unwrap();
    let listed = CoordinatorResolver::new(Client::with_config(
        addr.clone(),
        ClientConfig {
            token: Some("ctok".into()),
            ..ClientConfig::default()
        },
    ))
    .resolve_now()
    .await;
    assert_eq!(listed, ["10.0.0.1:7070"]);

    // Oversized registrations are refused whole.
    let mut fat = entry("w2", "10.0.0.2:7070");
    fat.modules = vec![rpc_core::ContentHash::of(b"x"); MAX_MODULES_LISTED + 1];
    assert_eq!(refused(b.register(fat).await), RegisterRefused::TooLarge);
    assert_eq!(
        refused(b.register(entry("", "10.0.0.2:7070")).await),
        RegisterRefused::TooLarge
    );
    assert_eq!(
        refused(b.register(entry("w2", &"9".repeat(5000))).await),
        RegisterRefused::TooLarge
    );

    // At most MAX_REGISTRATIONS names: the rest wait for entries to expire,
    // and those listed still renew.
    let results: Vec<_> = futures_util::stream::iter(1..MAX_REGISTRATIONS)
        .map(|i| {
            let b = b.clone();
            async move { b.register(entry(&format!("n{i}"), "10.0.0.3:7070")).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(
        refused(b.register(entry("one-too-many", "10.0.0.3:7070")).await),
        RegisterRefused::Full {
            max: MAX_REGISTRATIONS as u64
        }
    );
    a.register(entry("w1", "10.0.0.1:7070")).await.unwrap();
    coordinator.shutdown(Duration::ZERO).await;
}
