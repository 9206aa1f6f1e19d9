//! Pools of servers: spreading by cost, failing over, ejecting and
//! re-admitting, following a changing address list.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rpc_core::{ClientConfig, Pool, PoolConfig, RpcError, Server};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// A server whose `work` answers with its name after `delay`, counting
/// what it served.
async fn server_on(
    addr: &str,
    name: &'static str,
    delay: Duration,
    served: Arc<AtomicU64>,
) -> Server {
    Server::builder()
        .function("work", move |job: u64| {
            let served = Arc::clone(&served);
            async move {
                tokio::time::sleep(delay).await;
                served.fetch_add(1, Ordering::Relaxed);
                Ok::<_, ()>((name.to_owned(), job))
            }
        })
        .bind(addr)
        .await
        .unwrap()
}

/// A server that accepts connections and never answers (the handshake
/// never ends); its address.
async fn silent_server() -> String {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    addr
}

fn config() -> PoolConfig {
    PoolConfig {
        client: ClientConfig {
            connect_timeout: Duration::from_millis(300),
            initial_backoff: Duration::from_millis(10),
            max_retries: 0,
            ..ClientConfig::default()
        },
        attempt_timeout: Duration::from_millis(1500),
        deadline: Duration::from_secs(20),
        eject_initial: Duration::from_millis(100),
        eject_max: Duration::from_millis(400),
        ..PoolConfig::default()
    }
}

/// Runs `jobs` calls with `concurrency` in flight; returns each job's
/// answer, checking every job got exactly one.
async fn run_jobs(pool: &Pool, jobs: u64, concurrency: usize) -> HashMap<u64, String> {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    for job in 0..jobs {
        let permit = Arc::clone(&semaphore).acquire_owned().await.unwrap();
        let pool = pool.clone();
        tasks.spawn(async move {
            let answer: (String, u64) = pool.call("work", &job).await.unwrap();
            drop(permit);
            assert_eq!(answer.1, job);
            answer
        });
    }
    let mut results = HashMap::new();
    while let Some(answer) = tasks.join_next().await {
        let (name, job) = answer.unwrap();
        assert!(
            results.insert(job, name).is_none(),
            "job {job} answered twice"
        );
    }
    assert_eq!(results.len() as u64, jobs);
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_server_gets_fewer_requests() {
    let counts: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let fast_a = server_on(
        "127.0.0.1:0",
        "a",
        Duration::from_millis(1),
        Arc::clone(&counts[0]),
    )
    .await;
    let fast_b = server_on(
        "127.0.0.1:0",
        "b",
        Duration::from_millis(1),
        Arc::clone(&counts[1]),
    )
    .await;
    let slow = server_on(
        "127.0.0.1:0",
        "slow",
        Duration::from_millis(30),
        Arc::clone(&counts[2]),
    )
    .await;
    let addrs = [&fast_a, &fast_b, &slow].map(|server| server.local_addr().to_string());
    let pool = Pool::new(addrs, config());
    run_jobs(&pool, 600, 8).await;
    let served: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    assert!(
        served[0] > 0 && served[1] > 0 && served[2] > 0,
        "{served:?}"
    );
    assert!(
        served[2] * 3 < served[0] && served[2] * 3 < served[1],
        "the slow server should get far fewer: {served:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_run_loses_no_request_and_is_taken_back_when_it_returns() {
    let counts: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let a = server_on(
        "127.0.0.1:0",
        "a",
        Duration::from_millis(2),
        Arc::clone(&counts[0]),
    )
    .await;
    let b = server_on(
        "127.0.0.1:0",
        "b",
        Duration::from_millis(2),
        Arc::clone(&counts[1]),
    )
    .await;
    let c = server_on(
        "127.0.0.1:0",
        "c",
        Duration::from_millis(2),
        Arc::clone(&counts[2]),
    )
    .await;
    let c_addr = c.local_addr();
    let addrs = [&a, &b, &c].map(|server| server.local_addr().to_string());
    let pool = Pool::new(addrs, config());

    let running = {
        let pool = pool.clone();
        tokio::spawn(async move { run_jobs(&pool, 1000, 16).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Kill c with requests in flight: they fail over to a and b.
    c.shutdown(Duration::ZERO).await;
    let results = running.await.unwrap();
    assert_eq!(results.len(), 1000);
    let c_status = pool
        .status()
        .into_iter()
        .find(|member| member.addr == c_addr.to_string())
        .unwrap();
    assert!(!c_status.healthy, "{c_status:?}");

    // c comes back on the same address and takes work again.
    let before = counts[2].load(Ordering::Relaxed);
    let _c = server_on(
        &c_addr.to_string(),
        "c",
        Duration::from_millis(2),
        Arc::clone(&counts[2]),
    )
    .await;
    let mut back = false;
    for _ in 0..50 {
        run_jobs(&pool, 60, 8).await;
        if counts[2].load(Ordering::Relaxed) > before + 5 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        back,
        "the restarted server never got work: {:?}",
        pool.status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_accepts_but_never_answers_is_avoided() {
    let silent_addr = silent_server().await;
    let served = Arc::new(AtomicU64::new(0));
    let good = server_on("127.0.0.1:0", "good", Duration::ZERO, Arc::clone(&served)).await;
    let pool = Pool::new(
        [silent_addr.clone(), good.local_addr().to_string()],
        config(),
    );
    let results = run_jobs(&pool, 200, 4).await;
    assert!(results.values().all(|name| name == "good"));
    let silent_status = pool
        .status()
        .into_iter()
        .find(|member| member.addr == silent_addr)
        .unwrap();
    assert!(silent_status.picks < 20, "{silent_status:?}");
}

#[tokio::test]
async fn the_pool_follows_a_changing_address_list() {
    let served = Arc::new(AtomicU64::new(0));
    let first = server_on("127.0.0.1:0", "first", Duration::ZERO, Arc::clone(&served)).await;
    let second = server_on("127.0.0.1:0", "second", Duration::ZERO, Arc::clone(&served)).await;
    let pool = Pool::new([first.local_addr().to_string()], config());
    assert!(
        run_jobs(&pool, 20, 4)
            .await
            .values()
            .all(|name| name == "first")
    );
    // As when a DNS name starts resolving elsewhere.
    pool.set_addresses([second.local_addr().to_string()]);
    assert!(
        run_jobs(&pool, 20, 4)
            .await
            .values()
            .all(|name| name == "second")
    );
    assert_eq!(pool.status().len(), 1);
}

#[tokio::test]
async fn with_every_server_down_a_request_fails_clearly_and_soon() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let pool = Pool::new(
        [addr],
        PoolConfig {
            deadline: Duration::from_secs(2),
            ..config()
        },
    );
    let started = std::time::Instant::now();
    let error = pool
        .call::<_, (String, u64)>("work", &1u64)
        .await
        .unwrap_err();
    assert!(matches!(error, RpcError::Unavailable(_)), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A request's own error is not retried elsewhere.
    let served = Arc::new(AtomicU64::new(0));
    let server = server_on("127.0.0.1:0", "s", Duration::ZERO, served).await;
    let pool = Pool::new([server.local_addr().to_string()], config());
    let error = pool.call::<_, u64>("nope", &()).await.unwrap_err();
    assert!(matches!(error, RpcError::NotFound(_)), "{error}");
    assert_eq!(pool.status()[0].picks, 1);
}

/// A resolver whose answer the test changes, as DNS records change.
#[derive(Clone, Default)]
struct Changing(Arc<std::sync::Mutex<Vec<String>>>);

impl rpc_core::Resolver for Changing {
    fn resolve(&self) -> rpc_core::ResolveFuture<'_> {
        let answer = self.0.lock().unwrap().clone();
        Box::pin(async move { Ok(answer) })
    }
}

#[tokio::test]
async fn a_pool_following_a_resolver_tracks_its_answers() {
    let served = Arc::new(AtomicU64::new(0));
    let first = server_on("127.0.0.1:0", "first", Duration::ZERO, Arc::clone(&served)).await;
    let second = server_on("127.0.0.2:0", "second", Duration::ZERO, Arc::clone(&served)).await;
    let resolver = Changing::default();
    *resolver.0.lock().unwrap() = vec![first.local_addr().to_string()];
    let pool = Pool::new(Vec::<String>::new(), config());
    pool.follow(resolver.clone(), Duration::from_millis(20));
    crate::support::eventually("the first answer is used", {
        let pool = pool.clone();
        move || pool.status().len() == 1
    })
    .await;
    assert!(
        run_jobs(&pool, 10, 2)
            .await
            .values()
            .all(|name| name == "first")
    );
    *resolver.0.lock().unwrap() = vec![second.local_addr().to_string()];
    crate::support::eventually("the new answer replaces the old", {
        let pool = pool.clone();
        let second = second.local_addr().to_string();
        move || {
            pool.status()
                .iter()
                .map(|m| m.addr.clone())
                .collect::<Vec<_>>()
                == [second.clone()]
        }
    })
    .await;
    assert!(
        run_jobs(&pool, 10, 2)
            .await
            .values()
            .all(|name| name == "second")
    );
    // An empty answer keeps the servers.
    resolver.0.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(pool.status().len(), 1);
}

#[tokio::test]
async fn dns_names_resolve_to_every_address() {
    let answer = rpc_core::DnsResolver::new("localhost:7070");
    let addrs = rpc_core::Resolver::resolve(&answer).await.unwrap();
    assert!(!addrs.is_empty());
    assert!(
        addrs.iter().all(|addr| addr.ends_with(":7070")),
        "{addrs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_out_a_silent_server_before_any_request_goes_there() {
    let silent_addr = silent_server().await;
    let served = Arc::new(AtomicU64::new(0));
    let good = server_on("127.0.0.1:0", "good", Duration::ZERO, Arc::clone(&served)).await;
    let pool = Pool::new(
        [silent_addr.clone(), good.local_addr().to_string()],
        PoolConfig {
            health_interval: Some(Duration::from_millis(100)),
            ..config()
        },
    );
    // One request starts the checks; it may itself land on either.
    let _: (String, u64) = pool.call("work", &0u64).await.unwrap();
    crate::support::eventually("the silent server is out", {
        let pool = pool.clone();
        let silent_addr = silent_addr.clone();
        move || {
            pool.status()
                .iter()
                .any(|m| m.addr == silent_addr && !m.healthy)
        }
    })
    .await;
    let picks_before = pool
        .status()
        .iter()
        .find(|m| m.addr == silent_addr)
        .unwrap()
        .picks;
    run_jobs(&pool, 50, 4).await;
    let picks_after = pool
        .status()
        .iter()
        .find(|m| m.addr == silent_addr)
        .unwrap()
        .picks;
    assert!(
        picks_after - picks_before <= 1,
        "{picks_before} -> {picks_after}"
    );
    // Pings answer over a live connection.
    let rtt = rpc_core::Client::new(good.local_addr().to_string())
        .ping()
        .await
        .unwrap();
    assert!(rtt < Duration::from_secs(1));
}
