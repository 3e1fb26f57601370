//! Where rooms' histories live, and who assigns offsets: the [`Store`] trait, shared by every
//! node (hub) of a deployment, and [`MemoryStore`], the default (one process).
//!
//! The store is the one authority on a room's `(epoch, offset)` sequence: every node appends
//! through it, so a room has one offset sequence however many nodes publish to it. Whatever
//! an append hands on (the broker's publish) runs while the store still holds the room's
//! order, so deliveries leave in offset order.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_native_proto::RoomName;

use crate::dedup::{Dedup, Recorded};
use crate::delivery::Delivery;
use crate::history::{History, HistoryLimits};
use crate::hub::PresenceEntry;
use crate::ids::{Epoch, Offset, UserId};
use crate::pattern::{first_match, RoomPattern};

const SHARDS: usize = 64;

/// One room's log, while the store holds its order (see [`Store::with_log`]).
pub trait RoomLog {
    /// The latest offset (0: nothing published in this epoch).
    fn last_offset(&self) -> Offset;
    /// The current epoch.
    fn epoch(&self) -> Epoch;
    /// Whether every message after `offset` of `epoch` is still retained.
    fn covers(&self, offset: Offset, epoch: &str) -> bool;
    /// Retained messages after `offset`: of those the newest `limit`, oldest first, cut to
    /// `max_bytes` (at least one); the flag says whether the cut left some out.
    fn after(&self, offset: Offset, limit: usize, max_bytes: usize) -> (Vec<Arc<Delivery>>, bool);
    /// A node has local members in this room: keep its epoch even while its history is
    /// empty. Balanced by [`Store::release`].
    fn hold(&mut self);
    /// A connection of `user` (display name `name`) joined, on any node; `true` if it is
    /// the user's first in the room. Balanced by [`Store::presence_leave`].
    fn presence_join(&mut self, user: &UserId, name: Option<&Arc<str>>) -> bool;
    /// Who is in the room: users with connection counts and display names, unsorted.
    fn presence(&self) -> Vec<PresenceEntry>;
    /// Connections in the room, over every node.
    fn connections(&self) -> usize;
}

/// The history store. Implementations: [`MemoryStore`] (default); Redis later.
///
/// The methods are synchronous: the memory store answers at once. A networked store will
/// need the session core to take the `ack` of a publish later (through the sender's outbox);
/// that is the next step of the design (docs/status.md).
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Append a message of type `kind` to `room`: assign the next offset, build it with
    /// `build(offset, timestamp_ms)`, retain it, and pass it to `then` before the next append
    /// to the room can start (deliveries leave in offset order).
    fn append(
        &self,
        room: &RoomName,
        kind: &str,
        build: &mut dyn FnMut(Offset, u64) -> Bytes,
        then: &mut dyn FnMut(&Arc<Delivery>),
    ) -> (Offset, Epoch);

    /// Run `f` on the room's log (creating the room) with no append to it in between: a join
    /// replays and becomes a member as one step, so the seam has no gap and no duplicate.
    fn with_log(&self, room: &RoomName, f: &mut dyn FnMut(&mut dyn RoomLog));

    /// Read the room's log without creating it: `None` if it does not exist.
    fn read(&self, room: &RoomName, f: &mut dyn FnMut(&dyn RoomLog)) -> Option<()>;

    /// A node's last local member left `room` (see [`RoomLog::hold`]).
    fn release(&self, room: &RoomName);

    /// A connection of `user` left `room`: whether it was the user's last there, and how
    /// many connections remain in the room (every node).
    fn presence_leave(&self, room: &RoomName, user: &UserId) -> (bool, usize);

    /// The epoch reported for rooms that do not exist.
    fn void_epoch(&self) -> Epoch;

    /// Run `accept` unless `(sender, room, id)` was accepted within the dedup window; one
    /// atomic check-and-record. `Err` carries what the first one got.
    fn once(
        &self,
        sender: &str,
        room: &str,
        id: &str,
        accept: &mut dyn FnMut() -> Recorded,
    ) -> Result<Recorded, Recorded>;

    /// Every room the store keeps (with history or held).
    fn rooms(&self) -> Vec<RoomName>;

    /// Expire old history and forget rooms with neither history nor holders; returns how
    /// many were forgotten.
    fn sweep(&self) -> usize;
}

/// Settings of the memory store.
#[derive(Debug, Clone)]
pub struct MemoryStoreConfig {
    /// History retention by room pattern (first match wins), else `default_history`.
    pub history: Vec<(RoomPattern, HistoryLimits)>,
    /// Retention of rooms no pattern matches.
    pub default_history: HistoryLimits,
    /// How long a client message id is remembered for deduplication.
    pub dedup_window: Duration,
    /// How many ids are remembered at most.
    pub dedup_capacity: usize,
}

/// Histories, offsets and dedup in this process's memory. Lost on restart: the epochs of a
/// new process differ, which clients learn from `recovered: false`.
pub struct MemoryStore {
    shards: Vec<Mutex<HashMap<RoomName, Arc<Mutex<MemoryLog>>>>>,
    config: MemoryStoreConfig,
    dedup: Dedup,
    boot: u64,
    next_epoch: AtomicU64,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("config", &self.config)
            .finish()
    }
}

/// One room in the memory store.
#[derive(Debug)]
struct MemoryLog {
    /// Forgotten by a sweep: a caller that raced with it must look the room up again.
    removed: bool,
    history: History,
    limits: HistoryLimits,
    last_offset: Offset,
    epoch: Epoch,
    /// Nodes with local members.
    holders: usize,
    /// Connections per user, over every node.
    presence: HashMap<UserId, usize>,
    /// Their sum.
    connections: usize,
    /// Display names, only of the users that gave one (most anonymous members have none:
    /// a name slot in `presence` would cost every member 16 bytes).
    names: HashMap<UserId, Arc<str>>,
}

impl MemoryLog {
    /// Drop messages older than the room's age limit.
    fn expire(&mut self, now: Instant) {
        let limits = self.limits;
        self.history.expire(now, &limits);
    }
}

impl RoomLog for MemoryLog {
    fn last_offset(&self) -> Offset {
        self.last_offset
    }

    fn epoch(&self) -> Epoch {
        self.epoch.clone()
    }

    fn covers(&self, offset: Offset, epoch: &str) -> bool {
        epoch == self.epoch.as_str() && self.history.covers(offset, self.last_offset)
    }

    fn after(&self, offset: Offset, limit: usize, max_bytes: usize) -> (Vec<Arc<Delivery>>, bool) {
        self.history.after(offset, limit, max_bytes)
    }

    fn hold(&mut self) {
        self.holders += 1;
    }

    fn presence_join(&mut self, user: &UserId, name: Option<&Arc<str>>) -> bool {
        if let Some(name) = name {
            self.names.insert(user.clone(), name.clone());
        }
        self.connections += 1;
        let count = self.presence.entry(user.clone()).or_insert(0);
        *count += 1;
        *count == 1
    }

    fn connections(&self) -> usize {
        self.connections
    }

    fn presence(&self) -> Vec<PresenceEntry> {
        self.presence
            .iter()
            .map(|(user, n)| PresenceEntry {
                user: user.clone(),
                name: self.names.get(user).cloned(),
                connections: *n,
            })
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its state consistent before anything can panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryStore {
    /// A store with `config`; `boot` (ms since the Unix epoch) makes this process's epochs
    /// differ from an earlier one's.
    pub fn new(config: MemoryStoreConfig, boot: u64) -> Arc<MemoryStore> {
        Arc::new(MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            dedup: Dedup::new(config.dedup_window, config.dedup_capacity),
            config,
            boot,
            next_epoch: AtomicU64::new(1),
        })
    }

    fn shard(&self, room: &RoomName) -> &Mutex<HashMap<RoomName, Arc<Mutex<MemoryLog>>>> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        room.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    fn log(&self, room: &RoomName, create: bool) -> Option<Arc<Mutex<MemoryLog>>> {
        let mut shard = lock(self.shard(room));
        if let Some(log) = shard.get(room) {
            return Some(log.clone());
        }
        if !create {
            return None;
        }
        // A new room starts a new epoch: offsets restart, and clients holding offsets of an
        // earlier room of the same name learn it from the epoch.
        let epoch = format!(
            "{:x}-{:x}",
            self.boot,
            self.next_epoch.fetch_add(1, Ordering::Relaxed)
        );
        let limits = first_match(&self.config.history, room, self.config.default_history);
        let log = Arc::new(Mutex::new(MemoryLog {
            removed: false,
            history: History::default(),
            limits,
            last_offset: Offset(0),
            epoch: Epoch::from(epoch),
            holders: 0,
            presence: HashMap::new(),
            connections: 0,
            names: HashMap::new(),
        }));
        shard.insert(room.clone(), log.clone());
        Some(log)
    }

    /// Run `f` on the room's log, creating it (and retrying if a sweep removed it meanwhile).
    fn with_locked<R>(&self, room: &RoomName, mut f: impl FnMut(&mut MemoryLog) -> R) -> R {
        loop {
            let Some(log) = self.log(room, true) else {
                continue;
            };
            let mut st = lock(&log);
            if st.removed {
                continue;
            }
            st.expire(Instant::now());
            return f(&mut st);
        }
    }
}

impl Store for MemoryStore {
    fn append(
        &self,
        room: &RoomName,
        kind: &str,
        build: &mut dyn FnMut(Offset, u64) -> Bytes,
        then: &mut dyn FnMut(&Arc<Delivery>),
    ) -> (Offset, Epoch) {
        self.with_locked(room, |st| {
            let offset = st.last_offset.next();
            st.last_offset = offset;
            let timestamp_ms = crate::hub::now_ms();
            let delivery = Delivery::message(
                room.clone(),
                Arc::from(kind),
                build(offset, timestamp_ms),
                offset,
                st.epoch.clone(),
                timestamp_ms,
            );
            let limits = st.limits;
            st.history.push(Instant::now(), delivery.clone(), &limits);
            then(&delivery);
            (offset, st.epoch.clone())
        })
    }

    fn with_log(&self, room: &RoomName, f: &mut dyn FnMut(&mut dyn RoomLog)) {
        self.with_locked(room, |st| f(st));
    }

    fn read(&self, room: &RoomName, f: &mut dyn FnMut(&dyn RoomLog)) -> Option<()> {
        let log = self.log(room, false)?;
        let mut st = lock(&log);
        if st.removed {
            return None;
        }
        st.expire(Instant::now());
        f(&*st);
        Some(())
    }

    fn release(&self, room: &RoomName) {
        // The shard lock first, as everywhere: the room may be forgotten right here.
        let mut shard = lock(self.shard(room));
        let Some(log) = shard.get(room).cloned() else {
            return;
        };
        let mut st = lock(&log);
        st.holders = st.holders.saturating_sub(1);
        st.expire(Instant::now());
        if st.holders == 0 && st.history.is_empty() {
            st.removed = true;
            drop(st);
            shard.remove(room);
        }
    }

    fn presence_leave(&self, room: &RoomName, user: &UserId) -> (bool, usize) {
        let Some(log) = self.log(room, false) else {
            return (false, 0);
        };
        let mut st = lock(&log);
        let last = match st.presence.get_mut(user) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                st.presence.remove(user);
                st.names.remove(user);
                true
            }
            None => return (false, st.connections),
        };
        st.connections = st.connections.saturating_sub(1);
        (last, st.connections)
    }

    fn void_epoch(&self) -> Epoch {
        Epoch::from(format!("{:x}-0", self.boot))
    }

    fn once(
        &self,
        sender: &str,
        room: &str,
        id: &str,
        accept: &mut dyn FnMut() -> Recorded,
    ) -> Result<Recorded, Recorded> {
        self.dedup.once(sender, room, id, Instant::now(), || {
            let recorded = accept();
            (recorded.clone(), recorded)
        })
    }

    fn rooms(&self) -> Vec<RoomName> {
        self.shards
            .iter()
            .flat_map(|s| lock(s).keys().cloned().collect::<Vec<_>>())
            .collect()
    }

    fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut removed = 0;
        for shard in &self.shards {
            lock(shard).retain(|_, log| {
                let mut st = lock(log);
                st.expire(now);
                let keep = st.holders > 0 || !st.history.is_empty();
                if !keep {
                    st.removed = true;
                    removed += 1;
                }
                keep
            });
        }
        removed
    }
}
