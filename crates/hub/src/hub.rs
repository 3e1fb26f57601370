//! Rooms and the operations on them.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use switchboard_native_proto::RoomName;

use crate::broker::{Broker, Fanout, MemoryBroker, Node};
use crate::delivery::{Delivery, PresenceChange};
use crate::history::HistoryLimits;
use crate::ids::{ConnId, Epoch, Offset, UserId};
use crate::outbox::{Outbox, Pushed};
use crate::pattern::{first_match, RoomPattern};
use crate::store::{MemoryStore, MemoryStoreConfig, RoomLog, Store};

const SHARDS: usize = 64;

/// Each hub of a process numbers its connections from its own base.
static NEXT_NODE_BASE: AtomicU64 = AtomicU64::new(1);

/// Hub settings.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// History retention by room pattern; the first match wins, else `default_history`.
    pub history: Vec<(RoomPattern, HistoryLimits)>,
    /// History retention of rooms no pattern matches.
    pub default_history: HistoryLimits,
    /// `user_joined`/`user_left` are sent only while a room has at most this many members
    /// (each costs O(members)). Default 100; 0 = never.
    pub join_leave_max_members: usize,
    /// How long a client message id is remembered for deduplication. Default 5 minutes.
    pub dedup_window: Duration,
    /// How many ids are remembered at most. Default 100 000.
    pub dedup_capacity: usize,
    /// Outbound budget per connection in bytes (beyond it the room's [`OverflowPolicy`]
    /// applies). Default 1 MiB.
    pub outbox_budget: usize,
    /// What a full outbox does with a room's message, by room pattern; the first match wins,
    /// else `default_overflow`.
    pub overflow: Vec<(RoomPattern, OverflowPolicy)>,
    /// Overflow policy of rooms no pattern matches. Default [`OverflowPolicy::Drop`].
    pub default_overflow: OverflowPolicy,
}

/// What happens when a message does not fit a member's outbound budget (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverflowPolicy {
    /// Drop it, count it, and tell the client how many it missed (`lagged`) once it catches
    /// up. Right for rooms whose clients resync from history.
    #[default]
    Drop,
    /// Close the slow connection with 4003 "Buffer overflow": right where a gap is worse than
    /// a reconnect (the client replays from history on reconnect).
    Close,
}

impl HubConfig {
    /// The settings of a [`MemoryStore`] for this configuration.
    pub fn memory_store(&self) -> MemoryStoreConfig {
        MemoryStoreConfig {
            history: self.history.clone(),
            default_history: self.default_history,
            dedup_window: self.dedup_window,
            dedup_capacity: self.dedup_capacity,
        }
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            history: Vec::new(),
            default_history: HistoryLimits::default(),
            join_leave_max_members: 100,
            dedup_window: Duration::from_secs(300),
            dedup_capacity: 100_000,
            outbox_budget: 1024 * 1024,
            overflow: Vec::new(),
            default_overflow: OverflowPolicy::Drop,
        }
    }
}

/// A connection as the hub knows it.
#[derive(Debug, Clone)]
pub struct HubConn {
    /// Its id.
    pub id: ConnId,
    /// Its user.
    pub user: UserId,
    /// Where its deliveries go.
    pub outbox: Arc<Outbox>,
    /// Its display name (given at join, or from a token claim), shown in presence and
    /// `user_joined`/`user_left` as `user`.
    pub name: Option<Arc<str>>,
}

/// The answer to a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The room's latest offset.
    pub offset: Offset,
    /// The room's history epoch.
    pub epoch: Epoch,
    /// With `since`: whether every missed message was queued for replay. `true` without.
    pub recovered: bool,
    /// How many missed messages were queued for replay (before any live one).
    pub replayed: usize,
}

/// The result of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The message's offset.
    pub offset: Offset,
    /// The room's epoch.
    pub epoch: Epoch,
    /// Members it was queued for.
    pub delivered: usize,
    /// Members whose outbox was full.
    pub dropped: usize,
}

/// One user in a room's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEntry {
    /// The user.
    pub user: UserId,
    /// The display name their latest connection joined with, if any.
    pub name: Option<Arc<str>>,
    /// Their connections in the room.
    pub connections: usize,
}

/// One page of a room's history (see [`Hub::history`]).
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// The messages, oldest first.
    pub messages: Vec<Arc<Delivery>>,
    /// The room's latest offset (0 for a room that does not exist).
    pub last_offset: Offset,
    /// The room's epoch.
    pub epoch: Epoch,
    /// More messages of the requested range follow: they did not fit the byte bound. Ask
    /// again after the last message's offset.
    pub more: bool,
}

/// The result of [`Hub::publish_once`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishOnce {
    /// Published now.
    Published(Published),
    /// The same sender published a message with this id to this room within the dedup
    /// window: it was not published again.
    Duplicate {
        /// The offset the first one got.
        offset: Offset,
        /// Its epoch.
        epoch: Epoch,
    },
}

/// A room's local side on this node: its members here and their presence. Its history
/// and offsets are the store's; messages arrive through the broker ([`Node::deliver`]).
struct Room {
    state: Mutex<RoomState>,
}

struct RoomState {
    /// Removed from the room map: a join that raced with the removal must retry.
    removed: bool,
    members: HashMap<ConnId, (UserId, Arc<Outbox>)>,
    /// The members' outboxes, rebuilt lazily after membership changes so that a publish
    /// iterates a flat slice.
    snapshot: Option<Arc<[Arc<Outbox>]>>,
    overflow: OverflowPolicy,
}

impl RoomState {
    fn recipients(&mut self) -> Arc<[Arc<Outbox>]> {
        if let Some(s) = &self.snapshot {
            return s.clone();
        }
        let s: Arc<[Arc<Outbox>]> = self.members.values().map(|(_, o)| o.clone()).collect();
        self.snapshot = Some(s.clone());
        s
    }
}

impl Node for Room {
    /// Queue a message of this room for every local member, under the room's lock (so each
    /// member sees the room's messages in the order the broker hands them over: offset order).
    fn deliver(&self, delivery: &Arc<Delivery>) -> Fanout {
        let mut st = lock(&self.state);
        let policy = st.overflow;
        let mut fanout = Fanout::default();
        if let crate::delivery::Body::Presence(change) = delivery.body() {
            // About a member, for the others: not to the connection it is about.
            for (id, (_, outbox)) in &st.members {
                if *id != change.origin {
                    outbox.push(delivery);
                }
            }
            return fanout;
        }
        for outbox in st.recipients().iter() {
            match outbox.push_or(delivery, policy) {
                Pushed::Queued => fanout.delivered += 1,
                Pushed::Dropped | Pushed::Overflowed => fanout.dropped += 1,
                Pushed::Closed => {}
            }
        }
        fanout
    }
}

type UserConns = HashMap<UserId, Vec<(ConnId, Arc<Outbox>)>>;

/// The hub. Share it with `Arc`.
pub struct Hub {
    shards: Vec<Mutex<HashMap<RoomName, Arc<Room>>>>,
    /// Live connections by user (for disconnecting a user), sharded like the rooms.
    users: Vec<Mutex<UserConns>>,
    config: HubConfig,
    /// Histories, offsets, dedup: shared by every node of a deployment.
    store: Arc<dyn Store>,
    /// Carries messages to the nodes with members in their room (this one included).
    broker: Arc<dyn Broker>,
    next_conn: AtomicU64,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub").field("config", &self.config).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its state consistent before anything can panic, so a
    // poisoned lock's data is still valid.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Hub {
    /// A hub with `config`, alone in this process: a [`MemoryStore`] and a
    /// [`MemoryBroker`] of its own.
    pub fn new(config: HubConfig) -> Arc<Hub> {
        let store = MemoryStore::new(config.memory_store(), now_ms());
        Hub::with_backends(config, store, MemoryBroker::new())
    }

    /// A hub (one node) over a store and a broker that other nodes may share. `config`'s
    /// history and dedup settings are the store's business then.
    pub fn with_backends(
        config: HubConfig,
        store: Arc<dyn Store>,
        broker: Arc<dyn Broker>,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            users: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            config,
            store,
            broker,
            // Connection ids are unique per process: nodes in one process share none.
            next_conn: AtomicU64::new(NEXT_NODE_BASE.fetch_add(1 << 40, Ordering::Relaxed)),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// Register a connection of `user`. Call [`Hub::disconnect`] when it ends.
    pub fn connect(&self, user: UserId) -> HubConn {
        let conn = HubConn {
            id: ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed)),
            user,
            outbox: Outbox::new(self.config.outbox_budget),
            name: None,
        };
        lock(self.user_shard(&conn.user))
            .entry(conn.user.clone())
            // Most users have one connection (every anonymous one does): a default `Vec`
            // would reserve four entries on the first push, for every connection.
            .or_insert_with(|| Vec::with_capacity(1))
            .push((conn.id, conn.outbox.clone()));
        conn
    }

    /// The connection ended: leave `rooms`, unregister it, close its outbox.
    pub fn disconnect(&self, conn: &HubConn, rooms: &[RoomName]) {
        for room in rooms {
            self.leave(conn, room);
        }
        let mut users = lock(self.user_shard(&conn.user));
        if let Some(list) = users.get_mut(&conn.user) {
            list.retain(|(id, _)| *id != conn.id);
            if list.is_empty() {
                users.remove(&conn.user);
            }
        }
        drop(users);
        conn.outbox.close();
    }

    /// Ask every connection of `user` to disconnect; returns how many there were.
    pub fn disconnect_user(&self, user: &UserId) -> usize {
        let outboxes: Vec<Arc<Outbox>> = lock(self.user_shard(user))
            .get(user)
            .map(|l| l.iter().map(|(_, o)| o.clone()).collect())
            .unwrap_or_default();
        for o in &outboxes {
            o.request_disconnect();
        }
        outboxes.len()
    }

    /// Live connections.
    pub fn connection_count(&self) -> usize {
        self.users
            .iter()
            .map(|s| lock(s).values().map(Vec::len).sum::<usize>())
            .sum()
    }

    fn user_shard(&self, user: &UserId) -> &Mutex<UserConns> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        user.hash(&mut h);
        &self.users[(h.finish() as usize) % SHARDS]
    }

    /// A fresh connection id (for generated user ids and message ids).
    pub fn unique_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    fn shard(&self, room: &RoomName) -> &Mutex<HashMap<RoomName, Arc<Room>>> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        room.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    /// This node's side of `name`, if it has one; with `create`, made (and subscribed to
    /// the broker) if missing. The flag says whether it was made now.
    fn room(&self, name: &RoomName, create: bool) -> Option<(Arc<Room>, bool)> {
        let mut shard = lock(self.shard(name));
        if let Some(r) = shard.get(name) {
            return Some((r.clone(), false));
        }
        if !create {
            return None;
        }
        let room = Arc::new(Room {
            state: Mutex::new(RoomState {
                removed: false,
                members: HashMap::new(),
                snapshot: None,
                overflow: first_match(&self.config.overflow, name, self.config.default_overflow),
            }),
        });
        // Subscribed before anyone can be a member, so that no message for it is missed.
        let node: Weak<dyn Node> = Arc::downgrade(&room) as Weak<dyn Node>;
        self.broker.subscribe(name, node);
        shard.insert(name.clone(), room.clone());
        Some((room, true))
    }

    /// Forget this node's side of the room if nobody is in it here: unsubscribe, and let
    /// the store forget the room too once its history is gone.
    fn collect_if_empty(&self, name: &RoomName) {
        let mut shard = lock(self.shard(name));
        let Some(room) = shard.get(name).cloned() else {
            return;
        };
        let mut st = lock(&room.state);
        if !st.members.is_empty() {
            return;
        }
        st.removed = true;
        drop(st);
        shard.remove(name);
        drop(shard);
        // Outside every lock of ours: a publisher holds the broker while it waits for room
        // locks.
        self.forget(name, &room);
    }

    fn forget(&self, name: &RoomName, room: &Arc<Room>) {
        let node: Weak<dyn Node> = Arc::downgrade(room) as Weak<dyn Node>;
        self.broker.unsubscribe(name, &node);
        self.store.release(name);
    }

    /// Add `conn` to `room`. With `since`, queue every message after it in the connection's
    /// outbox first (or report `recovered: false` when history no longer covers the gap, or
    /// the missed messages do not fit the outbox budget: a replay is never sent in part);
    /// live messages follow in order, with no gap or duplicate at the seam because the
    /// store admits no append to the room while the join replays and joins. Others here get
    /// `user_joined` when the user's first connection joins and the room is small enough.
    pub fn join(&self, conn: &HubConn, room: &RoomName, since: Option<(Offset, &str)>) -> Joined {
        let mut joined = None;
        while joined.is_none() {
            self.store.with_log(room, &mut |log: &mut dyn RoomLog| {
                let Some((r, created)) = self.room(room, true) else {
                    return;
                };
                if created {
                    log.hold();
                }
                let mut st = lock(&r.state);
                if st.removed {
                    return; // forgotten meanwhile: look it up again
                }
                let (j, announce) = self.join_locked(conn, since, log, &mut st);
                drop(st);
                joined = Some(j);
                if announce {
                    // To the members on every node, through the broker (still in the store's
                    // order, no room lock held: the broker takes the rooms' locks).
                    self.broker.publish(&presence_event(true, conn, room));
                }
            });
        }
        joined.unwrap_or_else(|| unreachable!("the loop ends once a join happened"))
    }

    fn join_locked(
        &self,
        conn: &HubConn,
        since: Option<(Offset, &str)>,
        log: &mut dyn RoomLog,
        st: &mut RoomState,
    ) -> (Joined, bool) {
        let mut recovered = true;
        let mut replayed = 0;
        if let Some((offset, epoch)) = since {
            recovered = false;
            if log.covers(offset, epoch) {
                let missed = log.after(offset, usize::MAX, usize::MAX).0;
                if conn.outbox.push_all(&missed) {
                    recovered = true;
                    replayed = missed.len();
                }
            }
        }
        let first_of_user = match st.members.entry(conn.id) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert((conn.user.clone(), conn.outbox.clone()));
                st.snapshot = None;
                // Presence is the store's: the user's first connection on any node.
                log.presence_join(&conn.user, conn.name.as_ref())
            }
        };
        // `user_joined` only while the room (on every node) is small enough: each costs
        // O(members).
        let announce = first_of_user && log.connections() <= self.config.join_leave_max_members;
        let joined = Joined {
            offset: log.last_offset(),
            epoch: log.epoch(),
            recovered,
            replayed,
        };
        (joined, announce)
    }

    /// Remove `conn` from `room`; `false` if it was not a member. Others get `user_left` when
    /// the user's last connection leaves and the room is small enough.
    pub fn leave(&self, conn: &HubConn, room: &RoomName) -> bool {
        let Some((r, _)) = self.room(room, false) else {
            return false;
        };
        {
            let mut st = lock(&r.state);
            if st.members.remove(&conn.id).is_none() {
                return false;
            }
            st.snapshot = None;
        }
        // The store after the room's lock, never under it (lock order: store, then room).
        let (last_of_user, remaining) = self.store.presence_leave(room, &conn.user);
        if last_of_user && remaining < self.config.join_leave_max_members {
            // To the members on every node.
            self.broker.publish(&presence_event(false, conn, room));
        }
        let now_empty = lock(&r.state).members.is_empty();
        if now_empty {
            self.collect_if_empty(room);
        }
        true
    }

    /// Whether `conn` is in `room`.
    pub fn is_member(&self, conn: &HubConn, room: &RoomName) -> bool {
        self.room(room, false)
            .is_some_and(|(r, _)| lock(&r.state).members.contains_key(&conn.id))
    }

    /// Publish a message of type `kind` to `room`: the store assigns its offset and keeps
    /// it; `build(offset, timestamp_ms)` makes the JSON once; the broker hands it to every
    /// node with members in the room, which queue it for each of them.
    pub fn publish(
        &self,
        room: &RoomName,
        kind: &str,
        build: impl FnOnce(Offset, u64) -> Bytes,
    ) -> Published {
        let mut build = Some(build);
        let mut fanout = Fanout::default();
        let (offset, epoch) = self.store.append(
            room,
            kind,
            &mut |offset, ts| match build.take() {
                Some(b) => b(offset, ts),
                None => Bytes::new(), // the store builds each message once
            },
            &mut |delivery| fanout = self.broker.publish(delivery),
        );
        Published {
            offset,
            epoch,
            delivered: fanout.delivered,
            dropped: fanout.dropped,
        }
    }

    /// Publish to `room` unless `sender` already published a message with `id` to it within
    /// the dedup window. The check and the record are one atomic step (the store's): two
    /// concurrent retries of one id publish once.
    pub fn publish_once(
        &self,
        room: &RoomName,
        kind: &str,
        sender: &UserId,
        id: &str,
        build: impl FnOnce(Offset, u64) -> Bytes,
    ) -> PublishOnce {
        let mut build = Some(build);
        let mut published = None;
        let outcome = self.store.once(&sender.0, room.as_str(), id, &mut || {
            let p = match build.take() {
                Some(b) => self.publish(room, kind, b),
                None => unreachable!("the store accepts a message once"),
            };
            let recorded = (p.offset, p.epoch.clone());
            published = Some(p);
            recorded
        });
        match (outcome, published) {
            (Ok(_), Some(p)) => PublishOnce::Published(p),
            (Ok((offset, epoch)) | Err((offset, epoch)), _) => {
                PublishOnce::Duplicate { offset, epoch }
            }
        }
    }

    /// Retained messages of `room` after `since` (the newest `limit` of them), oldest first,
    /// as many as fit in `max_bytes` of JSON (at least one), with the room's latest offset and
    /// epoch. Creates nothing: a room that does not exist has no messages, offset 0 and the
    /// store's void epoch.
    pub fn history(
        &self,
        room: &RoomName,
        since: Option<Offset>,
        limit: Option<usize>,
        max_bytes: usize,
    ) -> HistoryPage {
        let mut page = None;
        self.store.read(room, &mut |log: &dyn RoomLog| {
            let (messages, more) = log.after(
                since.unwrap_or_default(),
                limit.unwrap_or(usize::MAX),
                max_bytes,
            );
            page = Some(HistoryPage {
                messages,
                last_offset: log.last_offset(),
                epoch: log.epoch(),
                more,
            });
        });
        page.unwrap_or_else(|| HistoryPage {
            messages: Vec::new(),
            last_offset: Offset(0),
            epoch: self.store.void_epoch(),
            more: false,
        })
    }

    /// Who is in `room` on every node sharing the store, by user with connection counts,
    /// sorted by user id.
    pub fn presence(&self, room: &RoomName) -> Vec<PresenceEntry> {
        let mut v = Vec::new();
        self.store
            .read(room, &mut |log: &dyn RoomLog| v = log.presence());
        v.sort_by(|a, b| a.user.cmp(&b.user));
        v
    }

    /// How many rooms exist (with members here or history in the store).
    pub fn channel_count(&self) -> usize {
        self.channels().len()
    }

    /// Every room with members here or history in the store: name and local member count.
    pub fn channels(&self) -> Vec<(RoomName, usize)> {
        let mut counts: HashMap<RoomName, usize> =
            self.store.rooms().into_iter().map(|r| (r, 0)).collect();
        for shard in &self.shards {
            let rooms: Vec<_> = lock(shard)
                .iter()
                .map(|(n, r)| (n.clone(), r.clone()))
                .collect();
            for (name, room) in rooms {
                counts.insert(name, lock(&room.state).members.len());
            }
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort();
        v
    }

    /// Forget rooms without members here, expire old history and let the store forget rooms
    /// with neither history nor members anywhere. Call periodically (the server does every
    /// 30 s). Returns how many rooms the store forgot.
    pub fn sweep(&self) -> usize {
        let mut forgotten = Vec::new();
        for shard in &self.shards {
            lock(shard).retain(|name, room| {
                let mut st = lock(&room.state);
                let keep = !st.members.is_empty();
                if !keep {
                    st.removed = true;
                    forgotten.push((name.clone(), room.clone()));
                }
                keep
            });
        }
        for (name, room) in &forgotten {
            self.forget(name, room);
        }
        self.store.sweep()
    }
}

fn presence_event(joined: bool, conn: &HubConn, room: &RoomName) -> Arc<Delivery> {
    let change = PresenceChange {
        joined,
        user: conn.user.clone(),
        name: conn.name.clone(),
        origin: conn.id,
    };
    Delivery::presence(room.clone(), change, now_ms())
}

#[cfg(test)]
mod tests;
