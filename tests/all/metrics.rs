//! Prometheus metrics, scraped over HTTP after known traffic: a plain
//! server's connections, calls by function and status, latencies and
//! bytes; a worker's jobs, cache and fuel; a pool's members; a
//! coordinator's relayed jobs.

use std::time::Duration;

use rpc_core::metrics::Metrics;
use rpc_core::{Client, ClientConfig, FunctionOptions, RpcError, Server, ServerConfig};
use worker::{Command, JobLimits, Module, Sandbox, SandboxConfig, WorkerClient, WorkerPool};

use crate::scrape::{get, scrape};
use crate::worker::{hello, spin_forever};

fn with_metrics(metrics: &Metrics) -> ServerConfig {
    ServerConfig {
        metrics: Some(metrics.clone()),
        ..ServerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_counts_calls_by_function_and_status_connections_and_bytes() {
    let metrics = Metrics::new();
    let server = Server::builder()
        .config(with_metrics(&metrics))
        .token("user-token", "user")
        .token("admin-token", "admin")
        .function(
            "add",
            |(a, b): (i64, i64)| async move { Ok::<_, ()>(a + b) },
        )
        .function("divide", |(a, b): (i64, i64)| async move {
            if b == 0 {
                Err("division by zero")
            } else {
                Ok(a / b)
            }
        })
        .function("slow", |millis: u64| async move {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            Ok::<_, ()>(millis)
        })
        .function_with(
            "reset",
            FunctionOptions::new().roles(["admin"]),
            |_: rpc_core::Context, (): ()| async move { Ok::<_, ()>(()) },
        )
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let endpoint = metrics.serve("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().to_string();
    let user = Client::with_config(
        addr.clone(),
        ClientConfig {
            token: Some("user-token".into()),
            ..ClientConfig::default()
        },
    );

    for i in 0..5i64 {
        assert_eq!(user.call::<_, i64>("add", &(i, 1i64)).await.unwrap(), i + 1);
    }
    for _ in 0..2 {
        assert!(matches!(
            user.call::<_, i64>("divide", &(1i64, 0i64)).await,
            Err(RpcError::Application(_))
        ));
    }
    assert!(matches!(
        user.call::<_, ()>("missing", &()).await,
        Err(RpcError::NotFound(_))
    ));
    assert!(matches!(
        user.call::<_, ()>("reset", &()).await,
        Err(RpcError::Forbidden(_))
    ));
    // A call cut short by its deadline is counted as such, and leaves
    // nothing in flight.
    let short = rpc_core::CallOptions::new().timeout(Duration::from_millis(50));
    assert!(matches!(
        user.call_with::<_, u64, ()>("slow", &2_000u64, short).await,
        Err(RpcError::DeadlineExceeded)
    ));
    // A connection with a wrong token is refused at the handshake.
    let stranger = Client::with_config(
        addr.clone(),
        ClientConfig {
            token: Some("wrong".into()),
            max_reconnects: Some(0),
            ..ClientConfig::default()
        },
    );
    assert!(stranger.call::<_, i64>("add", &(1i64, 1i64)).await.is_err());

    let server_label = ("server", addr.as_str());
    // The caller's timer and the server's race at the deadline: the server
    // answers 504, or counts the call as cancelled (499) when the caller's
    // cancel comes first. Either way it ends, once the cancel arrives.
    let mut samples = scrape(endpoint.local_addr()).await;
    for _ in 0..100 {
        let ended: f64 = ["504", "499"]
            .iter()
            .filter_map(|status| {
                samples.find(
                    "rpc_calls_total",
                    &[server_label, ("function", "slow"), ("status", status)],
                )
            })
            .sum();
        if ended == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        samples = scrape(endpoint.local_addr()).await;
    }
    let calls = |function: &str, status: &str| {
        samples
            .find(
                "rpc_calls_total",
                &[server_label, ("function", function), ("status", status)],
            )
            .unwrap_or(0.0)
    };
    assert_eq!(calls("add", "200"), 5.0);
    assert_eq!(calls("divide", "422"), 2.0);
    assert_eq!(calls("slow", "504") + calls("slow", "499"), 1.0);
    assert_eq!(calls("reset", "200"), 0.0);
    // Refused calls are counted by status only: the caller picks the name.
    let refused = |status: &str| {
        samples.get(
            "rpc_calls_refused_total",
            &[server_label, ("status", status)],
        )
    };
    assert_eq!(refused("404"), 1.0);
    assert_eq!(refused("403"), 1.0);
    assert!(
        !samples.text.contains("missing"),
        "a caller's function name became a label:\n{}",
        samples.text
    );
    assert_eq!(samples.get("rpc_calls_started_total", &[server_label]), 8.0);
    assert_eq!(
        samples.get(
            "rpc_call_duration_seconds_count",
            &[server_label, ("function", "add")]
        ),
        5.0
    );
    assert_eq!(
        samples.get(
            "rpc_call_duration_seconds_bucket",
            &[server_label, ("function", "add"), ("le", "+Inf")]
        ),
        5.0
    );
    // The call that ran into its deadline took at least its 50 ms.
    assert!(
        samples.get(
            "rpc_call_duration_seconds_sum",
            &[server_label, ("function", "slow")]
        ) >= 0.05
    );
    for function in ["add", "divide", "slow", "reset", "rpc.describe"] {
        assert_eq!(
            samples.get(
                "rpc_calls_in_flight",
                &[server_label, ("function", function)]
            ),
            0.0,
            "{function}"
        );
    }
    assert_eq!(
        samples.get("rpc_connections_opened_total", &[server_label]),
        1.0
    );
    assert_eq!(samples.get("rpc_connections_open", &[server_label]), 1.0);
    assert!(samples.get("rpc_connections_refused_total", &[server_label]) >= 1.0);
    assert!(samples.get("rpc_connections_accepted_total", &[server_label]) >= 2.0);
    assert!(samples.get("rpc_received_bytes_total", &[server_label]) > 100.0);
    assert!(samples.get("rpc_sent_bytes_total", &[server_label]) > 100.0);

    // Only /metrics is served, and only to GET.
    assert_eq!(get(endpoint.local_addr(), "/").await.0, 404);

    drop(user);
    server.shutdown(Duration::from_secs(1)).await;
    let samples = scrape(endpoint.local_addr()).await;
    assert_eq!(samples.get("rpc_connections_open", &[server_label]), 0.0);
    endpoint.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_counts_jobs_by_outcome_its_cache_and_fuel_and_a_pool_its_members() {
    let metrics = Metrics::new();
    let sandbox = Sandbox::new(SandboxConfig {
        concurrency: 2,
        ..SandboxConfig::default()
    })
    .unwrap();
    let server = worker::serve(
        sandbox,
        "127.0.0.1:0".parse().unwrap(),
        with_metrics(&metrics),
        &[],
        None,
    )
    .await
    .unwrap();
    let addr = server.local_addr().to_string();
    let pool = WorkerPool::new([addr.clone()]);
    metrics.register_collector(pool.pool().collector("workers"));
    let endpoint = metrics.serve("127.0.0.1:0").await.unwrap();

    let module = hello();
    for _ in 0..3 {
        assert_eq!(
            pool.run(&module, Command::new()).await.unwrap().exit_code,
            10
        );
    }
    let client = WorkerClient::new(Client::new(addr.clone()));
    let limits = JobLimits {
        wall_time_ms: Some(100),
        ..JobLimits::default()
    };
    assert!(
        client
            .run(&spin_forever(), Command::new().limits(limits))
            .await
            .is_err()
    );
    let trap =
        Module::new(wat::parse_str(r#"(module (func (export "_start") unreachable))"#).unwrap());
    assert!(client.run(&trap, Command::new()).await.is_err());

    let samples = scrape(endpoint.local_addr()).await;
    let jobs = |outcome: &str| {
        samples.get(
            "worker_jobs_total",
            &[("kind", "run"), ("outcome", outcome)],
        )
    };
    assert_eq!(jobs("ok"), 3.0);
    assert_eq!(jobs("deadline_exceeded"), 1.0);
    assert_eq!(jobs("trap"), 1.0);
    // The module compiled once, then came from memory twice.
    assert_eq!(
        samples.get("worker_module_cache_total", &[("result", "miss")]),
        1.0
    );
    assert_eq!(
        samples.get(
            "worker_module_cache_total",
            &[("result", "hit"), ("tier", "memory")]
        ),
        2.0
    );
    assert_eq!(samples.get("worker_module_compile_seconds_count", &[]), 1.0);
    assert_eq!(samples.get("worker_job_run_seconds_count", &[]), 3.0);
    assert_eq!(samples.get("worker_job_queue_seconds_count", &[]), 3.0);
    assert_eq!(samples.get("worker_job_fuel_count", &[]), 3.0);
    assert!(samples.get("worker_job_fuel_sum", &[]) > 0.0);
    assert!(samples.get("worker_module_cache_bytes", &[("tier", "memory")]) > 0.0);
    assert_eq!(samples.get("worker_slots", &[]), 2.0);
    assert_eq!(samples.get("worker_jobs_running", &[]), 0.0);
    // The rpc layer sees the same jobs as calls: 200 for those that ran,
    // 422 for the job errors and for the first try of each module, which
    // offers it by hash and is told to send it (three modules).
    assert_eq!(jobs("module_not_found"), 3.0);
    let server_label = ("server", addr.as_str());
    assert_eq!(
        samples.get(
            "rpc_calls_total",
            &[server_label, ("function", "worker.run"), ("status", "200")]
        ),
        3.0
    );
    assert_eq!(
        samples.get(
            "rpc_calls_total",
            &[server_label, ("function", "worker.run"), ("status", "422")]
        ),
        5.0
    );
    // The pool's one member is healthy and was picked for each of its jobs.
    let member = [("pool", "workers"), ("member", addr.as_str())];
    assert_eq!(samples.get("rpc_pool_member_healthy", &member), 1.0);
    assert!(samples.get("rpc_pool_member_picks_total", &member) >= 3.0);
    assert!(samples.get("rpc_pool_member_rtt_seconds", &member) > 0.0);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_counts_the_jobs_it_relays() {
    let metrics = Metrics::new();
    let coordinator = worker::coordinator_server(Duration::from_secs(5))
        .config(with_metrics(&metrics))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let coordinator_addr = coordinator.local_addr().to_string();
    let sandbox = Sandbox::new(SandboxConfig {
        concurrency: 2,
        ..SandboxConfig::default()
    })
    .unwrap();
    // The relayed worker has no server: its sandbox's collector is what
    // it counts (as `worker serve --relay-via --metrics` does).
    let relayed_metrics = Metrics::new();
    relayed_metrics.register_collector(sandbox.metrics_collector());
    let _relayed = worker::relay_worker(
        sandbox,
        Client::new(coordinator_addr.clone()),
        "behind-nat".into(),
        Duration::from_millis(200),
    );
    let endpoint = metrics.serve("127.0.0.1:0").await.unwrap();
    let client = WorkerClient::new(Client::new(coordinator_addr));
    let module = hello();
    for _ in 0..4 {
        let output = client.run(&module, Command::new()).await.unwrap();
        assert_eq!(output.receipt.relayed_to.as_deref(), Some("behind-nat"));
    }
    let samples = scrape(endpoint.local_addr()).await;
    assert_eq!(
        samples.get("worker_relayed_jobs_total", &[("outcome", "ok")]),
        4.0
    );
    assert_eq!(samples.get("worker_relay_queue", &[]), 0.0);
    // It is a supernode too, and says how loaded.
    assert_eq!(samples.get("rpc_supernode_attached_workers", &[]), 0.0);
    assert_eq!(
        samples.get("rpc_supernode_max_workers", &[]),
        rpc_core::relay::DEFAULT_MAX_RELAYED_WORKERS as f64
    );
    assert_eq!(samples.get("rpc_supernode_relayed_bytes_total", &[]), 0.0);
    let relayed = relayed_metrics.encode();
    assert!(
        relayed.contains("worker_jobs_total{kind=\"run\",outcome=\"ok\"} 4"),
        "{relayed}"
    );
    coordinator.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_held_open_on_the_metrics_port_do_not_keep_a_scraper_out() {
    use tokio::io::AsyncWriteExt;

    let metrics = Metrics::new();
    let endpoint = metrics.serve("127.0.0.1:0").await.unwrap();
    let addr = endpoint.local_addr();
    // An attacker opens many connections: some say nothing, some send half
    // a request and stall.
    let mut held = Vec::new();
    for i in 0..200 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        if i % 2 == 0 {
            stream.write_all(b"GET /metr").await.unwrap();
        }
        held.push(stream);
    }
    // A scraper still gets its answer, well before the held connections'
    // header timeout could free a place.
    let scraped = tokio::time::timeout(Duration::from_secs(3), scrape(addr))
        .await
        .expect("the scrape was kept out by held connections");
    assert!(scraped.text.ends_with("# EOF\n"));
    drop(held);
    endpoint.stop();
}
