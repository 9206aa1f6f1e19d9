//! The `worker` command line.

use clap::Parser;

/// Runs WebAssembly programs shipped over the rpc protocol, in a sandbox.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {}

fn main() {
    let Cli {} = Cli::parse();
    println!(
        "worker {} (protocol version {})",
        env!("CARGO_PKG_VERSION"),
        worker::PROTOCOL_VERSION
    );
}
