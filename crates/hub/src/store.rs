//! Where rooms' histories live, and who assigns offsets: the [`Store`] trait, shared by every
//! node (hub) of a deployment, and [`MemoryStore`], the default (one process).
//!
//! The store is the one authority on a room's `(epoch, offset)` sequence, its history, the
//! dedup window and presence: every node goes through it, so a room has one offset sequence
//! however many nodes publish to it.
//!
//! **The store answers asynchronously.** Every call that returns data takes a [`Done`]
//! callback, called exactly once: at once by the memory store, later (from its I/O task) by
//! a networked one such as Redis. Callers never wait on a lock or a socket for it; the hub
//! and the session core turn a late answer into a reply queued in the connection's outbox
//! (docs: ARCHITECTURE.md, "The store answers later"). Callbacks, not futures: a sans-IO
//! session cannot poll a future, and every transport already drains its outbox.

use crate::ConnId;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_native_proto::RoomName;

use crate::broker::{Broker, Fanout};
use crate::dedup::Dedup;
use crate::delivery::Delivery;
use crate::history::{History, HistoryLimits};
use crate::hub::PresenceEntry;
use crate::ids::{Epoch, NodeId, Offset, UserId};
use crate::pattern::{first_match, RoomPattern};

const SHARDS: usize = 64;

/// How long a forgotten room's epoch and last offset are remembered: a room recreated within
/// this time goes on in the same epoch, so a client that held a position there (an SSE
/// stream or long poller of a quiet room, a WebSocket that reconnects) resumes with
/// `recovered: true` instead of a reset that lost nothing.
const TOMBSTONE_TTL: Duration = Duration::from_secs(3600);

/// At most this many forgotten rooms are remembered (about 100 bytes each); beyond it, a
/// recreated room starts a new epoch (an honest reset).
const MAX_TOMBSTONES: usize = 100_000;

/// What is left of a forgotten room.
#[derive(Debug)]
struct Tombstone {
    epoch: Epoch,
    last_offset: Offset,
    at: Instant,
}

/// Where a store's answer goes. Called exactly once, possibly on another thread, possibly
/// while the store holds the room's order: it must not call back into the store.
pub type Done<T> = Box<dyn FnOnce(T) + Send>;

/// Builds a message's bytes once its offset and timestamp (ms) are known.
pub type Build = Box<dyn FnOnce(Offset, u64) -> Bytes + Send>;

/// A message to append to a room.
pub struct Append {
    /// The room.
    pub room: RoomName,
    /// Its `type`.
    pub kind: Arc<str>,
    /// `(sender, id)`: append only if this sender's `id` was not appended to the room within
    /// the dedup window. The check, the append and the record are one atomic step.
    pub once: Option<(UserId, Box<str>)>,
    /// The connection that is not to get it back ([`Delivery::origin`]).
    pub origin: Option<ConnId>,
    /// Its bytes, once its offset is assigned.
    pub build: Build,
}

impl fmt::Debug for Append {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Append")
            .field("room", &self.room)
            .field("kind", &self.kind)
            .field("once", &self.once)
            .finish_non_exhaustive()
    }
}

/// A networked store could not answer (down, or no answer in time). The memory store never
/// fails. What it means depends on the call: an append may or may not have happened (see
/// [`Appended::Unavailable`]); a read has no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the message store is unavailable: try again")
    }
}

impl std::error::Error for Unavailable {}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Appended and handed to the broker.
    Published {
        /// Its offset.
        offset: Offset,
        /// The room's epoch.
        epoch: Epoch,
        /// What this process's nodes queued, when the broker handed it on synchronously
        /// (zero when it travels through a network first).
        fanout: Fanout,
    },
    /// A repeat of an id appended within the dedup window: not appended again.
    Duplicate {
        /// The offset the first one got.
        offset: Offset,
        /// Its epoch.
        epoch: Epoch,
    },
    /// The store could not confirm the append (a networked store that is down or did not
    /// answer in time): it may or may not have been appended. The sender is told, and may
    /// retry with the same id (deduplicated if it did get through). The memory store never
    /// answers this.
    Unavailable,
}

/// Which retained messages a read wants.
#[derive(Debug, Clone)]
pub struct Range {
    /// Messages after this offset.
    pub after: Offset,
    /// The epoch `after` belongs to, when the caller needs to know whether the room's
    /// history still covers everything after it ([`Page::covered`]).
    pub epoch: Option<Epoch>,
    /// Of the matching messages, the newest `limit`.
    pub limit: usize,
    /// Cut to this many bytes (at least one message).
    pub max_bytes: usize,
}

/// One read of a room's log.
#[derive(Debug, Clone)]
pub struct Page {
    /// The messages, oldest first.
    pub messages: Vec<Arc<Delivery>>,
    /// The byte bound left some out: ask again after the last one.
    pub more: bool,
    /// The room's latest offset when it was read.
    pub last_offset: Offset,
    /// Its epoch.
    pub epoch: Epoch,
    /// With [`Range::epoch`]: the epoch matches and every message after `after` is still
    /// retained. `false` without.
    pub covered: bool,
}

/// The store's answer to a presence join or leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceChanged {
    /// The user's first connection in the room (join) or last one (leave), on any node.
    pub first_or_last: bool,
    /// Connections in the room afterwards, over every node.
    pub connections: usize,
}

/// One user's connections on a node, in a presence sync ([`Store::presence_sync`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceCount {
    /// The user.
    pub user: UserId,
    /// Their connections in the room on the node.
    pub connections: usize,
    /// A display name one of those connections joined with, if any: the store keeps it
    /// for a user it has none for (one restored by the sync after the backend lost it).
    pub name: Option<Arc<str>>,
}

/// The store's answer to a presence sync: who appeared or vanished (every node counted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceSynced {
    /// Users with no connection before the sync and some after.
    pub appeared: Vec<UserId>,
    /// Users with connections before the sync and none after.
    pub vanished: Vec<UserId>,
    /// Connections in the room afterwards, over every node.
    pub connections: usize,
}

/// What a networked store reports about its backend, for metrics (read at each scrape).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackendStats {
    /// Round trips to the backend: `(upper bound in seconds, how many took longer than the
    /// previous bound and at most this one)`, in increasing order of bound, the last one
    /// `f64::INFINITY`.
    pub latency_buckets: Vec<(f64, u64)>,
    /// Their total time, in seconds.
    pub latency_sum_seconds: f64,
    /// How many round trips.
    pub latency_count: u64,
    /// Operations that failed or got no answer in time.
    pub errors: u64,
    /// Connections made again after one broke.
    pub reconnects: u64,
}

/// The history store. Implementations: [`MemoryStore`] (default); Redis later.
///
/// Ordering contract: a store hands each appended message to the broker before it appends
/// the next one to the same room (so every node's fan-out is in offset order), and a read
/// that starts after an append's [`Done`] ran sees that append.
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// A node joins the deployment: the id its presence entries are kept under. It must
    /// call [`Store::heartbeat`] more often than the presence expiry.
    fn register_node(&self) -> NodeId;

    /// `node` is alive: keep its presence entries.
    fn heartbeat(&self, node: NodeId);

    /// Append a message: assign the next offset (unless `once` finds a repeat), retain it,
    /// hand it to `broker` in offset order, then answer.
    fn append(&self, append: Append, broker: &Arc<dyn Broker>, done: Done<Appended>);

    /// Read `room`'s log without creating it: `None` if the room does not exist,
    /// [`Unavailable`] if the store could not answer.
    fn read(&self, room: &RoomName, range: Range, done: Done<Result<Option<Page>, Unavailable>>);

    /// `node` has local members in `room`: create the room if needed and keep its epoch even
    /// while its history is empty. Balanced by [`Store::release`].
    fn hold(&self, room: &RoomName, node: NodeId);

    /// `node`'s last local member left `room`.
    fn release(&self, room: &RoomName, node: NodeId);

    /// A connection of `user` (display name `name`) on `node` joined `room`. `seq` is the
    /// node's presence sequence number of the change (see [`Store::presence_sync`]).
    fn presence_join(
        &self,
        room: &RoomName,
        node: NodeId,
        user: &UserId,
        name: Option<&Arc<str>>,
        seq: u64,
        done: Done<PresenceChanged>,
    );

    /// A connection of `user` on `node` left `room` (`seq` as for [`Store::presence_join`]).
    fn presence_leave(
        &self,
        room: &RoomName,
        node: NodeId,
        user: &UserId,
        seq: u64,
        done: Done<PresenceChanged>,
    );

    /// Whether the hub should reconcile its presence with the store
    /// ([`Store::presence_sync`]): a networked store, whose presence changes can fail or be
    /// lost with the backend's data.
    fn reconciles_presence(&self) -> bool {
        false
    }

    /// Reconcile: `node`'s connections in `room` are exactly `snapshot` (user → count), as
    /// of the node's presence sequence number `seq`. Changes with a sequence number up to
    /// `seq` are in the snapshot: their own join or leave, if it reaches the store later, is
    /// ignored. Answers the users that appeared or vanished on every node by it. Called
    /// under the room's lock (so no later change of the room can reach the store before
    /// it): it must only hand the work over.
    fn presence_sync(
        &self,
        room: &RoomName,
        node: NodeId,
        seq: u64,
        snapshot: Vec<PresenceCount>,
        done: Done<PresenceSynced>,
    ) {
        let _ = (room, node, seq, snapshot);
        done(PresenceSynced::default());
    }

    /// Who is in `room` on every live node: users with connection counts and display names,
    /// unsorted (empty for a room that does not exist).
    fn presence(&self, room: &RoomName, done: Done<Result<Vec<PresenceEntry>, Unavailable>>);

    /// The epoch reported for rooms that do not exist.
    fn void_epoch(&self) -> Epoch;

    /// Every room the store keeps (with history or held), as far as this process knows.
    fn rooms(&self) -> Vec<RoomName>;

    /// Expire old history, drop the presence of nodes that stopped heartbeating, and forget
    /// rooms with neither history nor holders; returns how many rooms were forgotten.
    fn sweep(&self) -> usize;

    /// How the backend is doing (`None`: there is none, as with the memory store).
    fn stats(&self) -> Option<BackendStats> {
        None
    }
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
    /// A node's presence entries are dropped this long after its last heartbeat.
    pub presence_expiry: Duration,
}

/// Histories, offsets, dedup and presence in this process's memory. Lost on restart: the
/// epochs of a new process differ, which clients learn from `recovered: false`.
pub struct MemoryStore {
    shards: Vec<Mutex<HashMap<RoomName, Arc<Mutex<MemoryLog>>>>>,
    config: MemoryStoreConfig,
    dedup: Dedup,
    boot: u64,
    next_epoch: AtomicU64,
    next_node: AtomicU32,
    /// Each registered node's latest heartbeat.
    nodes: Mutex<HashMap<NodeId, Instant>>,
    /// Forgotten rooms' epochs and offsets (taken after a shard lock, never before one).
    tombstones: Mutex<HashMap<RoomName, Tombstone>>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("config", &self.config)
            .finish()
    }
}

/// A user's connections in one room, per node. Nearly every user is on one node: that case
/// costs no allocation (this is paid by every idle member: anonymous members are users of
/// their own).
#[derive(Debug, Clone, PartialEq, Eq)]
enum NodeCounts {
    One(NodeId, u32),
    // Boxed: the enum stays 16 bytes (an unboxed map would make every entry 48).
    #[allow(clippy::box_collection)]
    Many(Box<HashMap<NodeId, u32>>),
}

impl NodeCounts {
    fn add(&mut self, node: NodeId) {
        match self {
            NodeCounts::One(n, count) if *n == node => *count += 1,
            NodeCounts::One(n, count) => {
                let map = HashMap::from([(*n, *count), (node, 1)]);
                *self = NodeCounts::Many(Box::new(map));
            }
            NodeCounts::Many(map) => *map.entry(node).or_insert(0) += 1,
        }
    }

    /// Take one connection of `node` away; `false` if it had none.
    fn remove(&mut self, node: NodeId) -> bool {
        match self {
            NodeCounts::One(n, count) if *n == node && *count > 0 => {
                *count -= 1;
                true
            }
            NodeCounts::One(..) => false,
            NodeCounts::Many(map) => match map.get_mut(&node) {
                Some(count) => {
                    *count -= 1;
                    if *count == 0 {
                        map.remove(&node);
                    }
                    true
                }
                None => false,
            },
        }
    }

    /// Take every connection of `node` away; how many there were.
    fn remove_node(&mut self, node: NodeId) -> usize {
        match self {
            NodeCounts::One(n, count) if *n == node => std::mem::take(count) as usize,
            NodeCounts::One(..) => 0,
            NodeCounts::Many(map) => map.remove(&node).unwrap_or(0) as usize,
        }
    }

    fn total(&self) -> usize {
        match self {
            NodeCounts::One(_, count) => *count as usize,
            NodeCounts::Many(map) => map.values().map(|c| *c as usize).sum(),
        }
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
    /// Nodes with local members (a node holds a room once).
    holders: Vec<NodeId>,
    /// Connections per user and node.
    presence: HashMap<UserId, NodeCounts>,
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

    fn page(&self, range: &Range) -> Page {
        let (messages, more) = self
            .history
            .after(range.after, range.limit, range.max_bytes);
        let covered = range.epoch.as_ref().is_some_and(|e| {
            *e == self.epoch && self.history.covers(range.after, self.last_offset)
        });
        Page {
            messages,
            more,
            last_offset: self.last_offset,
            epoch: self.epoch.clone(),
            covered,
        }
    }

    fn presence_leave(&mut self, node: NodeId, user: &UserId) -> PresenceChanged {
        let Some(counts) = self.presence.get_mut(user) else {
            return PresenceChanged {
                first_or_last: false,
                connections: self.connections,
            };
        };
        if !counts.remove(node) {
            return PresenceChanged {
                first_or_last: false,
                connections: self.connections,
            };
        }
        let last = counts.total() == 0;
        if last {
            self.presence.remove(user);
            self.names.remove(user);
        }
        self.connections = self.connections.saturating_sub(1);
        PresenceChanged {
            first_or_last: last,
            connections: self.connections,
        }
    }

    /// Forget every presence entry of `node`.
    fn drop_node(&mut self, node: NodeId) {
        let mut removed = 0;
        self.presence.retain(|_, counts| {
            removed += counts.remove_node(node);
            counts.total() > 0
        });
        let names = &mut self.names;
        let presence = &self.presence;
        names.retain(|user, _| presence.contains_key(user));
        self.connections = self.connections.saturating_sub(removed);
        self.holders.retain(|n| *n != node);
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
            next_node: AtomicU32::new(1),
            nodes: Mutex::new(HashMap::new()),
            tombstones: Mutex::new(HashMap::new()),
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
        // A room forgotten lately goes on where it was (its history was empty when it was
        // forgotten, and nothing can be published to it meanwhile: publishing recreates it).
        // Else a new room starts a new epoch: offsets restart, and clients holding offsets of
        // an earlier room of the same name learn it from the epoch.
        let (epoch, last_offset) = match lock(&self.tombstones).remove(room) {
            Some(t) if t.at.elapsed() < TOMBSTONE_TTL => (t.epoch, t.last_offset),
            _ => {
                let epoch = format!(
                    "{:x}-{:x}",
                    self.boot,
                    self.next_epoch.fetch_add(1, Ordering::Relaxed)
                );
                (Epoch::from(epoch), Offset(0))
            }
        };
        let limits = first_match(&self.config.history, room, self.config.default_history);
        let log = Arc::new(Mutex::new(MemoryLog {
            removed: false,
            history: History::default(),
            limits,
            last_offset,
            epoch,
            holders: Vec::new(),
            presence: HashMap::new(),
            connections: 0,
            names: HashMap::new(),
        }));
        shard.insert(room.clone(), log.clone());
        Some(log)
    }

    /// Remember a room being forgotten (under its shard's lock), so that it can go on in
    /// the same epoch if it comes back soon.
    fn bury(&self, room: &RoomName, st: &MemoryLog) {
        let mut tombstones = lock(&self.tombstones);
        if tombstones.len() < MAX_TOMBSTONES {
            tombstones.insert(
                room.clone(),
                Tombstone {
                    epoch: st.epoch.clone(),
                    last_offset: st.last_offset,
                    at: Instant::now(),
                },
            );
        }
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

    /// Run `f` on the room's log if the room exists.
    fn with_existing<R>(&self, room: &RoomName, f: impl FnOnce(&mut MemoryLog) -> R) -> Option<R> {
        let log = self.log(room, false)?;
        let mut st = lock(&log);
        if st.removed {
            return None;
        }
        st.expire(Instant::now());
        Some(f(&mut st))
    }

    /// Append under the room's lock and hand the delivery to the broker before the lock is
    /// released (deliveries leave in offset order).
    fn append_now(
        &self,
        room: &RoomName,
        kind: Arc<str>,
        origin: Option<ConnId>,
        build: Build,
        broker: &Arc<dyn Broker>,
    ) -> (Offset, Epoch, Fanout) {
        let mut build = Some(build);
        let mut kind = Some(kind);
        self.with_locked(room, |st| {
            let offset = st.last_offset.next();
            st.last_offset = offset;
            let timestamp_ms = crate::hub::now_ms();
            // `with_locked` runs this once (it retries only before calling it).
            let (Some(build), Some(kind)) = (build.take(), kind.take()) else {
                unreachable!("an append is built once")
            };
            let delivery = Delivery::message_from(
                room.clone(),
                kind,
                build(offset, timestamp_ms),
                (offset, st.epoch.clone()),
                timestamp_ms,
                origin,
            );
            let limits = st.limits;
            st.history.push(Instant::now(), delivery.clone(), &limits);
            let fanout = broker.publish(&delivery);
            (offset, st.epoch.clone(), fanout)
        })
    }
}

impl Store for MemoryStore {
    fn register_node(&self) -> NodeId {
        let node = NodeId(self.next_node.fetch_add(1, Ordering::Relaxed));
        lock(&self.nodes).insert(node, Instant::now());
        node
    }

    fn heartbeat(&self, node: NodeId) {
        lock(&self.nodes).insert(node, Instant::now());
    }

    fn append(&self, append: Append, broker: &Arc<dyn Broker>, done: Done<Appended>) {
        let Append {
            room,
            kind,
            once,
            origin,
            build,
        } = append;
        let appended = match once {
            None => {
                let (offset, epoch, fanout) = self.append_now(&room, kind, origin, build, broker);
                Appended::Published {
                    offset,
                    epoch,
                    fanout,
                }
            }
            Some((sender, id)) => {
                let outcome =
                    self.dedup
                        .once(&sender.0, room.as_str(), &id, Instant::now(), || {
                            let (offset, epoch, fanout) =
                                self.append_now(&room, kind, origin, build, broker);
                            ((offset, epoch.clone()), (offset, epoch, fanout))
                        });
                match outcome {
                    Ok((offset, epoch, fanout)) => Appended::Published {
                        offset,
                        epoch,
                        fanout,
                    },
                    Err((offset, epoch)) => Appended::Duplicate { offset, epoch },
                }
            }
        };
        done(appended);
    }

    fn read(&self, room: &RoomName, range: Range, done: Done<Result<Option<Page>, Unavailable>>) {
        let page = self.with_existing(room, |st| st.page(&range));
        done(Ok(page));
    }

    fn hold(&self, room: &RoomName, node: NodeId) {
        self.with_locked(room, |st| {
            if !st.holders.contains(&node) {
                st.holders.push(node);
            }
        });
    }

    fn release(&self, room: &RoomName, node: NodeId) {
        // The shard lock first, as everywhere: the room may be forgotten right here.
        let mut shard = lock(self.shard(room));
        let Some(log) = shard.get(room).cloned() else {
            return;
        };
        let mut st = lock(&log);
        st.holders.retain(|n| *n != node);
        st.expire(Instant::now());
        if st.holders.is_empty() && st.history.is_empty() {
            st.removed = true;
            self.bury(room, &st);
            drop(st);
            shard.remove(room);
        }
    }

    fn presence_join(
        &self,
        room: &RoomName,
        node: NodeId,
        user: &UserId,
        name: Option<&Arc<str>>,
        _seq: u64,
        done: Done<PresenceChanged>,
    ) {
        let changed = self.with_locked(room, |st| {
            if let Some(name) = name {
                st.names.insert(user.clone(), name.clone());
            }
            st.connections += 1;
            let first = match st.presence.get_mut(user) {
                Some(counts) => {
                    let first = counts.total() == 0;
                    counts.add(node);
                    first
                }
                None => {
                    st.presence.insert(user.clone(), NodeCounts::One(node, 1));
                    true
                }
            };
            PresenceChanged {
                first_or_last: first,
                connections: st.connections,
            }
        });
        done(changed);
    }

    fn presence_leave(
        &self,
        room: &RoomName,
        node: NodeId,
        user: &UserId,
        _seq: u64,
        done: Done<PresenceChanged>,
    ) {
        let changed = self
            .with_existing(room, |st| st.presence_leave(node, user))
            .unwrap_or(PresenceChanged {
                first_or_last: false,
                connections: 0,
            });
        done(changed);
    }

    fn presence(&self, room: &RoomName, done: Done<Result<Vec<PresenceEntry>, Unavailable>>) {
        let entries = self
            .with_existing(room, |st| {
                st.presence
                    .iter()
                    .map(|(user, counts)| PresenceEntry {
                        user: user.clone(),
                        name: st.names.get(user).cloned(),
                        connections: counts.total(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        done(Ok(entries));
    }

    fn void_epoch(&self) -> Epoch {
        Epoch::from(format!("{:x}-0", self.boot))
    }

    fn rooms(&self) -> Vec<RoomName> {
        self.shards
            .iter()
            .flat_map(|s| lock(s).keys().cloned().collect::<Vec<_>>())
            .collect()
    }

    fn sweep(&self) -> usize {
        let now = Instant::now();
        let dead: Vec<NodeId> = {
            let mut nodes = lock(&self.nodes);
            let expiry = self.config.presence_expiry;
            let dead = nodes
                .iter()
                .filter(|(_, seen)| now.saturating_duration_since(**seen) > expiry)
                .map(|(n, _)| *n)
                .collect::<Vec<_>>();
            for n in &dead {
                nodes.remove(n);
            }
            dead
        };
        let mut removed = 0;
        for shard in &self.shards {
            lock(shard).retain(|name, log| {
                let mut st = lock(log);
                for node in &dead {
                    st.drop_node(*node);
                }
                st.expire(now);
                let keep = !st.holders.is_empty() || !st.history.is_empty();
                if !keep {
                    st.removed = true;
                    self.bury(name, &st);
                    removed += 1;
                }
                keep
            });
        }
        lock(&self.tombstones).retain(|_, t| now.saturating_duration_since(t.at) < TOMBSTONE_TTL);
        removed
    }
}

/// The store's answer to the request `start` makes, if it came before `start` returned (it
/// always does from a [`MemoryStore`]): for tests, and callers that hold a memory store.
pub fn answered_at_once<T: Send + 'static>(start: impl FnOnce(Done<T>)) -> Option<T> {
    let slot = Arc::new(Mutex::new(None));
    let filled = slot.clone();
    start(Box::new(move |value| *lock(&filled) = Some(value)));
    let value = lock(&slot).take();
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_counts_stay_small_for_one_node_and_count_many() {
        let (a, b) = (NodeId(1), NodeId(2));
        let mut c = NodeCounts::One(a, 1);
        c.add(a);
        assert_eq!(c, NodeCounts::One(a, 2));
        c.add(b);
        assert_eq!(c.total(), 3);
        assert!(c.remove(b));
        assert!(!c.remove(b), "b has none left");
        assert_eq!(c.remove_node(a), 2);
        assert_eq!(c.total(), 0);
        assert!(std::mem::size_of::<NodeCounts>() <= 16);
    }
}
