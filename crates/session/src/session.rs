//! One client's session: its hub registration, rooms, display name and rate limit, and the
//! rules that map its messages to hub operations and replies.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use serde_json::{Map, Value};
use switchboard_hub::{
    Delivery, Epoch, HistoryPage, Hub, HubConn, Joined, Kick, Offset, PresenceEntry, RoomName,
    UserId,
};
use switchboard_native_proto::{
    ClientMessage, Incoming, ParseError, PresenceMember, ServerMessage, WireFormat,
};

use crate::close::CloseReason;
use crate::later::Answer;
use crate::publish::{generated_id, publish, PublishRequest, Published};
use crate::rate::{RateLimit, TokenBucket, Verdict};

/// Settings of the session core.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    /// Per-connection message rate limit (`None`: unlimited).
    pub rate_limit: Option<RateLimit>,
    /// Most bytes of stored messages in one `history` reply; the client pages through the
    /// rest (`more: true`). Default 512 KiB: clients commonly refuse messages over 1 MiB.
    pub max_history_reply: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            rate_limit: Some(RateLimit::default()),
            max_history_reply: 512 * 1024,
        }
    }
}

/// What every session of a server shares (one `Arc` per session, not a copy of each: a
/// session's size is paid by every idle connection). `X` is what the transport's sessions
/// share besides (its metrics, say): kept here so that a transport's connection holds one
/// `Arc`, not two.
#[derive(Debug)]
pub struct Shared<X = ()> {
    /// Rooms, presence, history.
    pub hub: Arc<Hub>,
    /// Settings.
    pub config: SessionConfig,
    /// The transport's own shared state.
    pub transport: X,
}

/// Something a transport may want to count (metrics); the core itself counts nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// A message was refused by the rate limit.
    RateLimited,
    /// A publish found this many members' outboxes full.
    Dropped(usize),
    /// The client was told it lagged (deliveries were dropped for it).
    Lagged,
}

/// Where the session core's output goes: the transport encodes and frames replies in its
/// wire format and ends the connection when asked.
pub trait Sink {
    /// Send `message` to this client.
    fn send(&mut self, message: ServerMessage);
    /// End the connection for `reason` (after what was sent so far).
    fn close(&mut self, reason: CloseReason);
    /// Something worth counting happened.
    fn note(&mut self, _note: Note) {}
}

/// One client's session.
///
/// Its hub registration lives exactly as long as it does: dropping the session (on any path:
/// a normal end, a failed hand-over, a panic unwinding through its owner) leaves its rooms
/// and unregisters it.
#[derive(Debug)]
pub struct Session<X = ()> {
    shared: Arc<Shared<X>>,
    conn: HubConn,
    /// Rooms this connection joined (few per connection; a Vec beats a set here).
    /// A boxed slice, not a `Vec`: 16 bytes instead of 24 in every idle connection (joins
    /// and leaves are rare; each rebuilds it).
    rooms: Box<[RoomName]>,
    /// The rate limiter's state, when a limit is set.
    bucket: Option<TokenBucket>,
    /// The connection's wire format (the transport encodes in it).
    format: WireFormat,
}

impl<X> Session<X> {
    /// A session for an anonymous user (a generated user id), registered with the hub.
    pub fn anonymous(shared: Arc<Shared<X>>, now: Instant) -> Session<X> {
        let user = UserId(Arc::from(generated_id(&shared.hub, "anon-")));
        Session::new(shared, user, now)
    }

    /// A session for `user`, registered with the hub.
    pub fn new(shared: Arc<Shared<X>>, user: UserId, now: Instant) -> Session<X> {
        let conn = shared.hub.connect(user);
        Session {
            bucket: shared.config.rate_limit.map(|l| TokenBucket::new(&l, now)),
            shared,
            conn,
            rooms: Box::default(),
            format: WireFormat::Json,
        }
    }

    /// Use `format` for this connection's messages (JSON by default).
    pub fn with_format(mut self, format: WireFormat) -> Session<X> {
        self.format = format;
        self
    }

    /// The connection's wire format.
    pub fn format(&self) -> WireFormat {
        self.format
    }

    /// What every session of this transport shares.
    pub fn shared(&self) -> &Shared<X> {
        &self.shared
    }

    /// The connection's id (the `connectionId` of `welcome`).
    pub fn connection_id(&self) -> u64 {
        self.conn.id.0
    }

    /// The user.
    pub fn user(&self) -> &UserId {
        &self.conn.user
    }

    /// The first message of a connection.
    pub fn welcome(&self) -> ServerMessage {
        ServerMessage::Welcome {
            user_id: self.conn.user.0.to_string(),
            connection_id: self.conn.id.0.to_string(),
        }
    }

    /// A JSON text message arrived at `now`: rate-limit it, parse it, act on it.
    pub fn on_text(&mut self, text: &[u8], now: Instant, sink: &mut impl Sink) {
        self.on_message(WireFormat::Json, text, now, sink);
    }

    /// A message in `format` arrived at `now`: rate-limit it, parse it, act on it.
    pub fn on_message(
        &mut self,
        format: WireFormat,
        bytes: &[u8],
        now: Instant,
        sink: &mut impl Sink,
    ) {
        if !self.admit(now, sink) {
            return;
        }
        match format.parse(bytes) {
            Ok(incoming) => self.handle(incoming, sink),
            Err(e) => sink.send(parse_error(&e)),
        }
    }

    /// A binary message arrived (not part of the JSON wire format).
    pub fn on_binary(&mut self, now: Instant, sink: &mut impl Sink) {
        if self.admit(now, sink) {
            sink.send(ServerMessage::error(
                "unsupported",
                "Binary messages are not supported on this endpoint",
            ));
        }
    }

    /// The rate limit: whether to handle a message arriving at `now`.
    fn admit(&mut self, now: Instant, sink: &mut impl Sink) -> bool {
        let (Some(limit), Some(bucket)) = (&self.shared.config.rate_limit, &mut self.bucket) else {
            return true;
        };
        let verdict = bucket.check(limit, now);
        if verdict != Verdict::Accept {
            sink.note(Note::RateLimited);
        }
        match verdict {
            Verdict::Accept => true,
            Verdict::RejectAndWarn => {
                sink.send(ServerMessage::error("rate_limited", "Rate limit exceeded"));
                false
            }
            Verdict::Reject => false,
            Verdict::Close => {
                sink.close(CloseReason::RateLimited);
                false
            }
        }
    }

    /// Act on one parsed client message.
    pub fn handle(&mut self, incoming: Incoming, sink: &mut impl Sink) {
        let hub = &self.shared.hub;
        match incoming.message {
            ClientMessage::Join { room, since, user } => {
                if let Some(name) = user {
                    self.conn.name = Some(Arc::from(name));
                }
                let since = since.map(|s| (Offset(s.offset), Epoch::from(s.epoch)));
                if !self.rooms.contains(&room) {
                    let mut rooms = std::mem::take(&mut self.rooms).into_vec();
                    rooms.push(room.clone());
                    self.rooms = rooms.into_boxed_slice();
                }
                let answer = Answer::new();
                hub.join(&self.conn, &room, since, answer.done());
                // At once: sent now, before the outbox (which holds the replay) is drained.
                // Later: queued ahead of the replay (the hub answers before it queues it).
                let (outbox, late_room) = (self.conn.outbox.clone(), room.clone());
                let joined = answer.now_or_later(move |joined| {
                    let reply = joined_reply(late_room.clone(), joined);
                    outbox.push_reserved(&[Delivery::reply(late_room, reply)]);
                });
                if let Some(joined) = joined {
                    sink.send(joined_reply(room, joined));
                }
            }
            ClientMessage::Leave { room } => {
                hub.leave(&self.conn, &room);
                let mut rooms = std::mem::take(&mut self.rooms).into_vec();
                rooms.retain(|r| *r != room);
                self.rooms = rooms.into_boxed_slice();
                sink.send(ServerMessage::Left { room });
            }
            ClientMessage::Ping => sink.send(ServerMessage::Pong),
            ClientMessage::History { room, since, limit } => {
                let since = since.map(Offset);
                let answer = Answer::new();
                let max = self.shared.config.max_history_reply;
                hub.history(&room, since, limit, max, answer.done());
                let reply = self.reply_now_or_later(&room, answer, history_reply);
                if let Some(page) = reply {
                    sink.send(history_reply(room, page));
                }
            }
            ClientMessage::Presence { room } => {
                let answer = Answer::new();
                hub.presence(&room, answer.done());
                if let Some(entries) = self.reply_now_or_later(&room, answer, presence_reply) {
                    sink.send(presence_reply(room, entries));
                }
            }
            // Acknowledgements of server messages: nothing asks for them yet.
            ClientMessage::Ack { .. } => {}
            // Without an authentication mode configured every connection is anonymous; answer
            // the seeds' first-message `auth` so their clients proceed.
            ClientMessage::Auth { .. } | ClientMessage::Refresh { .. } => {
                sink.send(ServerMessage::AuthSuccess {
                    user_id: self.conn.user.0.to_string(),
                })
            }
            ClientMessage::Relay {
                kind: _,
                room,
                body,
            } => self.relay(room, body, incoming.id, sink),
        }
    }

    fn relay(
        &mut self,
        room: Option<RoomName>,
        body: Map<String, Value>,
        id: Option<String>,
        sink: &mut impl Sink,
    ) {
        // A message without a room goes to the connection's only room (the seeds' chat
        // clients send `{type: "chat", text}` after joining one room).
        let room = match (room, &*self.rooms) {
            (Some(r), _) => r,
            (None, [only]) => only.clone(),
            (None, _) => return sink.send(parse_error(&ParseError::UnknownType)),
        };
        if !self.rooms.contains(&room) {
            return sink.send(ServerMessage::error("not_in_room", "Not in room"));
        }
        let answer = Answer::new();
        publish(
            &self.shared.hub,
            PublishRequest {
                room: &room,
                sender: &self.conn.user,
                sender_name: self.conn.name.as_deref(),
                body,
                id: id.as_deref(),
            },
            answer.done(),
        );
        let Some(id) = id else {
            // Nothing to reply; drops are counted when the store answered at once (a late
            // answer's fan-out happened on other nodes, which count their own).
            if let Some(p) = answer.now_or_later(|_| {}) {
                if p.dropped > 0 {
                    sink.note(Note::Dropped(p.dropped));
                }
            }
            return;
        };
        // A retry of a message already accepted is acknowledged again, delivered once.
        let ack = |id: String, p: Published| ServerMessage::Ack {
            id,
            offset: p.offset.0,
        };
        let late_id = id.clone();
        if let Some(p) = self.reply_now_or_later(&room, answer, move |_, p| ack(late_id, p)) {
            if p.dropped > 0 {
                sink.note(Note::Dropped(p.dropped));
            }
            sink.send(ack(id, p));
        }
    }

    /// The store's answer if it came at once; otherwise, when it comes, `reply(room, answer)`
    /// is queued in this connection's outbox (the transport drains it like a delivery).
    fn reply_now_or_later<T: Send + 'static>(
        &self,
        room: &RoomName,
        answer: Answer<T>,
        reply: impl FnOnce(RoomName, T) -> ServerMessage + Send + 'static,
    ) -> Option<T> {
        let (outbox, room) = (self.conn.outbox.clone(), room.clone());
        answer.now_or_later(move |value| {
            let message = reply(room.clone(), value);
            outbox.push_reserved(&[Delivery::reply(room, message)]);
        })
    }

    /// Ready when the hub has queued deliveries (or asked for a disconnect) since this last
    /// returned ready; otherwise `cx`'s waker is woken when it does. Only the latest waker is
    /// kept.
    pub fn poll_outbound(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.conn.outbox.poll_ready(cx)
    }

    /// If the hub asked for this connection to be closed, tell `sink`; `true` if it did.
    pub fn close_if_kicked(&self, sink: &mut impl Sink) -> bool {
        match self.conn.outbox.disconnect_requested() {
            None => false,
            Some(Kick::ByServer) => {
                sink.close(CloseReason::DisconnectedByServer);
                true
            }
            Some(Kick::Overflow) => {
                sink.close(CloseReason::BufferOverflow);
                true
            }
        }
    }

    /// Move the queued deliveries into `batch` (the transport frames them), telling the
    /// client first if some were dropped for it (`lagged`). Nothing when the hub asked for a
    /// disconnect: the close goes to `sink` instead.
    pub fn drain(&self, batch: &mut Vec<Arc<Delivery>>, sink: &mut impl Sink) {
        if self.close_if_kicked(sink) {
            return;
        }
        let missed = self.conn.outbox.drain(batch);
        if missed > 0 {
            sink.note(Note::Lagged);
            sink.send(ServerMessage::Lagged { missed });
        }
    }

    /// The connection ended: leave every room and unregister. Idempotent; dropping the
    /// session does it too.
    pub fn end(&mut self) {
        // A second call finds no rooms, and unregistering twice is harmless.
        let rooms = std::mem::take(&mut self.rooms);
        self.shared.hub.disconnect(&self.conn, &rooms);
    }
}

impl<X> Drop for Session<X> {
    fn drop(&mut self) {
        self.end();
    }
}

fn joined_reply(room: RoomName, joined: Joined) -> ServerMessage {
    ServerMessage::Joined {
        room,
        offset: joined.offset.0,
        epoch: joined.epoch.to_string(),
        recovered: joined.recovered,
    }
}

fn history_reply(room: RoomName, page: HistoryPage) -> ServerMessage {
    ServerMessage::History {
        room,
        offset: page.last_offset.0,
        epoch: page.epoch.to_string(),
        messages: page
            .messages
            .iter()
            .filter_map(|d| d.json())
            .cloned()
            .collect(),
        more: page.more,
    }
}

fn presence_reply(room: RoomName, entries: Vec<PresenceEntry>) -> ServerMessage {
    let members = entries
        .into_iter()
        .map(|p| PresenceMember {
            user_id: p.user.0.to_string(),
            user: p.name.map(|n| n.to_string()),
            connections: p.connections,
        })
        .collect();
    ServerMessage::Presence { room, members }
}

/// The `error` reply for a message that could not be parsed.
fn parse_error(e: &ParseError) -> ServerMessage {
    ServerMessage::error(e.code(), e.to_string())
}

#[cfg(test)]
mod tests;
