//! [`RedisBroker`]: the hub's [`Broker`] over Redis pub/sub. A node subscribes to a room's
//! channel while it has local members there (no firehose), and every node, the publishing
//! one included, gets each message from Redis — one path, in the order the publish script
//! ran, which is offset order.
//!
//! Gap-free across reconnections: the broker remembers the last offset it delivered per
//! room. When its pub/sub connection breaks, it reconnects with backoff, subscribes again,
//! and reads what the rooms missed from their history (holding live messages meanwhile),
//! so members see no gap and no duplicate. What the history no longer holds is reported to
//! the members as `lagged` ([`Node::missed`]), never skipped silently. A gap noticed on the
//! live stream (an offset jumps) is filled the same way.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use switchboard_hub::{
    Body, Broker, ConnId, Delivery, Epoch, Fanout, Node, NodeId, Offset, PresenceChange, RoomName,
    UserId,
};
use tokio::sync::{oneshot, Notify};

use crate::envelope::{self, Envelope, PresenceEnvelope, Received};
use crate::forward::{self, Inbox};
use crate::stats::Stats;
use crate::writer::Writer;
use crate::{channel, RedisLog};

pub(crate) mod sharded;

/// The connection id given to presence changes of other nodes' connections (a local
/// member is never skipped because of them).
const REMOTE: ConnId = ConnId(u64::MAX);

/// Requests between nodes (`disconnect\n<node>\n<user>`): every node subscribes to it.
const CONTROL: &str = "sb:control";

/// At most this many live messages are held per room while a gap is filled; more are
/// dropped and reported to the members as missed (`lagged`).
const MAX_HELD: usize = 10_000;

/// The epoch of a position taken before the room had one (it did not exist yet): a catch-up
/// from it takes whatever epoch the room has, from its first message.
const NO_EPOCH: &str = "";

/// A catch-up read takes at most this much history per round trip.
const CATCH_UP_BYTES: usize = 4 << 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One room as this node's pub/sub connection sees it.
#[derive(Default)]
struct RoomSub {
    /// The hub's side(s) of the room on this node.
    nodes: Vec<Weak<dyn Node>>,
    /// Its `SUBSCRIBE` is confirmed on the current connection.
    active: bool,
    /// Waiting for `active` (a join's history read must not start before it: a message
    /// published between the read and the subscription would be lost).
    waiters: Vec<oneshot::Sender<()>>,
    /// The last message delivered: epoch and offset.
    position: Option<(Epoch, u64)>,
    /// While the history fills a gap: live messages, delivered after it.
    held: Option<Vec<Envelope>>,
    /// Live messages not held because `held` was full: reported as missed after the gap.
    held_dropped: u64,
}

impl RoomSub {
    fn deliver(&mut self, room: &RoomName, envelope: Envelope, me: u32) {
        let epoch = match &self.position {
            Some((epoch, _)) if epoch.as_str() == envelope.epoch => epoch.clone(),
            previous => {
                let epoch = Epoch::from(envelope.epoch.as_str());
                if previous
                    .as_ref()
                    .is_some_and(|(e, _)| e.as_str() != NO_EPOCH)
                {
                    // The members' positions are in the old epoch: reset them first.
                    let after = envelope.offset.saturating_sub(1);
                    for node in self.nodes.iter().filter_map(Weak::upgrade) {
                        node.epoch_changed(room, &epoch, after);
                    }
                }
                epoch
            }
        };
        let origin = envelope
            .origin
            .and_then(|(node, conn)| (node == me).then_some(ConnId(conn)));
        let delivery = Delivery::message_from(
            room.clone(),
            Arc::from(envelope.kind.as_str()),
            envelope.message,
            (Offset(envelope.offset), epoch.clone()),
            envelope.timestamp_ms,
            origin,
        );
        self.position = Some((epoch, envelope.offset));
        for node in &self.nodes {
            if let Some(node) = node.upgrade() {
                node.deliver(&delivery);
            }
        }
    }

    fn missed(&self, count: u64) {
        if count == 0 {
            return;
        }
        for node in &self.nodes {
            if let Some(node) = node.upgrade() {
                node.missed(count);
            }
        }
    }

    /// Hold a live message while a gap is filled (bounded: beyond it, counted as missed).
    fn hold(&mut self, envelope: Envelope) {
        if let Some(held) = &mut self.held {
            if held.len() < MAX_HELD {
                held.push(envelope);
            } else {
                self.held_dropped += 1;
            }
        }
    }

    /// The gap is filled (or given up on): deliver what was held, report what was not.
    fn release_held(&mut self, room: &RoomName, me: u32) {
        for envelope in self.held.take().unwrap_or_default() {
            self.deliver_after_gap(room, envelope, me);
        }
        let dropped = std::mem::take(&mut self.held_dropped);
        self.missed(dropped);
    }

    /// Deliver `envelope` in order, telling members about offsets nobody can give them.
    fn deliver_after_gap(&mut self, room: &RoomName, envelope: Envelope, me: u32) {
        match &self.position {
            Some((epoch, last)) if epoch.as_str() == envelope.epoch => {
                if envelope.offset <= *last {
                    return; // already delivered
                }
                self.missed(envelope.offset - last - 1);
            }
            _ => {}
        }
        self.deliver(room, envelope, me);
    }
}

/// The room whose channel is `channel_name` (`sb:{<room>}`).
fn room_of(channel_name: &str) -> Option<RoomName> {
    channel_name
        .strip_prefix("sb:{")
        .and_then(|r| r.strip_suffix('}'))
        .and_then(|r| RoomName::new(r).ok())
}

/// What the broker and its subscriber task share.
pub(crate) struct Subscriptions {
    me: u32,
    rooms: RwLock<HashMap<RoomName, Arc<Mutex<RoomSub>>>>,
    /// Rooms whose wanted subscription changed since the subscriber task last looked.
    changed: Mutex<HashSet<RoomName>>,
    wake: Arc<Notify>,
    log: RedisLog,
    /// This node's hub (for what other nodes ask of it).
    hub: std::sync::OnceLock<Weak<switchboard_hub::Hub>>,
    /// Requests forwarded to and from this node, and the channel they arrive on.
    pub(crate) forward: Arc<Inbox>,
    forward_channel: String,
}

impl Subscriptions {
    pub(crate) fn new(me: u32, log: RedisLog, forward: Arc<Inbox>) -> Arc<Subscriptions> {
        Arc::new(Subscriptions {
            forward,
            forward_channel: forward::channel(me),
            me,
            rooms: RwLock::new(HashMap::new()),
            changed: Mutex::new(HashSet::new()),
            wake: Arc::new(Notify::new()),
            log,
            hub: std::sync::OnceLock::new(),
        })
    }

    /// This node's position in `room` (the epoch and the last offset it saw), when it is
    /// subscribed and has one: the floor of its publishes there.
    pub(crate) fn position(&self, room: &RoomName) -> Option<(Epoch, u64)> {
        let sub = self.room(room)?;
        let st = lock(&sub);
        st.position
            .clone()
            .filter(|(epoch, _)| epoch.as_str() != NO_EPOCH)
    }

    fn room(&self, room: &RoomName) -> Option<Arc<Mutex<RoomSub>>> {
        self.rooms
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(room)
            .cloned()
    }

    /// Resolves once `room`'s subscription is confirmed (or at once when this node does
    /// not subscribe to it): `None` when there is nothing to wait for.
    pub(crate) fn ready(&self, room: &RoomName) -> Option<oneshot::Receiver<()>> {
        let sub = self.room(room)?;
        let mut sub = lock(&sub);
        if sub.active {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        sub.waiters.push(tx);
        Some(rx)
    }

    fn changed(&self, room: &RoomName) {
        lock(&self.changed).insert(room.clone());
        self.wake.notify_one();
    }

    /// Another node's request (see [`CONTROL`]).
    fn control(&self, payload: &[u8]) {
        let text = String::from_utf8_lossy(payload);
        let mut parts = text.splitn(3, '\n');
        let (Some("disconnect"), Some(node), Some(user)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return tracing::debug!("redis: unknown control message ignored");
        };
        if node == self.me.to_string() {
            return; // its own request: done locally already
        }
        if let Some(hub) = self.hub.get().and_then(Weak::upgrade) {
            let n = hub.disconnect_local_user(&UserId(Arc::from(user)));
            tracing::debug!(
                user,
                connections = n,
                "disconnected at another node's request"
            );
        }
    }

    /// A message or presence change arrived on `channel_name`.
    fn receive(self: &Arc<Self>, channel_name: &str, payload: bytes::Bytes) {
        if channel_name == CONTROL {
            return self.control(&payload);
        }
        if channel_name == self.forward_channel {
            return self.forward.received(payload);
        }
        let Some(room) = room_of(channel_name) else {
            return;
        };
        let Some(sub) = self.room(&room) else {
            return; // unsubscribed meanwhile
        };
        let mut st = lock(&sub);
        match envelope::parse_received(&payload) {
            Some(Received::Message(envelope)) => {
                if st.held.is_some() {
                    return st.hold(envelope);
                }
                let gap_from = match &st.position {
                    Some((epoch, last)) if epoch.as_str() == envelope.epoch => {
                        if envelope.offset <= *last {
                            return; // a repeat
                        }
                        (envelope.offset > last + 1).then(|| (epoch.clone(), *last))
                    }
                    // A new epoch (Redis lost the room): its first messages may have gone by.
                    Some(_) if envelope.offset > 1 => {
                        Some((Epoch::from(envelope.epoch.as_str()), 0))
                    }
                    _ => None,
                };
                if let Some(from) = gap_from {
                    // Messages went missing on the way: fill the gap from history.
                    st.held = Some(vec![envelope]);
                    drop(st);
                    tokio::spawn(self.clone().catch_up(room, from));
                    return;
                }
                st.deliver(&room, envelope, self.me);
            }
            Some(Received::Presence(change)) => {
                let origin = if change.origin.0 == self.me {
                    ConnId(change.origin.1)
                } else {
                    REMOTE
                };
                let delivery = Delivery::presence(
                    room,
                    PresenceChange {
                        joined: change.joined,
                        user: UserId(Arc::from(change.user.as_str())),
                        name: change.name.map(|n| Arc::from(n.as_str())),
                        origin,
                    },
                    change.timestamp_ms,
                );
                for node in &st.nodes {
                    if let Some(node) = node.upgrade() {
                        node.deliver(&delivery);
                    }
                }
            }
            None => tracing::debug!(channel = channel_name, "redis: not an envelope, ignored"),
        }
    }

    /// Deliver what `room` got after `from` from its history, then the held live messages,
    /// in order; report what no one has any more.
    async fn catch_up(self: Arc<Self>, room: RoomName, from: (Epoch, u64)) {
        let (mut epoch, mut after) = from;
        let mut failures = 0;
        loop {
            let known = (epoch.as_str() != NO_EPOCH).then(|| epoch.as_str());
            let page = self
                .log
                .read_range(room.as_str(), after, known, 100_000, CATCH_UP_BYTES)
                .await;
            let rolled_back =
                matches!(&page, Ok(Some(p)) if p.epoch == epoch.as_str() && p.last_offset < after);
            if rolled_back && failures < 10 {
                // Redis lost writes this node saw (the room's offset went back): the room
                // moves to a new epoch, read from its start on the next turn.
                if let Err(e) = self
                    .log
                    .roll_over(room.as_str(), epoch.as_str(), after)
                    .await
                {
                    failures += 1;
                    tracing::warn!(error = %e, room = room.as_str(), "redis: cannot move a room to a new epoch");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                continue;
            }
            let Some(sub) = self.room(&room) else {
                return; // nobody here any more
            };
            let mut st = lock(&sub);
            let page = match page {
                Ok(page) => page,
                Err(e) if failures < 10 => {
                    failures += 1;
                    tracing::debug!(error = %e, room = room.as_str(), "redis: catch-up read failed");
                    drop(st);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, room = room.as_str(), "redis: cannot fill a gap");
                    st.missed(1);
                    None
                }
            };
            if let Some(page) = page {
                if page.epoch != epoch.as_str() {
                    // The room is in another epoch now: what the old one had after our
                    // position is gone (say so, unless we had none), and the new one is read
                    // from its start.
                    if epoch.as_str() != NO_EPOCH {
                        st.missed(1);
                    }
                    epoch = Epoch::from(page.epoch.as_str());
                    after = 0;
                    drop(st);
                    continue;
                }
                for entry in page.entries {
                    let envelope = Envelope {
                        epoch: page.epoch.clone(),
                        offset: entry.offset,
                        timestamp_ms: entry.timestamp_ms,
                        origin: entry.origin,
                        kind: entry.kind,
                        message: entry.message,
                    };
                    st.deliver_after_gap(&room, envelope, self.me);
                }
                if page.more {
                    after = st.position.as_ref().map_or(after, |(_, o)| *o);
                    drop(st);
                    continue;
                }
                // Trimmed away before anyone read it: the live messages show how many.
                if st.held.as_ref().is_some_and(Vec::is_empty) {
                    let last = st.position.as_ref().map_or(after, |(_, o)| *o);
                    st.missed(page.last_offset.saturating_sub(last));
                }
            }
            st.release_held(&room, self.me);
            return;
        }
    }

    /// Where a newly subscribed room stands (a gap after a broken connection is filled from
    /// here): the offset before the first message held since the subscription, or else the
    /// room's latest offset (a room that does not exist yet: from its first message). Held
    /// messages are then delivered.
    async fn baseline(self: Arc<Self>, room: RoomName) {
        let meta = self
            .log
            .read_range(room.as_str(), u64::MAX, None, 0, 0)
            .await;
        let Some(sub) = self.room(&room) else { return };
        let mut st = lock(&sub);
        if st.position.is_none() {
            let first = st.held.as_ref().and_then(|h| h.first());
            st.position = match (first, meta) {
                (Some(first), _) => Some((
                    Epoch::from(first.epoch.as_str()),
                    first.offset.saturating_sub(1),
                )),
                (None, Ok(Some(page))) => Some((Epoch::from(page.epoch), page.last_offset)),
                (None, Ok(None)) => Some((Epoch::from(NO_EPOCH), 0)),
                (None, Err(e)) => {
                    tracing::debug!(error = %e, room = room.as_str(), "redis: no baseline");
                    None
                }
            };
        }
        st.release_held(&room, self.me);
    }

    /// The subscription of `rooms` is confirmed on this connection.
    fn activated(self: &Arc<Self>, rooms: &[RoomName]) {
        for room in rooms {
            let Some(sub) = self.room(room) else { continue };
            let mut st = lock(&sub);
            st.active = true;
            for waiter in st.waiters.drain(..) {
                let _ = waiter.send(());
            }
            match st.position.clone() {
                // Subscribed again after a broken connection: fill what went by meanwhile.
                Some(from) if st.held.is_some() => {
                    drop(st);
                    tokio::spawn(self.clone().catch_up(room.clone(), from));
                }
                Some(_) => {}
                // First subscribed (or never delivered to): take a baseline, holding live
                // messages meanwhile, so a later gap has a start.
                None => {
                    if st.held.is_none() {
                        st.held = Some(Vec::new());
                    }
                    drop(st);
                    tokio::spawn(self.clone().baseline(room.clone()));
                }
            }
        }
    }

    /// What to subscribe to and unsubscribe from, given what the connection has
    /// (`subscribed`): the rooms whose wish changed since the last call. Rooms wanted again
    /// before their unsubscription went out (a quick leave and rejoin) are still
    /// subscribed: active at once.
    fn take_changes(
        self: &Arc<Self>,
        subscribed: &HashSet<RoomName>,
    ) -> (Vec<RoomName>, Vec<RoomName>) {
        let changed: Vec<RoomName> = lock(&self.changed).drain().collect();
        if changed.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let (wanted, unwanted): (Vec<RoomName>, Vec<RoomName>) = {
            let rooms = self.rooms.read().unwrap_or_else(|e| e.into_inner());
            changed.into_iter().partition(|r| rooms.contains_key(r))
        };
        let (again, add): (Vec<RoomName>, Vec<RoomName>) =
            wanted.into_iter().partition(|r| subscribed.contains(r));
        self.activated(&again);
        let remove = unwanted
            .into_iter()
            .filter(|r| subscribed.contains(r))
            .collect();
        (add, remove)
    }

    /// The connection broke: every room must be subscribed again, and what went by
    /// meanwhile read from history.
    fn interrupted(&self) {
        let rooms = self.rooms.read().unwrap_or_else(|e| e.into_inner());
        let mut changed = lock(&self.changed);
        for (name, sub) in rooms.iter() {
            Self::interrupt(sub);
            changed.insert(name.clone());
        }
    }

    /// `room`'s subscription was dropped by Redis (its slot moved to another shard): it
    /// must be subscribed again, and what went by meanwhile read from history.
    fn interrupted_room(&self, room: &RoomName) {
        if let Some(sub) = self.room(room) {
            Self::interrupt(&sub);
            self.changed(room);
        }
    }

    fn interrupt(sub: &Mutex<RoomSub>) {
        let mut st = lock(sub);
        st.active = false;
        if st.held.is_none() {
            st.held = Some(Vec::new());
        }
    }

    /// No connection could be made: joins waiting for a subscription go on without one
    /// (their history read fails the same way and says so).
    fn release_waiters(&self) {
        let rooms = self.rooms.read().unwrap_or_else(|e| e.into_inner());
        for sub in rooms.values() {
            lock(sub).waiters.clear();
        }
    }
}

/// Keep the pub/sub connection's subscriptions equal to the rooms with local members,
/// reconnecting with backoff; hand what arrives to the rooms.
pub(crate) async fn run_subscriber(
    subs: Weak<Subscriptions>,
    client: redis::Client,
    timeout: Duration,
    stats: Arc<Stats>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut first = true;
    loop {
        let connected = tokio::time::timeout(timeout, client.get_async_pubsub()).await;
        let Some(s) = subs.upgrade() else { return };
        let pubsub = match connected {
            Ok(Ok(pubsub)) => pubsub,
            failed => {
                stats.error();
                if let Ok(Err(e)) = failed {
                    tracing::warn!(error = %e, "redis: cannot connect for pub/sub");
                }
                s.release_waiters();
                drop(s);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        if !std::mem::take(&mut first) {
            stats.reconnect();
        }
        let (mut sink, mut stream) = pubsub.split();
        let fixed = [CONTROL.to_owned(), s.forward_channel.clone()];
        if !matches!(
            tokio::time::timeout(timeout, sink.subscribe(&fixed)).await,
            Ok(Ok(()))
        ) {
            stats.error();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        }
        let mut subscribed: HashSet<RoomName> = HashSet::new();
        // Everything wanted is to be subscribed on this new connection.
        {
            let rooms = s.rooms.read().unwrap_or_else(|e| e.into_inner());
            lock(&s.changed).extend(rooms.keys().cloned());
        }
        drop(s);
        'connection: loop {
            let Some(s) = subs.upgrade() else { return };
            let (add, remove) = s.take_changes(&subscribed);
            for chunk in add.chunks(1000) {
                let channels: Vec<String> = chunk.iter().map(|r| channel(r.as_str())).collect();
                match tokio::time::timeout(timeout, sink.subscribe(&channels)).await {
                    Ok(Ok(())) => {
                        subscribed.extend(chunk.iter().cloned());
                        s.activated(chunk);
                    }
                    _ => {
                        // Unsure whether it took: try again on a new connection.
                        lock(&s.changed).extend(chunk.iter().cloned());
                        break 'connection;
                    }
                }
            }
            for chunk in remove.chunks(1000) {
                let channels: Vec<String> = chunk.iter().map(|r| channel(r.as_str())).collect();
                match tokio::time::timeout(timeout, sink.unsubscribe(&channels)).await {
                    Ok(Ok(())) => {
                        for r in chunk {
                            subscribed.remove(r);
                        }
                    }
                    _ => break 'connection,
                }
            }
            let wake = s.wake.clone();
            drop(s);
            tokio::select! {
                () = wake.notified() => {}
                message = stream.next() => match message {
                    Some(message) => {
                        let Some(s) = subs.upgrade() else { return };
                        let payload = bytes::Bytes::copy_from_slice(message.get_payload_bytes());
                        s.receive(message.get_channel_name(), payload);
                    }
                    None => break 'connection,
                },
            }
        }
        tracing::warn!("redis: pub/sub connection lost; subscribing again");
        let Some(s) = subs.upgrade() else { return };
        s.interrupted();
    }
}

/// The hub's broker over Redis pub/sub (see the module docs). Made by [`crate::connect`]
/// together with the [`crate::RedisStore`] that publishes.
pub struct RedisBroker {
    pub(crate) subs: Arc<Subscriptions>,
    pub(crate) writer: Writer,
    pub(crate) node: NodeId,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Broker for RedisBroker {
    fn attach(&self, hub: Weak<switchboard_hub::Hub>) {
        let _ = self.subs.hub.set(hub);
    }

    fn disconnect_user(&self, user: &UserId) {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(CONTROL)
            .arg(format!("disconnect\n{}\n{}", self.node.0, user.0));
        self.writer.submit(cmd, Box::new(|_| {}));
    }

    fn subscribe(&self, room: &RoomName, node: Weak<dyn Node>) {
        let mut rooms = self.subs.rooms.write().unwrap_or_else(|e| e.into_inner());
        let sub = rooms.entry(room.clone()).or_default().clone();
        drop(rooms);
        let mut st = lock(&sub);
        if !st.nodes.iter().any(|n| Weak::ptr_eq(n, &node)) {
            st.nodes.push(node);
        }
        drop(st);
        self.subs.changed(room);
    }

    fn unsubscribe(&self, room: &RoomName, node: &Weak<dyn Node>) {
        let mut rooms = self.subs.rooms.write().unwrap_or_else(|e| e.into_inner());
        let Some(sub) = rooms.get(room).cloned() else {
            return;
        };
        let mut st = lock(&sub);
        st.nodes.retain(|n| !Weak::ptr_eq(n, node));
        if st.nodes.is_empty() {
            rooms.remove(room);
        }
        drop(st);
        drop(rooms);
        self.subs.changed(room);
    }

    /// Presence changes go to every node through the room's channel; messages never come
    /// here (the store's publish script sends them).
    fn publish(&self, delivery: &Arc<Delivery>) -> Fanout {
        match delivery.body() {
            Body::Presence(change) => {
                let payload = envelope::presence(&PresenceEnvelope {
                    joined: change.joined,
                    origin: (self.node.0, change.origin.0),
                    timestamp_ms: delivery.timestamp_ms(),
                    user: change.user.0.to_string(),
                    name: change.name.as_ref().map(|n| n.to_string()),
                });
                self.writer.publish(
                    &channel(delivery.room().as_str()),
                    &payload,
                    Box::new(|_| {}),
                );
            }
            other => {
                tracing::error!(?other, "redis broker: only presence is published here");
            }
        }
        Fanout::default()
    }
}
