//! Deduplication of client messages that carry an `id`: a repeat of the same `id` from the
//! same sender to the same room within the window is acknowledged again (with the original
//! offset) but not delivered twice.
//!
//! The key includes the room: one id reused for two rooms is two messages (a broadcast to
//! several channels with one id publishes to each), never one silently dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use crate::ids::{Epoch, Offset};
use std::time::{Duration, Instant};

const SHARDS: usize = 16;

/// `(sender, room, id)`.
type Key = (Box<str>, Box<str>, Box<str>);

/// What an accepted message got: its offset and epoch.
pub type Recorded = (Offset, Epoch);

/// Remembers `(sender, room, id) → (offset, epoch)` for `window`, at most `capacity` entries
/// (oldest forgotten first), in shards so that senders do not contend on one lock.
#[derive(Debug)]
pub struct Dedup {
    shards: Vec<Mutex<Shard>>,
    window: Duration,
    per_shard: usize,
}

#[derive(Debug, Default)]
struct Shard {
    seen: HashMap<Key, Recorded>,
    order: VecDeque<(Instant, Key)>,
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

    fn shard(&self, sender: &str, room: &str, id: &str) -> MutexGuard<'_, Shard> {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in sender
            .bytes()
            .chain([0])
            .chain(room.bytes())
            .chain([0])
            .chain(id.bytes())
        {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
        self.shards[(h as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Run `accept` unless this `(sender, room, id)` was accepted within the window, and
    /// remember what it returns: `Ok` with `accept`'s value, or `Err` with what the first
    /// one got. Atomic: the shard stays locked while `accept` runs, so concurrent repeats
    /// wait and see the first one's record. `accept` must not use this `Dedup`.
    pub fn once<T>(
        &self,
        sender: &str,
        room: &str,
        id: &str,
        now: Instant,
        accept: impl FnOnce() -> (Recorded, T),
    ) -> Result<T, Recorded> {
        let mut s = self.shard(sender, room, id);
        s.expire(now, self.window);
        let key: Key = (sender.into(), room.into(), id.into());
        if let Some(first) = s.seen.get(&key) {
            return Err(first.clone());
        }
        let (recorded, value) = accept();
        s.seen.insert(key.clone(), recorded);
        s.order.push_back((now, key));
        while s.order.len() > self.per_shard {
            if let Some((_, k)) = s.order.pop_front() {
                s.seen.remove(&k);
            }
        }
        Ok(value)
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

    use std::sync::Arc;

    fn accept(offset: u64) -> impl FnOnce() -> (Recorded, u64) {
        move || ((Offset(offset), Epoch::from("e")), offset)
    }

    #[test]
    fn repeats_within_the_window_are_recognised() {
        let d = Dedup::new(Duration::from_secs(60), 1000);
        let t0 = Instant::now();
        assert_eq!(d.once("u", "r", "m1", t0, accept(7)), Ok(7));
        let later = t0 + Duration::from_secs(1);
        assert_eq!(
            d.once("u", "r", "m1", later, accept(8)),
            Err((Offset(7), Epoch::from("e")))
        );
        assert_eq!(
            d.once("other", "r", "m1", t0, accept(9)),
            Ok(9),
            "per sender"
        );
        assert_eq!(d.once("u", "r2", "m1", t0, accept(10)), Ok(10), "per room");
        let expired = t0 + Duration::from_secs(62);
        assert_eq!(d.once("u", "r", "m1", expired, accept(11)), Ok(11));
    }

    #[test]
    fn concurrent_repeats_are_accepted_once() {
        let d = Arc::new(Dedup::new(Duration::from_secs(60), 1000));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (d, accepted) = (d.clone(), accepted.clone());
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let id = i.to_string();
                        let _ = d.once("u", "r", &id, Instant::now(), || {
                            accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            ((Offset(i), Epoch::from("e")), ())
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 200);
    }

    #[test]
    fn capacity_bounds_memory() {
        let d = Dedup::new(Duration::from_secs(60), 32);
        let t0 = Instant::now();
        for i in 0..1000 {
            let _ = d.once("u", "r", &i.to_string(), t0, accept(i));
        }
        let remembered = (0..1000)
            .filter(|i| d.once("u", "r", &i.to_string(), t0, accept(0)).is_err())
            .count();
        assert!(remembered <= 32 + SHARDS, "{remembered}");
    }
}
