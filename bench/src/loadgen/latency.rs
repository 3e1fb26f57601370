//! Round-trip time histogram (HdrHistogram, microsecond resolution).

use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies of one connection or one whole run.
pub struct Latency(Histogram<u64>);

impl Latency {
    /// An empty histogram covering 1 µs to 60 s with 3 significant digits.
    pub fn new() -> Self {
        Latency(Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"))
    }

    /// Records `count` samples of `rtt` (messages sent and completed together).
    pub fn record(&mut self, rtt: Duration, count: u64) {
        let micros = (rtt.as_micros() as u64).max(1);
        self.0.saturating_record_n(micros, count);
    }

    /// Adds another histogram's samples to this one.
    pub fn merge(&mut self, other: &Latency) {
        // Both have the same bounds, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// The value at `quantile` (0..=1) in microseconds.
    pub fn quantile_us(&self, quantile: f64) -> f64 {
        self.0.value_at_quantile(quantile) as f64
    }

    /// The largest sample in microseconds.
    pub fn max_us(&self) -> f64 {
        self.0.max() as f64
    }
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}
