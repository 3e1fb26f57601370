//! The native JSON protocol (SPEC §2) on a WebSocket connection: one [`NativeSession`] per
//! connection, mapping client messages to hub operations and hub deliveries to frames.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use serde_json::{json, Value};
use switchboard_hub::{Delivery, Hub, HubConn, Kick, RoomName, UserId};
use switchboard_native_proto::{
    error, parse, stamp_relay, ClientMessage, ParseError, ServerMessage,
};
use switchboard_ws_proto::{CloseCode, Connection, MessageKind, PreparedMessage};

use crate::metrics::Metrics;
use crate::rate::{RateLimit, TokenBucket, Verdict};
use crate::ws::handler::Handler;

/// The [`Delivery`] encoding slot holding the WebSocket text frame.
const WS_TEXT_SLOT: usize = 0;

/// What every native-protocol session of a server shares (one `Arc` per session instead of
/// a copy of each: a session's size is paid by every idle connection).
#[derive(Debug)]
pub struct NativeShared {
    /// Rooms, presence, history.
    pub hub: Arc<Hub>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Per-connection message rate limit (`None`: unlimited).
    pub rate_limit: Option<RateLimit>,
}

/// The state of one native-protocol connection.
#[derive(Debug)]
pub struct NativeSession {
    shared: Arc<NativeShared>,
    conn: HubConn,
    /// Rooms this connection joined (few per connection; a Vec beats a set here).
    rooms: Vec<RoomName>,
    /// The rate limiter's state, when a limit is set.
    bucket: Option<TokenBucket>,
}

/// Entries of the per-thread drain scratch kept between drains.
const MAX_BATCH_CAPACITY: usize = 4096;

thread_local! {
    /// Scratch for draining an outbox, kept empty between uses: per worker thread rather
    /// than per connection (a drain never nests).
    static BATCH: std::cell::RefCell<Vec<Arc<Delivery>>> = const {
        std::cell::RefCell::new(Vec::new())
    };
}

/// A random-looking id: process-random key hashed with a counter.
fn generated_id(hub: &Hub, prefix: &str) -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(hub.unique_id());
    format!("{prefix}{:016x}", h.finish())
}

impl NativeSession {
    /// A session for an anonymous user (a generated user id).
    pub fn anonymous(shared: Arc<NativeShared>) -> NativeSession {
        let user = UserId(Arc::from(generated_id(&shared.hub, "anon-")));
        let conn = shared.hub.connect(user);
        NativeSession {
            bucket: shared
                .rate_limit
                .map(|l| TokenBucket::new(&l, Instant::now())),
            shared,
            conn,
            rooms: Vec::new(),
        }
    }

    /// The connection's id (the `connectionId` of `welcome`).
    pub fn connection_id(&self) -> u64 {
        self.conn.id.0
    }

    fn send(conn: &mut Connection, message: ServerMessage) {
        conn.send(MessageKind::Text, &message.encode());
    }

    fn send_error(conn: &mut Connection, e: &ParseError) {
        Self::send(conn, error(e.code(), &e.to_string()));
    }

    fn handle_text(&mut self, conn: &mut Connection, text: &[u8]) {
        let incoming = match parse(text) {
            Ok(m) => m,
            Err(e) => return Self::send_error(conn, &e),
        };
        match incoming.message {
            ClientMessage::Join { room, since } => {
                let since = since.as_ref().map(|s| (s.offset, s.epoch.as_str()));
                let joined = self.shared.hub.join(&self.conn, &room, since);
                if !self.rooms.contains(&room) {
                    // Most connections join one room or a few: grow one at a time rather
                    // than reserve four (a `Vec`'s first push) for every idle member.
                    self.rooms.reserve_exact(1);
                    self.rooms.push(room.clone());
                }
                // Written now, before the outbox (which holds the replay) is drained: `joined`
                // always precedes the missed messages.
                Self::send(
                    conn,
                    ServerMessage(json!({
                        "type": "joined",
                        "room": room.as_str(),
                        "offset": joined.offset,
                        "epoch": &*joined.epoch,
                        "recovered": joined.recovered,
                    })),
                );
            }
            ClientMessage::Leave { room } => {
                self.shared.hub.leave(&self.conn, &room);
                self.rooms.retain(|r| *r != room);
                Self::send(
                    conn,
                    ServerMessage(json!({"type": "left", "room": room.as_str()})),
                );
            }
            ClientMessage::Ping => Self::send(conn, ServerMessage(json!({"type": "pong"}))),
            ClientMessage::History { room, since, limit } => {
                let (messages, offset, epoch) = self.shared.hub.history(&room, since, limit);
                self.send_history(conn, &room, &messages, offset, &epoch);
            }
            ClientMessage::Presence { room } => {
                let members: Vec<Value> = self
                    .shared
                    .hub
                    .presence(&room)
                    .into_iter()
                    .map(|p| json!({"userId": &*p.user.0, "connections": p.connections}))
                    .collect();
                Self::send(
                    conn,
                    ServerMessage(json!({
                        "type": "presence", "room": room.as_str(), "members": members,
                    })),
                );
            }
            // Acknowledgements of server messages: nothing asks for them yet.
            ClientMessage::Ack { .. } => {}
            // Without an authentication mode configured every connection is anonymous; answer
            // the seeds' first-message `auth` so their clients proceed.
            ClientMessage::Auth { .. } | ClientMessage::Refresh { .. } => Self::send(
                conn,
                ServerMessage(json!({"type": "auth_success", "userId": &*self.conn.user.0})),
            ),
            ClientMessage::Relay {
                kind: _,
                room,
                body,
            } => self.relay(conn, room, body, incoming.id),
        }
    }

    fn relay(
        &mut self,
        conn: &mut Connection,
        room: Option<RoomName>,
        body: serde_json::Map<String, Value>,
        id: Option<String>,
    ) {
        // A message without a room goes to the connection's only room (the seeds' chat
        // clients send `{type: "chat", text}` after joining one room).
        let room = match (room, self.rooms.as_slice()) {
            (Some(r), _) => r,
            (None, [only]) => only.clone(),
            (None, _) => return Self::send_error(conn, &ParseError::UnknownType),
        };
        if !self.rooms.contains(&room) {
            return Self::send(conn, error("not_in_room", "Not in room"));
        }
        if let Some(id) = &id {
            if let Some(offset) = self.shared.hub.seen_message(&self.conn.user, id) {
                // A retry of a message already accepted: acknowledge again, deliver once.
                return Self::send(conn, ack(id, offset));
            }
        }
        let user = self.conn.user.clone();
        let message_id = match &id {
            Some(_) => String::new(),
            None => generated_id(&self.shared.hub, ""),
        };
        let room_name = room.clone();
        let published = self.shared.hub.publish(&room, move |offset, ts| {
            stamp_relay(body, &user.0, room_name.as_str(), ts, offset, &message_id)
        });
        if published.dropped > 0 {
            self.shared.metrics.dropped.add(published.dropped as u64);
        }
        if let Some(id) = id {
            self.shared
                .hub
                .record_message(&self.conn.user, &id, published.offset);
            Self::send(conn, ack(&id, published.offset));
        }
    }

    fn send_history(
        &self,
        conn: &mut Connection,
        room: &RoomName,
        messages: &[Arc<Delivery>],
        offset: u64,
        epoch: &str,
    ) {
        let head =
            json!({"type": "history", "room": room.as_str(), "offset": offset, "epoch": epoch});
        let out = with_messages(&head, messages);
        conn.send(MessageKind::Text, &out);
    }
}

/// `head` (a JSON object) with a `messages` array of stored deliveries appended. The stored
/// messages are JSON already: they are spliced in, not re-parsed and re-serialized.
pub(crate) fn with_messages(head: &Value, messages: &[Arc<Delivery>]) -> Vec<u8> {
    let head = head.to_string();
    let body = head.strip_suffix('}').unwrap_or(&head);
    let mut out = Vec::with_capacity(
        head.len() + messages.iter().map(|m| m.json().len() + 1).sum::<usize>() + 16,
    );
    out.extend_from_slice(body.as_bytes());
    if body.len() > 1 {
        out.push(b',');
    }
    out.extend_from_slice(br#""messages":["#);
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(m.json());
    }
    out.extend_from_slice(b"]}");
    out
}

impl NativeSession {
    /// Close the connection if the hub asked for it; `true` if it did.
    fn close_if_kicked(&mut self, conn: &mut Connection) -> bool {
        match self.conn.outbox.disconnect_requested() {
            None => false,
            Some(Kick::ByServer) => {
                conn.close(CloseCode::Policy, "Disconnected by the server");
                true
            }
            Some(Kick::Overflow) => {
                self.shared.metrics.overflow_closes.inc();
                conn.close(CloseCode::Application(4003), "Buffer overflow");
                true
            }
        }
    }
}

fn ack(id: &str, offset: u64) -> ServerMessage {
    ServerMessage(json!({"type": "ack", "id": id, "offset": offset}))
}

impl Handler for NativeSession {
    fn on_open(&mut self, conn: &mut Connection) {
        Self::send(
            conn,
            ServerMessage(json!({
                "type": "welcome",
                "userId": &*self.conn.user.0,
                "connectionId": self.conn.id.0.to_string(),
            })),
        );
    }

    fn on_message(&mut self, conn: &mut Connection, kind: MessageKind, payload: Bytes) {
        if let (Some(limit), Some(bucket)) = (&self.shared.rate_limit, &mut self.bucket) {
            let verdict = bucket.check(limit, Instant::now());
            if verdict != Verdict::Accept {
                self.shared.metrics.rate_limited.inc();
            }
            match verdict {
                Verdict::Accept => {}
                Verdict::RejectAndWarn => {
                    return Self::send(conn, error("rate_limited", "Rate limit exceeded"));
                }
                Verdict::Reject => return,
                Verdict::Close => {
                    return conn.close(CloseCode::Application(4002), "Rate limit exceeded");
                }
            }
        }
        match kind {
            MessageKind::Text => self.handle_text(conn, &payload),
            MessageKind::Binary => Self::send(
                conn,
                error(
                    "unsupported",
                    "Binary messages are not supported on this endpoint",
                ),
            ),
        }
    }

    fn on_close(&mut self) {
        let rooms = std::mem::take(&mut self.rooms);
        self.shared.hub.disconnect(&self.conn, &rooms);
    }

    fn poll_outbound(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.conn.outbox.poll_ready(cx)
    }

    fn on_outbound_blocked(&mut self, conn: &mut Connection) {
        self.close_if_kicked(conn);
    }

    fn write_outbound(&mut self, conn: &mut Connection) {
        if self.close_if_kicked(conn) {
            return;
        }
        BATCH.with_borrow_mut(|batch| {
            let missed = self.conn.outbox.drain(batch);
            if missed > 0 {
                self.shared.metrics.lagged.inc();
                Self::send(
                    conn,
                    ServerMessage(json!({"type": "lagged", "missed": missed})),
                );
            }
            // At most one clock read per batch: every delivery in it is handed over now.
            let mut now = None;
            for delivery in batch.drain(..) {
                if Metrics::sample_latency(delivery.offset()) {
                    let now = *now.get_or_insert_with(Instant::now);
                    self.shared
                        .metrics
                        .delivery_latency
                        .observe(now.saturating_duration_since(delivery.created()));
                }
                // Framed once per delivery, shared by every WebSocket recipient.
                if let Some(frame) = delivery.encoding(WS_TEXT_SLOT, |json| {
                    PreparedMessage::new(MessageKind::Text, json.clone())
                }) {
                    conn.send_prepared(frame);
                }
            }
            // One per thread: it may keep a big batch's capacity, within reason.
            if batch.capacity() > MAX_BATCH_CAPACITY {
                *batch = Vec::new();
            }
        });
    }
}
