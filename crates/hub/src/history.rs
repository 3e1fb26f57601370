//! Per-room history: the last N messages and/or T seconds, for replay after reconnects.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::delivery::Delivery;
use crate::ids::Offset;

/// Retention of one room's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Keep at most this many messages (0: no history). Default 100.
    pub max_messages: usize,
    /// Keep messages at most this long. Default 10 minutes.
    pub max_age: Duration,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            max_messages: 100,
            max_age: Duration::from_secs(600),
        }
    }
}

/// The retained messages of one room, oldest first, with consecutive offsets.
#[derive(Debug, Default)]
pub struct History {
    entries: VecDeque<(Instant, Arc<Delivery>)>,
}

impl History {
    /// Append a message (its offset must follow the previous one).
    pub fn push(&mut self, now: Instant, delivery: Arc<Delivery>, limits: &HistoryLimits) {
        if limits.max_messages == 0 {
            return;
        }
        self.entries.push_back((now, delivery));
        while self.entries.len() > limits.max_messages {
            self.entries.pop_front();
        }
        self.expire(now, limits);
    }

    /// Drop messages older than the age limit.
    pub fn expire(&mut self, now: Instant, limits: &HistoryLimits) {
        while let Some((t, _)) = self.entries.front() {
            if now.saturating_duration_since(*t) > limits.max_age {
                self.entries.pop_front();
            } else {
                break;
            }
        }
    }

    /// Whether every message after `offset` (up to `last_offset`) is still retained. A
    /// position past `last_offset` is never covered: the room never handed that offset out
    /// in this epoch (a store that lost its last writes, or a client's mistake), and a client
    /// that kept it would skip every message up to it as already seen.
    pub fn covers(&self, offset: Offset, last_offset: Offset) -> bool {
        if offset > last_offset {
            return false;
        }
        if offset == last_offset {
            return true; // nothing missed
        }
        match self.oldest_offset() {
            Some(oldest) => oldest <= offset.next(),
            None => false,
        }
    }

    fn oldest_offset(&self) -> Option<Offset> {
        self.entries.front().and_then(|(_, d)| d.offset())
    }

    /// Messages with an offset greater than `after`: of those the newest `limit`, oldest
    /// first, cut to what fits in `max_bytes` of JSON (at least one message, so that a
    /// client paging through always advances). The flag says whether the cut left some out.
    pub fn after(
        &self,
        after: Offset,
        limit: usize,
        max_bytes: usize,
    ) -> (Vec<Arc<Delivery>>, bool) {
        let newer = self
            .entries
            .iter()
            .filter(|(_, d)| d.offset().is_some_and(|o| o > after));
        let skip = newer.clone().count().saturating_sub(limit);
        let mut bytes = 0usize;
        let mut out = Vec::new();
        for (_, d) in newer.skip(skip) {
            let len = d.json().map_or(0, |j| j.len()) + 1;
            if !out.is_empty() && bytes + len > max_bytes {
                return (out, true);
            }
            bytes += len;
            out.push(d.clone());
        }
        (out, false)
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(offset: u64) -> Arc<Delivery> {
        const DIGITS: [&[u8]; 6] = [b"0", b"1", b"2", b"3", b"4", b"5"];
        crate::delivery::test_message(DIGITS[offset as usize], offset)
    }

    #[test]
    fn count_limit_and_coverage() {
        let limits = HistoryLimits {
            max_messages: 3,
            max_age: Duration::from_secs(60),
        };
        let mut h = History::default();
        let now = Instant::now();
        for o in 1..=5 {
            h.push(now, d(o), &limits);
        }
        // Retained: 3, 4, 5.
        assert!(h.covers(Offset(2), Offset(5)));
        assert!(!h.covers(Offset(1), Offset(5)));
        assert!(h.covers(Offset(5), Offset(5)));
        assert!(
            !h.covers(Offset(6), Offset(5)),
            "a position the room never reached"
        );
        let offsets = |(v, _): (Vec<Arc<Delivery>>, bool)| -> Vec<u64> {
            v.iter().filter_map(|d| d.offset()).map(|o| o.0).collect()
        };
        assert_eq!(offsets(h.after(Offset(2), 10, usize::MAX)), [3, 4, 5]);
        assert_eq!(offsets(h.after(Offset(0), 2, usize::MAX)), [4, 5]);
        // Each message is one byte of JSON plus a separator: two fit in 4 bytes.
        let (page, more) = h.after(Offset(0), 10, 4);
        assert!(more);
        assert_eq!(offsets((page, more)), [3, 4]);
        let (page, more) = h.after(Offset(4), 10, 4);
        assert!(!more);
        assert_eq!(offsets((page, more)), [5]);
        // One message always fits, however small the bound.
        assert_eq!(offsets(h.after(Offset(0), 10, 0)), [3]);
    }

    #[test]
    fn age_limit_expires_old_messages() {
        let limits = HistoryLimits {
            max_messages: 100,
            max_age: Duration::from_secs(10),
        };
        let mut h = History::default();
        let t0 = Instant::now();
        h.push(t0, d(1), &limits);
        h.push(t0 + Duration::from_secs(5), d(2), &limits);
        h.expire(t0 + Duration::from_secs(12), &limits);
        assert!(!h.covers(Offset(0), Offset(2)));
        assert!(h.covers(Offset(1), Offset(2)));
    }
}
