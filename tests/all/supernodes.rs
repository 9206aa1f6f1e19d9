//! Workers that accept no connections, reached through supernodes: the
//! relayed worker attaches to the supernode with the shortest round trip,
//! moves when it dies without losing a job; with two routes, clients take
//! the faster and keep going over the other when it dies; jobs survive the
//! directory's restart, and a 64 MiB module crosses the relay once.
//!
//! Loopback only: the relayed worker listens nowhere, so it can be reached
//! through a supernode or not at all. `worker/tests/processes.rs` has the
//! same with real processes.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use rpc_core::relay::{Supernode, SupernodeConfig};
use rpc_core::{Client, ClientConfig, PoolConfig, ResolveFuture, Resolver, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use worker::wire::{Registration, SupernodeOffer};
use worker::{
    AttachConfig, Attachment, Command, CoordinatorResolver, Module, Progress, Sandbox,
    SandboxConfig, WorkerClient, WorkerPool, add_supernode, coordinator_server, join,
    relay_through_supernodes, worker_server,
};

use crate::support::eventually;
use crate::worker::cat;

const TTL: Duration = Duration::from_millis(1500);
const BEAT: Duration = Duration::from_millis(100);

/// A client for the directory: one connection attempt, so that a
/// directory that is down is answered for at once.
fn directory_client(addr: &str) -> Client {
    Client::with_config(
        addr.to_owned(),
        ClientConfig {
            connect_timeout: Duration::from_millis(300),
            max_retries: 0,
            max_reconnects: Some(0),
            ..ClientConfig::default()
        },
    )
}

/// A proxy to `target` that holds every piece of data `delay` in each
/// direction: a link `2 * delay` longer.
async fn delay_proxy(target: SocketAddr, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = TcpStream::connect(target).await else {
                continue;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (a_read, a_write) = inbound.into_split();
            let (b_read, b_write) = outbound.into_split();
            tokio::spawn(delayed_copy(a_read, b_write, delay));
            tokio::spawn(delayed_copy(b_read, a_write, delay));
        }
    });
    addr
}

async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        tokio::time::sleep(delay).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// A worker that is also a supernode, on `ip`, registered with the
/// directory as reachable at `advertised` (its own address, or a proxy's
/// in front of it).
struct SupernodeWorker {
    server: Server,
    /// Where clients and relayed workers reach it: its own address, or
    /// the delaying proxy's.
    advertised: String,
    beat: tokio::task::JoinHandle<()>,
    supernode: Supernode,
}

async fn start_supernode(ip: &str, directory: &str, delay: Option<Duration>) -> SupernodeWorker {
    let sandbox = Sandbox::new(SandboxConfig {
        concurrency: 2,
        ..SandboxConfig::default()
    })
    .unwrap();
    let supernode = Supernode::new(SupernodeConfig::default());
    let server = add_supernode(worker_server(sandbox.clone()), supernode.clone())
        .bind(format!("{ip}:0"))
        .await
        .unwrap();
    let advertised = match delay {
        Some(delay) => delay_proxy(server.local_addr(), delay).await.to_string(),
        None => server.local_addr().to_string(),
    };
    let offered = supernode.clone();
    let registered = advertised.clone();
    let beat = join(directory_client(directory), BEAT, move || Registration {
        name: format!("supernode-{registered}"),
        addr: registered.clone(),
        capacity: sandbox.status().concurrency,
        running: sandbox.status().running,
        modules: sandbox.ready_modules(),
        supernode: Some(SupernodeOffer::of(&offered)),
    });
    SupernodeWorker {
        server,
        advertised,
        beat,
        supernode,
    }
}

/// A worker that listens nowhere, attached through `routes` of the
/// supernodes the directories list.
async fn start_relayed(
    name: &'static str,
    directories: &[&str],
    routes: usize,
) -> (Sandbox, Server, Attachment) {
    let sandbox = Sandbox::new(SandboxConfig {
        concurrency: 2,
        ..SandboxConfig::default()
    })
    .unwrap();
    let (server, intake) = worker_server(sandbox.clone()).serve_joined().unwrap();
    let config = AttachConfig {
        name: name.into(),
        directories: directories
            .iter()
            .map(|addr| directory_client(addr))
            .collect(),
        client: ClientConfig::default(),
        heartbeat: BEAT,
        routes,
        serves_tls: false,
    };
    let registered = sandbox.clone();
    let attachment = relay_through_supernodes(intake, config, move |addr| Registration {
        name: name.into(),
        addr,
        capacity: registered.status().concurrency,
        running: registered.status().running,
        modules: registered.ready_modules(),
        supernode: None,
    });
    (sandbox, server, attachment)
}

/// The relayed workers a directory lists (not the supernodes, which are
/// workers too), for a pool that should send its jobs through relays only.
#[derive(Clone)]
struct RelayedOnly(CoordinatorResolver);

impl Resolver for RelayedOnly {
    fn resolve(&self) -> ResolveFuture<'_> {
        Box::pin(async move {
            let workers = self.0.workers().await.map_err(std::io::Error::other)?;
            Ok(workers
                .into_iter()
                .filter(|entry| entry.registration.supernode.is_none())
                .map(|entry| entry.registration.addr)
                .collect())
        })
    }
}

/// Waits (a bounded while) until the addresses the directory at `addr`
/// lists satisfy `wanted`; panics saying `what` otherwise.
async fn until_listed(addr: &str, what: &str, wanted: impl Fn(&[String]) -> bool) {
    let resolver = CoordinatorResolver::new(directory_client(addr));
    let mut listed = Vec::new();
    for _ in 0..200 {
        listed = resolver.resolve_now().await;
        if wanted(&listed) {
            return;
        }
        tokio::time::sleep(BEAT / 2).await;
    }
    panic!("never true: {what}; listed {listed:?}");
}

fn pool_following(directories: &[&str]) -> WorkerPool {
    let pool = WorkerPool::with_config(
        Vec::<String>::new(),
        PoolConfig {
            client: ClientConfig {
                connect_timeout: Duration::from_millis(500),
                max_retries: 0,
                ..ClientConfig::default()
            },
            attempt_timeout: Duration::from_secs(10),
            deadline: Duration::from_secs(60),
            eject_initial: Duration::from_millis(50),
            eject_max: Duration::from_millis(300),
            ..worker::worker_pool_config()
        },
    );
    let resolver =
        CoordinatorResolver::union(directories.iter().map(|addr| directory_client(addr)));
    pool.pool()
        .follow(RelayedOnly(resolver), Duration::from_millis(50));
    pool
}

/// A directory and two supernodes listed in it: a fast one and one behind
/// 20 ms more per round trip.
async fn fast_and_slow_supernodes() -> (Server, SupernodeWorker, SupernodeWorker) {
    let directory = coordinator_server(TTL).bind("127.0.0.1:0").await.unwrap();
    let directory_addr = directory.local_addr().to_string();
    let fast = start_supernode("127.0.0.2", &directory_addr, None).await;
    // 10 ms each way.
    let slow = start_supernode(
        "127.0.0.3",
        &directory_addr,
        Some(Duration::from_millis(10)),
    )
    .await;
    until_listed(&directory_addr, "both supernodes are listed", |listed| {
        listed.len() == 2
    })
    .await;
    (directory, fast, slow)
}

/// A pool following the directory at `addr`, once it has found the one
/// relayed worker there.
async fn pool_of_one(addr: &str) -> WorkerPool {
    let pool = pool_following(&[addr]);
    eventually("the pool finds the relayed worker", {
        let pool = pool.clone();
        move || pool.pool().status().len() == 1
    })
    .await;
    pool
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_worker_takes_the_faster_supernode_and_moves_when_it_dies_losing_no_job() {
    let (directory, fast, slow) = fast_and_slow_supernodes().await;
    let directory_addr = directory.local_addr().to_string();
    let fast_addr = fast.server.local_addr().to_string();

    let (relayed_box, _relayed, mut attachment) = start_relayed("r1", &[&directory_addr], 1).await;
    let first = attachment
        .attached(None, Duration::from_secs(10))
        .await
        .expect("attached");
    assert_eq!(first, format!("r1@{fast_addr}"), "the faster supernode");
    assert_eq!(fast.supernode.attached(), 1);
    assert_eq!(slow.supernode.attached(), 0);

    let pool = pool_of_one(&directory_addr).await;
    let module = cat();
    let progress = Progress::default();
    let commands = (0..1000).map(|i| Command::new().stdin(format!("job {i}")));
    let killer = async {
        while progress.count().done < 300 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The fast supernode dies with relayed jobs in flight.
        fast.beat.abort();
        fast.server.shutdown(Duration::ZERO).await;
    };
    let (outputs, ()) = tokio::join!(
        pool.map(&module, commands, 16, &progress)
            .collect::<Vec<_>>(),
        killer
    );
    assert_eq!(outputs.len(), 1000);
    let mut through_fast = 0;
    let mut through_slow = 0;
    for (i, job) in outputs.into_iter().enumerate() {
        let worker = job.worker.unwrap_or_else(|| panic!("job {i}: no worker"));
        let output = job
            .result
            .unwrap_or_else(|error| panic!("job {i}: {error}"));
        assert_eq!(output.stdout, format!("job {i}").as_bytes(), "job {i}");
        if worker == first {
            through_fast += 1;
        } else {
            assert!(worker.starts_with("r1@"), "job {i} answered by {worker}");
            through_slow += 1;
        }
    }
    assert!(through_fast >= 300, "{through_fast} through the fast one");
    assert!(through_slow > 0, "{through_slow} through the slow one");
    let count = progress.count();
    assert_eq!((count.done, count.failed, count.in_flight), (1000, 0, 0));
    // It moved to the slow one, and the module came once to the worker.
    let moved = attachment.route().expect("attached");
    assert_ne!(moved, first);
    assert_eq!(slow.supernode.attached(), 1);
    assert_eq!(relayed_box.status().compiled, 1);
    slow.server.shutdown(Duration::ZERO).await;
    directory.shutdown(Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_routes_clients_take_the_faster_and_lose_nothing_when_it_dies() {
    let (directory, fast, slow) = fast_and_slow_supernodes().await;
    let directory_addr = directory.local_addr().to_string();
    let (_relayed_box, _relayed, mut attachment) = start_relayed("r1", &[&directory_addr], 2).await;
    let both = attachment
        .attached_where(Duration::from_secs(10), |route| route.contains(','))
        .await
        .expect("attached to both supernodes");
    assert_eq!(
        (fast.supernode.attached(), slow.supernode.attached()),
        (1, 1)
    );
    let fast_route = format!("r1@{}", fast.advertised);
    assert!(attachment.routes().contains(&fast_route), "{both}");
    assert_eq!(attachment.routes().len(), 2, "{both}");
    // Registered with both routes: the pool's one member is that address.
    until_listed(
        &directory_addr,
        "the worker is listed with both routes",
        |listed| listed.contains(&both),
    )
    .await;
    let pool = pool_of_one(&directory_addr).await;

    let module = cat();
    let progress = Progress::default();
    let commands = (0..1000).map(|i| Command::new().stdin(format!("job {i}")));
    let killer = async {
        while progress.count().done < 300 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Until now every job took the fast route: the slow supernode
        // relayed no more than the handshakes of routes that lost a race.
        let status = pool.pool().status();
        let slow_bytes = slow.supernode.relayed_bytes();
        let fast_bytes = fast.supernode.relayed_bytes();
        fast.beat.abort();
        fast.server.shutdown(Duration::ZERO).await;
        (status, slow_bytes, fast_bytes)
    };
    let (outputs, (status, slow_bytes, fast_bytes)) = tokio::join!(
        pool.map(&module, commands, 16, &progress)
            .collect::<Vec<_>>(),
        killer
    );
    assert_eq!(status.len(), 1, "{status:?}");
    assert_eq!(status[0].addr, both);
    assert_eq!(status[0].route.as_deref(), Some(fast_route.as_str()));
    assert!(
        slow_bytes < 16 << 10 && fast_bytes > 100 * slow_bytes.max(1),
        "before the kill: {fast_bytes} bytes through the fast supernode, {slow_bytes} through the slow"
    );
    assert_eq!(outputs.len(), 1000);
    for (i, job) in outputs.into_iter().enumerate() {
        let output = job
            .result
            .unwrap_or_else(|error| panic!("job {i}: {error}"));
        assert_eq!(output.stdout, format!("job {i}").as_bytes(), "job {i}");
    }
    let count = progress.count();
    assert_eq!((count.done, count.failed, count.in_flight), (1000, 0, 0));
    // The jobs after the kill went through the slow supernode, and the
    // worker is registered through it alone (no third to attach to).
    assert!(slow.supernode.relayed_bytes() > slow_bytes + (64 << 10));
    let slow_route = format!("r1@{}", slow.advertised);
    let left = attachment
        .attached_where(Duration::from_secs(5), |route| route == slow_route)
        .await;
    assert_eq!(left, Some(slow_route));
    slow.server.shutdown(Duration::ZERO).await;
    directory.shutdown(Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_listens_too_is_reached_directly_where_it_can_be_and_relayed_where_not() {
    let directory = coordinator_server(TTL).bind("127.0.0.1:0").await.unwrap();
    let directory_addr = directory.local_addr().to_string();
    let supernode = start_supernode("127.0.0.2", &directory_addr, None).await;
    until_listed(&directory_addr, "the supernode is listed", |listed| {
        listed.len() == 1
    })
    .await;
    // Listening on its own address, and attached to the supernode.
    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    let listener = TcpListener::bind("127.0.0.4:0").await.unwrap();
    let direct = listener.local_addr().unwrap().to_string();
    let (server, intake) = worker_server(sandbox.clone())
        .serve_and_join(listener)
        .unwrap();
    let config = AttachConfig {
        name: "both".into(),
        directories: vec![directory_client(&directory_addr)],
        client: ClientConfig::default(),
        heartbeat: BEAT,
        routes: 1,
        serves_tls: false,
    };
    let registered_direct = direct.clone();
    let mut attachment = relay_through_supernodes(intake, config, move |relayed| Registration {
        name: "both".into(),
        addr: format!("{registered_direct},{relayed}"),
        capacity: 1,
        running: 0,
        modules: Vec::new(),
        supernode: None,
    });
    let relayed = attachment
        .attached(None, Duration::from_secs(10))
        .await
        .expect("attached");
    assert_eq!(relayed, format!("both@{}", supernode.advertised));
    let both = format!("{direct},{relayed}");
    until_listed(
        &directory_addr,
        "the worker is listed with both routes",
        |listed| listed.contains(&both),
    )
    .await;

    // A client that can reach it directly goes direct: one hop is faster
    // than two.
    let module = cat();
    let client = WorkerClient::new(Client::new(both.clone()));
    let output = client
        .run(&module, Command::new().stdin("direct"))
        .await
        .unwrap();
    assert_eq!(output.stdout, &b"direct"[..]);
    assert_eq!(client.client().route(), Some(direct.clone()));

    // Where its address leads nowhere (a black hole that accepts and never
    // answers, as a private address seen from outside would), the relayed
    // route answers, without waiting out the connect timeout.
    let black_hole = TcpListener::bind("127.0.0.5:0").await.unwrap();
    let nowhere = black_hole.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = black_hole.accept().await {
            held.push(socket);
        }
    });
    let client = WorkerClient::new(Client::with_config(
        format!("{nowhere},{relayed}"),
        ClientConfig {
            connect_timeout: Duration::from_secs(60),
            ..ClientConfig::default()
        },
    ));
    let output = tokio::time::timeout(
        Duration::from_secs(20),
        client.run(&module, Command::new().stdin("relayed")),
    )
    .await
    .expect("answered through the supernode, not after the connect timeout")
    .unwrap();
    assert_eq!(output.stdout, &b"relayed"[..]);
    assert_eq!(client.client().route(), Some(relayed.clone()));
    held.abort();
    server.shutdown(Duration::ZERO).await;
    supernode.server.shutdown(Duration::ZERO).await;
    directory.shutdown(Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_through_a_supernode_survive_their_directory_dying_and_coming_back() {
    let directory = coordinator_server(TTL).bind("127.0.0.1:0").await.unwrap();
    let directory_addr = directory.local_addr().to_string();
    // No supernode yet: the worker attaches to the directory itself, and
    // moves to the supernode within a beat or two of its being listed.
    let (_relayed_box, _relayed, mut attachment) =
        start_relayed("r1", &[&directory_addr], worker::DEFAULT_RELAY_ROUTES).await;
    let standing_in = attachment
        .attached(None, Duration::from_secs(10))
        .await
        .expect("attached");
    assert_eq!(standing_in, format!("r1@{directory_addr}"));
    let supernode = start_supernode("127.0.0.2", &directory_addr, None).await;
    let route = attachment
        .attached(Some(&standing_in), Duration::from_secs(5))
        .await
        .expect("moved to the supernode");
    assert_eq!(route, format!("r1@{}", supernode.server.local_addr()));
    // A client that looked the worker up before it moved still reaches it
    // through the directory for a while: the worker leaves it without
    // cutting off a poll or dropping a connection asked for.
    let late = WorkerClient::new(Client::with_config(
        standing_in.clone(),
        ClientConfig {
            max_reconnects: Some(0),
            ..ClientConfig::default()
        },
    ));
    let status = late.status().await.expect("reached through the old route");
    assert!(status.concurrency > 0);
    drop(late);
    let pool = pool_of_one(&directory_addr).await;
    let module = cat();
    let progress = Progress::default();
    let commands = (0..300).map(|i| Command::new().stdin(format!("job {i}")));
    let restarted = async {
        while progress.count().done < 100 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        directory.shutdown(Duration::ZERO).await;
        while progress.count().done < 200 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        coordinator_server(TTL).bind(&directory_addr).await.unwrap()
    };
    let (outputs, directory) = tokio::join!(
        pool.map(&module, commands, 8, &progress)
            .collect::<Vec<_>>(),
        restarted
    );
    for (i, job) in outputs.into_iter().enumerate() {
        let output = job
            .result
            .unwrap_or_else(|error| panic!("job {i}: {error}"));
        assert_eq!(output.stdout, format!("job {i}").as_bytes(), "job {i}");
        assert_eq!(job.worker.as_deref(), Some(route.as_str()), "job {i}");
    }
    // The restarted directory lists the relayed worker, through its
    // supernode, within a few beats.
    let resolver = CoordinatorResolver::new(directory_client(&directory_addr));
    let mut listed = Vec::new();
    for _ in 0..30 {
        listed = resolver.resolve_now().await;
        if listed.contains(&route) {
            break;
        }
        tokio::time::sleep(BEAT).await;
    }
    assert!(listed.contains(&route), "{listed:?}");
    supernode.server.shutdown(Duration::ZERO).await;
    directory.shutdown(Duration::ZERO).await;
}

/// A valid module of `len` bytes: one custom section of filler.
fn module_of_len(len: usize) -> Module {
    let mut bytes = b"\0asm\x01\0\0\0".to_vec();
    // Section id 0, its size as a 5-byte LEB128, a one-byte name "x",
    // then filler to `len`.
    let size = len - bytes.len() - 1 - 5;
    bytes.push(0);
    for i in 0..5 {
        let byte = u8::try_from((size >> (7 * i)) & 0x7f).unwrap();
        bytes.push(if i < 4 { byte | 0x80 } else { byte });
    }
    bytes.push(1);
    bytes.push(b'x');
    bytes.resize(len, 0x5a);
    Module::new(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_module_reaches_a_relayed_worker_once_and_verified() {
    let directory = coordinator_server(TTL).bind("127.0.0.1:0").await.unwrap();
    let directory_addr = directory.local_addr().to_string();
    let supernode = start_supernode("127.0.0.2", &directory_addr, None).await;
    let (relayed_box, _relayed, mut attachment) = start_relayed("r1", &[&directory_addr], 1).await;
    // Through the supernode (at first, maybe through the directory, if
    // the supernode was not listed yet).
    let through = format!("r1@{}", supernode.server.local_addr());
    let mut route = String::new();
    for _ in 0..20 {
        route = attachment
            .attached(Some(&route), Duration::from_secs(5))
            .await
            .expect("attached");
        if route == through {
            break;
        }
    }
    assert_eq!(route, through);
    let module = module_of_len(64 << 20);
    assert_eq!(module.bytes().len(), 64 << 20);
    let client = WorkerClient::new(Client::new(route.clone())).timeout(Duration::from_secs(120));
    assert!(
        client.upload(&module).await.unwrap(),
        "shipped the first time"
    );
    assert!(relayed_box.has_module(&module.hash()));
    assert!(
        !client.upload(&module).await.unwrap(),
        "held: not shipped again"
    );
    drop(client);
    eventually("the relayed connection is closed", {
        let supernode = supernode.supernode.clone();
        move || supernode.routes_open() == 0
    })
    .await;
    let relayed = supernode.supernode.relayed_bytes();
    assert!(
        (64 << 20..(64 << 20) + (1 << 20)).contains(&relayed),
        "{relayed} bytes relayed: the module once, and little else"
    );
    supernode.server.shutdown(Duration::ZERO).await;
    directory.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn a_name_attached_with_one_token_cannot_be_taken_with_another() {
    let sandbox = Sandbox::new(SandboxConfig {
        concurrency: 1,
        ..SandboxConfig::default()
    })
    .unwrap();
    let supernode = Supernode::new(SupernodeConfig::default());
    let server = add_supernode(worker_server(sandbox), supernode.clone())
        .token("token-a", "worker")
        .token("token-b", "worker")
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr().to_string();
    let with_token = |token: &str| {
        worker::wire::SupernodingClient::new(Client::with_config(
            addr.clone(),
            ClientConfig {
                token: Some(token.into()),
                ..ClientConfig::default()
            },
        ))
    };
    let a = with_token("token-a");
    assert!(a.dials("w1".into()).await.unwrap().is_empty());
    // Whoever holds another token cannot attach as w1 and take the
    // connections clients open to it...
    let error = with_token("token-b").dials("w1".into()).await.unwrap_err();
    assert!(
        matches!(
            error,
            rpc_core::RpcError::Application(worker::AttachRefused::Taken)
        ),
        "{error:?}"
    );
    // ... while the holder of the first (a worker reconnecting, say) may:
    // its poll waits for connections to open instead of being refused.
    let again = with_token("token-a");
    let poll = tokio::time::timeout(Duration::from_millis(300), again.dials("w1".into())).await;
    assert!(poll.is_err(), "answered at once: {poll:?}");
    assert_eq!(supernode.attached(), 1);
    server.shutdown(Duration::ZERO).await;
}

/// Lookups (`coordinator.workers` answered 200) that `metrics` has counted.
fn lookups(metrics: &rpc_core::metrics::Metrics) -> f64 {
    metrics
        .encode()
        .lines()
        .find(|line| {
            line.starts_with("rpc_calls_total{")
                && line.contains("function=\"coordinator.workers\"")
                && line.contains("status=\"200\"")
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_short_of_supernodes_looks_for_more_less_and_less_often() {
    let metrics = rpc_core::metrics::Metrics::new();
    let directory = coordinator_server(TTL)
        .config(rpc_core::ServerConfig {
            metrics: Some(metrics.clone()),
            ..rpc_core::ServerConfig::default()
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let directory_addr = directory.local_addr().to_string();
    let supernode = start_supernode("127.0.0.2", &directory_addr, None).await;
    until_listed(&directory_addr, "the supernode is listed", |listed| {
        listed.len() == 1
    })
    .await;
    // It wants two routes and the network has one supernode: it stays
    // short, and keeps looking.
    let (_relayed_box, _relayed, mut attachment) = start_relayed("r1", &[&directory_addr], 2).await;
    attachment
        .attached(None, Duration::from_secs(10))
        .await
        .expect("attached to the one supernode");
    tokio::time::sleep(BEAT * 10).await;
    let before = lookups(&metrics);
    tokio::time::sleep(BEAT * 40).await;
    let looked = lookups(&metrics) - before;
    // Without backing off it looked about 40 times in 40 beats; once every
    // 8 beats makes 5.
    assert!(
        looked <= 12.0,
        "{looked} lookups in 40 beats by one worker short of a supernode"
    );
    assert!(looked >= 1.0, "it stopped looking");
    assert_eq!(attachment.routes().len(), 1);
    supernode.server.shutdown(Duration::ZERO).await;
    directory.shutdown(Duration::ZERO).await;
}
