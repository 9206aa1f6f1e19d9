//! Typed-call functions for the worker, plain Rust exported with
//! `rpc_guest::export!`.
//!
//! Build: `cargo build --release --target wasm32-wasip1 -p guest-stats`,
//! then call from a host with
//! `worker.call::<Vec<f64>, Summary>(&module, "summarize", &samples)`.

use serde::{Deserialize, Serialize};

/// A summary of samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// How many samples.
    pub count: u64,
    /// Their mean (0 for none).
    pub mean: f64,
    /// The smallest (0 for none).
    pub min: f64,
    /// The largest (0 for none).
    pub max: f64,
    /// The population standard deviation (0 for none).
    pub stddev: f64,
}

/// Summarizes `samples`.
pub fn summarize(samples: Vec<f64>) -> Summary {
    if samples.is_empty() {
        return Summary {
            count: 0,
            mean: 0.0,
            min: 0.0,
            max: 0.0,
            stddev: 0.0,
        };
    }
    let count = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / count;
    let variance = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / count;
    Summary {
        count: samples.len() as u64,
        mean,
        min: samples.iter().copied().fold(f64::INFINITY, f64::min),
        max: samples.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        stddev: variance.sqrt(),
    }
}

/// Counts the primes below `limit` by trial division: deliberately
/// CPU-bound, to compare the sandbox with native code.
pub fn count_primes(limit: u32) -> u32 {
    let mut count = 0;
    for n in 2..limit {
        if (2..).take_while(|d| d * d <= n).all(|d| n % d != 0) {
            count += 1;
        }
    }
    count
}

/// Panics: shows how a guest's panic reaches the host.
pub fn fail(message: String) {
    panic!("{message}")
}

rpc_guest::export!(summarize, count_primes, fail);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natively_the_functions_are_plain_rust() {
        assert_eq!(count_primes(100), 25);
        let summary = summarize(vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(
            (summary.count, summary.mean, summary.min, summary.max),
            (4, 2.5, 1.0, 4.0)
        );
    }
}
