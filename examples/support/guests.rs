//! The guest programs in `examples/guests`, built for wasm32-wasip1 on
//! first use, for the examples that ship them.

use std::error::Error;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What `guest-stats`'s `summarize` returns (the guest's own type, mirrored
/// here: postcard needs the same fields in the same order).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Summary {
    pub(crate) count: u64,
    pub(crate) mean: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) stddev: f64,
}

/// Where the guests are: `RPC_GUEST_DIR`, or built now for wasm32-wasip1
/// under `target/guests` with the cargo that runs the example (quick once
/// built).
pub(crate) fn dir() -> Result<PathBuf, Box<dyn Error>> {
    if let Some(dir) = std::env::var_os("RPC_GUEST_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("guests");
    let built = target.join("wasm32-wasip1").join("release");
    println!("building the guest programs (examples/guests) for wasm32-wasip1 if needed...");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip1"])
        .args(["-p", "guest-wordfreq", "-p", "guest-stats"])
        .env("CARGO_TARGET_DIR", &target)
        .status()?;
    if !status.success() {
        return Err("building the guests failed; is the target installed? \
                    (rustup target add wasm32-wasip1)"
            .into());
    }
    println!();
    Ok(built)
}
