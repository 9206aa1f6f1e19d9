//! Joins two connections byte for byte, both ways, within a bandwidth
//! budget shared by every relayed connection of the process.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;

/// Bytes read at once from one side.
const PUMP_BUFFER: usize = 64 << 10;

/// A bandwidth budget: at most `rate` bytes a second on average, bursts up
/// to one second's worth.
#[derive(Debug)]
pub(crate) struct Bandwidth {
    rate: u64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    /// Bytes that may pass now; negative when the budget is in debt.
    available: f64,
    refilled: Instant,
}

impl Bandwidth {
    /// A budget of `rate` bytes a second (at least 1).
    pub(crate) fn new(rate: u64) -> Bandwidth {
        let rate = rate.max(1);
        Bandwidth {
            rate,
            state: Mutex::new(BucketState {
                available: rate as f64,
                refilled: Instant::now(),
            }),
        }
    }

    /// Takes `bytes` from the budget, waiting as long as passing them
    /// now would exceed the rate.
    async fn take(&self, bytes: usize) {
        let wait = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let rate = self.rate as f64;
            let refill = now.duration_since(state.refilled).as_secs_f64() * rate;
            state.available = (state.available + refill).min(rate);
            state.refilled = now;
            state.available -= bytes as f64;
            if state.available >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-state.available / rate)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Copies both ways between `a` and `b` until both directions end: one
/// side's end of stream is passed on as a half close, and an error on
/// either side closes both. `a_first` and `b_first` are bytes already read
/// from `a` and `b` (they go out first). Every piece passed, either way, is
/// added to `passed` as it goes.
pub(crate) async fn splice(
    a: TcpStream,
    a_first: &[u8],
    b: TcpStream,
    b_first: &[u8],
    bandwidth: Option<&Bandwidth>,
    passed: &AtomicU64,
) {
    let (a_read, a_write) = a.into_split();
    let (b_read, b_write) = b.into_split();
    tokio::join!(
        pump(a_read, a_first, b_write, bandwidth, passed),
        pump(b_read, b_first, a_write, bandwidth, passed),
    );
}

/// Copies from `from` to `to` until `from` ends or either fails, then
/// closes `to`'s sending side.
async fn pump(
    mut from: OwnedReadHalf,
    first: &[u8],
    mut to: OwnedWriteHalf,
    bandwidth: Option<&Bandwidth>,
    passed: &AtomicU64,
) {
    let copied = async {
        if !first.is_empty() {
            if let Some(bandwidth) = bandwidth {
                bandwidth.take(first.len()).await;
            }
            to.write_all(first).await?;
            passed.fetch_add(first.len() as u64, Ordering::Relaxed);
        }
        let mut buf = vec![0u8; PUMP_BUFFER];
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            if let Some(bandwidth) = bandwidth {
                bandwidth.take(n).await;
            }
            to.write_all(buf.get(..n).unwrap_or_default()).await?;
            passed.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
    .await;
    if let Err(error) = copied {
        tracing::debug!(%error, "relayed connection failed");
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_bandwidth_budget_holds_the_average_rate() {
        let bandwidth = Bandwidth::new(1000);
        let start = Instant::now();
        // The first second's worth passes at once, then 3000 more bytes
        // take three seconds.
        bandwidth.take(1000).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        for _ in 0..3 {
            bandwidth.take(1000).await;
        }
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(2900) && elapsed <= Duration::from_millis(3100),
            "{elapsed:?}"
        );
    }
}
