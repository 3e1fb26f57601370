//! Rooms and the operations on them.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use switchboard_native_proto::{RoomName, ServerMessage};

use crate::broker::{Broker, Fanout, MemoryBroker, Node};
use crate::delivery::{Delivery, PresenceChange};
use crate::history::HistoryLimits;
use crate::ids::{ConnId, Epoch, NodeId, Offset, UserId};
use crate::outbox::{Outbox, Pushed};
use crate::pattern::{first_match, RoomPattern};
use crate::store::{
    Append, Appended, MemoryStore, MemoryStoreConfig, Page, PresenceChanged, PresenceCount,
    PresenceSynced, Range, Store, Unavailable,
};

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
    /// A node that has not refreshed its presence entries (its [`Hub::sweep`] does) for this
    /// long is taken for dead: its connections leave presence. Default 90 s.
    pub presence_expiry: Duration,
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
            presence_expiry: self.presence_expiry,
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
            presence_expiry: Duration::from_secs(90),
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
    /// The room's latest offset: live messages after it follow.
    pub offset: Offset,
    /// The room's history epoch.
    pub epoch: Epoch,
    /// With `since`: whether every missed message was queued for replay. `true` without.
    pub recovered: bool,
    /// How many missed messages were queued for replay (before any live one).
    pub replayed: usize,
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

/// A room's local side on this node: its members here. Its history, offsets and presence
/// are the store's; messages arrive through the broker ([`Node::deliver`]).
struct Room {
    state: Mutex<RoomState>,
}

struct RoomState {
    /// Removed from the room map: a join that raced with the removal must retry.
    removed: bool,
    members: HashMap<ConnId, (UserId, Arc<Outbox>)>,
    /// The display names members joined with, for those that gave one (kept apart: most
    /// members have none, and an empty map allocates nothing). Read by presence syncs, which
    /// restore names a networked store lost.
    names: HashMap<ConnId, Arc<str>>,
    /// Members whose join waits for the store's read of the room (its latest offset, and
    /// the replay with `since`): their deliveries are held here meanwhile and queued after
    /// the replay, so the seam has no gap and no duplicate even when the store answers
    /// late. Empty (no allocation) nearly always.
    catching_up: HashMap<ConnId, CatchUp>,
    /// The live members' outboxes, rebuilt lazily after membership changes so that a
    /// publish iterates a flat slice.
    snapshot: Option<Arc<[Arc<Outbox>]>>,
    /// The position of the last message the broker handed over live.
    live: Option<(Epoch, Offset)>,
    /// Members whose join read the store ahead of the live stream (a networked store
    /// answers a read before the broker brings the same messages, which it may): they got
    /// those messages in their replay or before their `joined` position, so live deliveries
    /// up to that position skip them. A seam goes once the live stream passes it. Empty
    /// (no allocation) nearly always.
    seams: Vec<Seam>,
    overflow: OverflowPolicy,
    /// Bytes a catching-up member may hold (the outbox budget).
    budget: usize,
}

/// Live deliveries up to `offset` of `epoch` are not for member `id` (see
/// [`RoomState::seams`]).
struct Seam {
    id: ConnId,
    epoch: Epoch,
    offset: Offset,
}

/// Deliveries held for a member while its join waits for the store.
#[derive(Default)]
struct CatchUp {
    items: Vec<Arc<Delivery>>,
    bytes: usize,
    dropped: u64,
}

impl CatchUp {
    fn hold(&mut self, delivery: &Arc<Delivery>, budget: usize) {
        let cost = delivery.cost();
        if !self.items.is_empty() && self.bytes + cost > budget {
            self.dropped += 1;
            return;
        }
        self.bytes += cost;
        self.items.push(delivery.clone());
    }
}

impl RoomState {
    fn recipients(&mut self) -> Arc<[Arc<Outbox>]> {
        if let Some(s) = &self.snapshot {
            return s.clone();
        }
        let catching_up = &self.catching_up;
        let s: Arc<[Arc<Outbox>]> = self
            .members
            .iter()
            .filter(|(id, _)| !catching_up.contains_key(id))
            .map(|(_, (_, o))| o.clone())
            .collect();
        self.snapshot = Some(s.clone());
        s
    }
}

impl Node for Room {
    /// Queue a message of this room for every local member, under the room's lock (so each
    /// member sees the room's messages in the order the broker hands them over: offset order).
    fn deliver(&self, delivery: &Arc<Delivery>) -> Fanout {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        let policy = st.overflow;
        let mut fanout = Fanout::default();
        let origin = match delivery.body() {
            crate::delivery::Body::Presence(change) => Some(change.origin),
            _ => None,
        };
        for (id, catch_up) in &mut st.catching_up {
            if origin != Some(*id) {
                catch_up.hold(delivery, st.budget);
            }
        }
        if let crate::delivery::Body::Presence(change) = delivery.body() {
            // About a member, for the others: not to the connection it is about.
            for (id, (_, outbox)) in &st.members {
                if *id != change.origin && !st.catching_up.contains_key(id) {
                    outbox.push(delivery);
                }
            }
            return fanout;
        }
        let position = delivery.offset().zip(delivery.epoch());
        if let Some((offset, epoch)) = position {
            // (The epoch is cloned only when it changes: this runs for every message.)
            match &mut st.live {
                Some((live_epoch, live_offset)) if live_epoch == epoch => *live_offset = offset,
                live => *live = Some((epoch.clone(), offset)),
            }
        }
        let count = |fanout: &mut Fanout, pushed| match pushed {
            Pushed::Queued => fanout.delivered += 1,
            Pushed::Dropped | Pushed::Overflowed => fanout.dropped += 1,
            Pushed::Closed => {}
        };
        if st.seams.is_empty() {
            for outbox in st.recipients().iter() {
                count(&mut fanout, outbox.push_or(delivery, policy));
            }
            return fanout;
        }
        // The slow path, while a seam is open: members past this message skip it.
        let seen_by = |id: &ConnId| {
            position.is_some_and(|(offset, epoch)| {
                st.seams
                    .iter()
                    .any(|s| s.id == *id && s.epoch == *epoch && s.offset >= offset)
            })
        };
        for (id, (_, outbox)) in &st.members {
            if !st.catching_up.contains_key(id) && !seen_by(id) {
                count(&mut fanout, outbox.push_or(delivery, policy));
            }
        }
        if let Some((offset, epoch)) = position {
            st.seams.retain(|s| s.epoch != *epoch || s.offset > offset);
        }
        fanout
    }

    fn missed(&self, count: u64) {
        let st = lock(&self.state);
        for (_, outbox) in st.members.values() {
            outbox.count_dropped(count);
        }
    }

    fn epoch_changed(&self, room: &RoomName, epoch: &Epoch, offset: u64) {
        let notice = Delivery::reply(
            room.clone(),
            ServerMessage::Joined {
                room: room.clone(),
                offset,
                epoch: epoch.as_str().to_owned(),
                recovered: false,
            },
        );
        let mut st = lock(&self.state);
        // Positions of the old epoch mean nothing now (every member is reset).
        st.seams.clear();
        st.live = None;
        // Members still catching up get their own `joined` when their read answers.
        for (id, (_, outbox)) in &st.members {
            if !st.catching_up.contains_key(id) {
                outbox.push_reserved(std::slice::from_ref(&notice));
            }
        }
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
    /// This node, as the store knows it.
    node: NodeId,
    next_conn: AtomicU64,
    /// Numbers every member change of every room (taken under the room's lock), so that a
    /// presence snapshot and the joins and leaves it already counts can be told apart in
    /// the store ([`Store::presence_sync`]). One counter for all rooms: it never goes back,
    /// even for a room forgotten and made again.
    presence_seq: AtomicU64,
    /// Where the next presence reconciliation starts (a shard index), so that a sweep
    /// bounded to [`SYNC_ROOMS_PER_SWEEP`] rooms reaches every room in turn.
    sync_from: std::sync::atomic::AtomicUsize,
}

/// At most this many rooms have their presence reconciled per [`Hub::sweep`].
const SYNC_ROOMS_PER_SWEEP: usize = 2000;

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
        Arc::new_cyclic(|hub| {
            broker.attach(hub.clone());
            Hub {
                shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                users: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                config,
                node: store.register_node(),
                store,
                broker,
                // Connection ids are unique per process: nodes in one process share none.
                next_conn: AtomicU64::new(NEXT_NODE_BASE.fetch_add(1 << 40, Ordering::Relaxed)),
                presence_seq: AtomicU64::new(0),
                sync_from: std::sync::atomic::AtomicUsize::new(0),
            }
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

    /// Ask every connection of `user` to disconnect, on every node; returns how many there
    /// were on this one (the other nodes are told through the broker).
    pub fn disconnect_user(&self, user: &UserId) -> usize {
        self.broker.disconnect_user(user);
        self.disconnect_local_user(user)
    }

    /// [`Hub::disconnect_user`] on this node only (what another node's request does here).
    pub fn disconnect_local_user(&self, user: &UserId) -> usize {
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
                names: HashMap::new(),
                catching_up: HashMap::new(),
                snapshot: None,
                live: None,
                seams: Vec::new(),
                overflow: first_match(&self.config.overflow, name, self.config.default_overflow),
                budget: self.config.outbox_budget,
            }),
        });
        // Subscribed before anyone can be a member, so that no message for it is missed.
        let node: Weak<dyn Node> = Arc::downgrade(&room) as Weak<dyn Node>;
        self.broker.subscribe(name, node);
        shard.insert(name.clone(), room.clone());
        Some((room, true))
    }

    /// The hub's own copy of `name` while the room exists, else `name`: a connection keeps
    /// this one rather than its own copy (one allocation per room, not one per member: idle
    /// members are many).
    pub fn shared_name(&self, name: &RoomName) -> RoomName {
        let shard = lock(self.shard(name));
        shard.get_key_value(name).map_or(name, |(k, _)| k).clone()
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
        // This node's presence in the room is now nothing, whatever became of the leaves
        // (one the store did not confirm would leave a ghost).
        self.sync_presence(name, &st);
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
        self.store.release(name, self.node);
    }

    /// Add `conn` to `room` and answer with the room's latest offset and epoch through
    /// `done` (at once with the memory store, later with a networked one). With `since`,
    /// queue every message after it in the connection's outbox first (or report
    /// `recovered: false` when history no longer covers the gap, or the missed messages do not
    /// fit the outbox budget: a replay is never sent in part). `done` runs before the replay
    /// is queued, so a reply it queues precedes the replay. Live messages follow with no gap
    /// and no duplicate at the seam: the member is registered before the store reads the
    /// room, and what arrives for it meanwhile is held and queued after the replay, less what
    /// the replay already holds. Others get `user_joined` when the user's first connection
    /// (on any node) joins and the room is small enough.
    pub fn join(
        &self,
        conn: &HubConn,
        room: &RoomName,
        since: Option<(Offset, Epoch)>,
        done: impl FnOnce(Joined) + Send + 'static,
    ) {
        let (r, new_member, seq) = loop {
            let Some((r, created)) = self.room(room, true) else {
                continue;
            };
            if created {
                self.store.hold(room, self.node);
            }
            let mut st = lock(&r.state);
            if st.removed {
                continue; // forgotten meanwhile: look it up again
            }
            let new_member = match st.members.entry(conn.id) {
                std::collections::hash_map::Entry::Occupied(_) => false,
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert((conn.user.clone(), conn.outbox.clone()));
                    if let Some(name) = &conn.name {
                        st.names.insert(conn.id, name.clone());
                    }
                    true
                }
            };
            let seq = self.next_presence_seq();
            st.catching_up.insert(conn.id, CatchUp::default());
            st.snapshot = None;
            drop(st);
            break (r, new_member, seq);
        };
        if new_member {
            // Presence is the store's: the user's first connection on any node.
            let (broker, max) = (self.broker.clone(), self.config.join_leave_max_members);
            let event = presence_event(true, conn, room);
            self.store.presence_join(
                room,
                self.node,
                &conn.user,
                conn.name.as_ref(),
                seq,
                Box::new(move |changed: PresenceChanged| {
                    // `user_joined` only while the room (on every node) is small enough:
                    // each costs O(members). To the members on every node, through the
                    // broker.
                    if changed.first_or_last && changed.connections <= max {
                        broker.publish(&event);
                    }
                }),
            );
        }
        let range = match &since {
            Some((offset, epoch)) => Range {
                after: *offset,
                epoch: Some(epoch.clone()),
                limit: usize::MAX,
                max_bytes: usize::MAX,
            },
            None => Range {
                after: Offset(u64::MAX),
                epoch: None,
                limit: 0,
                max_bytes: 0,
            },
        };
        let (id, outbox, void) = (conn.id, conn.outbox.clone(), self.store.void_epoch());
        let wants_replay = since.is_some();
        self.store.read(
            room,
            range,
            Box::new(move |page: Result<Option<Page>, Unavailable>| {
                // The room is held while it has members, so it exists; a store that lost it
                // (a networked one, restarted) answers like a new room, and one that could
                // not answer gives no position and no replay: the client is told
                // `recovered: false` when it asked for one (never a silent gap).
                let page = page.ok().flatten().unwrap_or(Page {
                    messages: Vec::new(),
                    more: false,
                    last_offset: Offset(0),
                    epoch: void,
                    covered: false,
                });
                finish_join(&r, id, &outbox, wants_replay, page, done);
            }),
        );
    }

    /// Remove `conn` from `room`; `false` if it was not a member. Others get `user_left` when
    /// the user's last connection (on any node) leaves and the room is small enough.
    pub fn leave(&self, conn: &HubConn, room: &RoomName) -> bool {
        let Some((r, _)) = self.room(room, false) else {
            return false;
        };
        let (now_empty, seq) = {
            let mut st = lock(&r.state);
            if st.members.remove(&conn.id).is_none() {
                return false;
            }
            st.names.remove(&conn.id);
            st.catching_up.remove(&conn.id);
            st.seams.retain(|s| s.id != conn.id);
            st.snapshot = None;
            (st.members.is_empty(), self.next_presence_seq())
        };
        let (broker, max) = (self.broker.clone(), self.config.join_leave_max_members);
        let event = presence_event(false, conn, room);
        // The store after the room's lock, never under it (lock order: store, then room).
        self.store.presence_leave(
            room,
            self.node,
            &conn.user,
            seq,
            Box::new(move |changed: PresenceChanged| {
                if changed.first_or_last && changed.connections < max {
                    // To the members on every node.
                    broker.publish(&event);
                }
            }),
        );
        if now_empty {
            self.collect_if_empty(room);
        }
        true
    }

    /// How many rooms have members on this node (no store call).
    pub fn local_room_count(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// How many connections of this node are in `room` (one shard lock; no store call).
    pub fn local_member_count(&self, room: &RoomName) -> usize {
        self.room(room, false)
            .map_or(0, |(r, _)| lock(&r.state).members.len())
    }

    /// Whether `conn` is in `room`.
    pub fn is_member(&self, conn: &HubConn, room: &RoomName) -> bool {
        self.room(room, false)
            .is_some_and(|(r, _)| lock(&r.state).members.contains_key(&conn.id))
    }

    /// Publish a message of type `kind` to `room`: the store assigns its offset and keeps
    /// it; `build(offset, timestamp_ms)` makes its bytes once; the broker hands it to every
    /// node with members in the room, which queue it for each of them. With `once =
    /// (sender, id)`, nothing is published if `sender` published `id` to the room within the
    /// dedup window (one atomic check-and-record, the store's: two concurrent retries of one
    /// id publish once). `done` gets the outcome, at once or later.
    pub fn publish(
        &self,
        room: &RoomName,
        kind: &str,
        once: Option<(&UserId, &str)>,
        build: impl FnOnce(Offset, u64) -> Bytes + Send + 'static,
        done: impl FnOnce(Appended) + Send + 'static,
    ) {
        self.publish_from(room, kind, once, None, build, done);
    }

    /// [`Hub::publish`] for everyone in the room but connection `origin` (it is stored and
    /// replayed like any message; live, transports that honour [`Delivery::origin`] do not
    /// send it back to `origin`).
    pub fn publish_from(
        &self,
        room: &RoomName,
        kind: &str,
        once: Option<(&UserId, &str)>,
        origin: Option<ConnId>,
        build: impl FnOnce(Offset, u64) -> Bytes + Send + 'static,
        done: impl FnOnce(Appended) + Send + 'static,
    ) {
        let append = Append {
            // The hub's own copy of the name (one lookup per publish): every delivery then
            // carries the `Arc` its recipients hold, and their comparisons with it (a
            // Socket.IO socket finding the room's position) stop at the pointer.
            room: self.shared_name(room),
            kind: Arc::from(kind),
            once: once.map(|(sender, id)| (sender.clone(), Box::from(id))),
            origin,
            build: Box::new(build),
        };
        self.store.append(append, &self.broker, Box::new(done));
    }

    /// Retained messages of `room` after `since` (the newest `limit` of them), oldest first,
    /// as many as fit in `max_bytes` (at least one), with the room's latest offset and epoch,
    /// through `done`. Creates nothing: a room that does not exist has no messages, offset 0
    /// and the store's void epoch. [`Unavailable`] when the store could not answer.
    pub fn history(
        &self,
        room: &RoomName,
        since: Option<Offset>,
        limit: Option<usize>,
        max_bytes: usize,
        done: impl FnOnce(Result<HistoryPage, Unavailable>) + Send + 'static,
    ) {
        let range = Range {
            after: since.unwrap_or_default(),
            epoch: None,
            limit: limit.unwrap_or(usize::MAX),
            max_bytes,
        };
        let void = self.store.void_epoch();
        self.store.read(
            room,
            range,
            Box::new(move |page: Result<Option<Page>, Unavailable>| {
                done(page.map(|page| match page {
                    Some(p) => HistoryPage {
                        messages: p.messages,
                        last_offset: p.last_offset,
                        epoch: p.epoch,
                        more: p.more,
                    },
                    None => HistoryPage {
                        messages: Vec::new(),
                        last_offset: Offset(0),
                        epoch: void,
                        more: false,
                    },
                }))
            }),
        );
    }

    /// Who is in `room` on every live node sharing the store, by user with connection
    /// counts, sorted by user id, through `done`.
    pub fn presence(
        &self,
        room: &RoomName,
        done: impl FnOnce(Result<Vec<PresenceEntry>, Unavailable>) + Send + 'static,
    ) {
        self.store.presence(
            room,
            Box::new(move |entries: Result<Vec<PresenceEntry>, Unavailable>| {
                done(entries.map(|mut entries| {
                    entries.sort_by(|a, b| a.user.cmp(&b.user));
                    entries
                }))
            }),
        );
    }

    /// How the store's backend is doing (a networked store; `None` with the memory store).
    pub fn backend_stats(&self) -> Option<crate::store::BackendStats> {
        self.store.stats()
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
        // This node is alive: its presence entries stay.
        self.store.heartbeat(self.node);
        self.reconcile_presence();
        let mut forgotten = Vec::new();
        for shard in &self.shards {
            lock(shard).retain(|name, room| {
                let mut st = lock(&room.state);
                let keep = !st.members.is_empty();
                if !keep {
                    st.removed = true;
                    self.sync_presence(name, &st);
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

impl Hub {
    /// The next presence sequence number (taken under the changed room's lock).
    fn next_presence_seq(&self) -> u64 {
        self.presence_seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Tell the store this node's presence in `room` as it is (`st`, under its lock), with
    /// the sequence number of the last change made: it corrects what failed or was lost.
    fn sync_presence(&self, name: &RoomName, st: &RoomState) {
        if !self.store.reconciles_presence() {
            return;
        }
        let mut counts: HashMap<&UserId, (usize, Option<&Arc<str>>)> = HashMap::new();
        for (id, (user, _)) in &st.members {
            let (n, name) = counts.entry(user).or_default();
            *n += 1;
            if name.is_none() {
                *name = st.names.get(id);
            }
        }
        let snapshot: Vec<PresenceCount> = counts
            .into_iter()
            .map(|(user, (connections, name))| PresenceCount {
                user: user.clone(),
                connections,
                name: name.cloned(),
            })
            .collect();
        // For announcing the users the sync restores.
        let names: HashMap<UserId, Arc<str>> = snapshot
            .iter()
            .filter_map(|c| Some((c.user.clone(), c.name.clone()?)))
            .collect();
        // Every change of this room so far took its number under this lock: the counter
        // is at least the last one's.
        let seq = self.presence_seq.load(Ordering::Relaxed);
        let (broker, room, max) = (
            self.broker.clone(),
            name.clone(),
            self.config.join_leave_max_members,
        );
        self.store.presence_sync(
            name,
            self.node,
            seq,
            snapshot,
            Box::new(move |synced: PresenceSynced| {
                if synced.connections > max {
                    return;
                }
                // What the lost joins and leaves would have announced (origin: no local
                // connection, so every member hears it).
                for (joined, users) in [(true, synced.appeared), (false, synced.vanished)] {
                    for user in users {
                        let name = if joined {
                            names.get(&user).cloned()
                        } else {
                            None
                        };
                        let change = PresenceChange {
                            joined,
                            user,
                            name,
                            origin: ConnId(u64::MAX),
                        };
                        broker.publish(&Delivery::presence(room.clone(), change, now_ms()));
                    }
                }
            }),
        );
    }

    /// Reconcile the presence of up to [`SYNC_ROOMS_PER_SWEEP`] rooms with local members
    /// (starting where the last sweep stopped).
    fn reconcile_presence(&self) {
        if !self.store.reconciles_presence() {
            return;
        }
        let shards = self.shards.len();
        let start = self.sync_from.load(Ordering::Relaxed) % shards;
        let mut synced = 0;
        for i in 0..shards {
            let index = (start + i) % shards;
            let rooms: Vec<(RoomName, Arc<Room>)> = lock(&self.shards[index])
                .iter()
                .map(|(n, r)| (n.clone(), r.clone()))
                .collect();
            if synced + rooms.len() > SYNC_ROOMS_PER_SWEEP && synced > 0 {
                // The next sweep starts with this shard (a shard is synced whole: one
                // bigger than the bound alone is still synced, by the first sweep to reach it).
                self.sync_from.store(index, Ordering::Relaxed);
                return;
            }
            for (name, room) in rooms {
                let st = lock(&room.state);
                if !st.removed && !st.members.is_empty() {
                    self.sync_presence(&name, &st);
                    synced += 1;
                }
            }
        }
        self.sync_from.store(start, Ordering::Relaxed);
    }
}

/// The store's read for a join arrived: queue the replay (if asked for and complete) after
/// `done`'s answer, then what arrived for the member meanwhile and is not in the replay, and
/// make the member live.
fn finish_join(
    room: &Room,
    id: ConnId,
    outbox: &Outbox,
    wants_replay: bool,
    page: Page,
    done: impl FnOnce(Joined),
) {
    // Under the room's lock: no delivery of this room can pass the replay.
    let mut st = lock(&room.state);
    let Some(held) = st.catching_up.remove(&id) else {
        // Left (or disconnected) meanwhile.
        drop(st);
        return done(Joined {
            offset: page.last_offset,
            epoch: page.epoch,
            recovered: !wants_replay,
            replayed: 0,
        });
    };
    st.snapshot = None;
    let recovered = !wants_replay || (page.covered && outbox.fits(&page.messages));
    let replayed = if wants_replay && recovered {
        page.messages.len()
    } else {
        0
    };
    // The read is ahead of what the broker handed over so far: what it still brings up to
    // the joined offset is not for this member.
    let behind = match &st.live {
        Some((epoch, offset)) => *epoch != page.epoch || *offset < page.last_offset,
        None => page.last_offset.0 > 0,
    };
    if behind {
        st.seams.push(Seam {
            id,
            epoch: page.epoch.clone(),
            offset: page.last_offset,
        });
    }
    done(Joined {
        offset: page.last_offset,
        epoch: page.epoch,
        recovered,
        replayed,
    });
    if replayed > 0 {
        outbox.push_reserved(&page.messages);
    }
    let policy = st.overflow;
    for delivery in &held.items {
        // Messages up to the joined offset are in the replay or before the join.
        if delivery.offset().is_none_or(|o| o > page.last_offset) {
            outbox.push_or(delivery, policy);
        }
    }
    if held.dropped > 0 {
        outbox.count_dropped(held.dropped);
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
