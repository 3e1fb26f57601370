//! Heartbeat deadlines, without a timer task per connection.
//!
//! The driver keeps one `Sleep` and asks [`Keepalive::deadline`] what to sleep until. Activity
//! only records a timestamp (no timer reset per message); when the sleep fires,
//! [`Keepalive::handle_timeout`] decides whether the deadline really passed.

use std::time::{Duration, Instant};

/// What to do when the deadline fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeepaliveAction {
    /// Nothing yet: sleep until the new [`Keepalive::deadline`].
    Wait,
    /// The peer has been quiet for the interval: send a Ping.
    SendPing,
    /// No answer within the timeout after a Ping: the peer is dead or half-open.
    Dead,
}

/// The heartbeat settings (shared by every connection; passed in, not stored per connection:
/// every byte of `Keepalive` is paid by every idle connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Send a Ping after this long without hearing from the peer.
    pub interval: Duration,
    /// Give up this long after a Ping without hearing from the peer.
    pub timeout: Duration,
}

/// Per-connection heartbeat state.
#[derive(Debug, Clone)]
pub(crate) struct Keepalive {
    last_heard: Instant,
    /// The ping sent, in ms after `last_heard` (a ping is only sent after it, and hearing
    /// anything clears it): 8 bytes, not an `Instant`'s 16, in every idle connection.
    ping_sent_after_ms: Option<u32>,
}

impl Keepalive {
    /// Start counting at `now`.
    pub(crate) fn new(now: Instant) -> Keepalive {
        Keepalive {
            last_heard: now,
            ping_sent_after_ms: None,
        }
    }

    fn ping_sent(&self) -> Option<Instant> {
        self.ping_sent_after_ms
            .map(|ms| self.last_heard + Duration::from_millis(ms.into()))
    }

    /// Anything arrived from the peer: it is alive.
    pub(crate) fn heard(&mut self, now: Instant) {
        self.last_heard = now;
        self.ping_sent_after_ms = None;
    }

    /// When to call [`Keepalive::handle_timeout`] next.
    pub(crate) fn deadline(&self, hb: &Heartbeat) -> Instant {
        match self.ping_sent() {
            Some(sent) => sent + hb.timeout,
            None => self.last_heard + hb.interval,
        }
    }

    /// The deadline fired (or may have): decide.
    pub(crate) fn handle_timeout(&mut self, now: Instant, hb: &Heartbeat) -> KeepaliveAction {
        match self.ping_sent() {
            Some(sent) if now >= sent + hb.timeout => KeepaliveAction::Dead,
            Some(_) => KeepaliveAction::Wait,
            None if now >= self.last_heard + hb.interval => {
                let after = now.saturating_duration_since(self.last_heard).as_millis();
                self.ping_sent_after_ms = Some(u32::try_from(after).unwrap_or(u32::MAX));
                KeepaliveAction::SendPing
            }
            None => KeepaliveAction::Wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const HB: Heartbeat = Heartbeat {
        interval: Duration::from_secs(25),
        timeout: Duration::from_secs(20),
    };

    #[test]
    fn quiet_peer_is_pinged_then_dropped() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(t0);
        assert_eq!(k.deadline(&HB), t0 + 25 * S);
        assert_eq!(k.handle_timeout(t0 + 24 * S, &HB), KeepaliveAction::Wait);
        assert_eq!(
            k.handle_timeout(t0 + 25 * S, &HB),
            KeepaliveAction::SendPing
        );
        assert_eq!(k.deadline(&HB), t0 + 45 * S);
        assert_eq!(k.handle_timeout(t0 + 44 * S, &HB), KeepaliveAction::Wait);
        assert_eq!(k.handle_timeout(t0 + 45 * S, &HB), KeepaliveAction::Dead);
    }

    #[test]
    fn any_activity_postpones_the_ping_and_answers_it() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(t0);
        k.heard(t0 + 10 * S);
        assert_eq!(k.handle_timeout(t0 + 25 * S, &HB), KeepaliveAction::Wait);
        assert_eq!(k.deadline(&HB), t0 + 35 * S);
        assert_eq!(
            k.handle_timeout(t0 + 35 * S, &HB),
            KeepaliveAction::SendPing
        );
        k.heard(t0 + 36 * S);
        assert_eq!(k.deadline(&HB), t0 + 61 * S);
    }
}
