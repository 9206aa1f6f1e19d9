//! `--json`: one JSON document per job on stdout, for scripts.
//!
//! ```json
//! {"input":0,"worker":"127.0.0.1:7070","exit_code":0,
//!  "stdout":"hello\n","stderr":"",
//!  "receipt":{"module":"compiled","compile_us":5120,"fuel":1834,...},
//!  "error":null}
//! ```
//!
//! - `input` (map only): the job's index among the inputs.
//! - `worker`: the worker that answered, or `null` if none could be tried.
//! - `exit_code`: the program's own; `null` when the job has no result.
//! - `stdout`, `stderr`: the output as text when it is UTF-8; otherwise the
//!   field is `stdout_base64`/`stderr_base64` instead, standard base64.
//! - `receipt`: what the job used; `null` when the job has no result.
//! - `error`: `null`, or `{"kind", "fault", "message", "exit_code"}`: the
//!   failure's kind (a job error's snake-case name, or `unavailable`,
//!   `deadline_exceeded`, `refused`, `usage`, `internal`), who failed
//!   (`caller`, `guest`, `host`), the message, and the exit code `submit`
//!   exits with for it.

use base64::Engine;
use serde_json::{Map, Value, json};
use worker::{Fault, JobError, ModuleOrigin, Receipt, RunOutput};

use super::error::CliError;

/// The document for one job: its output, or why it has none.
pub(crate) fn job(
    input: Option<u64>,
    worker: Option<&str>,
    result: &Result<RunOutput, CliError>,
) -> Value {
    let mut document = Map::new();
    if let Some(input) = input {
        document.insert("input".into(), json!(input));
    }
    document.insert("worker".into(), json!(worker));
    match result {
        Ok(output) => {
            document.insert("exit_code".into(), json!(output.exit_code));
            output_field(&mut document, "stdout", &output.stdout);
            output_field(&mut document, "stderr", &output.stderr);
            document.insert("receipt".into(), receipt(&output.receipt));
            document.insert("error".into(), Value::Null);
        }
        Err(error) => {
            document.insert("exit_code".into(), Value::Null);
            let (stdout, stderr, used) = match error {
                CliError::Job(JobError::OutputLimit {
                    stdout,
                    stderr,
                    receipt: used,
                }) => (&stdout[..], &stderr[..], receipt(used)),
                CliError::Job(job) => (&[][..], job.stderr(), Value::Null),
                _ => (&[][..], &[][..], Value::Null),
            };
            output_field(&mut document, "stdout", stdout);
            output_field(&mut document, "stderr", stderr);
            document.insert("receipt".into(), used);
            let (kind, fault) = kind_and_fault(error);
            document.insert(
                "error".into(),
                json!({
                    "kind": kind,
                    "fault": fault.as_str(),
                    "message": error.to_string(),
                    "exit_code": error.exit_code(),
                }),
            );
        }
    }
    Value::Object(document)
}

/// Prints `document` on one line of stdout.
pub(crate) fn print(document: &Value) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{document}").and_then(|()| stdout.flush());
}

fn kind_and_fault(error: &CliError) -> (&'static str, Fault) {
    match error {
        CliError::Job(job) => (job.kind(), job.fault()),
        CliError::Usage(_) => ("usage", Fault::Caller),
        CliError::Unavailable(_) => ("unavailable", Fault::Host),
        // The caller's --timeout ran out before the job's answer.
        CliError::Deadline(_) => ("deadline_exceeded", Fault::Caller),
        CliError::Refused(_) => ("refused", Fault::Caller),
        CliError::Internal(_) => ("internal", Fault::Host),
    }
}

fn output_field(document: &mut Map<String, Value>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => document.insert(name.into(), json!(text)),
        Err(_) => document.insert(
            format!("{name}_base64"),
            json!(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
    };
}

fn receipt(receipt: &Receipt) -> Value {
    json!({
        "module": match receipt.module {
            ModuleOrigin::Compiled => "compiled",
            ModuleOrigin::Memory => "memory",
            ModuleOrigin::Disk => "disk",
        },
        "compile_us": receipt.compile_us,
        "queued_us": receipt.queued_us,
        "instantiate_us": receipt.instantiate_us,
        "wall_time_us": receipt.wall_time_us,
        "fuel": receipt.fuel,
        "peak_memory_bytes": receipt.peak_memory_bytes,
        "stdout_truncated": receipt.stdout_truncated,
        "stderr_truncated": receipt.stderr_truncated,
        "relayed_to": receipt.relayed_to,
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use worker::Resource;

    use super::*;

    #[test]
    fn a_finished_job_has_its_output_as_text_or_base64_and_its_receipt() {
        let output = RunOutput {
            exit_code: 3,
            stdout: Bytes::from_static(b"hi\n"),
            stderr: Bytes::from_static(&[0xff, 0x00]),
            receipt: Receipt {
                fuel: 42,
                module: ModuleOrigin::Disk,
                ..Receipt::default()
            },
        };
        let document = job(Some(7), Some("10.0.0.1:7070"), &Ok(output));
        assert_eq!(document["input"], 7);
        assert_eq!(document["worker"], "10.0.0.1:7070");
        assert_eq!(document["exit_code"], 3);
        assert_eq!(document["stdout"], "hi\n");
        assert!(document.get("stderr").is_none());
        assert_eq!(document["stderr_base64"], "/wA=");
        assert_eq!(document["receipt"]["fuel"], 42);
        assert_eq!(document["receipt"]["module"], "disk");
        assert!(document["error"].is_null());
    }

    #[test]
    fn a_failed_job_says_its_kind_whose_fault_and_its_exit_code() {
        let error = CliError::Job(JobError::ResourceExhausted {
            resource: Resource::Fuel,
            stderr: Bytes::from_static(b"spinning"),
        });
        let document = job(None, Some("w"), &Err(error));
        assert!(document.get("input").is_none());
        assert!(document["exit_code"].is_null());
        assert_eq!(document["stderr"], "spinning");
        assert_eq!(document["error"]["kind"], "resource_exhausted");
        assert_eq!(document["error"]["fault"], "guest");
        assert_eq!(document["error"]["exit_code"], 125);
        assert_eq!(
            document["error"]["message"],
            "resource exhausted: fuel (cpu)"
        );

        let unreachable = job(None, None, &Err(CliError::Unavailable("gone".into())));
        assert!(unreachable["worker"].is_null());
        assert_eq!(unreachable["error"]["kind"], "unavailable");
        assert_eq!(unreachable["error"]["fault"], "host");
        assert_eq!(unreachable["error"]["exit_code"], 69);
    }
}
