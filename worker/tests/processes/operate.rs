//! Operating a worker from scripts: `--json` on `submit`, `map` and
//! `status`, `--metrics` scraped over HTTP, and `--log-format json` with the
//! spans' fields, all on real processes.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{WorkerProcess, free_addr, run_cli};

#[path = "../../../tests/all/scrape.rs"]
mod scrape;

const TRAP: &str = r#"(module (func (export "_start") unreachable))"#;

/// A directory of module files for this test, removed when dropped.
struct Modules(PathBuf);

impl Modules {
    fn new(test: &str) -> Modules {
        let dir = std::env::temp_dir().join(format!("worker-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cat.wasm"), super::cat().bytes()).unwrap();
        std::fs::write(dir.join("trap.wat"), TRAP).unwrap();
        Modules(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Modules {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts `worker serve` with `extra` arguments and `env`, stderr to
/// `stderr` (or nowhere); waits until it listens and returns the metrics
/// address it printed, if any.
fn serve(
    addr: &str,
    extra: &[&str],
    env: &[(&str, &str)],
    stderr: Option<&Path>,
) -> (WorkerProcess, Option<SocketAddr>) {
    let stderr = match stderr {
        Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
        None => Stdio::null(),
    };
    let mut child = Process::new(env!("CARGO_BIN_EXE_worker"))
        .args([
            "serve",
            "--listen",
            addr,
            "--no-disk-cache",
            "--concurrency",
            "2",
        ])
        .args(extra)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut metrics = None;
    let mut line = String::new();
    for _ in 0..5 {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if let Some(rest) = line.trim().strip_prefix("metrics at http://") {
            metrics = rest.trim_end_matches("/metrics").parse().ok();
        }
        if line.contains("worker listening") {
            break;
        }
    }
    assert!(line.contains("worker listening"), "last line: {line:?}");
    std::thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    });
    (WorkerProcess(child), metrics)
}

fn args(list: &[String]) -> Vec<&str> {
    list.iter().map(String::as_str).collect()
}

/// Every line of stdout as a JSON document.
fn documents(output: &std::process::Output) -> Vec<Value> {
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_metrics_and_status_describe_every_job_for_scripts() {
    let modules = Modules::new("json");
    let addr = free_addr("127.0.0.1");
    let metrics_addr = free_addr("127.0.0.1");
    let (_worker, metrics) = serve(
        &addr,
        &[
            "--token",
            "client-token",
            "--token",
            "admin-token:admin",
            "--metrics",
            &metrics_addr,
        ],
        &[],
        None,
    );
    let metrics = metrics.expect("the worker printed where its metrics are");
    let cat = modules.path("cat.wasm");
    let submit = |module: &str| {
        vec![
            "submit",
            "--to",
            &addr,
            "--token",
            "client-token",
            "--json",
            module,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<String>>()
    };

    // A job that ran: its output as text, the worker, a receipt.
    let output = run_cli(&args(&submit(&cat)), "hi there");
    assert_eq!(output.status.code(), Some(0));
    let [first] = documents(&output).try_into().unwrap();
    assert_eq!(first["exit_code"], 0);
    assert_eq!(first["stdout"], "hi there");
    assert_eq!(first["stderr"], "");
    assert_eq!(first["worker"], addr.as_str());
    assert_eq!(first["receipt"]["module"], "compiled");
    assert!(first["receipt"]["fuel"].as_u64().unwrap() > 0);
    assert!(first["error"].is_null());

    // Output that is not UTF-8 comes as base64; the module is cached now.
    let output = run_cli(&args(&submit(&cat)), [0xff, 0xfe, 0x00]);
    assert_eq!(output.status.code(), Some(0));
    let [second] = documents(&output).try_into().unwrap();
    assert_eq!(second["stdout_base64"], "//4A");
    assert!(second.get("stdout").is_none());
    assert_eq!(second["receipt"]["module"], "memory");

    // A failed job: its kind, whose fault, and the documented exit code,
    // with nothing but the document on stdout.
    let output = run_cli(&args(&submit(&modules.path("trap.wat"))), "");
    assert_eq!(output.status.code(), Some(125));
    let [failed] = documents(&output).try_into().unwrap();
    assert!(failed["exit_code"].is_null());
    assert_eq!(failed["error"]["kind"], "trap");
    assert_eq!(failed["error"]["fault"], "guest");
    assert_eq!(failed["error"]["exit_code"], 125);
    assert_eq!(failed["worker"], addr.as_str());

    // No worker there: the host's fault, 69.
    let nobody = free_addr("127.0.0.1");
    let output = run_cli(
        &["submit", "--to", &nobody, "--timeout", "5", "--json", &cat],
        "",
    );
    assert_eq!(output.status.code(), Some(69));
    let [unreachable] = documents(&output).try_into().unwrap();
    assert_eq!(unreachable["error"]["kind"], "unavailable");
    assert_eq!(unreachable["error"]["fault"], "host");

    // map: one document per input line, in input order.
    let output = run_cli(
        &[
            "map",
            "--to",
            &addr,
            "--token",
            "client-token",
            "--json",
            "--lines",
            &cat,
        ],
        "one\ntwo\nthree\n",
    );
    assert_eq!(output.status.code(), Some(0));
    let jobs = documents(&output);
    assert_eq!(jobs.len(), 3);
    for (index, (job, line)) in jobs.iter().zip(["one\n", "two\n", "three\n"]).enumerate() {
        assert_eq!(job["input"], index);
        assert_eq!(job["stdout"], line);
        assert_eq!(job["worker"], addr.as_str());
        assert_eq!(job["exit_code"], 0);
    }

    // status: the admin may ask; a client may not (and the exit code says so).
    let output = run_cli(
        &["status", "--to", &addr, "--token", "admin-token", "--json"],
        "",
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        super::stderr_of(&output)
    );
    let [status] = documents(&output).try_into().unwrap();
    assert_eq!(status["worker"], addr.as_str());
    assert_eq!(status["status"]["concurrency"], 2);
    // Two submits, the trap, three map jobs.
    assert_eq!(status["status"]["finished"], 6);
    assert!(status["error"].is_null());
    let output = run_cli(
        &["status", "--to", &addr, "--token", "client-token", "--json"],
        "",
    );
    assert_eq!(output.status.code(), Some(69));
    let [refused] = documents(&output).try_into().unwrap();
    assert_eq!(refused["error"]["status"], 403);
    // And as a table for people.
    let output = run_cli(&["status", "--to", &addr, "--token", "admin-token"], "");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.starts_with("WORKER"), "{table}");
    assert!(table.contains(&addr), "{table}");

    // The same jobs, scraped.
    let samples = scrape::scrape(metrics).await;
    let jobs = |outcome: &str| {
        samples
            .find(
                "worker_jobs_total",
                &[("kind", "run"), ("outcome", outcome)],
            )
            .unwrap_or(0.0)
    };
    assert_eq!(jobs("ok"), 5.0);
    assert_eq!(jobs("trap"), 1.0);
    assert!(samples.get("rpc_connections_opened_total", &[("server", &addr)]) >= 7.0);
    // The client's status request was refused before it ran.
    assert_eq!(
        samples.get(
            "rpc_calls_refused_total",
            &[("server", &addr), ("status", "403")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_the_call_and_the_job() {
    let modules = Modules::new("logs");
    let log = modules.0.join("worker.log");
    let addr = free_addr("127.0.0.1");
    let (worker, _) = serve(
        &addr,
        &["--log-format", "json"],
        &[("RUST_LOG", "info,rpc_core=debug")],
        Some(&log),
    );
    let cat = modules.path("cat.wasm");
    let output = run_cli(&["submit", "--to", &addr, &cat], "logged");
    assert_eq!(output.status.code(), Some(0));
    let hash = worker::Module::from_file(&cat).unwrap().hash().to_string();
    // The line is written once the job is answered; give it a moment.
    let mut finished = None;
    for _ in 0..50 {
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
            .collect();
        finished = lines
            .into_iter()
            .find(|line| line["fields"]["message"] == "job finished");
        if finished.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(worker);
    let finished = finished.expect("a \"job finished\" line");
    let spans = finished["spans"].as_array().expect("the enclosing spans");
    let span = |name: &str| {
        spans
            .iter()
            .find(|span| span["name"] == name)
            .unwrap_or_else(|| panic!("no {name} span in {finished}"))
    };
    assert!(
        span("connection")["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(span("call")["method"], "worker.run");
    assert!(span("call")["id"].as_u64().is_some());
    // The job's own span is the line's current one.
    let job = &finished["span"];
    assert_eq!(job["name"], "job");
    assert_eq!(job["module"], hash.as_str());
    assert_eq!(job["outcome"], "ok");
    assert_eq!(job["cache"], "compiled now");
    assert!(job["fuel"].as_u64().unwrap() > 0);
    assert_eq!(finished["level"], "INFO");

    // RUST_LOG filters: at warn, a job that runs well writes nothing.
    let quiet = modules.0.join("quiet.log");
    let addr = free_addr("127.0.0.1");
    let (worker, _) = serve(&addr, &["-vv"], &[("RUST_LOG", "warn")], Some(&quiet));
    let output = run_cli(&["submit", "--to", &addr, &cat], "quiet");
    assert_eq!(output.status.code(), Some(0));
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(worker);
    let text = std::fs::read_to_string(&quiet).unwrap();
    assert!(!text.contains("job finished"), "{text}");
}

#[test]
fn map_draws_its_progress_on_a_terminal_and_nothing_when_piped() {
    let modules = Modules::new("progress");
    let input = modules.0.join("lines.txt");
    let lines: String = (0..400).map(|i| format!("{i}\n")).collect();
    std::fs::write(&input, &lines).unwrap();
    let addr = free_addr("127.0.0.1");
    let (_worker, _) = serve(&addr, &[], &[], None);
    let cat = modules.path("cat.wasm");

    // Piped: the outputs and the summary, no bar.
    let output = run_cli(&["map", "--to", &addr, "--lines", &cat], &lines);
    assert_eq!(output.status.code(), Some(0));
    let stderr = super::stderr_of(&output);
    assert!(!stderr.contains("ETA"), "a bar on a pipe: {stderr:?}");
    assert_eq!(stderr.trim(), "worker: 400 jobs, 0 failed");

    // On a terminal (script(1) gives the command one): the bar.
    if Process::new("script").arg("--version").output().is_err() {
        eprintln!("SKIPPED the terminal half: script(1) is not installed");
        return;
    }
    let out = modules.0.join("out.txt");
    let command = format!(
        "{} map --to {addr} --lines {cat} < {} > {}",
        env!("CARGO_BIN_EXE_worker"),
        input.display(),
        out.display()
    );
    let terminal = Process::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(terminal.status.success());
    let drawn = String::from_utf8_lossy(&terminal.stdout);
    assert!(drawn.contains("/400 done, 0 failed, "), "{drawn}");
    assert!(drawn.contains("jobs/s, ETA"), "{drawn}");
    assert!(drawn.contains("worker: 400 jobs, 0 failed"), "{drawn}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), lines);
}
