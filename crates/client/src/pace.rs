//! Pacing of what the client sends: a token bucket kept below the server's per-connection
//! rate limit (default 100 messages / 10 s, bursts of 20, then `rate_limited` and close 4002).
//! Without it a reconnect that rejoins many rooms and resends a full offline queue in one
//! burst would be cut off by the server, again on every reconnect.

use std::time::Duration;

use tokio::time::Instant;

/// A send rate: `burst` messages at once, `per_second` on average.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SendRate {
    /// Messages that may go at once.
    pub burst: u32,
    /// Messages per second on average.
    pub per_second: f64,
}

impl Default for SendRate {
    /// Just under the server's default limit (100 messages per 10 s, burst 20).
    fn default() -> SendRate {
        SendRate {
            burst: 20,
            per_second: 9.5,
        }
    }
}

/// The bucket.
#[derive(Debug)]
pub(crate) struct Pacer {
    rate: SendRate,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    pub(crate) fn new(rate: SendRate, now: Instant) -> Pacer {
        Pacer {
            rate,
            tokens: f64::from(rate.burst),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * self.rate.per_second).min(f64::from(self.rate.burst));
        self.last = now;
    }

    /// Take a token if there is one.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next token is there.
    pub(crate) fn next_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        let missing = (1.0 - self.tokens).max(0.0);
        now + Duration::from_secs_f64(missing / self.rate.per_second.max(1e-3))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let start = Instant::now();
        let mut p = Pacer::new(
            SendRate {
                burst: 3,
                per_second: 2.0,
            },
            start,
        );
        assert!(p.take(start) && p.take(start) && p.take(start));
        assert!(!p.take(start));
        assert_eq!(p.next_at(start), start + Duration::from_millis(500));
        assert!(p.take(start + Duration::from_millis(500)));
        assert!(!p.take(start + Duration::from_millis(600)));
        // Never more than the burst, however long it rested.
        let later = start + Duration::from_secs(100);
        assert!((0..3).all(|_| p.take(later)));
        assert!(!p.take(later));
    }
}
