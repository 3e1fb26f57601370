//! Reconnection delays: exponential backoff with full jitter (SPEC §9; AWS architecture
//! blog, "Exponential Backoff And Jitter"): attempt `n` waits a uniformly random time in
//! `[0, min(cap, base · 2ⁿ)]`. The jitter spreads a crowd of clients that lost the same
//! server over the whole window, so the restarted server is not hit by all of them at once.

use std::time::Duration;

/// Backoff settings (defaults: 1 s base, 30 s cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first retry's window.
    pub base: Duration,
    /// The largest window.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The window of attempt `attempt` (0 for the first retry): `min(cap, base · 2^attempt)`.
    pub fn window(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay of attempt `attempt`, `unit` being a uniform random number in `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        self.window(attempt).mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// A uniform random number in `[0, 1)` from the OS (0.5 if it has none).
pub(crate) fn unit_random() -> f64 {
    let mut bytes = [0u8; 8];
    match getrandom::getrandom(&mut bytes) {
        // 53 random bits: every f64 in [0, 1) with that spacing is equally likely.
        Ok(()) => (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_doubles_up_to_the_cap() {
        let b = Backoff::default();
        let secs: Vec<u64> = (0..8).map(|n| b.window(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(b.window(1000), Duration::from_secs(30));
    }

    #[test]
    fn delays_span_the_whole_window() {
        let b = Backoff::default();
        assert_eq!(b.delay(3, 0.0), Duration::ZERO);
        assert_eq!(b.delay(3, 0.5), Duration::from_secs(4));
        assert!(b.delay(3, 0.999_999) < Duration::from_secs(8));
        let delays: Vec<Duration> = (0..200).map(|_| b.delay(4, unit_random())).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(16)));
        // Full jitter: the delays are spread, not bunched at the top of the window.
        assert!(delays.iter().any(|d| *d < Duration::from_secs(4)));
        assert!(delays.iter().any(|d| *d > Duration::from_secs(12)));
    }
}
