//! Jobs over three workers on separate loopback addresses (127.0.0.1-3, as
//! three hosts): fan-out, a worker killed mid-run, modules shipped once per
//! worker.

use std::time::Duration;

use futures_util::StreamExt;
use rpc_core::{ClientConfig, PoolConfig, Server};
use worker::{Command, Progress, Sandbox, SandboxConfig, WorkerPool, worker_server};

// `cat` copies stdin to stdout: each job's output says which job it was.
use crate::worker::cat;

async fn start_worker(addr: &str) -> (Sandbox, Server) {
    let sandbox = Sandbox::new(SandboxConfig {
        concurrency: 2,
        ..SandboxConfig::default()
    })
    .unwrap();
    let handle = worker_server(sandbox.clone()).bind(addr).await.unwrap();
    (sandbox, handle)
}

fn pool_config() -> PoolConfig {
    PoolConfig {
        client: ClientConfig {
            connect_timeout: Duration::from_millis(300),
            max_retries: 0,
            ..ClientConfig::default()
        },
        attempt_timeout: Duration::from_secs(10),
        deadline: Duration::from_secs(60),
        eject_initial: Duration::from_millis(100),
        eject_max: Duration::from_millis(500),
        ..PoolConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_jobs_survive_a_worker_killed_mid_run() {
    let (a_box, a) = start_worker("127.0.0.1:0").await;
    let (b_box, b) = start_worker("127.0.0.2:0").await;
    let (_c_box, c) = start_worker("127.0.0.3:0").await;
    let c_addr = c.local_addr().to_string();
    let pool = WorkerPool::with_config(
        [
            a.local_addr().to_string(),
            b.local_addr().to_string(),
            c_addr.clone(),
        ],
        pool_config(),
    );
    let module = cat();
    let progress = Progress::default();
    let commands = (0..1000).map(|i| Command::new().stdin(format!("job {i}")));
    let killer = async {
        // Once a tenth is done, c dies with jobs in flight.
        while progress.count().done < 100 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        c.shutdown(Duration::ZERO).await;
    };
    let (outputs, ()) = tokio::join!(
        pool.map(&module, commands, 24, &progress)
            .collect::<Vec<_>>(),
        killer
    );
    assert_eq!(outputs.len(), 1000);
    let addrs = [
        a.local_addr().to_string(),
        b.local_addr().to_string(),
        c_addr.clone(),
    ];
    let mut answered_by = [0; 3];
    for (i, job) in outputs.into_iter().enumerate() {
        // Each result names the worker that gave it.
        let worker = job.worker.unwrap_or_else(|| panic!("job {i}: no worker"));
        let Some(slot) = addrs.iter().position(|addr| *addr == worker) else {
            panic!("job {i} answered by {worker}, not a pool member")
        };
        answered_by[slot] += 1;
        let output = job
            .result
            .unwrap_or_else(|error| panic!("job {i}: {error}"));
        assert_eq!(output.stdout, format!("job {i}").as_bytes(), "job {i}");
    }
    // The survivors took over the dead worker's share.
    assert!(
        answered_by[0] > 0 && answered_by[1] > 0 && answered_by[0] + answered_by[1] >= 900,
        "{answered_by:?}"
    );
    let count = progress.count();
    assert_eq!((count.done, count.failed, count.in_flight), (1000, 0, 0));
    // Each surviving worker compiled the module once, shipped lazily.
    for sandbox in [&a_box, &b_box] {
        assert!(sandbox.has_module(&module.hash()));
        assert_eq!(sandbox.status().compiled, 1);
    }
    let c_status = pool
        .pool()
        .status()
        .into_iter()
        .find(|member| member.addr == c_addr)
        .unwrap();
    assert!(!c_status.healthy, "{c_status:?}");

    // c restarts (empty cache) and takes work again: the module is shipped
    // to it anew.
    let (c_box, _c) = start_worker(&c_addr).await;
    let mut back = false;
    for _ in 0..40 {
        let outputs: Vec<_> = pool
            .map(
                &module,
                (0..30).map(|_| Command::new().stdin("again")),
                6,
                &progress,
            )
            .collect()
            .await;
        assert!(
            outputs
                .iter()
                .all(|output| output.result.as_ref().is_ok_and(|o| o.stdout == "again"))
        );
        if c_box.status().finished > 0 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        back,
        "the restarted worker never got a job: {:?}",
        pool.pool().status()
    );
    assert!(c_box.has_module(&module.hash()));
}

#[tokio::test]
async fn unordered_fan_out_yields_every_index_once() {
    let (_a_box, a) = start_worker("127.0.0.1:0").await;
    let (_b_box, b) = start_worker("127.0.0.2:0").await;
    let pool = WorkerPool::with_config(
        [a.local_addr().to_string(), b.local_addr().to_string()],
        pool_config(),
    );
    let module = cat();
    let progress = Progress::default();
    let mut seen = [false; 100];
    let mut results = pool.map_unordered(
        &module,
        (0..100).map(|i| Command::new().stdin(i.to_string())),
        10,
        &progress,
    );
    while let Some((index, output)) = results.next().await {
        assert_eq!(output.result.unwrap().stdout, index.to_string().as_bytes());
        assert!(
            !std::mem::replace(&mut seen[index], true),
            "index {index} twice"
        );
    }
    assert!(seen.iter().all(|&s| s));
    // Typed calls go through the pool too.
    let error = pool.call::<_, ()>(&module, "nope", &()).await.unwrap_err();
    assert!(error.to_string().contains("rpc_alloc"), "{error}");
}
