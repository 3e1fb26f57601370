//! The v4 heartbeat: the server pings every `pingInterval` and expects a pong within
//! `pingTimeout`. Deadlines, not timers: the owner asks [`Heartbeat::next_deadline`] and calls
//! [`Heartbeat::on_deadline`] when it passes.
//!
//! It is its own type so that a parked WebSocket connection (no driver task) can keep only
//! this and the socket: it writes `2` when told to, and answers `3` with
//! [`Heartbeat::on_pong`].

use std::time::{Duration, Instant};

/// What the heartbeat asks for when a deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatAction {
    /// Nothing yet (the deadline moved).
    Wait,
    /// Send a ping packet (`2`) now.
    SendPing,
    /// No pong (nor any other packet) within `pingTimeout`: the session is dead.
    TimedOut,
}

/// What the heartbeat waits for (one state at a time: smaller than two options, and the
/// state of every idle connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// The next ping, at this instant.
    Ping(Instant),
    /// The pong of the outstanding ping, by this instant.
    Pong(Instant),
    /// Nothing: the session timed out.
    Never,
}

/// Heartbeat state of one session. `pingInterval` and `pingTimeout` are not copied in: the
/// owner passes them (they are its endpoint's, shared by every session; this is the state of
/// every idle connection, paid per byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    due: Due,
    /// When the last packet came from the client.
    last_packet: Instant,
}

impl Heartbeat {
    /// A heartbeat for a session opened at `now`: the first ping is due `interval` later (not
    /// at once).
    pub fn new(now: Instant, interval: Duration) -> Heartbeat {
        Heartbeat {
            due: Due::Ping(now + interval),
            last_packet: now,
        }
    }

    /// The next instant [`Heartbeat::on_deadline`] must be called at.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.due {
            Due::Ping(at) | Due::Pong(at) => Some(at),
            Due::Never => None,
        }
    }

    /// Whether a ping waits for its pong.
    pub fn awaiting_pong(&self) -> bool {
        matches!(self.due, Due::Pong(_))
    }

    /// Time passed (`timeout`: `pingTimeout`). Early calls are harmless (`Wait`).
    pub fn on_deadline(&mut self, now: Instant, timeout: Duration) -> HeartbeatAction {
        match self.due {
            Due::Ping(at) if now >= at => {
                self.due = Due::Pong(now + timeout);
                HeartbeatAction::SendPing
            }
            Due::Pong(at) if now >= at => {
                // Any packet is a sign of life (as in the reference server): a client that
                // sent something within `pingTimeout` gets until then plus `pingTimeout`.
                let since = now.saturating_duration_since(self.last_packet);
                if since < timeout {
                    self.due = Due::Pong(self.last_packet + timeout);
                    HeartbeatAction::Wait
                } else {
                    self.due = Due::Never;
                    HeartbeatAction::TimedOut
                }
            }
            _ => HeartbeatAction::Wait,
        }
    }

    /// Any packet arrived from the client.
    pub fn on_packet(&mut self, now: Instant) {
        self.last_packet = self.last_packet.max(now);
    }

    /// A pong arrived: the outstanding ping is answered and the next one is due `interval`
    /// (`pingInterval`) from now. A pong with no ping outstanding changes nothing (it cannot
    /// postpone pings).
    pub fn on_pong(&mut self, now: Instant, interval: Duration) {
        self.on_packet(now);
        if let Due::Pong(_) = self.due {
            self.due = Due::Ping(now + interval);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn ping_every_interval_after_the_pong() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0, 25 * S);
        assert_eq!(
            hb.next_deadline(),
            Some(t0 + 25 * S),
            "first ping one interval after open"
        );
        assert_eq!(hb.on_deadline(t0 + 24 * S, 20 * S), HeartbeatAction::Wait);
        assert_eq!(
            hb.on_deadline(t0 + 25 * S, 20 * S),
            HeartbeatAction::SendPing
        );
        assert!(hb.awaiting_pong());
        assert_eq!(hb.next_deadline(), Some(t0 + 45 * S));
        hb.on_pong(t0 + 26 * S, 25 * S);
        assert!(!hb.awaiting_pong());
        assert_eq!(hb.next_deadline(), Some(t0 + 51 * S));
    }

    #[test]
    fn no_pong_times_out() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0, 25 * S);
        assert_eq!(
            hb.on_deadline(t0 + 25 * S, 20 * S),
            HeartbeatAction::SendPing
        );
        assert_eq!(hb.on_deadline(t0 + 44 * S, 20 * S), HeartbeatAction::Wait);
        assert_eq!(
            hb.on_deadline(t0 + 45 * S, 20 * S),
            HeartbeatAction::TimedOut
        );
        assert_eq!(hb.next_deadline(), None);
    }

    #[test]
    fn other_packets_extend_the_pong_wait() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0, 25 * S);
        assert_eq!(
            hb.on_deadline(t0 + 25 * S, 20 * S),
            HeartbeatAction::SendPing
        );
        hb.on_packet(t0 + 40 * S);
        assert_eq!(hb.on_deadline(t0 + 45 * S, 20 * S), HeartbeatAction::Wait);
        assert_eq!(hb.next_deadline(), Some(t0 + 60 * S));
        assert_eq!(
            hb.on_deadline(t0 + 60 * S, 20 * S),
            HeartbeatAction::TimedOut
        );
    }

    #[test]
    fn unsolicited_pong_does_not_postpone_pings() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0, 25 * S);
        hb.on_pong(t0 + 10 * S, 25 * S);
        assert_eq!(hb.next_deadline(), Some(t0 + 25 * S));
    }
}
