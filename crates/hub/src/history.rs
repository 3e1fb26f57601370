//! Per-room history: the last N messages and/or T seconds, for replay after reconnects.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::delivery::Delivery;

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

    /// Whether every message after `offset` (up to `last_offset`) is still retained.
    pub fn covers(&self, offset: u64, last_offset: u64) -> bool {
        if offset >= last_offset {
            return true; // nothing missed
        }
        match self.oldest_offset() {
            Some(oldest) => oldest <= offset + 1,
            None => false,
        }
    }

    fn oldest_offset(&self) -> Option<u64> {
        self.entries.front().and_then(|(_, d)| d.offset())
    }

    /// Messages with an offset greater than `after`, at most the newest `limit`.
    pub fn after(&self, after: u64, limit: usize) -> Vec<Arc<Delivery>> {
        let newer: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, d)| d.offset().is_some_and(|o| o > after))
            .map(|(_, d)| d.clone())
            .collect();
        let skip = newer.len().saturating_sub(limit);
        newer.into_iter().skip(skip).collect()
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn d(offset: u64) -> Arc<Delivery> {
        Delivery::new(Bytes::from(offset.to_string()), Some(offset))
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
        assert!(h.covers(2, 5));
        assert!(!h.covers(1, 5));
        assert!(h.covers(5, 5));
        let offsets: Vec<_> = h.after(2, 10).iter().filter_map(|d| d.offset()).collect();
        assert_eq!(offsets, [3, 4, 5]);
        let offsets: Vec<_> = h.after(0, 2).iter().filter_map(|d| d.offset()).collect();
        assert_eq!(offsets, [4, 5]);
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
        assert!(!h.covers(0, 2));
        assert!(h.covers(1, 2));
    }
}
