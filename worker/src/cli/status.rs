//! `worker status --to ADDR...` (or `--coordinator ADDR`): each worker's
//! load and caches, as a table or, with `--json`, one JSON document per
//! worker. Asking needs a token whose role may (`admin` on a worker started
//! with `--admin-token`).

use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};
use worker::{WorkerClient, WorkerStatus};

use super::error::{CliError, EXIT_UNAVAILABLE};
use super::json;
use super::options::TargetArgs;

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Print one JSON document per worker, one per line:
    /// `{"worker", "status", "error"}`.
    #[arg(long)]
    json: bool,
}

impl StatusArgs {
    /// Asks every worker; exits 69 if any could not be asked.
    pub(crate) async fn execute(self) -> Result<ExitCode, CliError> {
        let config = self.target.client_config()?;
        let pool = self.target.pool().await?;
        let mut failed = false;
        if !self.json {
            println!(
                "{:<24} {:>7} {:>7} {:>6} {:>9} {:>8} {:>9} {:>9}",
                "WORKER",
                "RUNNING",
                "QUEUED",
                "SLOTS",
                "FINISHED",
                "COMPILED",
                "DISK HITS",
                "IN MEMORY"
            );
        }
        for member in pool.pool().status() {
            let client = rpc_core::Client::with_config(member.addr.clone(), config.clone());
            let answer = WorkerClient::new(client).status().await;
            failed |= answer.is_err();
            if self.json {
                json::print(&document(&member.addr, &answer));
                continue;
            }
            match answer {
                Ok(status) => println!(
                    "{:<24} {:>7} {:>7} {:>6} {:>9} {:>8} {:>9} {:>9}",
                    member.addr,
                    status.running,
                    status.queued,
                    status.concurrency,
                    status.finished,
                    status.compiled,
                    status.disk_hits,
                    status.modules_in_memory
                ),
                Err(error) => println!("{:<24} {error}", member.addr),
            }
        }
        Ok(if failed {
            ExitCode::from(EXIT_UNAVAILABLE)
        } else {
            ExitCode::SUCCESS
        })
    }
}

/// `{"worker": ADDR, "status": {...} | null, "error": null | {"status", "message"}}`.
fn document(addr: &str, answer: &Result<WorkerStatus, rpc_core::RpcError>) -> Value {
    match answer {
        Ok(status) => json!({
            "worker": addr,
            "status": {
                "concurrency": status.concurrency,
                "running": status.running,
                "peak_running": status.peak_running,
                "queued": status.queued,
                "finished": status.finished,
                "compiled": status.compiled,
                "disk_hits": status.disk_hits,
                "modules_in_memory": status.modules_in_memory,
            },
            "error": null,
        }),
        Err(error) => json!({
            "worker": addr,
            "status": null,
            "error": {"status": error.status().as_u16(), "message": error.to_string()},
        }),
    }
}
