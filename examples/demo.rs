//! The main demo: WebAssembly programs built from Rust, shipped to three
//! workers found through a coordinator, run there in a sandbox, and their
//! results back, with what each step cost; a job fanned out over the pool
//! while one worker is stopped, none lost; and a remote function declared
//! with `#[remote]` checking the workers' answers.
//!
//! ```sh
//! rustup target add wasm32-wasip1 && cargo run --example demo
//! ```
//!
//! The first run builds the guest programs in `examples/guests` for
//! `wasm32-wasip1` (under `target/guests`); later runs reuse them.
//! `RPC_GUEST_DIR=DIR` uses guests built elsewhere.

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rpc_core::{Client, Server, remote};

#[path = "support/guests.rs"]
mod guests;
use serde::Serialize;
use tokio::task::JoinHandle;
use worker::wire::{CallRequest, Registration};
use worker::{
    Command, CoordinatorResolver, Module, ModuleOrigin, Progress, Receipt, Sandbox, SandboxConfig,
    WorkerClient, WorkerPool,
};

/// The most frequent word of `text` and its count, as `wordfreq -n 1`
/// prints it: computed natively, served as a remote function, and used
/// to check what the sandboxed guests answered.
#[remote(name = "check.top_word")]
fn top_word(text: String) -> String {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
    {
        *counts.entry(word.to_lowercase()).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
        .map(|(word, count)| format!("{count:>7} {word}\n"))
        .unwrap_or_default()
}

/// Jobs in the fan-out, and how many finish before a worker is stopped.
const FAN_OUT: usize = 240;
const STOP_AFTER: u64 = 60;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    println!("== ship WebAssembly programs to workers and get their results back ==\n");
    let guests = guests::dir()?;
    let wordfreq = Module::from_file(guests.join("guest-wordfreq.wasm"))?;
    let stats = Module::from_file(guests.join("guest_stats.wasm"))?;

    println!("1. A coordinator and three workers, on 127.0.0.1, .2 and .3 (one process here;");
    println!("   `worker coordinator` and `worker serve --join` on real machines)");
    let coordinator = worker::coordinator_server(Duration::from_secs(5))
        .bind("127.0.0.1:0")
        .await?;
    let coordinator_addr = coordinator.local_addr().to_string();
    println!("   coordinator   {coordinator_addr}");
    let mut workers = Vec::new();
    let mut names = BTreeMap::new();
    for (name, ip) in [("A", "127.0.0.1"), ("B", "127.0.0.2"), ("C", "127.0.0.3")] {
        let sandbox = Sandbox::new(SandboxConfig {
            concurrency: 2,
            ..SandboxConfig::default()
        })?;
        let server = worker::worker_server(sandbox.clone())
            .bind(format!("{ip}:0"))
            .await?;
        let addr = server.local_addr().to_string();
        let beat = join(&coordinator_addr, name, &addr, sandbox);
        println!(
            "   worker {name}      {addr}  (2 job slots; default limits: 1 GiB memory, 60 s, fuel)"
        );
        names.insert(addr, name);
        workers.push((server, beat));
    }
    let resolver = CoordinatorResolver::new(Client::new(coordinator_addr.clone()));
    let mut found = Vec::new();
    for _ in 0..100 {
        found = resolver.resolve_now().await;
        if found.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "   the client asks the coordinator: {} live workers",
        found.len()
    );
    let Some(first) = found.first().cloned() else {
        return Err("the coordinator lists no worker".into());
    };
    let pool = WorkerPool::new(found.clone());
    let name = |addr: Option<&str>| {
        addr.and_then(|addr| names.get(addr).copied())
            .unwrap_or("?")
    };

    println!("\n2. A remote function, declared with #[remote] and called over TCP");
    let checker = Server::builder()
        .remote(top_word::function())
        .bind("127.0.0.1:0")
        .await?;
    let check = Client::new(checker.local_addr().to_string());
    let answer = top_word::call(&check, "to be or not to be".into()).await?;
    println!(
        "   top_word(\"to be or not to be\") = {:?}  (native Rust, checks the guests below)",
        answer.trim()
    );

    println!("\n3. A Rust program built for wasm32-wasip1, shipped to a worker and run there");
    let readme = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))?;
    println!(
        "   guest-wordfreq.wasm: {} KiB, content hash {}",
        wordfreq.bytes().len() / 1024,
        short(&wordfreq.hash().to_string())
    );
    // Offered by its hash first: the worker asks for the bytes only when
    // it lacks the module.
    let worker_a = WorkerClient::new(Client::new(first.clone()));
    for round in ["first run ", "second run"] {
        let started = Instant::now();
        let output = worker_a
            .run(
                &wordfreq,
                Command::new().args(["-n", "3"]).stdin(readme.clone()),
            )
            .await?;
        let words: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        println!(
            "   {round}: top words of README.md = [{}], exit code {}",
            words.join(", "),
            output.exit_code
        );
        println!(
            "               on worker {}: {}; {:.1} ms in all",
            name(Some(first.as_str())),
            receipt(&output.receipt),
            started.elapsed().as_secs_f64() * 1000.0
        );
    }

    println!("\n4. Typed calls into a Rust library compiled to wasm (guest-stats)");
    let samples: Vec<f64> = (1..=1000).map(|i| f64::from(i).sqrt()).collect();
    let (summary, cost) =
        typed_call::<_, guests::Summary>(&first, &stats, "summarize", &samples).await?;
    println!(
        "   summarize(sqrt(1..=1000)) = mean {:.3}, min {:.3}, max {:.3}, stddev {:.3}",
        summary.mean, summary.min, summary.max, summary.stddev
    );
    println!("               {cost}");
    let (primes, cost) = typed_call::<_, u32>(&first, &stats, "count_primes", &200_000u32).await?;
    println!("   count_primes(200000) = {primes}");
    println!("               {cost}");

    println!(
        "\n5. One job fanned out over the pool: the top word of each of {FAN_OUT} paragraphs,"
    );
    println!("   16 at a time; worker B is stopped after {STOP_AFTER} have finished");
    let protocol = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/PROTOCOL.md"))?;
    let paragraphs: Vec<String> = String::from_utf8_lossy(&readme)
        .split("\n\n")
        .chain(protocol.split("\n\n"))
        .filter(|paragraph| paragraph.chars().any(char::is_alphanumeric))
        .take(FAN_OUT)
        .map(str::to_owned)
        .collect();
    let commands = paragraphs
        .iter()
        .map(|paragraph| Command::new().args(["-n", "1"]).stdin(paragraph.clone()));
    let progress = Progress::default();
    let worker_b = workers.remove(1);
    let watched = &progress;
    let stop_b = async move {
        while watched.count().done < STOP_AFTER {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let in_flight = watched.count().in_flight;
        let (server, beat) = worker_b;
        beat.abort();
        // No grace: jobs running on B are cut off, and the pool sends them
        // to another worker.
        server.shutdown(Duration::ZERO).await;
        println!("   ... worker B stopped with {in_flight} jobs in flight on the pool");
    };
    let started = Instant::now();
    let (results, ()) = tokio::join!(
        pool.map(&wordfreq, commands, 16, &progress)
            .collect::<Vec<_>>(),
        stop_b
    );
    let elapsed = started.elapsed();
    let mut by_worker: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut fuel, mut compiled, mut checked, mut failed) = (0u64, 0, 0, 0);
    for (job, paragraph) in results.iter().zip(&paragraphs) {
        match &job.result {
            Ok(output) => {
                *by_worker.entry(name(job.worker.as_deref())).or_default() += 1;
                fuel += output.receipt.fuel;
                compiled += usize::from(output.receipt.module == ModuleOrigin::Compiled);
                let expected = top_word::call(&check, paragraph.clone()).await?;
                if output.stdout == expected.as_bytes() {
                    checked += 1;
                }
            }
            Err(error) => {
                failed += 1;
                println!("   a job failed: {error}");
            }
        }
    }
    let shares: Vec<String> = by_worker
        .iter()
        .map(|(worker, jobs)| format!("{worker} {jobs}"))
        .collect();
    println!(
        "   {} of {FAN_OUT} jobs answered, {failed} failed; answered by worker {}",
        results.len() - failed,
        shares.join(", ")
    );
    println!("   {checked} of {FAN_OUT} equal to the native top_word: none lost, none wrong");
    println!(
        "   cost: {:.2} s, {:.0} jobs/s, {fuel} fuel in all; {compiled} jobs waited for their \
         worker's one compile, {} found the module compiled in memory",
        elapsed.as_secs_f64(),
        FAN_OUT as f64 / elapsed.as_secs_f64(),
        FAN_OUT - compiled - failed
    );

    println!("\n6. What each worker says it did (worker.status)");
    for (addr, name) in &names {
        let worker = WorkerClient::new(Client::new(addr.clone()));
        match worker.status().await {
            Ok(status) => println!(
                "   worker {name}: {} jobs finished, {} compiled, {} modules in memory",
                status.finished, status.compiled, status.modules_in_memory
            ),
            Err(error) => println!("   worker {name}: {error} (it was stopped)"),
        }
    }

    for (server, beat) in workers {
        beat.abort();
        server.shutdown(Duration::from_secs(1)).await;
    }
    checker.shutdown(Duration::from_secs(1)).await;
    coordinator.shutdown(Duration::from_secs(1)).await;
    println!(
        "\ndone: every job shipped, run in a sandbox and answered; see examples/worker.rs for"
    );
    println!(
        "jobs that break the sandbox's limits, and the README for running workers on many machines"
    );
    Ok(())
}

/// Registers a worker with the coordinator now and every second.
fn join(coordinator: &str, name: &str, addr: &str, sandbox: Sandbox) -> JoinHandle<()> {
    let (name, addr) = (name.to_owned(), addr.to_owned());
    worker::join(
        Client::new(coordinator.to_owned()),
        Duration::from_secs(1),
        move || {
            let status = sandbox.status();
            Registration {
                name: name.clone(),
                addr: addr.clone(),
                capacity: status.concurrency,
                running: status.running,
                modules: sandbox.ready_modules(),
                supernode: None,
            }
        },
    )
}

/// Calls export `name` of `module` on the worker at `addr` with `input`:
/// the decoded output, and what the call cost.
async fn typed_call<In: Serialize, Out: serde::de::DeserializeOwned>(
    addr: &str,
    module: &Module,
    name: &str,
    input: &In,
) -> Result<(Out, String), Box<dyn Error>> {
    let worker = WorkerClient::new(Client::new(addr.to_owned()));
    let request = CallRequest {
        module: module.hash(),
        export: name.to_owned(),
        input: postcard::to_allocvec(input)?.into(),
        limits: worker::JobLimits::default(),
        stub_unknown_imports: false,
    };
    let output = worker.call_raw(module, request).await?;
    let decoded = postcard::from_bytes(&output.output)?;
    Ok((decoded, receipt(&output.receipt)))
}

/// A receipt, in words.
fn receipt(receipt: &Receipt) -> String {
    let module = match receipt.module {
        ModuleOrigin::Compiled => format!(
            "shipped and compiled now ({:.1} ms)",
            receipt.compile_us as f64 / 1000.0
        ),
        ModuleOrigin::Memory => "compiled module found in memory".to_owned(),
        ModuleOrigin::Disk => "compiled module loaded from disk".to_owned(),
    };
    format!(
        "{module}, ran {:.2} ms, {} fuel, {} KiB peak memory",
        receipt.wall_time_us as f64 / 1000.0,
        receipt.fuel,
        receipt.peak_memory_bytes / 1024
    )
}

/// The first 12 hex digits of a hash.
fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}
