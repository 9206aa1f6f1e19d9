//! The `worker` command line.

fn main() {
    println!("worker {}", env!("CARGO_PKG_VERSION"));
}
