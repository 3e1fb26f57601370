//! One client's session: its hub registration, rooms, display name and rate limit, and the
//! rules that map its messages to hub operations and replies.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use switchboard_auth::{
    Action, Authenticator, ConnectInfo, Credential, CredentialSource, Denied, Identity,
};
use switchboard_hub::{
    Delivery, Epoch, HistoryPage, Hub, HubConn, Joined, Kick, Offset, Outbox, PresenceEntry,
    RoomName, UserId,
};
use switchboard_native_proto::{
    ClientMessage, Incoming, ParseError, PresenceMember, ServerMessage, Since, WireFormat,
};

use crate::auth::{
    display_name_claim, refresh_error_code, AuthState, Outcome, Pending, Phase, Purpose, Slot,
    MAX_HELD_BYTES, MAX_HELD_MESSAGES,
};
use crate::close::CloseReason;
use crate::later::Answer;
use crate::publish::{generated_id, publish, PublishRequest, Published, Unavailable};
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
    /// Authentication and channel permissions (SPEC §4). `None`: no authentication
    /// configured, every session may do everything (and `auth`/`refresh` are answered with
    /// `auth_success` for the session's own user, so the seeds' clients proceed).
    pub auth: Option<Arc<Authenticator>>,
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
    /// Who the connection is and where it is in the first-message flow; `None` for an
    /// anonymous session that never sent `auth` (behind one pointer: idle connections are
    /// many, see `a_parked_native_connection_fits_its_allocation_class` in the server).
    auth: Option<Box<AuthState>>,
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
            auth: None,
        }
    }

    /// A session for a user the transport authenticated at the handshake (header, query,
    /// cookie or ticket credential), registered with the hub under `identity.user_id()`.
    /// `info` is kept for `refresh` (the connect proxy is told about the connection again).
    /// The first message is [`welcome`](Self::welcome); arm the expiry deadline at
    /// [`expires_at`](Self::expires_at).
    pub fn authenticated(
        shared: Arc<Shared<X>>,
        identity: Identity,
        info: ConnectInfo,
        now: Instant,
    ) -> Session<X> {
        let mut session = Session::new(shared, UserId(Arc::from(identity.user_id())), now);
        session.conn.name = display_name_claim(&identity);
        session.auth = Some(Box::new(AuthState::new(
            Some(Arc::new(identity)),
            info,
            Phase::Open,
        )));
        session
    }

    /// A session that waits for `auth {token}` (the first-message flow): every other message
    /// is held (at most [`MAX_HELD_MESSAGES`](crate::MAX_HELD_MESSAGES) /
    /// [`MAX_HELD_BYTES`](crate::MAX_HELD_BYTES)) and handled, in order, after
    /// `auth_success`. Send no `welcome`. Until then it is registered with the hub under a
    /// placeholder anonymous user (in no room, so no one sees it), and
    /// [`is_authenticated`](Self::is_authenticated) is false: the transport closes it with
    /// [`CloseReason::AuthTimeout`] if that lasts `auth_timeout`.
    pub fn awaiting_auth(shared: Arc<Shared<X>>, info: ConnectInfo, now: Instant) -> Session<X> {
        let mut session = Session::anonymous(shared, now);
        session.auth = Some(Box::new(AuthState::new(None, info, Phase::Awaiting)));
        session
    }

    /// What the connect proxy is told about this connection if it sends `auth` later (an
    /// anonymous session; without this a default [`ConnectInfo`] is used).
    pub fn with_connect_info(mut self, info: ConnectInfo) -> Session<X> {
        match &mut self.auth {
            Some(state) => state.info = info,
            None => self.auth = Some(Box::new(AuthState::new(None, info, Phase::Open))),
        }
        self
    }

    /// Who the connection is, if authenticated.
    pub fn identity(&self) -> Option<&Identity> {
        self.auth.as_ref()?.identity.as_deref()
    }

    /// Whether the session has what it needs to be served: false while it waits for
    /// `auth {token}` or its verification (and after a refused one), true otherwise,
    /// anonymous sessions included. What the WebSocket `Handler::is_authenticated` returns.
    pub fn is_authenticated(&self) -> bool {
        self.auth.as_ref().is_none_or(|s| s.phase == Phase::Open)
    }

    /// When the connection must end unless refreshed: the identity's
    /// `connection_expires_at()` (the token's `expire_at` claim, else its `exp`; unix seconds)
    /// as a wall-clock time. `None`: never (anonymous, or a token without expiry). A
    /// transport arms a timer for it (`Instant::now() + at.duration_since(SystemTime::now())`)
    /// and calls [`expire_if_due`](Self::expire_if_due) when it fires. A `refresh` moves it:
    /// re-read it whenever the timer fires (and may re-arm after any call).
    pub fn expires_at(&self) -> Option<SystemTime> {
        let at = self.identity()?.connection_expires_at()?;
        Some(UNIX_EPOCH + Duration::from_secs(at))
    }

    /// The expiry deadline passed (the transport's timer fired; `now` is the wall clock):
    /// if [`expires_at`](Self::expires_at) is at or before `now`, close with
    /// [`CloseReason::TokenExpired`] (4001 "Token expired") and return `true`. `false`: a
    /// `refresh` moved the deadline; re-arm at `expires_at()`.
    pub fn expire_if_due(&mut self, now: SystemTime, sink: &mut impl Sink) -> bool {
        if self.expires_at().is_none_or(|at| at > now) {
            return false;
        }
        if let Some(state) = &mut self.auth {
            state.phase = Phase::Failed;
            state.pending = None;
        }
        sink.close(CloseReason::TokenExpired);
        true
    }

    /// Apply what an `auth` or `refresh` verification that finished on another task left
    /// for this session: `auth_success` and the held messages' replies (or the 4001 close),
    /// `refreshed` (or its `error`). Such a result wakes the connection through its outbox
    /// ([`poll_outbound`](Self::poll_outbound) turns ready, a parked connection is woken):
    /// call this whenever it does, before [`drain`](Self::drain). Cheap when there is
    /// nothing.
    pub fn resume(&mut self, sink: &mut impl Sink) {
        let Some(state) = &mut self.auth else {
            return;
        };
        let Some(outcome) = state.pending.as_ref().and_then(|p| p.slot.take()) else {
            return;
        };
        let Some(pending) = state.pending.take() else {
            return;
        };
        match pending.purpose {
            Purpose::Auth => self.finish_auth(outcome, sink),
            Purpose::Refresh { id } => self.finish_refresh(outcome, id, sink),
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
            Ok(incoming) => self.handle_sized(incoming, bytes.len(), sink),
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

    /// The rate limit: whether to handle a message arriving at `now` (for transports that
    /// parse messages themselves and then call [`handle`](Self::handle)). A refusal is
    /// told to `sink` as the limit's policy says (`rate_limited` error, or a close).
    pub fn admit(&mut self, now: Instant, sink: &mut impl Sink) -> bool {
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

    /// Act on one parsed client message. (Held before authentication, it counts against
    /// [`MAX_HELD_MESSAGES`](crate::MAX_HELD_MESSAGES) only; bytes are counted for messages
    /// that come through [`on_message`](Self::on_message).)
    pub fn handle(&mut self, incoming: Incoming, sink: &mut impl Sink) {
        self.handle_sized(incoming, 0, sink);
    }

    /// [`handle`](Self::handle) for a message of `size` bytes as received: held while the
    /// session waits for authentication.
    fn handle_sized(&mut self, incoming: Incoming, size: usize, sink: &mut impl Sink) {
        match self.auth.as_ref().map(|s| s.phase) {
            None | Some(Phase::Open) => self.dispatch(incoming, sink),
            Some(Phase::Failed) => {}
            Some(Phase::Awaiting) => match incoming.message {
                ClientMessage::Auth { token } => self.start_auth(token, sink),
                message => self.hold(
                    Incoming {
                        message,
                        id: incoming.id,
                    },
                    size,
                    sink,
                ),
            },
            Some(Phase::Verifying) => self.hold(incoming, size, sink),
        }
    }

    /// Keep `incoming` until authentication finishes, within the bounds.
    fn hold(&mut self, incoming: Incoming, size: usize, sink: &mut impl Sink) {
        let Some(state) = &mut self.auth else {
            return;
        };
        if state.held.len() >= MAX_HELD_MESSAGES || state.held_bytes + size > MAX_HELD_BYTES {
            return sink.send(ServerMessage::error_for(
                incoming.id,
                "auth_pending",
                "Too many messages before authentication",
            ));
        }
        state.held_bytes += size;
        state.held.push_back(incoming);
    }

    /// Whether this session may do `action` in `room` (always, without an authenticator).
    fn authorize(&self, action: Action, room: &RoomName) -> Result<(), Denied> {
        if action == Action::Publish && room.is_system() {
            return Err(Denied {
                action,
                authenticated: true,
            });
        }
        match &self.shared.auth {
            None => Ok(()),
            Some(auth) => auth.authorize(self.identity(), action, room.as_str()),
        }
    }

    /// Join `room` for the server's own purposes (a transport's broadcast room, such as
    /// Socket.IO's namespace-wide room): like a client's `join` from `since`, without the
    /// client's subscribe permission. Call it on an open session only.
    pub fn join_for_server(&mut self, room: RoomName, since: Option<Since>, sink: &mut impl Sink) {
        self.join(room, since, false, sink);
    }

    /// The join itself (its caller authorized it): the hub's membership (with the replay
    /// from `since`), the session's room list, and the `joined` reply.
    fn join(
        &mut self,
        room: RoomName,
        since: Option<Since>,
        replay_refused: bool,
        sink: &mut impl Sink,
    ) {
        let hub = &self.shared.hub;
        let since = since.map(|s| (Offset(s.offset), Epoch::from(s.epoch)));
        let answer = Answer::new();
        hub.join(&self.conn, &room, since, answer.done());
        // The hub's copy of the name from here on (also in the replies and the
        // transports' records): none kept per member.
        let room = hub.shared_name(&room);
        if !self.rooms.contains(&room) {
            let mut rooms = std::mem::take(&mut self.rooms).into_vec();
            rooms.push(room.clone());
            self.rooms = rooms.into_boxed_slice();
        }
        // At once: sent now, before the outbox (which holds the replay) is drained.
        // Later: queued ahead of the replay (the hub answers before it queues it).
        let (outbox, late_room) = (self.conn.outbox.clone(), room.clone());
        let joined = answer.now_or_later(move |joined| {
            let reply = joined_reply(late_room.clone(), joined, replay_refused);
            outbox.push_reserved(&[Delivery::reply(late_room, reply)]);
        });
        if let Some(joined) = joined {
            sink.send(joined_reply(room, joined, replay_refused));
        }
    }

    /// Act on one client message of an open session.
    fn dispatch(&mut self, incoming: Incoming, sink: &mut impl Sink) {
        let id = incoming.id;
        match incoming.message {
            ClientMessage::Join { room, since, user } => {
                if let Err(denied) = self.authorize(Action::Subscribe, &room) {
                    return sink.send(denied_reply(id, &denied));
                }
                // The replay of a `since` join is history: without that right the join
                // happens without it, answered `recovered: false` (the client's cue to
                // resync, which `history` will refuse it too).
                let replay_refused =
                    since.is_some() && self.authorize(Action::History, &room).is_err();
                let since = since.filter(|_| !replay_refused);
                if let Some(name) = user {
                    self.conn.name = Some(Arc::from(name));
                }
                self.join(room, since, replay_refused, sink);
            }
            ClientMessage::Leave { room } => {
                self.shared.hub.leave(&self.conn, &room);
                let mut rooms = std::mem::take(&mut self.rooms).into_vec();
                rooms.retain(|r| *r != room);
                self.rooms = rooms.into_boxed_slice();
                sink.send(ServerMessage::Left { room });
            }
            ClientMessage::Ping => sink.send(ServerMessage::Pong),
            ClientMessage::History { room, since, limit } => {
                if let Err(denied) = self.authorize(Action::History, &room) {
                    return sink.send(denied_reply(id, &denied));
                }
                let since = since.map(Offset);
                let answer = Answer::new();
                let max = self.shared.config.max_history_reply;
                self.shared
                    .hub
                    .history(&room, since, limit, max, answer.done());
                let late_id = id.clone();
                let reply = self.reply_now_or_later(&room, answer, move |room, page| {
                    history_reply(late_id, room, page)
                });
                if let Some(page) = reply {
                    sink.send(history_reply(id, room, page));
                }
            }
            ClientMessage::Presence { room } => {
                if let Err(denied) = self.authorize(Action::Presence, &room) {
                    return sink.send(denied_reply(id, &denied));
                }
                let answer = Answer::new();
                self.shared.hub.presence(&room, answer.done());
                let late_id = id.clone();
                let reply = self.reply_now_or_later(&room, answer, move |room, entries| {
                    presence_reply(late_id, room, entries)
                });
                if let Some(entries) = reply {
                    sink.send(presence_reply(id, room, entries));
                }
            }
            // Acknowledgements of server messages: nothing asks for them yet.
            ClientMessage::Ack { .. } => {}
            // Without an authentication mode configured every connection is anonymous; answer
            // the seeds' first-message `auth` so their clients proceed.
            ClientMessage::Auth { .. } | ClientMessage::Refresh { .. }
                if self.shared.auth.is_none() =>
            {
                sink.send(ServerMessage::AuthSuccess {
                    user_id: self.conn.user.0.to_string(),
                })
            }
            ClientMessage::Auth { .. } if self.identity().is_some() => {
                sink.send(ServerMessage::error_for(
                    id,
                    "already_authenticated",
                    "Already authenticated (send refresh to extend the session)",
                ))
            }
            // An anonymous session authenticating in-band: its hub registration moves to the
            // user, which is simple only while it is in no room.
            ClientMessage::Auth { .. } if !self.rooms.is_empty() => sink.send(
                ServerMessage::error_for(id, "invalid_state", "Authenticate before joining rooms"),
            ),
            ClientMessage::Auth { token } => self.start_auth(token, sink),
            ClientMessage::Refresh { token } => self.start_refresh(token, id, sink),
            ClientMessage::Relay {
                kind: _,
                room,
                body,
            } => self.relay(room, body, id, sink),
        }
    }

    /// `auth {token}`: verify it; the result is applied now or, when it comes later, by
    /// [`resume`](Self::resume). Everything else is held meanwhile.
    fn start_auth(&mut self, token: String, sink: &mut impl Sink) {
        let Some(authenticator) = self.shared.auth.clone() else {
            // Nothing to verify with: the gate opens for the anonymous user it is.
            sink.send(ServerMessage::AuthSuccess {
                user_id: self.conn.user.0.to_string(),
            });
            return self.open_gate(sink);
        };
        let slot = Arc::new(Slot::default());
        let later = self.later(&slot);
        let state = self.auth.get_or_insert_with(|| {
            Box::new(AuthState::new(None, ConnectInfo::default(), Phase::Open))
        });
        let credential = Credential::new(token, CredentialSource::FirstMessage);
        match authenticator.authenticate_now_or_later(credential, state.info.clone(), later) {
            Some(outcome) => self.finish_auth(outcome, sink),
            None => {
                state.phase = Phase::Verifying;
                state.pending = Some(Pending {
                    purpose: Purpose::Auth,
                    slot,
                });
            }
        }
    }

    /// What a verification finishing on another task calls: leave the result in `slot` and
    /// wake the connection (which then calls [`resume`](Self::resume)).
    fn later(&self, slot: &Arc<Slot>) -> impl FnOnce(Outcome) + Send + 'static {
        let (slot, outbox) = (slot.clone(), self.conn.outbox.clone());
        move |outcome| {
            slot.put(outcome);
            outbox.notify();
        }
    }

    /// The `auth` verification's result: `auth_success` and the held messages, or the close.
    fn finish_auth(&mut self, outcome: Outcome, sink: &mut impl Sink) {
        match outcome {
            Ok(identity) => {
                let identity = Arc::new(identity);
                self.register_as(&identity);
                if let Some(state) = &mut self.auth {
                    state.identity = Some(identity.clone());
                }
                sink.send(ServerMessage::AuthSuccess {
                    user_id: identity.user_id().to_owned(),
                });
                self.open_gate(sink);
            }
            Err(error) => {
                if let Some(state) = &mut self.auth {
                    state.phase = Phase::Failed;
                    state.held = Default::default();
                    state.held_bytes = 0;
                }
                sink.close(CloseReason::auth_failed(&error));
            }
        }
    }

    /// Handle the held messages, in order, and everything after them.
    fn open_gate(&mut self, sink: &mut impl Sink) {
        let held = match &mut self.auth {
            Some(state) => {
                state.phase = Phase::Open;
                state.held_bytes = 0;
                std::mem::take(&mut state.held)
            }
            None => return,
        };
        for incoming in held {
            self.dispatch(incoming, sink);
        }
    }

    /// Move the hub registration to `identity`'s user (presence shows who it is; per-user
    /// disconnects and limits find it). The session is in no room (`auth` is refused in one).
    fn register_as(&mut self, identity: &Identity) {
        let hub = &self.shared.hub;
        let mut conn = hub.connect(UserId(Arc::from(identity.user_id())));
        conn.name = self
            .conn
            .name
            .take()
            .or_else(|| display_name_claim(identity));
        let old = std::mem::replace(&mut self.conn, conn);
        hub.disconnect(&old, &self.rooms);
    }

    /// `refresh {token}`: verify it for the same user; the result is applied now or by
    /// [`resume`](Self::resume).
    fn start_refresh(&mut self, token: String, id: Option<String>, sink: &mut impl Sink) {
        let Some(authenticator) = self.shared.auth.clone() else {
            return;
        };
        let slot = Arc::new(Slot::default());
        let later = self.later(&slot);
        let Some(state) = &mut self.auth else {
            return sink.send(ServerMessage::error_for(
                id,
                "unauthorized",
                "Not authenticated",
            ));
        };
        let Some(current) = state.identity.clone() else {
            return sink.send(ServerMessage::error_for(
                id,
                "unauthorized",
                "Not authenticated",
            ));
        };
        if state.pending.is_some() {
            return sink.send(ServerMessage::error_for(
                id,
                "refresh_pending",
                "A refresh is already being verified",
            ));
        }
        match authenticator.refresh_now_or_later(current, token, state.info.clone(), later) {
            Some(outcome) => self.finish_refresh(outcome, id, sink),
            None => {
                state.pending = Some(Pending {
                    purpose: Purpose::Refresh { id },
                    slot,
                })
            }
        }
    }

    /// The `refresh` verification's result: the new identity and `refreshed {exp}`, or an
    /// `error` (the old identity and its deadline stand).
    fn finish_refresh(&mut self, outcome: Outcome, id: Option<String>, sink: &mut impl Sink) {
        match outcome {
            Ok(fresh) => {
                let exp = fresh.token_expires_at();
                if let Some(state) = &mut self.auth {
                    if state.phase == Phase::Open {
                        state.identity = Some(Arc::new(fresh));
                    }
                }
                sink.send(ServerMessage::Refreshed { exp });
            }
            Err(error) => sink.send(ServerMessage::error_for(
                id,
                refresh_error_code(&error),
                error.close_reason(),
            )),
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
            (None, _) => {
                let e = ParseError::UnknownType;
                return sink.send(ServerMessage::error_for(id, e.code(), e.to_string()));
            }
        };
        if let Err(denied) = self.authorize(Action::Publish, &room) {
            return sink.send(denied_reply(id, &denied));
        }
        if !self.rooms.contains(&room) {
            return sink.send(ServerMessage::error_for(id, "not_in_room", "Not in room"));
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
        // Every outcome the client must hear of: an `ack` for a message with an id (a retry
        // of one already accepted is acknowledged again, delivered once), and for any
        // message the store could not take an `error` `unavailable` (with its id, if any):
        // never silence.
        let reply = move |id: Option<String>, outcome: Result<Published, Unavailable>| match outcome
        {
            Ok(p) => id.map(|id| ServerMessage::Ack {
                id,
                offset: p.offset.0,
            }),
            Err(e) => Some(ServerMessage::error_for(id, "unavailable", e.to_string())),
        };
        let late_id = id.clone();
        let (outbox, late_room) = (self.conn.outbox.clone(), room.clone());
        let now = answer.now_or_later(move |outcome| {
            if let Some(message) = reply(late_id, outcome) {
                outbox.push_reserved(&[Delivery::reply(late_room, message)]);
            }
        });
        if let Some(outcome) = now {
            // Drops are counted when the store answered at once (a late answer's fan-out
            // happened on other nodes, which count their own).
            if let Ok(p) = &outcome {
                if p.dropped > 0 {
                    sink.note(Note::Dropped(p.dropped));
                }
            }
            if let Some(message) = reply(id, outcome) {
                sink.send(message);
            }
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

    /// Whether the session is in `room` (joined, possibly still waiting for the store's
    /// answer).
    pub fn is_in(&self, room: &RoomName) -> bool {
        self.rooms.contains(room)
    }

    /// The connection's outbox (to wake its task from elsewhere: [`Outbox::notify`]).
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.conn.outbox
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

/// `joined`; `recovered: false` when the `since` replay was refused (no history right).
fn joined_reply(room: RoomName, joined: Joined, replay_refused: bool) -> ServerMessage {
    ServerMessage::Joined {
        room,
        offset: joined.offset.0,
        epoch: joined.epoch.to_string(),
        recovered: joined.recovered && !replay_refused,
    }
}

/// The `error` reply to a message the permissions refuse (the connection stays open).
fn denied_reply(id: Option<String>, denied: &Denied) -> ServerMessage {
    ServerMessage::error_for(id, denied.code(), denied.message())
}

/// The `history` reply, or the `error` `unavailable` when the store could not answer.
fn history_reply(
    id: Option<String>,
    room: RoomName,
    page: Result<HistoryPage, Unavailable>,
) -> ServerMessage {
    let page = match page {
        Ok(page) => page,
        Err(e) => return ServerMessage::error_for(id, "unavailable", e.to_string()),
    };
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

/// The `presence` reply, or the `error` `unavailable` when the store could not answer.
fn presence_reply(
    id: Option<String>,
    room: RoomName,
    entries: Result<Vec<PresenceEntry>, Unavailable>,
) -> ServerMessage {
    let entries = match entries {
        Ok(entries) => entries,
        Err(e) => return ServerMessage::error_for(id, "unavailable", e.to_string()),
    };
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
