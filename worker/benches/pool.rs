//! Jobs per second over pools of 1, 2 and 4 in-process workers on loopback,
//! for a job that sleeps 10 ms (so scaling is not capped by this machine's
//! cores) and for a trivial job; a trivial job relayed through a
//! coordinator against the same job sent directly; and one worker reached
//! through a supernode against the same worker reached directly.
//!
//! Run with `cargo bench -p worker --bench pool`.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rpc_core::{Client, Server};
use worker::{
    Command, Module, Progress, Sandbox, SandboxConfig, WorkerClient, WorkerPool,
    coordinator_server, worker_server,
};

/// Sleeps 10 ms through WASI's `poll_oneoff` with a relative clock.
fn sleeper() -> Module {
    Module::new(
        wat::parse_str(
            r#"(module
              (import "wasi_snapshot_preview1" "poll_oneoff"
                (func $poll (param i32 i32 i32 i32) (result i32)))
              (memory (export "memory") 1)
              (func (export "_start")
                ;; subscription at 0: userdata 0, tag 0 (clock), clock id 1
                ;; (monotonic), timeout 10 ms, precision 0, flags 0
                (i32.store8 (i32.const 8) (i32.const 0))
                (i32.store (i32.const 16) (i32.const 1))
                (i64.store (i32.const 24) (i64.const 10000000))
                (i64.store (i32.const 32) (i64.const 0))
                (i32.store16 (i32.const 40) (i32.const 0))
                (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#,
        )
        .unwrap(),
    )
}

fn trivial() -> Module {
    Module::new(wat::parse_str(r#"(module (func (export "_start")))"#).unwrap())
}

async fn workers(count: usize) -> Vec<Server> {
    let mut handles = Vec::new();
    for _ in 0..count {
        let sandbox = Sandbox::new(SandboxConfig {
            concurrency: 8,
            ..SandboxConfig::default()
        })
        .unwrap();
        handles.push(worker_server(sandbox).bind("127.0.0.1:0").await.unwrap());
    }
    handles
}

async fn jobs_per_second(pool: &WorkerPool, module: &Module, jobs: usize, in_flight: usize) -> f64 {
    let progress = Progress::default();
    // Warm up: ship and compile everywhere.
    let warm: Vec<_> = pool
        .map(
            module,
            (0..in_flight).map(|_| Command::new()),
            in_flight,
            &progress,
        )
        .collect()
        .await;
    assert!(warm.iter().all(|job| job.result.is_ok()));
    let started = Instant::now();
    let results: Vec<_> = pool
        .map(
            module,
            (0..jobs).map(|_| Command::new()),
            in_flight,
            &progress,
        )
        .collect()
        .await;
    assert!(results.iter().all(|job| job.result.is_ok()));
    jobs as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("jobs per second over a pool of in-process workers (8 slots each, 64 jobs in flight)");
    for (name, module, jobs) in [
        ("sleeps 10 ms", sleeper(), 1500),
        ("trivial", trivial(), 10_000),
    ] {
        let mut one = 0.0;
        for count in [1, 2, 4] {
            let handles = workers(count).await;
            let pool = WorkerPool::new(handles.iter().map(|h| h.local_addr().to_string()));
            let rate = jobs_per_second(&pool, &module, jobs, 64).await;
            if count == 1 {
                one = rate;
            }
            println!(
                "  {name:<13} {count} worker(s): {rate:>8.0} jobs/s   {:.2}x one worker",
                rate / one
            );
            for handle in handles {
                handle.shutdown(Duration::from_secs(1)).await;
            }
        }
    }

    // Relayed against direct, sequential, one job at a time.
    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    let direct = worker_server(sandbox).bind("127.0.0.1:0").await.unwrap();
    let coordinator = coordinator_server(worker::DEFAULT_TTL)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let relayed_sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    let _relayed = worker::relay_worker(
        relayed_sandbox,
        Client::new(coordinator.local_addr().to_string()),
        "relayed".into(),
        Duration::from_secs(1),
    );
    let module = trivial();
    let direct_client = WorkerClient::new(Client::new(direct.local_addr().to_string()));
    let relay_client = WorkerClient::new(Client::new(coordinator.local_addr().to_string()));
    let direct_p50 = p50(&direct_client, &module).await;
    let relay_p50 = p50(&relay_client, &module).await;
    println!("\ntrivial job, one at a time, p50");
    println!(
        "  relayed through a coordinator {relay_p50:>7.1} us   direct {direct_p50:>7.1} us   ratio {:.2}x",
        relay_p50 / direct_p50
    );

    // Through a supernode (here the coordinator, which is one when no
    // worker offers): one worker reachable both directly and through it,
    // alternating rounds; the p50 difference against one loopback round
    // trip (a ping), and throughput with 64 jobs in flight.
    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (both, intake) = worker_server(sandbox.clone())
        .serve_and_join(listener)
        .unwrap();
    let config = worker::AttachConfig {
        name: "both".into(),
        directories: vec![Client::new(coordinator.local_addr().to_string())],
        client: rpc_core::ClientConfig::default(),
        heartbeat: Duration::from_secs(1),
        routes: 1,
        serves_tls: false,
    };
    let mut attachment =
        worker::relay_through_supernodes(intake, config, move |addr| worker::wire::Registration {
            name: "both".into(),
            addr,
            capacity: 1,
            running: 0,
            modules: Vec::new(),
            supernode: None,
        });
    let route = attachment
        .attached(None, Duration::from_secs(10))
        .await
        .expect("attached to the coordinator");
    let direct_addr = both.local_addr().to_string();
    let direct_client = WorkerClient::new(Client::new(direct_addr.clone()));
    let routed_client = WorkerClient::new(Client::new(route.clone()));
    // Both routes in one address, the relayed one named first: the client
    // races them and should keep the direct one.
    let either_client = WorkerClient::new(Client::new(format!("{route},{direct_addr}")));
    let (mut direct_p50s, mut routed_p50s, mut hops) = (Vec::new(), Vec::new(), Vec::new());
    let mut either_p50s = Vec::new();
    for round in 0..6 {
        if round % 2 == 0 {
            direct_p50s.push(p50(&direct_client, &module).await);
            routed_p50s.push(p50(&routed_client, &module).await);
            either_p50s.push(p50(&either_client, &module).await);
        } else {
            either_p50s.push(p50(&either_client, &module).await);
            routed_p50s.push(p50(&routed_client, &module).await);
            direct_p50s.push(p50(&direct_client, &module).await);
        }
        let mut pings = Vec::new();
        for _ in 0..2000 {
            pings.push(direct_client.client().ping().await.unwrap().as_secs_f64() * 1e6);
        }
        pings.sort_by(f64::total_cmp);
        hops.push(pings[pings.len() / 2]);
    }
    let (direct_p50, routed_p50, hop) = (
        median(&mut direct_p50s),
        median(&mut routed_p50s),
        median(&mut hops),
    );
    println!(
        "  through a supernode           {routed_p50:>7.1} us   direct {direct_p50:>7.1} us   ratio {:.2}x   difference {:.1} us = {:.2} round trips of a ping ({hop:.1} us)",
        routed_p50 / direct_p50,
        routed_p50 - direct_p50,
        (routed_p50 - direct_p50) / hop
    );
    let either_p50 = median(&mut either_p50s);
    println!(
        "  both routes, relayed first    {either_p50:>7.1} us   direct {direct_p50:>7.1} us   ratio {:.2}x   (route kept: {})",
        either_p50 / direct_p50,
        match either_client.client().route() {
            Some(kept) if kept == direct_addr => "direct",
            Some(_) => "relayed",
            None => "none",
        }
    );
    let direct_pool = WorkerPool::new([direct_addr]);
    let routed_pool = WorkerPool::new([route]);
    let (mut direct_rates, mut routed_rates) = (Vec::new(), Vec::new());
    for round in 0..5 {
        if round % 2 == 0 {
            direct_rates.push(jobs_per_second(&direct_pool, &module, 5000, 64).await);
            routed_rates.push(jobs_per_second(&routed_pool, &module, 5000, 64).await);
        } else {
            routed_rates.push(jobs_per_second(&routed_pool, &module, 5000, 64).await);
            direct_rates.push(jobs_per_second(&direct_pool, &module, 5000, 64).await);
        }
    }
    let (direct_rate, routed_rate) = (median(&mut direct_rates), median(&mut routed_rates));
    println!("\ntrivial job, 64 in flight on one worker");
    println!(
        "  through a supernode           {routed_rate:>7.0} jobs/s   direct {direct_rate:>7.0} jobs/s   ratio {:.2}x",
        routed_rate / direct_rate
    );
    drop(attachment);
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

async fn p50(worker: &WorkerClient, module: &Module) -> f64 {
    for _ in 0..200 {
        worker.run(module, Command::new()).await.unwrap();
    }
    let mut samples: Vec<f64> = Vec::new();
    for _ in 0..2000 {
        let started = Instant::now();
        worker.run(module, Command::new()).await.unwrap();
        samples.push(started.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}
