//! The protocol as a contract: `examples/python/rpc_client.py`, a client
//! written in Python from PROTOCOL.md alone, checks its bytes against the test
//! vectors and then talks to a real server and a real worker: handshake with
//! a token, calls, data both ways, a module shipped hash first, WASI jobs and
//! typed calls, a server reached through a supernode and past a dead route,
//! and the failures a user meets.
//!
//! Skipped, with a message, where `python3` is absent.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rpc_core::{FunctionOptions, Server, ServerBuilder, ServerConfig};
use worker::{Limits, Sandbox, SandboxConfig, worker_server};

use crate::support::{dial_for, plain_supernode};
use crate::worker::{cat, echo_guest, hello, huge_module, spin_forever};

const TOKEN: &str = "python-client-token";
const ADMIN_TOKEN: &str = "python-admin-token";
/// The whole Python run is bounded: a hung client fails the test.
const PYTHON_BUDGET: Duration = Duration::from_secs(240);
/// The application server's idle timeout, also given to Python.
const IDLE_TIMEOUT: Duration = Duration::from_millis(1500);

fn python3() -> Option<PathBuf> {
    let found = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    found.then(|| PathBuf::from("python3"))
}

/// A server like an application's: two functions for the role `client`, and
/// the data store for the same role. It closes connections idle for
/// [`IDLE_TIMEOUT`], which the Python client must survive.
async fn application_server() -> Server {
    application().bind("127.0.0.1:0").await.unwrap()
}

/// [`application_server`]'s functions and settings, to be served anywhere.
fn application() -> ServerBuilder {
    Server::builder()
        .config(ServerConfig {
            idle_timeout: Some(IDLE_TIMEOUT),
            ..ServerConfig::default()
        })
        .token(TOKEN, "client")
        .token(ADMIN_TOKEN, "admin")
        .data_roles(["client"])
        .function_with(
            "math.add",
            FunctionOptions::new()
                .roles(["client"])
                .schema_hash(rpc_core::__private::schema_hash(&[
                    "math.add", "i64", "i64", "->", "i64",
                ]))
                .description("Adds two numbers."),
            |_, (a, b): (i64, i64)| async move { Ok::<_, String>(a.wrapping_add(b)) },
        )
        .function_with(
            "math.divide",
            FunctionOptions::new().roles(["client"]),
            |_, (a, b): (i64, i64)| async move {
                a.checked_div(b)
                    .ok_or_else(|| String::from("division by zero"))
            },
        )
}

/// The application, listening nowhere, attached as `name` to a supernode
/// of its own: the supernode's server, the application's, and the task
/// that opens the connections the supernode asks for.
async fn relayed_application(name: &'static str) -> (Server, Server, tokio::task::JoinHandle<()>) {
    let (supernode, relay, relay_addr) = plain_supernode().await;
    let (server, intake) = application().serve_joined().unwrap();
    let dialer = dial_for(&supernode, &relay_addr, name, intake).await;
    (relay, server, dialer)
}

fn write_modules(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, module) in [
        ("cat.wasm", cat()),
        ("hello.wasm", hello()),
        ("echo.wasm", echo_guest()),
        ("spin.wasm", spin_forever()),
        ("big.wasm", huge_module(3 << 20)),
    ] {
        std::fs::write(dir.join(name), module.bytes()).unwrap();
    }
}

/// Runs the Python tests to the end or to [`PYTHON_BUDGET`], and returns
/// whether they passed and what they printed.
fn run_python(python: &Path, envs: &[(&str, String)]) -> (bool, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(python)
        .arg(root.join("examples/python/test_rpc_client.py"))
        .arg("-v")
        .current_dir(root)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .envs(envs.iter().map(|(key, value)| (key, value)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > PYTHON_BUDGET {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_written_from_the_spec_does_everything_with_real_peers() {
    let Some(python) = python3() else {
        eprintln!(
            "SKIPPED: python3 is not installed; the Python client's interop test did not run"
        );
        return;
    };
    let server = application_server().await;
    let (relay, relayed, dialer) = relayed_application("py-app").await;
    // A port with nothing behind it, for a route that fails.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let sandbox = Sandbox::new(SandboxConfig {
        concurrency: 2,
        limits: Limits {
            memory_bytes: 64 << 20,
            wall_time: Duration::from_secs(20),
            output_bytes: 1 << 20,
            ..Limits::default()
        },
        ..SandboxConfig::default()
    })
    .unwrap();
    let worker = worker_server(sandbox)
        .token(TOKEN, "client")
        .token(ADMIN_TOKEN, "admin")
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let modules = std::env::temp_dir().join(format!("python-interop-{}", std::process::id()));
    write_modules(&modules);

    let envs = [
        ("RPC_INTEROP_SERVER", server.local_addr().to_string()),
        ("RPC_INTEROP_WORKER", worker.local_addr().to_string()),
        ("RPC_INTEROP_TOKEN", TOKEN.to_owned()),
        ("RPC_INTEROP_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("RPC_INTEROP_MODULES", modules.display().to_string()),
        ("RPC_INTEROP_IDLE_MS", IDLE_TIMEOUT.as_millis().to_string()),
        (
            "RPC_INTEROP_RELAYED",
            format!("py-app@{}", relay.local_addr()),
        ),
        ("RPC_INTEROP_DEAD", dead),
    ];
    let (passed, output) = tokio::task::spawn_blocking(move || run_python(&python, &envs))
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&modules);
    assert!(passed, "the Python client's tests failed:\n{output}");
    // Every test ran: none was skipped for want of a peer.
    assert!(
        !output.contains("skipped"),
        "Python tests were skipped:\n{output}"
    );
    let interop_passed = output
        .lines()
        .filter(|line| line.contains("(__main__.Interop.") && line.ends_with("... ok"))
        .count();
    assert!(
        interop_passed >= 14,
        "not every interop test passed:\n{output}"
    );
    eprintln!("{output}");
    server.shutdown(Duration::from_secs(1)).await;
    worker.shutdown(Duration::from_secs(1)).await;
    dialer.abort();
    relayed.shutdown(Duration::from_secs(1)).await;
    relay.shutdown(Duration::from_secs(1)).await;
}
