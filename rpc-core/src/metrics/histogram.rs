//! A histogram that observes without a lock: one relaxed atomic add per
//! bucket, sum and count. `prometheus-client`'s own histogram takes a
//! write lock per observation, which a call path shared by every
//! connection cannot afford.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{MetricEncoder, NoLabelSet};

/// Bucket bounds for durations observed in microseconds: 50 µs to 60 s.
pub const LATENCY_BUCKETS_US: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000, 60_000_000,
];

/// A histogram of integer observations (microseconds, fuel units, bytes)
/// with fixed bucket bounds, exported in a base unit (`scale` converts: a
/// histogram of microseconds exported in seconds has scale `1e-6`).
///
/// ```
/// use rpc_core::metrics::{Histogram, LATENCY_BUCKETS_US};
///
/// let latency = Histogram::new(LATENCY_BUCKETS_US, 1e-6);
/// latency.observe(120); // 120 µs
/// assert_eq!(latency.count(), 1);
/// ```
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// One more than `bounds`: the last counts what is above them all.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
    scale: f64,
}

impl Histogram {
    /// A histogram with upper bounds `bounds` (ascending, in the unit
    /// observed), exported multiplied by `scale`.
    pub fn new(bounds: &'static [u64], scale: f64) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            scale,
        }
    }

    /// Counts one observation of `value`.
    pub fn observe(&self, value: u64) {
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        if let Some(count) = self.counts.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// How many observations there were.
    pub fn count(&self) -> u64 {
        self.counts
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .sum()
    }

    /// Writes the histogram with the labels `encoder` was given.
    ///
    /// # Errors
    ///
    /// The encoder's, when writing fails.
    pub fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .map(|&bound| bound as f64 * self.scale)
            .chain(std::iter::once(f64::MAX))
            .zip(
                self.counts
                    .iter()
                    .map(|count| count.load(Ordering::Relaxed)),
            )
            .collect();
        let count = buckets.iter().map(|(_, count)| count).sum();
        let sum = self.sum.load(Ordering::Relaxed) as f64 * self.scale;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_value_lands_in_the_first_bucket_that_holds_it() {
        static BOUNDS: &[u64] = &[10, 100];
        let histogram = Histogram::new(BOUNDS, 1.0);
        for value in [0, 10, 11, 100, 101, 5000] {
            histogram.observe(value);
        }
        let counts: Vec<u64> = histogram
            .counts
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts, [2, 2, 2]);
        assert_eq!(histogram.count(), 6);
        assert_eq!(histogram.sum.load(Ordering::Relaxed), 5222);
    }
}
