//! The measurement window: what completes inside it counts, the rest is warm-up
//! or tail.

use std::time::{Duration, Instant};

/// A window of time in which completions are counted: after the warm-up, for the
/// configured duration.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Start of the measurement (end of the warm-up).
    pub start: Instant,
    /// End of the measurement and of the run.
    pub end: Instant,
}

impl Window {
    /// A window that opens `warmup` seconds from now and lasts `duration` seconds.
    pub fn after(warmup: f64, duration: f64) -> Self {
        let start = Instant::now() + Duration::from_secs_f64(warmup);
        Window {
            start,
            end: start + Duration::from_secs_f64(duration),
        }
    }

    /// Whether `t` falls in the measurement window.
    pub fn contains(&self, t: Instant) -> bool {
        t >= self.start && t < self.end
    }
}
