//! `worker run` and `worker serve` are the same sandbox: with the same
//! flags, a module ends the same way here as on a worker, and jobs using
//! exceptions succeed whether they run alone or overlap.

use std::path::{Path, PathBuf};
use std::process::Output;

use super::pki::scratch_dir;
use super::{free_addr, run_cli, spawn, stderr_of};

/// Throws 42, catches it and prints "caught 42".
const EXCEPTIONS: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (tag $oops (param i32))
  (memory (export "memory") 1)
  (data (i32.const 16) "caught 4?\n")
  (func $thrower (throw $oops (i32.const 42)))
  (func (export "_start") (local $caught i32)
    (local.set $caught
      (block $handler (result i32)
        (try_table (catch $oops $handler) (call $thrower))
        (i32.const 0)))
    (i32.store8 (i32.const 24)
      (i32.add (i32.const 48) (i32.rem_u (local.get $caught) (i32.const 10))))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 10))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// Prints "x\n" forever.
const FLOOD: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "x\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 2))
    (loop $more
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br $more))))"#;

const TRAP: &str = r#"(module (memory 1) (func (export "_start") unreachable))"#;

const SPIN: &str = r#"(module (func (export "_start") (loop $forever (br $forever))))"#;

/// The limits both sides run under.
const LIMITS: [&str; 4] = ["--fuel", "50000000", "--max-output", "4K"];

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// What a user sees of a job: its exit code, stdout, and the last line of
/// stderr (the worker's verdict).
fn seen(output: &Output) -> (Option<i32>, Vec<u8>, String) {
    let stderr = stderr_of(output);
    let verdict = stderr
        .lines()
        .rfind(|line| line.starts_with("worker: "))
        .unwrap_or_default()
        .to_owned();
    (output.status.code(), output.stdout.clone(), verdict)
}

#[test]
fn run_and_serve_end_every_kind_of_job_the_same_way() {
    let dir = scratch_dir("run-and-serve");
    let addr = free_addr("127.0.0.1");
    let mut serve = vec!["serve", "--listen", &addr, "--no-disk-cache"];
    serve.extend(LIMITS);
    let _worker = spawn(&serve, "listening");
    let cases = [
        ("exceptions.wat", EXCEPTIONS, Some(0), "caught 42\n"),
        ("trap.wat", TRAP, Some(125), "trap: "),
        ("spin.wat", SPIN, Some(125), "resource exhausted: fuel"),
        ("flood.wat", FLOOD, Some(125), "resource exhausted: output"),
    ];
    for (name, text, code, expected) in cases {
        let file = write(&dir, name, text);
        let file = file.to_str().unwrap();
        let mut run = vec!["run", "--no-disk-cache"];
        run.extend(LIMITS);
        run.push(file);
        let here = seen(&run_cli(&run, ""));
        let there = seen(&run_cli(&["submit", "--to", &addr, file], ""));
        assert_eq!(here.0, code, "{name} with run: {here:?}");
        if code == Some(0) {
            assert_eq!(here.1, expected.as_bytes(), "{name}");
        } else {
            assert!(here.2.contains(expected), "{name} with run: {here:?}");
        }
        // The trap's message names where it happened; the rest is equal.
        assert_eq!(here.0, there.0, "{name}: run {here:?}, submit {there:?}");
        assert_eq!(here.1, there.1, "{name}: the same output");
        assert_eq!(
            here.2.split(" at ").next(),
            there.2.split(" at ").next(),
            "{name}: the same verdict"
        );
    }
    // Stopped at the output limit, the program's output up to the limit
    // still comes out.
    let flood = seen(&run_cli(
        &[
            "submit",
            "--to",
            &addr,
            dir.join("flood.wat").to_str().unwrap(),
        ],
        "",
    ));
    assert_eq!(flood.1, "x\n".repeat(2048).into_bytes());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn four_overlapping_jobs_with_exceptions_on_two_slots_all_succeed() {
    let dir = scratch_dir("exceptions-overlap");
    let file = write(&dir, "exceptions.wat", EXCEPTIONS);
    let file = file.to_str().unwrap().to_owned();
    let addr = free_addr("127.0.0.1");
    let _worker = spawn(
        &[
            "serve",
            "--listen",
            &addr,
            "--no-disk-cache",
            "--concurrency",
            "2",
        ],
        "listening",
    );
    for _ in 0..3 {
        let jobs: Vec<_> = (0..4)
            .map(|_| {
                let (addr, file) = (addr.clone(), file.clone());
                std::thread::spawn(move || {
                    run_cli(
                        &["submit", "--to", &addr, "--stub-unknown-imports", &file],
                        "",
                    )
                })
            })
            .collect();
        for job in jobs {
            let output = job.join().unwrap();
            assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
            assert_eq!(output.stdout, b"caught 42\n");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
