//! Per-connection message rate limiting (SPEC §6: 100 messages / 10 s, burst 20).
//!
//! A token bucket per connection, a few bytes of state, no timer: tokens are refilled from the
//! elapsed time when a message arrives.

use std::num::NonZeroU64;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The limit: `messages` per `per`, with bursts of up to `burst` messages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained messages per `per`. Default 100.
    pub messages: u32,
    /// The window. Default 10 s.
    pub per: Duration,
    /// Bucket size: messages accepted at once after a quiet spell. Default 20.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            messages: 100,
            per: Duration::from_secs(10),
            burst: 20,
        }
    }
}

/// What to do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit.
    Accept,
    /// Over the limit: drop it and tell the client (`error "Rate limit exceeded"`) once.
    RejectAndWarn,
    /// Over the limit again: drop it silently.
    Reject,
    /// Still flooding after the warning (another burst's worth): close with 4002.
    Close,
}

/// One connection's bucket: 16 bytes, and `Option<TokenBucket>` too (every session holds
/// one; see `Stamp`).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f32,
    /// Messages rejected since the last accepted one.
    rejected: u32,
    last: Stamp,
}

/// A monotonic instant in 8 bytes (an `Instant` takes 16): nanoseconds since a process-wide
/// origin, plus one, so it is never zero and `Option<TokenBucket>` needs no more room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Stamp(NonZeroU64);

/// The origin of [`Stamp`]s: a day before the first instant stamped, so instants a caller
/// took a little earlier still count from it (anything earlier counts as the origin itself:
/// such a bucket refills a little less, never more).
static ORIGIN: OnceLock<Instant> = OnceLock::new();

impl Stamp {
    fn of(now: Instant) -> Stamp {
        let origin =
            *ORIGIN.get_or_init(|| now.checked_sub(Duration::from_secs(86_400)).unwrap_or(now));
        // u64 nanoseconds last 584 years.
        let nanos =
            u64::try_from(now.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX - 1);
        Stamp(NonZeroU64::new(nanos.saturating_add(1)).unwrap_or(NonZeroU64::MAX))
    }

    /// Time from `earlier` to `self` (zero if `earlier` is later).
    fn since(self, earlier: Stamp) -> Duration {
        Duration::from_nanos(self.0.get().saturating_sub(earlier.0.get()))
    }
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limit: &RateLimit, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: limit.burst as f32,
            rejected: 0,
            last: Stamp::of(now),
        }
    }

    /// Whether the bucket would be full at `now` (the state of a client never seen).
    pub fn is_full(&self, limit: &RateLimit, now: Instant) -> bool {
        let rate = limit.messages as f32 / limit.per.as_secs_f32().max(f32::EPSILON);
        let elapsed = Stamp::of(now).since(self.last).as_secs_f32();
        self.tokens + elapsed * rate >= limit.burst as f32
    }

    /// Account for one message arriving at `now`.
    pub fn check(&mut self, limit: &RateLimit, now: Instant) -> Verdict {
        let rate = limit.messages as f32 / limit.per.as_secs_f32().max(f32::EPSILON);
        let now = Stamp::of(now);
        let elapsed = now.since(self.last).as_secs_f32();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * rate).min(limit.burst as f32);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.rejected = 0;
            return Verdict::Accept;
        }
        self.rejected += 1;
        match self.rejected {
            1 => Verdict::RejectAndWarn,
            n if n > limit.burst => Verdict::Close,
            _ => Verdict::Reject,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_warn_then_close() {
        let limit = RateLimit::default();
        let t0 = Instant::now();
        let mut b = TokenBucket::new(&limit, t0);
        for _ in 0..20 {
            assert_eq!(b.check(&limit, t0), Verdict::Accept);
        }
        assert_eq!(b.check(&limit, t0), Verdict::RejectAndWarn);
        for _ in 0..19 {
            assert_eq!(b.check(&limit, t0), Verdict::Reject);
        }
        assert_eq!(b.check(&limit, t0), Verdict::Close);
    }

    #[test]
    fn sustained_rate_is_accepted() {
        let limit = RateLimit::default();
        let t0 = Instant::now();
        let mut b = TokenBucket::new(&limit, t0);
        // 10 messages per second for a minute: exactly the limit.
        for i in 0..600u64 {
            let now = t0 + Duration::from_millis(i * 100);
            assert_eq!(b.check(&limit, now), Verdict::Accept, "message {i}");
        }
    }

    #[test]
    fn a_bucket_is_small_and_an_absent_one_costs_nothing_more() {
        assert_eq!(std::mem::size_of::<TokenBucket>(), 16);
        assert_eq!(std::mem::size_of::<Option<TokenBucket>>(), 16);
    }

    #[test]
    fn an_earlier_instant_is_no_refill() {
        let limit = RateLimit::default();
        let t1 = Instant::now() + Duration::from_secs(5);
        let mut b = TokenBucket::new(&limit, t1);
        for _ in 0..20 {
            assert_eq!(b.check(&limit, t1), Verdict::Accept);
        }
        assert_eq!(
            b.check(&limit, t1 - Duration::from_secs(3)),
            Verdict::RejectAndWarn
        );
        assert_eq!(
            b.check(&limit, t1 + Duration::from_millis(150)),
            Verdict::Accept,
            "time is counted from the latest instant seen"
        );
    }

    #[test]
    fn tokens_come_back_after_a_pause() {
        let limit = RateLimit::default();
        let t0 = Instant::now();
        let mut b = TokenBucket::new(&limit, t0);
        for _ in 0..20 {
            b.check(&limit, t0);
        }
        assert_eq!(b.check(&limit, t0), Verdict::RejectAndWarn);
        assert_eq!(
            b.check(&limit, t0 + Duration::from_secs(1)),
            Verdict::Accept
        );
    }
}
