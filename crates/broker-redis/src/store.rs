//! [`RedisStore`]: the hub's [`Store`] in Redis, shared by every node (process) that uses
//! the same Redis: offsets, history and dedup (`publish.lua`, through [`RedisLog`]), presence
//! per node (`presence.lua`), node liveness (heartbeat keys).
//!
//! The hub calls the store synchronously and gets answers through callbacks; here each call
//! becomes Redis work on the runtime the store was made on. Publishes and presence changes
//! keep their order (one pipelined queue, [`Writer`]); reads run concurrently.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use switchboard_hub::{
    first_match, now_ms, Append, Appended, BackendStats, Broker, ConnId, Delivery, Done, Epoch,
    Fanout, MemoryStoreConfig, NodeId, Offset, Page, PresenceChanged, PresenceCount, PresenceEntry,
    PresenceSynced, Range, RoomName, Store, Unavailable, UserId,
};
use tokio::runtime::Handle;

use crate::conn::Target;
use crate::fanout::{run_subscriber, sharded, RedisBroker, Subscriptions};
use crate::forward::{ForwardLimits, Inbox, RedisForwarder};
use crate::limits::{node_limits_key, RedisLimits};
use crate::records::{node_records_key, owned_cmd, RedisRecords};
use crate::stats::Stats;
use crate::tickets::RedisTickets;
use crate::writer::Writer;
use crate::{channel, envelope, new_epoch, AppendTarget, Error, LogConfig, RedisLog};

/// At most this many publishes and presence changes wait for Redis; more are answered
/// `unavailable` at once.
const MAX_QUEUED: usize = 100_000;

/// Settings of the Redis backend.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// How long a Redis operation may take before it is answered [`Unavailable`].
    pub timeout: Duration,
    /// History limits by room pattern, the dedup window and the presence expiry (a node
    /// whose heartbeat is older is taken for dead) — the hub's settings.
    pub store: MemoryStoreConfig,
    /// A room with neither a publish nor a join for this long is forgotten by Redis.
    pub idle_expiry: Duration,
    /// How long a lost Socket.IO socket's record is kept (`socketio.recovery_window`).
    pub recovery_window: Duration,
    /// How many requests forwarded by other nodes run here at once.
    pub forward_limits: ForwardLimits,
}

impl RedisConfig {
    /// Settings for `url` with the hub's `store` settings and defaults for the rest.
    pub fn new(url: impl Into<String>, store: MemoryStoreConfig) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            timeout: Duration::from_secs(2),
            store,
            idle_expiry: Duration::from_secs(24 * 3600),
            recovery_window: Duration::from_secs(120),
            forward_limits: ForwardLimits::default(),
        }
    }
}

/// A store and a broker that share one node identity and one Redis.
#[derive(Debug)]
pub struct Redis {
    /// The hub's store.
    pub store: Arc<RedisStore>,
    /// The hub's broker.
    pub broker: Arc<RedisBroker>,
    /// One-time connection tickets, valid on every node.
    pub tickets: Arc<RedisTickets>,
    /// Connections per address and per user, counted over every node.
    pub limits: Arc<RedisLimits>,
    /// Socket.IO recovery records, valid on every node.
    pub records: Arc<RedisRecords>,
    /// Requests for sessions that live on another node, carried to it.
    pub forwarder: RedisForwarder,
}

/// Connect to Redis, register this node, and start the tasks that keep it alive (on the
/// current tokio runtime): the pipelined writer, the pub/sub subscriber, the heartbeat.
pub async fn connect(config: RedisConfig) -> Result<Redis, Error> {
    let log = RedisLog::connect(
        &config.url,
        LogConfig {
            history_len: config.store.default_history.max_messages,
            dedup_window: config.store.dedup_window,
            idle_expiry: config.idle_expiry,
            timeout: config.timeout,
        },
    )
    .await?;
    log.load_scripts().await?;
    let node = register(&log, config.store.presence_expiry).await?;
    let stats = Arc::new(Stats::default());
    let writer = Writer::start(log.clone(), config.timeout, MAX_QUEUED, stats.clone());
    let inbox = Inbox::new(node.0, writer.clone(), config.forward_limits);
    let subs = Subscriptions::new(node.0, log.clone(), inbox.clone());
    match log.target() {
        Target::Single(url) => tokio::spawn(run_subscriber(
            Arc::downgrade(&subs),
            redis::Client::open(url.as_str())?,
            config.timeout,
            stats.clone(),
        )),
        Target::Cluster(seeds) => tokio::spawn(sharded::run(
            Arc::downgrade(&subs),
            seeds.clone(),
            config.timeout,
            stats.clone(),
        )),
    };
    let store = Arc::new(RedisStore {
        log,
        writer: writer.clone(),
        subs: subs.clone(),
        node,
        held: Mutex::new(HashMap::new()),
        stale_presence: Arc::new(Mutex::new(HashMap::new())),
        runtime: Handle::current(),
        config,
        stats,
    });
    tokio::spawn(heartbeat(Arc::downgrade(&store)));
    let tickets = Arc::new(RedisTickets::new(
        store.log.connection(),
        store.config.timeout,
    ));
    let limits = Arc::new(RedisLimits {
        log: store.log.clone(),
        writer: writer.clone(),
        node,
        books: Arc::default(),
    });
    let records = Arc::new(RedisRecords {
        log: store.log.clone(),
        writer: writer.clone(),
        node,
        window: store.config.recovery_window,
        timeout: store.config.timeout,
    });
    Ok(Redis {
        store,
        broker: Arc::new(RedisBroker { subs, writer, node }),
        tickets,
        limits,
        records,
        forwarder: RedisForwarder { inbox },
    })
}

// Node-level keys share one hash tag, `{nodes}`: in a Redis Cluster they live in one slot,
// so the heartbeat's and the sweep's pipelines stay valid (they are small).

/// A node's heartbeat (expires with the presence TTL: a node without one is dead).
pub(crate) fn node_key(node: NodeId) -> String {
    format!("sb:{{nodes}}:{}", node.0)
}

fn node_rooms_key(node: NodeId) -> String {
    format!("sb:{{nodes}}:{}:rooms", node.0)
}

/// Every node's id, dead or alive (the sweep removes dead ones).
const NODES_KEY: &str = "sb:{nodes}";

/// A node id no live node has.
async fn register(log: &RedisLog, expiry: Duration) -> Result<NodeId, Error> {
    let mut conn = log.connection();
    loop {
        let node = NodeId(crate::template::sentinels().0 as u32);
        let fresh: Option<String> = redis::cmd("SET")
            .arg(node_key(node))
            .arg(now_ms())
            .arg("NX")
            .arg("PX")
            .arg(expiry.as_millis().max(1).to_string())
            .query_async(&mut conn)
            .await?;
        if fresh.is_some() {
            let _: i64 = redis::cmd("SADD")
                .arg(NODES_KEY)
                .arg(node.0)
                .query_async(&mut conn)
                .await?;
            return Ok(node);
        }
    }
}

/// Refresh this node's heartbeat key while the store lives, and drop the presence of
/// nodes whose heartbeat expired (so presence converges within the expiry, not at the next
/// hub sweep).
async fn heartbeat(store: Weak<RedisStore>) {
    loop {
        let Some(s) = store.upgrade() else { return };
        let expiry = s.config.store.presence_expiry;
        let mut conn = s.log.connection();
        let node = s.node;
        let (log, writer) = (s.log.clone(), s.writer.clone());
        let window = s.config.recovery_window;
        drop(s);
        // This node's own heartbeat first: a long sweep must not let it lapse.
        let refreshed: Result<(), redis::RedisError> = redis::pipe()
            .cmd("SET")
            .arg(node_key(node))
            .arg(now_ms())
            .arg("PX")
            .arg(expiry.as_millis().max(1).to_string())
            .ignore()
            .cmd("SADD")
            .arg(NODES_KEY)
            .arg(node.0)
            .ignore()
            .query_async(&mut conn)
            .await;
        if let Err(e) = refreshed {
            tracing::warn!(error = %e, "redis: heartbeat failed");
        }
        if let Some(s) = store.upgrade() {
            s.resync_released_rooms();
        }
        // Bounded by the interval: the next heartbeat is never late because of it.
        let sweep = sweep_dead_nodes(&log, &writer, window);
        match tokio::time::timeout(expiry / 3, sweep).await {
            Ok(Err(e)) => tracing::warn!(error = %e, "redis: sweep of dead nodes failed"),
            Err(_) => tracing::warn!("redis: sweep of dead nodes cut short (next round goes on)"),
            Ok(Ok(())) => {}
        }
        tokio::time::sleep(expiry / 3).await;
    }
}

/// The hub's store in Redis (see the module docs). Made by [`connect`].
pub struct RedisStore {
    log: RedisLog,
    writer: Writer,
    subs: Arc<Subscriptions>,
    node: NodeId,
    /// Rooms with local members.
    /// Rooms with local members: holds not yet released (a room can be made again on the
    /// hub before the old one's release arrives, so this counts).
    held: Mutex<HashMap<RoomName, usize>>,
    /// Rooms where one of this node's presence changes or syncs failed, with the highest
    /// presence sequence number seen there: the heartbeat sends an empty sync for those the
    /// node no longer holds (the hub's sweep syncs the others).
    stale_presence: Arc<Mutex<HashMap<RoomName, Stale>>>,
    runtime: Handle,
    config: RedisConfig,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn held(store: &RedisStore) -> std::sync::MutexGuard<'_, HashMap<RoomName, usize>> {
    store.held.lock().unwrap_or_else(|e| e.into_inner())
}

/// A room where a presence change or sync of this node failed.
#[derive(Debug, Clone, Copy)]
struct Stale {
    /// The highest presence sequence number seen there.
    seq: u64,
    /// A sync for it is on its way.
    syncing: bool,
}

/// At most this many rooms are remembered as stale (beyond, a room's ghost waits for the
/// node's end), and this many get a sync per heartbeat.
const MAX_STALE_ROOMS: usize = 100_000;
const STALE_SYNCS_PER_HEARTBEAT: usize = 500;

type StaleRooms = Mutex<HashMap<RoomName, Stale>>;

fn lock_stale(stale: &StaleRooms) -> std::sync::MutexGuard<'_, HashMap<RoomName, Stale>> {
    stale.lock().unwrap_or_else(|e| e.into_inner())
}

/// A presence change or sync numbered `seq` in `room` failed.
fn mark_stale(stale: &StaleRooms, room: RoomName, seq: u64) {
    let mut stale = lock_stale(stale);
    if stale.len() >= MAX_STALE_ROOMS && !stale.contains_key(&room) {
        return;
    }
    let entry = stale.entry(room).or_insert(Stale {
        seq,
        syncing: false,
    });
    entry.seq = entry.seq.max(seq);
    entry.syncing = false;
}

impl RedisStore {
    /// Send an empty presence sync for rooms where a change failed and that this node no
    /// longer holds (nothing else would correct them: the hub syncs only held rooms). At
    /// most [`STALE_SYNCS_PER_HEARTBEAT`], none for a room whose sync is on its way.
    fn resync_released_rooms(self: &Arc<Self>) {
        let due: Vec<(RoomName, u64)> = {
            let mut stale = lock_stale(&self.stale_presence);
            stale
                .iter_mut()
                .filter(|(_, s)| !s.syncing)
                .take(STALE_SYNCS_PER_HEARTBEAT)
                .map(|(room, s)| {
                    s.syncing = true;
                    (room.clone(), s.seq)
                })
                .collect()
        };
        for (room, seq) in due {
            // Under the held lock: a join that holds the room again comes after this sync.
            let held = held(self);
            if held.contains_key(&room) {
                if let Some(s) = lock_stale(&self.stale_presence).get_mut(&room) {
                    s.syncing = false;
                }
                continue;
            }
            let (writer, node, name) = (self.writer.clone(), self.node, room.clone());
            // Ghosts removed: the members (on other nodes) hear them leave.
            let announce = Box::new(move |synced: PresenceSynced| {
                for user in synced.vanished {
                    announce_left(&writer, name.as_str(), node, user.0.to_string());
                }
            });
            self.presence_sync(&room, self.node, seq, Vec::new(), announce);
            drop(held);
        }
    }
}

/// Tell `room`'s members on every node that `user` left with no connection of `node`
/// (whose presence entries were dropped or corrected without a member's leave).
fn announce_left(writer: &Writer, room: &str, node: NodeId, user: String) {
    let payload = envelope::presence(&envelope::PresenceEnvelope {
        joined: false,
        origin: (node.0, 0),
        timestamp_ms: now_ms(),
        user,
        name: None,
    });
    writer.publish(&channel(room), &payload, Box::new(|_| {}));
}

/// Run one Redis operation (`what`, for the log) within `timeout`, timing it in `stats`;
/// a failure or no answer in time is counted and is [`Unavailable`].
async fn timed<T>(
    stats: &Stats,
    timeout: Duration,
    what: &str,
    operation: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Unavailable> {
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(timeout, operation).await;
    match result {
        Ok(Ok(answer)) => {
            stats.observe(started.elapsed());
            return Ok(answer);
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "redis: {what} failed"),
        Err(_) => tracing::warn!(?timeout, "redis: {what} got no answer in time"),
    }
    stats.error();
    Err(Unavailable)
}

/// Redis's `COUNT` takes a signed 64-bit number; the hub says `usize::MAX` for "all".
const MAX_READ: usize = 1_000_000;

impl RedisStore {
    /// This node's id in the deployment.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// This node has presence entries in `room` (what the sweep of a dead node reads).
    fn note_node_room(&self, room: &RoomName) {
        let mut cmd = redis::cmd("SADD");
        cmd.arg(node_rooms_key(self.node)).arg(room.as_str());
        self.writer.submit(cmd, Box::new(|_| {}));
    }

    fn presence_change(
        &self,
        room: &RoomName,
        seq: u64,
        args: &[&str],
        done: Done<PresenceChanged>,
    ) {
        let cmd = self.log.presence_command(room.as_str(), self.node.0, args);
        let (stale, room) = (self.stale_presence.clone(), room.clone());
        self.writer.submit(
            cmd,
            Box::new(move |reply| {
                let answer = match reply {
                    Ok(redis::Value::Array(items)) => match (items.first(), items.get(1)) {
                        (Some(redis::Value::Int(first)), Some(redis::Value::Int(conns))) => {
                            Some(PresenceChanged {
                                first_or_last: *first == 1,
                                connections: usize::try_from(*conns).unwrap_or(0),
                            })
                        }
                        _ => None,
                    },
                    _ => None,
                };
                // A change Redis did not confirm announces nothing; the next sync corrects
                // the counts.
                if answer.is_none() {
                    mark_stale(&stale, room, seq);
                }
                done(answer.unwrap_or(PresenceChanged {
                    first_or_last: false,
                    connections: 0,
                }))
            }),
        );
    }
}

impl Store for RedisStore {
    fn register_node(&self) -> NodeId {
        self.node
    }

    /// The store keeps its own heartbeat (a task, every third of the presence expiry).
    fn heartbeat(&self, _node: NodeId) {}

    fn append(&self, append: Append, _broker: &Arc<dyn Broker>, done: Done<Appended>) {
        let Append {
            room,
            kind,
            once,
            origin,
            build,
        } = append;
        let history_len = first_match(
            &self.config.store.history,
            &room,
            self.config.store.default_history,
        )
        .max_messages;
        let floor = self.subs.position(&room);
        let target = AppendTarget {
            room: room.as_str(),
            kind: &kind,
            origin: origin.map(|c| (self.node.0, c.0)),
            once: once.as_ref().map(|(user, id)| (&*user.0, &**id)),
            floor: floor
                .as_ref()
                .map(|(epoch, offset)| (epoch.as_str(), *offset)),
            history_len,
        };
        let call = self.log.append_call(&target, move |offset, timestamp_ms| {
            build(Offset(offset), timestamp_ms)
        });
        let call = match call {
            Ok(call) => call,
            Err(e) => {
                tracing::warn!(error = %e, "redis: cannot prepare a publish");
                return done(Appended::Unavailable);
            }
        };
        // Not handed to the broker here: every node, this one included, gets it from Redis.
        self.writer.submit(
            self.log.append_command(&call),
            Box::new(move |reply| {
                let appended = reply.map_err(|_| None).and_then(|value| {
                    crate::parse_appended(value).map_err(|e| Some(e.to_string()))
                });
                done(match appended {
                    Ok(crate::Appended::Published { offset, epoch, .. }) => Appended::Published {
                        offset: Offset(offset),
                        epoch: Epoch::from(epoch),
                        fanout: Fanout::default(),
                    },
                    Ok(crate::Appended::Duplicate { offset, epoch }) => Appended::Duplicate {
                        offset: Offset(offset),
                        epoch: Epoch::from(epoch),
                    },
                    Err(error) => {
                        if let Some(error) = error {
                            tracing::warn!(error, "redis: publish refused");
                        }
                        Appended::Unavailable
                    }
                })
            }),
        );
    }

    fn read(&self, room: &RoomName, range: Range, done: Done<Result<Option<Page>, Unavailable>>) {
        let open = held(self).contains_key(room);
        let ready = self.subs.ready(room);
        let (log, room, timeout) = (self.log.clone(), room.clone(), self.config.timeout);
        let stats = self.stats.clone();
        let me = self.node.0;
        let max_age = first_match(
            &self.config.store.history,
            &room,
            self.config.store.default_history,
        )
        .max_age;
        self.runtime.spawn(async move {
            // A member's read must see everything its subscription will not bring.
            if let Some(ready) = ready {
                let _ = tokio::time::timeout(timeout, ready).await;
            }
            let (after, epoch) = (range.after.0, range.epoch.as_ref().map(Epoch::as_str));
            let limit = range.limit.min(MAX_READ);
            let read = async {
                if open {
                    let fresh = new_epoch();
                    log.open_range(room.as_str(), &fresh, after, epoch, limit, range.max_bytes)
                        .await
                        .map(Some)
                } else {
                    log.read_range(room.as_str(), after, epoch, limit, range.max_bytes)
                        .await
                }
            };
            let Ok(page) = timed(&stats, timeout, "read", read).await else {
                return done(Err(Unavailable));
            };
            done(Ok(page.map(|page| {
                let epoch = Epoch::from(page.epoch);
                let oldest = now_ms().saturating_sub(max_age.as_millis() as u64);
                let before = page.entries.len();
                let messages: Vec<Arc<Delivery>> = page
                    .entries
                    .into_iter()
                    .filter(|e| e.timestamp_ms >= oldest)
                    .map(|e| {
                        // An origin on this node keeps its meaning (connection ids are
                        // per process).
                        let origin = e
                            .origin
                            .and_then(|(node, conn)| (node == me).then_some(ConnId(conn)));
                        Delivery::message_from(
                            room.clone(),
                            Arc::from(e.kind.as_str()),
                            e.message,
                            (Offset(e.offset), epoch.clone()),
                            e.timestamp_ms,
                            origin,
                        )
                    })
                    .collect();
                // Expired by age: a replay that needed them is not complete.
                let aged_out = messages.len() < before;
                Page {
                    covered: page.covered && !aged_out,
                    messages,
                    more: page.more,
                    last_offset: Offset(page.last_offset),
                    epoch,
                }
            })));
        });
    }

    fn hold(&self, room: &RoomName, _node: NodeId) {
        *held(self).entry(room.clone()).or_default() += 1;
    }

    fn release(&self, room: &RoomName, _node: NodeId) {
        {
            let mut held = held(self);
            match held.get_mut(room) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    // Made again meanwhile: still held.
                    return;
                }
                Some(_) => {
                    held.remove(room);
                }
                None => {}
            }
        }
        let mut cmd = redis::cmd("SREM");
        cmd.arg(node_rooms_key(self.node)).arg(room.as_str());
        self.writer.submit(cmd, Box::new(|_| {}));
    }

    fn presence_join(
        &self,
        room: &RoomName,
        _node: NodeId,
        user: &UserId,
        name: Option<&Arc<str>>,
        seq: u64,
        done: Done<PresenceChanged>,
    ) {
        self.note_node_room(room);
        let (flag, name) = match name {
            Some(name) => ("1", &**name),
            None => ("0", ""),
        };
        let seq_text = seq.to_string();
        self.presence_change(room, seq, &["join", &user.0, flag, name, &seq_text], done);
    }

    fn presence_leave(
        &self,
        room: &RoomName,
        _node: NodeId,
        user: &UserId,
        seq: u64,
        done: Done<PresenceChanged>,
    ) {
        self.presence_change(room, seq, &["leave", &user.0, &seq.to_string()], done);
    }

    fn reconciles_presence(&self) -> bool {
        true
    }

    fn presence_sync(
        &self,
        room: &RoomName,
        _node: NodeId,
        seq: u64,
        snapshot: Vec<PresenceCount>,
        done: Done<PresenceSynced>,
    ) {
        if !snapshot.is_empty() {
            self.note_node_room(room);
        }
        let mut args: Vec<String> = Vec::with_capacity(2 + 3 * snapshot.len());
        args.push("sync".into());
        args.push(seq.to_string());
        for entry in snapshot {
            args.push(entry.user.0.to_string());
            args.push(entry.connections.to_string());
            // (A display name is never empty: empty stands for none.)
            args.push(entry.name.as_deref().unwrap_or_default().to_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let cmd = self.log.presence_command(room.as_str(), self.node.0, &args);
        let (stale, room) = (self.stale_presence.clone(), room.clone());
        self.writer.submit(
            cmd,
            Box::new(move |reply| {
                match &reply {
                    // Applied (a refused sync answers an empty array).
                    Ok(redis::Value::Array(items)) if items.len() == 3 => {
                        // Everything numbered up to `seq` is in Redis as it is here.
                        let mut stale = lock_stale(&stale);
                        match stale.get_mut(&room) {
                            Some(s) if s.seq <= seq => {
                                stale.remove(&room);
                            }
                            // A later change failed meanwhile: sync again.
                            Some(s) => s.syncing = false,
                            None => {}
                        }
                    }
                    _ => mark_stale(&stale, room, seq),
                }
                let users = |v: Option<&redis::Value>| -> Vec<UserId> {
                    match v {
                        Some(redis::Value::Array(items)) => items
                            .iter()
                            .filter_map(|i| match i {
                                redis::Value::BulkString(b) => {
                                    Some(UserId(Arc::from(String::from_utf8_lossy(b).as_ref())))
                                }
                                _ => None,
                            })
                            .collect(),
                        _ => Vec::new(),
                    }
                };
                // A sync Redis did not confirm changes nothing the members must hear; the
                // next one tries again.
                let synced = match reply {
                    Ok(redis::Value::Array(items)) => PresenceSynced {
                        appeared: users(items.first()),
                        vanished: users(items.get(1)),
                        connections: match items.get(2) {
                            Some(redis::Value::Int(n)) => usize::try_from(*n).unwrap_or(0),
                            _ => 0,
                        },
                    },
                    _ => PresenceSynced::default(),
                };
                done(synced)
            }),
        );
    }

    fn presence(&self, room: &RoomName, done: Done<Result<Vec<PresenceEntry>, Unavailable>>) {
        let (log, room, timeout) = (self.log.clone(), room.clone(), self.config.timeout);
        let stats = self.stats.clone();
        self.runtime.spawn(async move {
            let Ok(entries) = timed(
                &stats,
                timeout,
                "presence read",
                log.presence(room.as_str()),
            )
            .await
            else {
                return done(Err(Unavailable));
            };
            done(Ok(entries
                .into_iter()
                .map(|(user, connections, name)| PresenceEntry {
                    user: UserId(Arc::from(user.as_str())),
                    name: name.map(|n| Arc::from(n.as_str())),
                    connections: connections as usize,
                })
                .collect()))
        });
    }

    /// Rooms are never "void" in Redis: one that does not exist reads as epoch `0`, which no
    /// real epoch is (they are random 64-bit numbers in hex).
    fn void_epoch(&self) -> Epoch {
        Epoch::from("0")
    }

    fn rooms(&self) -> Vec<RoomName> {
        held(self).keys().cloned().collect()
    }

    /// Nothing to do here: history expires in Redis by itself, and the heartbeat task drops
    /// the presence of dead nodes (every third of the presence expiry).
    fn sweep(&self) -> usize {
        0
    }

    fn stats(&self) -> Option<BackendStats> {
        Some(self.stats.snapshot())
    }
}

/// Drop the presence entries of nodes whose heartbeat expired, telling the rooms'
/// members which users left with them. Idempotent: nodes may sweep at the same time.
async fn sweep_dead_nodes(log: &RedisLog, writer: &Writer, window: Duration) -> Result<(), Error> {
    let mut conn = log.connection();
    let nodes: Vec<u32> = redis::cmd("SMEMBERS")
        .arg(NODES_KEY)
        .query_async(&mut conn)
        .await?;
    for node in nodes.into_iter().map(NodeId) {
        let alive: bool = redis::cmd("EXISTS")
            .arg(node_key(node))
            .query_async(&mut conn)
            .await?;
        if alive {
            continue;
        }
        let rooms: Vec<String> = redis::cmd("SMEMBERS")
            .arg(node_rooms_key(node))
            .query_async(&mut conn)
            .await?;
        if !rooms.is_empty() {
            // (Redis may have restarted since any node loaded the scripts.)
            log.load_scripts().await?;
        }
        for room in rooms {
            let gone: Vec<String> = log
                .presence_command(&room, node.0, &["drop"])
                .query_async(&mut conn)
                .await?;
            tracing::info!(
                node = node.0,
                room,
                users = gone.len(),
                "redis: dropped a dead node's presence"
            );
            for user in gone {
                announce_left(writer, &room, node, user);
            }
        }
        // Its Socket.IO sockets: recoverable elsewhere for the window, from now.
        let pids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(node_records_key(node))
            .query_async(&mut conn)
            .await?;
        for pid in pids {
            // Only records the dead node still owns: a socket that recovered elsewhere is live.
            let _: i64 = owned_cmd(&pid, node, Some(window))
                .query_async(&mut conn)
                .await?;
        }
        // Its share of the connection counts.
        let counters: Vec<String> = redis::cmd("SMEMBERS")
            .arg(node_limits_key(node))
            .query_async(&mut conn)
            .await?;
        for counter in counters {
            let _: i64 = redis::cmd("HDEL")
                .arg(&counter)
                .arg(node.0)
                .query_async(&mut conn)
                .await?;
        }
        let _: () = redis::pipe()
            .cmd("DEL")
            .arg(node_rooms_key(node))
            .ignore()
            .cmd("DEL")
            .arg(node_limits_key(node))
            .ignore()
            .cmd("DEL")
            .arg(node_records_key(node))
            .ignore()
            .cmd("SREM")
            .arg(NODES_KEY)
            .arg(node.0)
            .ignore()
            .query_async(&mut conn)
            .await?;
    }
    Ok(())
}
