//! Counters of the Redis backend for `/metrics` (`Store::stats`): round-trip latency,
//! errors, reconnections. Atomics: every Redis operation records itself without a lock.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use switchboard_hub::BackendStats;

/// Upper bounds of the latency buckets, in seconds.
const BOUNDS: [f64; 12] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Per bucket (not cumulative); the last one is for longer than every bound.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_micros: AtomicU64,
    errors: AtomicU64,
    reconnects: AtomicU64,
}

impl Stats {
    /// One round trip to Redis took `took`.
    pub(crate) fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = BOUNDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BOUNDS.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    /// An operation failed or got no answer in time.
    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }

    /// A broken connection was made again.
    pub(crate) fn reconnect(&self) {
        self.reconnects.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> BackendStats {
        let latency_buckets: Vec<(f64, u64)> = BOUNDS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(&self.buckets)
            .map(|(bound, n)| (bound, n.load(Relaxed)))
            .collect();
        BackendStats {
            // From the buckets: a snapshot racing with updates still counts what it shows.
            latency_count: latency_buckets.iter().map(|(_, n)| n).sum(),
            latency_buckets,
            latency_sum_seconds: self.sum_micros.load(Relaxed) as f64 / 1e6,
            errors: self.errors.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_count_their_own_range_and_end_with_infinity() {
        let stats = Stats::default();
        stats.observe(Duration::from_micros(100));
        stats.observe(Duration::from_millis(3));
        stats.observe(Duration::from_secs(5));
        stats.error();
        let s = stats.snapshot();
        assert_eq!(s.latency_buckets[0], (0.000_25, 1));
        assert_eq!(s.latency_buckets[4], (0.005, 1));
        assert_eq!(s.latency_buckets.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!((s.latency_count, s.errors, s.reconnects), (3, 1, 0));
        assert!((s.latency_sum_seconds - 5.0031).abs() < 1e-9);
    }
}
