//! Every program in `examples/` runs to the end and prints what it shows,
//! so that none can rot. `cargo test --workspace` (the README's test
//! command) builds the examples before it runs the tests; a narrower
//! `cargo test --test all` does not, so build them first with
//! `cargo build --examples`.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// No example may take longer; they take well under a second.
const BUDGET: Duration = Duration::from_secs(120);

/// The example binaries `cargo test` built beside this test binary.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/debug/deps/all-HASH -> target/debug/examples/NAME
    let debug = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("a target directory");
    debug
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// Runs an example to its end (or [`BUDGET`]); its output, and that it
/// succeeded.
fn run(name: &str, envs: &[(&str, PathBuf)]) -> String {
    let path = example(name);
    assert!(
        path.exists(),
        "{} was not built: run the whole test command (cargo test --workspace) or \
         cargo build --examples first",
        path.display()
    );
    let mut child = Command::new(&path)
        .envs(envs.iter().map(|(key, value)| (key, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example starts");
    let started = Instant::now();
    while child.try_wait().expect("waitable").is_none() {
        if started.elapsed() > BUDGET {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("its output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    assert!(
        status.success(),
        "example {name} failed ({status}):\n{text}"
    );
    text
}

fn assert_shows(name: &str, output: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            output.contains(line),
            "example {name} no longer shows {line:?}:\n{output}"
        );
    }
}

#[test]
fn the_demo_ships_guests_to_workers_and_loses_no_job_when_one_stops() {
    let guests = crate::guests::guests().clone();
    let output = run("demo", &[("RPC_GUEST_DIR", guests)]);
    assert_shows(
        "demo",
        &output,
        &[
            "the client asks the coordinator: 3 live workers",
            "top_word(\"to be or not to be\") = \"2 be\"",
            "on worker A: shipped and compiled now",
            "on worker A: compiled module found in memory",
            "count_primes(200000) = 17984",
            "... worker B stopped with",
            "240 of 240 jobs answered, 0 failed",
            "240 of 240 equal to the native top_word: none lost, none wrong",
            "(it was stopped)",
        ],
    );
}

#[test]
fn the_rpc_tour_runs_and_shows_each_step() {
    let output = run("rpc", &[]);
    assert_shows(
        "rpc",
        &output,
        &[
            "1000 concurrent calls on one connection: 1000 correct",
            "identical = true",
            "bytes sent = false (the server has it)",
            "a call after shutdown -> unavailable, as expected",
        ],
    );
}

#[test]
fn the_remote_example_refuses_callers_without_the_token_and_serves_those_with_it() {
    let output = run("remote", &[]);
    assert_shows(
        "remote",
        &output,
        &[
            "without the token: refused",
            "add(2, 3) = 5",
            "divide(1, 0) failed: DivisionByZero",
            "kv.get(greeting) = Some(\"hello\")",
            "kv.whoami() = rpc-client (math)",
            // The schema hashes PROTOCOL.md's vectors give.
            "offers math.divide                  schema   0xd24660109a2dc12c",
            "offers kv::get                      schema   0x3e3db62c5abb1c08",
        ],
    );
}

#[test]
fn the_protocol_by_hand_runs_every_exchange() {
    let output = run("protocol", &[]);
    assert_shows(
        "protocol",
        &output,
        &[
            "404 not found: no function named missing",
            "-> GoAway",
            "demo complete",
        ],
    );
}

#[test]
fn the_worker_example_ships_rust_guests_and_stops_the_rule_breakers() {
    let guests = crate::guests::guests().clone();
    let output = run("worker", &[("RPC_GUEST_DIR", guests)]);
    assert_shows(
        "worker",
        &output,
        &[
            "count_primes(200000) = 17984",
            "an infinite loop (200 ms allowed): deadline exceeded",
            "growing memory forever: resource exhausted: memory",
            "infinite recursion: resource exhausted: stack",
            "... with stub_unknown_imports: ran to completion",
        ],
    );
}
