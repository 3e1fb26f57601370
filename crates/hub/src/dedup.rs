//! Deduplication of acknowledged client messages: a repeat of the same `id` from the same user
//! within the window is acknowledged again (with the original offset) but not delivered twice.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;

/// Remembers `(user, id) → offset` for `window`, at most `capacity` entries (oldest forgotten
/// first), in shards so that users do not contend on one lock.
#[derive(Debug)]
pub struct Dedup {
    shards: Vec<Mutex<Shard>>,
    window: Duration,
    per_shard: usize,
}

#[derive(Debug, Default)]
struct Shard {
    seen: HashMap<(String, String), u64>,
    order: VecDeque<(Instant, (String, String))>,
}

impl Dedup {
    /// A deduplicator.
    pub fn new(window: Duration, capacity: usize) -> Dedup {
        Dedup {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            window,
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, user: &str, id: &str) -> std::sync::MutexGuard<'_, Shard> {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in user.bytes().chain([0]).chain(id.bytes()) {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
        self.shards[(h as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The offset of an earlier message with this id, if still remembered.
    pub fn check(&self, user: &str, id: &str, now: Instant) -> Option<u64> {
        let mut s = self.shard(user, id);
        s.expire(now, self.window);
        s.seen.get(&(user.to_owned(), id.to_owned())).copied()
    }

    /// Remember a delivered message.
    pub fn record(&self, user: &str, id: &str, offset: u64, now: Instant) {
        let per_shard = self.per_shard;
        let mut s = self.shard(user, id);
        let key = (user.to_owned(), id.to_owned());
        if s.seen.insert(key.clone(), offset).is_none() {
            s.order.push_back((now, key));
        }
        while s.order.len() > per_shard {
            if let Some((_, k)) = s.order.pop_front() {
                s.seen.remove(&k);
            }
        }
    }
}

impl Shard {
    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some((t, _)) = self.order.front() {
            if now.saturating_duration_since(*t) <= window {
                break;
            }
            if let Some((_, k)) = self.order.pop_front() {
                self.seen.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_within_the_window_are_recognised() {
        let d = Dedup::new(Duration::from_secs(60), 1000);
        let t0 = Instant::now();
        assert_eq!(d.check("u", "m1", t0), None);
        d.record("u", "m1", 7, t0);
        assert_eq!(d.check("u", "m1", t0 + Duration::from_secs(1)), Some(7));
        assert_eq!(d.check("other", "m1", t0), None, "per user");
        assert_eq!(d.check("u", "m1", t0 + Duration::from_secs(61)), None);
    }

    #[test]
    fn capacity_bounds_memory() {
        let d = Dedup::new(Duration::from_secs(60), 32);
        let t0 = Instant::now();
        for i in 0..1000 {
            d.record("u", &i.to_string(), i, t0);
        }
        let remembered = (0..1000)
            .filter(|i| d.check("u", &i.to_string(), t0).is_some())
            .count();
        assert!(remembered <= 32 + SHARDS, "{remembered}");
    }
}
