//! Ships WebAssembly programs to a worker over TCP and runs them: a WASI
//! command written in Rust (word frequencies of this README), typed calls
//! into a Rust library (statistics, a prime count), and jobs that break the
//! rules and are stopped while the worker goes on.
//!
//! ```sh
//! rustup target add wasm32-wasip1
//! cargo run --example worker                      # starts a worker in-process
//! cargo run --example worker -- 127.0.0.1:7070    # or uses `worker serve`
//! ```
//!
//! The guest programs are built on first use (see `support/guests.rs`).

use std::time::Duration;

use rpc_core::Client;

#[path = "support/guests.rs"]
mod guests;
use worker::{
    Command, JobLimits, Module, Receipt, Sandbox, SandboxConfig, WorkerClient, WorkerError,
    worker_server,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let guests = guests::dir()?;
    let wordfreq = Module::from_file(guests.join("guest-wordfreq.wasm"))?;
    let stats = Module::from_file(guests.join("guest_stats.wasm"))?;

    // A worker: the one named on the command line, or one started here.
    let (addr, _local) = match std::env::args().nth(1) {
        Some(addr) => (addr, None),
        None => {
            let sandbox = Sandbox::new(SandboxConfig::default())?;
            let handle = worker_server(sandbox).bind("127.0.0.1:0").await?;
            println!("started a worker on {}", handle.local_addr());
            (handle.local_addr().to_string(), Some(handle))
        }
    };
    let worker = WorkerClient::new(Client::new(addr)).timeout(Duration::from_secs(60));

    println!("\n== a WASI command: the 5 most frequent words of README.md ==");
    let readme = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))?;
    for round in ["first run", "second run"] {
        let output = worker
            .run(
                &wordfreq,
                Command::new().args(["-n", "5"]).stdin(readme.clone()),
            )
            .await?;
        print!("{}", String::from_utf8_lossy(&output.stdout));
        println!(
            "exit code {} ({round}; {})",
            output.exit_code,
            receipt(&output.receipt)
        );
    }
    let empty = worker.run(&wordfreq, Command::new()).await?;
    println!(
        "with empty stdin it exits {} and says: {}",
        empty.exit_code,
        String::from_utf8_lossy(&empty.stderr).trim()
    );

    println!("\n== typed calls into a Rust library ==");
    let samples: Vec<f64> = (1..=1000).map(|i| f64::from(i).sqrt()).collect();
    let summary: guests::Summary = worker.call(&stats, "summarize", &samples).await?;
    println!("summarize(sqrt(1..=1000)) = {summary:.3?}");
    let primes: u32 = worker.call(&stats, "count_primes", &200_000u32).await?;
    println!("count_primes(200000) = {primes}");
    match worker
        .call::<_, ()>(&stats, "fail", "the guest gave up")
        .await
    {
        Err(WorkerError::Job(error)) => println!(
            "fail(..) -> {}; its stderr: {}",
            error.to_string().lines().next().unwrap_or_default(),
            String::from_utf8_lossy(error.stderr()).trim()
        ),
        other => println!("fail(..) -> unexpectedly {other:?}"),
    }

    println!("\n== jobs that break the rules ==");
    let spin = wat(r#"(module (func (export "_start") (loop $l (br $l))))"#)?;
    let limits = JobLimits {
        wall_time_ms: Some(200),
        ..JobLimits::default()
    };
    report(
        "an infinite loop (200 ms allowed)",
        worker.run(&spin, Command::new().limits(limits)).await,
    );
    let grow = wat(r#"(module (memory 1) (func (export "_start")
        (loop $l (br_if $l (i32.ne (memory.grow (i32.const 256)) (i32.const -1)))) unreachable))"#)?;
    report(
        "growing memory forever",
        worker.run(&grow, Command::new()).await,
    );
    let deep = wat(r#"(module (func $f (export "_start") (call $f)))"#)?;
    report(
        "infinite recursion",
        worker.run(&deep, Command::new()).await,
    );
    let hook = wat(r#"(module (import "env" "host_hook" (func)) (func (export "_start")))"#)?;
    report(
        "importing a host function",
        worker.run(&hook, Command::new()).await,
    );
    report(
        "... with stub_unknown_imports",
        worker
            .run(&hook, Command::new().stub_unknown_imports())
            .await,
    );
    let after = worker
        .run(&wordfreq, Command::new().args(["-n", "1"]).stdin(readme))
        .await?;
    print!(
        "and the worker still answers: {}",
        String::from_utf8_lossy(&after.stdout)
    );

    let status = worker.status().await?;
    println!(
        "\nworker status: {} jobs finished, {} modules compiled, {} in memory",
        status.finished, status.compiled, status.modules_in_memory
    );
    Ok(())
}

fn report<T>(what: &str, result: Result<T, WorkerError>) {
    match result {
        Ok(_) => println!("{what:>36}: ran to completion"),
        Err(error) => println!(
            "{what:>36}: {}",
            error.to_string().lines().next().unwrap_or_default()
        ),
    }
}

fn receipt(receipt: &Receipt) -> String {
    format!(
        "module {}, compiled in {:.1} ms, ran {:.2} ms, {} fuel, peak memory {} KiB",
        receipt.module,
        receipt.compile_us as f64 / 1000.0,
        receipt.wall_time_us as f64 / 1000.0,
        receipt.fuel,
        receipt.peak_memory_bytes / 1024
    )
}

fn wat(text: &str) -> Result<Module, wat::Error> {
    Ok(Module::new(wat::parse_str(text)?))
}
