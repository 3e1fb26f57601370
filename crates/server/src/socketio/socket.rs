//! One Socket.IO socket (a client's connection to one namespace) on the session core: its
//! events become native-protocol messages (`join_room` → `join`, an event whose argument
//! names a `room` → a relay of that type), the core's replies become acknowledgements, and
//! room deliveries become events (SPEC §1.4: Socket.IO rooms are Switchboard channels).

use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use serde_json::{Map, Value};
use switchboard_engineio_proto::{Message, Str};
use switchboard_hub::{Body, ConnId, Delivery, EncodingKey, RoomName};
use switchboard_native_proto::{
    parse_value, ClientMessage, Incoming, ServerMessage, Since, WireFormat,
};
use switchboard_session::{encode_delivery, CloseReason, Note, Session, Sink};
use switchboard_socketio_proto::{msgpack, AckId, Args, Namespace, Packet};
use switchboard_ws_proto::{MessageKind, PreparedMessage};

use super::app::{EmitError, SocketInner};
use super::recovery::Track;
use crate::engineio::Out;
use crate::metrics::Metrics;

/// Most requests of one socket waiting for the core's answer (joins, relays with an ack);
/// more are answered with an error at once. Bounds the bookkeeping of a client that floods.
const MAX_AWAITED: usize = 64;

/// A socket's session core.
pub(crate) type SioSession = Session<Arc<Metrics>>;

/// What a request waits for, to answer the client's ack with it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Await {
    /// A reply naming this message id (`ack`, `error`).
    Id(String),
    Joined(RoomName),
    Left(RoomName),
    Presence(RoomName),
    History(RoomName),
    Pong,
    Refreshed,
}

/// One connected (or connecting) namespace of a connection.
pub(crate) struct NsSocket {
    pub(crate) nsp: Namespace,
    /// The socket id (`socket.id` on the client).
    pub(crate) sid: ShortId,
    pub(crate) session: SioSession,
    /// Whether the `CONNECT` was accepted (false while its credentials are verified).
    pub(crate) connected: bool,
    /// The core ended the socket (rate-limit flood, kick, expiry): disconnect it.
    pub(crate) ended: bool,
    /// Requests whose ack waits for the core's answer (behind one pointer, and only while
    /// there are some: 8 bytes, not 24, in every idle socket).
    awaited: Awaited,
    /// The connection's parser.
    pub(crate) codec: Codec,
    /// With connection state recovery: the private id and where the socket stands in its
    /// rooms (see [`super::recovery`]).
    pub(crate) recovery: Option<Recovery>,
    /// With application handlers for the namespace: the socket's side shared with its
    /// [`super::SocketRef`]s (set when the `CONNECT` is accepted).
    pub(crate) app: Option<Arc<SocketInner>>,
}

impl Drop for NsSocket {
    fn drop(&mut self) {
        // Whichever way the socket ends (its client's DISCONNECT, a lost connection, the
        // server): its handles stop working and the application hears of it.
        if let Some(app) = self.app.take() {
            app.close();
            app.handlers.disconnected(&app);
        }
    }
}

/// Requests waiting for the core's answer, each with the ack id that answers it.
type Awaited = Option<Box<Vec<(Await, AckId)>>>;

/// A recoverable socket's private id and positions.
pub(crate) struct Recovery {
    pub(crate) pid: ShortId,
    pub(crate) track: Track,
}

/// The connection's Socket.IO parser: the default one (text packets, binary attachments) or
/// `socket.io-msgpack-parser` (one binary message per packet). Chosen by the client's first
/// packet: a default-parser client always starts with a text `CONNECT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Codec {
    /// Nothing received yet.
    #[default]
    Undecided,
    /// The default parser.
    Json,
    /// The MessagePack parser.
    MsgPack,
}

/// A 20-character id (a socket id or a pid: 15 random bytes in base64url), held inline and
/// decoded: 15 bytes, not 20, in every idle socket (`NsSocket` is sized to an allocation
/// class; see `size::a_socket_fits_its_allocation_class`). Any 20 base64url characters
/// decode to exactly 15 bytes and back, so a client's pid round-trips unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ShortId([u8; 15]);

/// A [`ShortId`]'s text.
pub(crate) struct ShortIdText([u8; 20]);

impl std::ops::Deref for ShortIdText {
    type Target = str;

    fn deref(&self) -> &str {
        // base64url is ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl ShortId {
    /// A fresh random id.
    pub(crate) fn random() -> Option<ShortId> {
        let mut bytes = [0u8; 15];
        getrandom::getrandom(&mut bytes).ok()?;
        Some(ShortId(bytes))
    }

    /// `text` if it has the form of our ids.
    pub(crate) fn parse(text: &str) -> Option<ShortId> {
        use base64::Engine as _;
        if text.len() != 20 {
            return None;
        }
        let mut bytes = [0u8; 15];
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode_slice(text, &mut bytes)
            .ok()?;
        (n == 15).then_some(ShortId(bytes))
    }

    /// The id as text (20 characters).
    pub(crate) fn as_str(&self) -> ShortIdText {
        use base64::Engine as _;
        let mut text = [0u8; 20];
        // 15 bytes always encode to exactly 20 characters.
        let _ = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_slice(self.0, &mut text);
        ShortIdText(text)
    }
}

/// How a socket's `CONNECT` turned out.
pub(crate) enum Connect {
    Accepted,
    Refused,
    Pending,
}

impl NsSocket {
    pub(crate) fn new(nsp: Namespace, sid: ShortId, session: SioSession, codec: Codec) -> NsSocket {
        NsSocket {
            nsp,
            sid,
            session,
            connected: false,
            ended: false,
            awaited: None,
            codec,
            recovery: None,
            app: None,
        }
    }

    /// Where the socket's `CONNECT` stands (after the first-message `auth` of its token).
    pub(crate) fn connect_state(&self) -> Connect {
        if self.session.is_authenticated() {
            Connect::Accepted
        } else if self.ended {
            Connect::Refused
        } else {
            Connect::Pending
        }
    }

    /// Verify `token` as the socket's credential (the core's first-message flow).
    pub(crate) fn authenticate(&mut self, token: String, out: &mut Out<'_>) {
        let incoming = Incoming {
            message: ClientMessage::Auth { token },
            id: None,
        };
        self.with_core(out, |session, sink| session.handle(incoming, sink));
    }

    /// Join `rooms` again from the positions given (a recovery); whether every room's
    /// history covered the gap at once.
    pub(crate) fn rejoin(
        &mut self,
        rooms: Vec<(RoomName, Since)>,
        out: &mut Out<'_>,
    ) -> (usize, Vec<bool>) {
        let expected = rooms.len();
        let everyone = namespace_room(self.nsp.as_str());
        self.with_core(out, |session, sink| {
            for (room, since) in rooms {
                if Some(&room) == everyone.as_ref() {
                    // The server's join, not the client's (see `join_namespace_room`).
                    session.join_for_server(room, Some(since), sink);
                    continue;
                }
                let message = ClientMessage::Join {
                    room,
                    since: Some(since),
                    user: None,
                };
                let refusals = sink.errors;
                session.handle(Incoming { message, id: None }, sink);
                if sink.errors > refusals {
                    // Refused (no longer permitted): no `joined` will come for it.
                    sink.rejoins.push(false);
                }
            }
            (expected, std::mem::take(&mut sink.rejoins))
        })
    }

    /// Join the namespace's room, which `Io::of(nsp).emit` and `SocketRef::broadcast`
    /// address (sockets of namespaces with application handlers only: the room costs every
    /// member a membership). The server's join: the client's permissions do not apply,
    /// as they do not to being in the namespace. Nothing to do when already in it (a
    /// recovered socket rejoined it from its position).
    pub(crate) fn join_namespace_room(&mut self, out: &mut Out<'_>) {
        let Some(room) = namespace_room(self.nsp.as_str()) else {
            return;
        };
        if self.session.is_in(&room) {
            return;
        }
        self.with_core(out, |session, sink| {
            session.join_for_server(room, None, sink)
        });
    }

    /// Leave every room (a recovery that could not be completed).
    pub(crate) fn leave_all(&mut self, out: &mut Out<'_>) {
        let rooms = match &self.recovery {
            Some(r) => r.track.rooms_joined(),
            None => return,
        };
        self.with_core(out, |session, sink| {
            for room in rooms {
                let message = ClientMessage::Leave { room };
                session.handle(Incoming { message, id: None }, sink);
            }
        });
        if let Some(r) = &mut self.recovery {
            r.track = Track::default();
        }
    }

    /// A client event (not one of the echo mode's).
    pub(crate) fn on_event(
        &mut self,
        name: &str,
        args: Args,
        ack: Option<AckId>,
        out: &mut Out<'_>,
    ) {
        if !self.admit(out) {
            // The limit's own warning is an `error` event; a request with an ack gets its
            // answer too (refused, not silence), unless the socket is being closed.
            if !self.ended {
                let message = "Rate limit exceeded";
                if ack.is_some() {
                    answer_error(out, self.codec, &self.nsp, ack, "rate_limited", message);
                }
            }
            return;
        }
        if let Some(app) = &self.app {
            if app.handlers.has_event(&self.nsp, name) {
                if let Err((code, message)) = app.handlers.dispatch(app, name, args, ack) {
                    answer_error(out, self.codec, &self.nsp, ack, code, &message);
                }
                return;
            }
        }
        let incoming = match self.native_of(name, args, ack) {
            Ok(incoming) => incoming,
            Err((code, message)) => {
                return answer_error(out, self.codec, &self.nsp, ack, code, &message);
            }
        };
        if let Some(ack) = ack {
            let Some(awaited) = awaited_by(&incoming) else {
                // Nothing in the core answers it (`ack`): confirm at once.
                return send_packet(out, self.codec, ack_packet(&self.nsp, ack, ok_reply(None)));
            };
            if self.awaited.as_ref().map_or(0, |a| a.len()) >= MAX_AWAITED {
                return answer_error(
                    out,
                    self.codec,
                    &self.nsp,
                    Some(ack),
                    "too_many_pending",
                    "Too many requests waiting for an answer",
                );
            }
            self.awaited
                .get_or_insert_with(Box::default)
                .push((awaited.clone(), ack));
            return self.with_core(out, |session, sink| {
                // A refusal of this request that names no id still answers its ack.
                sink.current = Some(awaited);
                session.handle(incoming, sink);
            });
        }
        self.with_core(out, |session, sink| session.handle(incoming, sink));
    }

    /// Run `f` with the socket's session and a sink writing to `out` (the core's replies as
    /// Socket.IO packets); the socket ends if the core closed it.
    fn with_core<'o, R>(
        &mut self,
        out: &mut Out<'o>,
        f: impl FnOnce(&mut SioSession, &mut SioSink<'_, 'o>) -> R,
    ) -> R {
        let mut sink = SioSink::new(
            out,
            &self.nsp,
            &mut self.awaited,
            track_of(&mut self.recovery),
            self.codec,
        );
        let result = f(&mut self.session, &mut sink);
        self.ended |= sink.closed;
        sink.finish(&self.session);
        result
    }

    /// The session's rate limit, for one event: refused ones are told (`error` event) or
    /// end the socket, as the limit's policy says.
    fn admit(&mut self, out: &mut Out<'_>) -> bool {
        let now = out.now();
        self.with_core(out, |session, sink| session.admit(now, sink))
    }

    /// Join or leave `room` for the application (no ack: a refusal is also an `error`
    /// event to the client).
    pub(crate) fn join_or_leave(
        &mut self,
        room: RoomName,
        join: bool,
        out: &mut Out<'_>,
    ) -> Result<(), EmitError> {
        let target = room.clone();
        let message = if join {
            ClientMessage::Join {
                room,
                since: None,
                user: None,
            }
        } else {
            ClientMessage::Leave { room }
        };
        let refusal = self.with_core(out, |session, sink| {
            sink.refusal = Some(None);
            session.handle(Incoming { message, id: None }, sink);
            sink.refusal.take().flatten()
        });
        match (refusal, self.session.is_in(&target) == join) {
            (_, true) => Ok(()),
            (Some(message), false) => Err(EmitError::Refused(message)),
            (None, false) => Err(EmitError::Refused("not applied".to_owned())),
        }
    }

    /// The native message an event stands for: its name is the type (`join_room`/`subscribe`
    /// are `join`, `leave_room`/`unsubscribe` are `leave`), its one argument the room name or
    /// the object with the room and the fields to relay.
    fn native_of(
        &mut self,
        name: &str,
        args: Args,
        ack: Option<AckId>,
    ) -> Result<Incoming, (&'static str, String)> {
        if args.has_binary() {
            return Err((
                "invalid_format",
                "Binary arguments are not relayed: send JSON".to_owned(),
            ));
        }
        let kind = match name {
            "join_room" | "join" | "subscribe" => "join",
            "leave_room" | "leave" | "unsubscribe" => "leave",
            other => other,
        };
        let (values, _) = args.into_parts();
        if values.len() > 1 {
            // Dropping the others would lose data silently.
            return Err((
                "invalid_format",
                format!("Event \"{name}\" takes one argument (a room name or an object)"),
            ));
        }
        let mut body = match values.into_iter().next() {
            Some(Value::String(room)) => {
                let mut body = Map::new();
                body.insert("room".into(), Value::String(room));
                body
            }
            Some(Value::Object(body)) => body,
            None | Some(Value::Null) => Map::new(),
            Some(_) => {
                return Err((
                    "invalid_format",
                    format!("Event \"{name}\" takes a room name or an object"),
                ))
            }
        };
        body.insert("type".into(), Value::String(kind.to_owned()));
        // A relay the client wants confirmed needs an id to match the core's `ack` to: its
        // own, or one unique to this connection (never reused: the core deduplicates by id).
        if ack.is_some() && !body.contains_key("id") {
            let unique = self.session.shared().hub.unique_id();
            let id = format!("sio-{}-{unique}", self.session.connection_id());
            body.insert("id".into(), Value::String(id));
        }
        parse_value(Value::Object(body)).map_err(|e| (e.code(), e.to_string()))
    }

    /// Before the connection idles: no capacity kept for requests that are answered.
    pub(crate) fn release_idle_memory(&mut self) {
        if self.awaited.as_ref().is_some_and(|a| a.is_empty()) {
            self.awaited = None;
        }
    }

    /// Ready when the core has deliveries or a late answer for the socket.
    pub(crate) fn poll_outbound(&self, cx: &mut std::task::Context<'_>) -> bool {
        self.session.poll_outbound(cx).is_ready()
    }

    /// Send the socket's deliveries (and apply late verification results). Returns the
    /// `recovered` flags of the `joined` replies among them (a recovery's rejoins answered
    /// late).
    pub(crate) fn write_outbound(
        &mut self,
        batch: &mut Vec<Arc<Delivery>>,
        out: &mut Out<'_>,
    ) -> Vec<bool> {
        let mut sink = SioSink::new(
            out,
            &self.nsp,
            &mut self.awaited,
            track_of(&mut self.recovery),
            self.codec,
        );
        self.session.resume(&mut sink);
        self.session.drain(batch, &mut sink);
        self.ended |= sink.closed;
        let me: &str = &self.session.user().0;
        let my_conn = ConnId(self.session.connection_id());
        for delivery in batch.drain(..) {
            if let Body::Reply(message) = delivery.body() {
                sink.send(message.clone());
                continue;
            }
            // `typing` goes to the others only.
            if delivery.kind() == "typing" && sender_of(&delivery).as_deref() == Some(me) {
                continue;
            }
            // The application's `socket.to(room)`: everyone but the sending socket (whose
            // position still moves past it).
            if delivery.origin() == Some(my_conn) {
                if let Some(track) = sink.track.as_deref_mut() {
                    track.advance(&delivery);
                }
                continue;
            }
            if sink.codec == Codec::MsgPack {
                let offset = match sink.track.as_deref_mut() {
                    Some(track) => match track.advance(&delivery) {
                        Some(_) if track.is_single_room() => Offset::Own,
                        Some(_) => Offset::Cursor(track.cursor()),
                        None => Offset::None,
                    },
                    None => Offset::None,
                };
                if let Some(bytes) = msgpack_event(&delivery, sink.nsp, offset) {
                    sink.out.send(Message::Binary(bytes));
                }
                continue;
            }
            // Room messages of a recoverable socket carry its offset as their last argument.
            let event = match sink.track.as_deref_mut() {
                Some(track) => match track.advance(&delivery) {
                    Some(_) if track.is_single_room() => {
                        Event::Shared(framed_event_with_position(&delivery))
                    }
                    Some(_) => {
                        Event::Own(event_text(&delivery).map(|t| with_offset(&t, &track.cursor())))
                    }
                    None => Event::Shared(framed_event(&delivery)),
                },
                None => Event::Shared(framed_event(&delivery)),
            };
            match event {
                Event::Shared(Some(event)) if sink.nsp.is_root() => {
                    sink.out.send_shared(|| event.frame(), &event.text);
                }
                Event::Shared(event) => {
                    if let Some(event) = event {
                        let text = with_namespace(&event.text, sink.nsp);
                        sink.out.send_framed_text(Str::from(text));
                    }
                }
                Event::Own(Some(text)) => {
                    let text = if sink.nsp.is_root() {
                        text
                    } else {
                        Str::from(with_namespace(&text, sink.nsp))
                    };
                    sink.out.send_framed_text(text);
                }
                Event::Own(None) => {}
            }
        }
        let rejoins = std::mem::take(&mut sink.rejoins);
        sink.finish(&self.session);
        rejoins
    }

    /// The socket's credentials expire at (for the connection's timer).
    pub(crate) fn expires_at(&self) -> Option<Instant> {
        self.session.expires_at().map(crate::access::instant_of)
    }

    /// End the socket if its credentials expired; whether it did.
    pub(crate) fn expire_if_due(&mut self, out: &mut Out<'_>) -> bool {
        let now = std::time::SystemTime::now();
        let expired = self.with_core(out, |session, sink| session.expire_if_due(now, sink));
        self.ended |= expired;
        expired
    }
}

thread_local! {
    /// A recoverable socket's rooms changed (a `joined` or `left` reply went through a sink
    /// on this thread): the connection shares its record again
    /// ([`super::SioConnection`]'s `settle`). A flag here, not in the socket, whose size is
    /// budgeted.
    pub(crate) static ROOMS_CHANGED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn track_of(recovery: &mut Option<Recovery>) -> Option<&mut Track> {
    recovery.as_mut().map(|r| &mut r.track)
}

/// Which reply answers a request with an ack.
fn awaited_by(incoming: &Incoming) -> Option<Await> {
    match &incoming.message {
        ClientMessage::Join { room, .. } => Some(Await::Joined(room.clone())),
        ClientMessage::Leave { room } => Some(Await::Left(room.clone())),
        ClientMessage::Presence { room } => Some(Await::Presence(room.clone())),
        ClientMessage::History { room, .. } => Some(Await::History(room.clone())),
        ClientMessage::Ping => Some(Await::Pong),
        ClientMessage::Refresh { .. } => Some(Await::Refreshed),
        ClientMessage::Relay { .. } => incoming.id.clone().map(Await::Id),
        ClientMessage::Auth { .. } | ClientMessage::Ack { .. } => None,
    }
}

/// The user id a relayed message was stamped with (computed once per delivery).
fn sender_of(delivery: &Delivery) -> Option<Arc<str>> {
    static SENDER: LazyLock<EncodingKey<Option<Arc<str>>>> = LazyLock::new(EncodingKey::new);
    delivery
        .encoding(&SENDER, |d| {
            let json = d.json()?;
            let value: Value = serde_json::from_slice(json).ok()?;
            value.get("userId")?.as_str().map(Arc::from)
        })
        .clone()
}

/// The text of a delivery's event for one recipient: shared by every recipient of the
/// delivery, or made for this one (its offset argument is its own cursor).
enum Event<'d> {
    Shared(Option<&'d FramedEvent>),
    Own(Option<Str>),
}

/// An event as its Engine.IO message (`42[…]`), and that message as a WebSocket frame:
/// both made once per delivery. Recipients on WebSocket copy the frame into their output
/// without touching a reference count (on a broadcast, an atomic every core would contend
/// on), the way native recipients take their [`PreparedMessage`]. The frame is made by the
/// first such recipient: a delivery that reaches only polling sessions (or other
/// namespaces) never pays for it.
struct FramedEvent {
    text: Str,
    frame: OnceLock<PreparedMessage>,
}

impl FramedEvent {
    fn new(text: Str) -> FramedEvent {
        FramedEvent {
            text,
            frame: OnceLock::new(),
        }
    }

    fn frame(&self) -> &PreparedMessage {
        self.frame
            .get_or_init(|| PreparedMessage::new(MessageKind::Text, self.text.as_bytes().clone()))
    }
}

/// The event a delivery becomes in the root namespace, framed as its Engine.IO message
/// `42["<event>",<message>]`, encoded once per delivery and shared by every Socket.IO
/// recipient. The event is the message's
/// `type`, except `publish` (what the HTTP API and native `publish` send) which is Socket.IO's
/// default event `message`, and `typing`, which the seeds' clients hear as `user_typing`.
fn framed_event(delivery: &Delivery) -> Option<&FramedEvent> {
    static EVENT: LazyLock<EncodingKey<Option<FramedEvent>>> = LazyLock::new(EncodingKey::new);
    delivery
        .encoding(&EVENT, |d| {
            let json = encode_delivery(WireFormat::Json, d)?;
            let name = match d.body() {
                Body::Presence(change) if change.joined => "user_joined",
                Body::Presence(_) => "user_left",
                _ => event_name(d.kind()),
            };
            let name = serde_json::to_string(name).ok()?;
            let mut text = String::with_capacity(4 + name.len() + json.len());
            text.push_str("42[");
            text.push_str(&name);
            text.push(',');
            text.push_str(std::str::from_utf8(&json).ok()?);
            text.push(']');
            Some(FramedEvent::new(Str::from(text)))
        })
        .as_ref()
}

/// The text of [`framed_event`].
fn event_text(delivery: &Delivery) -> Option<Str> {
    framed_event(delivery).map(|event| event.text.clone())
}

/// [`framed_event`] with the delivery's own position as the offset argument (what every
/// one-room recoverable socket sends: encoded once per delivery).
fn framed_event_with_position(delivery: &Delivery) -> Option<&FramedEvent> {
    static EVENT: LazyLock<EncodingKey<Option<FramedEvent>>> = LazyLock::new(EncodingKey::new);
    delivery
        .encoding(&EVENT, |d| {
            let text = event_text(d)?;
            let cursor = super::recovery::single_room_cursor(d)?;
            Some(FramedEvent::new(with_offset(&text, &cursor)))
        })
        .as_ref()
}

/// The offset argument of a message for a MessagePack client.
enum Offset {
    None,
    /// The delivery's own position (a one-room socket).
    Own,
    /// The socket's cursor over all its rooms.
    Cursor(String),
}

/// The event a delivery becomes for a MessagePack client: one binary message. Encoded once
/// per delivery in the root namespace (with or without its own position), per recipient
/// otherwise.
fn msgpack_event(delivery: &Delivery, nsp: &Namespace, offset: Offset) -> Option<Bytes> {
    static PLAIN: LazyLock<EncodingKey<Option<Bytes>>> = LazyLock::new(EncodingKey::new);
    static WITH_POSITION: LazyLock<EncodingKey<Option<Bytes>>> = LazyLock::new(EncodingKey::new);
    let encode = |d: &Delivery, nsp: &Namespace, offset: Option<String>| {
        let json = encode_delivery(WireFormat::Json, d)?;
        let value: Value = serde_json::from_slice(&json).ok()?;
        let name = match d.body() {
            Body::Presence(change) if change.joined => "user_joined",
            Body::Presence(_) => "user_left",
            _ => event_name(d.kind()),
        };
        let mut values = vec![value];
        values.extend(offset.map(Value::String));
        let packet = Packet::event(nsp.clone(), name, Args::from_values(values));
        Some(msgpack::encode(&packet))
    };
    match (nsp.is_root(), offset) {
        (true, Offset::None) => delivery.encoding(&PLAIN, |d| encode(d, nsp, None)).clone(),
        (true, Offset::Own) => delivery
            .encoding(&WITH_POSITION, |d| {
                encode(d, nsp, super::recovery::single_room_cursor(d))
            })
            .clone(),
        (_, Offset::None) => encode(delivery, nsp, None),
        (_, Offset::Own) => encode(delivery, nsp, super::recovery::single_room_cursor(delivery)),
        (_, Offset::Cursor(cursor)) => encode(delivery, nsp, Some(cursor)),
    }
}

/// `42[…]` with one more argument, the offset string.
fn with_offset(text: &str, offset: &str) -> Str {
    let body = text.strip_suffix(']').unwrap_or(text);
    let mut out = String::with_capacity(body.len() + offset.len() + 4);
    out.push_str(body);
    out.push_str(",\"");
    out.push_str(offset);
    out.push_str("\"]");
    Str::from(out)
}

/// The Socket.IO event of a message type.
pub(crate) fn event_name(kind: &str) -> &str {
    match kind {
        "publish" => "message",
        "typing" => "user_typing",
        other => other,
    }
}

/// A root-namespace framed event moved to `nsp` (`42[…]` → `42/chat,[…]`).
fn with_namespace(text: &str, nsp: &Namespace) -> String {
    let (head, rest) = text.split_at(2);
    let mut out = String::with_capacity(text.len() + nsp.as_str().len() + 1);
    out.push_str(head);
    out.push_str(nsp.as_str());
    out.push(',');
    out.push_str(rest);
    out
}

/// Send a packet (its attachments after it) with the connection's parser.
pub(crate) fn send_packet(out: &mut Out<'_>, codec: Codec, packet: Packet) {
    if codec == Codec::MsgPack {
        out.send(Message::Binary(msgpack::encode(&packet)));
        return;
    }
    let encoded = packet.encode();
    if encoded.attachments.is_empty() {
        out.send(Message::Text(Str::from(encoded.text)));
    } else {
        let mut messages = Vec::with_capacity(1 + encoded.attachments.len());
        messages.push(Message::Text(Str::from(encoded.text)));
        messages.extend(encoded.attachments.into_iter().map(Message::Binary));
        out.send_all(messages);
    }
}

/// Send a packet the protocol state wrote as text (`CONNECT`, `CONNECT_ERROR`, `DISCONNECT`
/// replies) with the connection's parser.
pub(crate) fn send_text_packet(out: &mut Out<'_>, codec: Codec, text: String) {
    if codec == Codec::MsgPack {
        if let Ok(packet) = switchboard_socketio_proto::parse(&text) {
            out.send(Message::Binary(msgpack::encode(&packet)));
        }
        return;
    }
    out.send(Message::Text(Str::from(text)));
}

fn ack_packet(nsp: &Namespace, id: AckId, reply: Value) -> Packet {
    Packet::Ack {
        nsp: nsp.clone(),
        id,
        args: Args::from_values(vec![reply]),
    }
}

/// `{status: "ok", …fields}`.
fn ok_reply(fields: Option<Map<String, Value>>) -> Value {
    let mut reply = Map::new();
    reply.insert("status".into(), Value::from("ok"));
    if let Some(fields) = fields {
        reply.extend(fields);
    }
    Value::Object(reply)
}

/// A refusal: the ack `{status: "error", code, message}`, or without one an `error` event
/// `{code, message}`.
fn answer_error(
    out: &mut Out<'_>,
    codec: Codec,
    nsp: &Namespace,
    ack: Option<AckId>,
    code: &str,
    message: &str,
) {
    let mut error = Map::new();
    if ack.is_some() {
        error.insert("status".into(), Value::from("error"));
    }
    error.insert("code".into(), Value::from(code));
    error.insert("message".into(), Value::from(message));
    let packet = match ack {
        Some(id) => ack_packet(nsp, id, Value::Object(error)),
        None => Packet::event(
            nsp.clone(),
            "error",
            Args::from_values(vec![Value::Object(error)]),
        ),
    };
    send_packet(out, codec, packet);
}

/// The session core's output for one socket: replies become acks (or events), a close ends
/// the socket.
struct SioSink<'a, 'o> {
    out: &'a mut Out<'o>,
    nsp: &'a Namespace,
    awaited: &'a mut Awaited,
    /// The socket's positions, when it is recoverable.
    track: Option<&'a mut Track>,
    codec: Codec,
    /// What the request being handled waits for (an `error` without an id answers it).
    current: Option<Await>,
    /// The `recovered` flag of every `joined` reply of the call.
    rejoins: Vec<bool>,
    /// Error replies sent so far (a refused rejoin answers one, not `joined`).
    errors: usize,
    /// `Some` while an application's join or leave is handled: the message of the error
    /// that refused it, if one did.
    refusal: Option<Option<String>>,
    closed: bool,
    counts: Counts,
}

#[derive(Default)]
struct Counts {
    rate_limited: u64,
    dropped: u64,
    lagged: u64,
}

impl<'a, 'o> SioSink<'a, 'o> {
    fn new(
        out: &'a mut Out<'o>,
        nsp: &'a Namespace,
        awaited: &'a mut Awaited,
        track: Option<&'a mut Track>,
        codec: Codec,
    ) -> SioSink<'a, 'o> {
        SioSink {
            out,
            nsp,
            awaited,
            track,
            codec,
            current: None,
            rejoins: Vec::new(),
            errors: 0,
            refusal: None,
            closed: false,
            counts: Counts::default(),
        }
    }

    /// The ack waiting for `what`, if any (removed).
    fn take(&mut self, what: &Await) -> Option<AckId> {
        let awaited = self.awaited.as_mut()?;
        let i = awaited.iter().position(|(a, _)| a == what)?;
        Some(awaited.remove(i).1)
    }

    fn ack_or_event(&mut self, what: Await, reply: Value, event: &str) {
        match self.take(&what) {
            Some(id) => send_packet(self.out, self.codec, ack_packet(self.nsp, id, reply)),
            None => send_packet(
                self.out,
                self.codec,
                Packet::event(self.nsp.clone(), event, Args::from_values(vec![reply])),
            ),
        }
    }

    fn finish(self, session: &SioSession) {
        let metrics = &session.shared().transport;
        if self.counts.rate_limited > 0 {
            metrics.rate_limited.inc_by(self.counts.rate_limited);
        }
        if self.counts.dropped > 0 {
            metrics.dropped.add(self.counts.dropped);
        }
        if self.counts.lagged > 0 {
            metrics.lagged.inc_by(self.counts.lagged);
        }
    }
}

/// An error message's text (its `message` field).
fn error_text(message: &ServerMessage) -> String {
    match fields_of(message).get("message") {
        Some(Value::String(text)) => text.clone(),
        _ => "refused".to_owned(),
    }
}

/// `message` as a JSON object without its `type` (what an ack carries).
fn fields_of(message: &ServerMessage) -> Map<String, Value> {
    match serde_json::to_value(message) {
        Ok(Value::Object(mut fields)) => {
            fields.remove("type");
            fields
        }
        _ => Map::new(),
    }
}

impl Sink for SioSink<'_, '_> {
    fn send(&mut self, message: ServerMessage) {
        match &message {
            ServerMessage::Joined {
                room,
                offset,
                epoch,
                recovered,
            } => {
                self.rejoins.push(*recovered);
                if let Some(track) = self.track.as_deref_mut() {
                    track.joined(room, *offset, epoch);
                    ROOMS_CHANGED.set(true);
                }
                let mut fields = Map::new();
                fields.insert("room".into(), Value::from(room.as_str()));
                let what = Await::Joined(room.clone());
                if let Some(id) = self.take(&what) {
                    send_packet(
                        self.out,
                        self.codec,
                        ack_packet(self.nsp, id, ok_reply(Some(fields))),
                    );
                }
            }
            ServerMessage::Left { room } => {
                if let Some(track) = self.track.as_deref_mut() {
                    track.left(room);
                    ROOMS_CHANGED.set(true);
                }
                let mut fields = Map::new();
                fields.insert("room".into(), Value::from(room.as_str()));
                if let Some(id) = self.take(&Await::Left(room.clone())) {
                    send_packet(
                        self.out,
                        self.codec,
                        ack_packet(self.nsp, id, ok_reply(Some(fields))),
                    );
                }
            }
            ServerMessage::Ack { id, .. } => {
                let what = Await::Id(id.clone());
                if let Some(ack) = self.take(&what) {
                    let reply = ok_reply(Some(fields_of(&message)));
                    send_packet(self.out, self.codec, ack_packet(self.nsp, ack, reply));
                }
            }
            ServerMessage::Error { id, .. } => {
                self.errors += 1;
                if let Some(refusal @ None) = &mut self.refusal {
                    *refusal = Some(error_text(&message));
                }
                let mut fields = fields_of(&message);
                fields.remove("id");
                // The request it refuses: by its id, else the one being handled (a refused
                // join waits for `joined`, not for its id).
                let by_id = id.clone().map(Await::Id).and_then(|what| self.take(&what));
                let current = self.current.clone();
                match by_id.or_else(|| current.and_then(|what| self.take(&what))) {
                    Some(ack) => {
                        let mut reply = Map::new();
                        reply.insert("status".into(), Value::from("error"));
                        reply.extend(fields);
                        send_packet(
                            self.out,
                            self.codec,
                            ack_packet(self.nsp, ack, Value::Object(reply)),
                        );
                    }
                    None => send_packet(
                        self.out,
                        self.codec,
                        Packet::event(
                            self.nsp.clone(),
                            "error",
                            Args::from_values(vec![Value::Object(fields)]),
                        ),
                    ),
                }
            }
            ServerMessage::Presence { room, .. } => {
                let reply = ok_reply(Some(fields_of(&message)));
                self.ack_or_event(Await::Presence(room.clone()), reply, "presence");
            }
            ServerMessage::History { room, .. } => {
                let reply = ok_reply(Some(fields_of(&message)));
                self.ack_or_event(Await::History(room.clone()), reply, "history");
            }
            ServerMessage::Pong => {
                if let Some(id) = self.take(&Await::Pong) {
                    send_packet(
                        self.out,
                        self.codec,
                        ack_packet(self.nsp, id, ok_reply(None)),
                    );
                }
            }
            ServerMessage::Refreshed { .. } => {
                let reply = ok_reply(Some(fields_of(&message)));
                self.ack_or_event(Await::Refreshed, reply, "refreshed");
            }
            // The `CONNECT` reply stands for these.
            ServerMessage::Welcome { .. } | ServerMessage::AuthSuccess { .. } => {}
            ServerMessage::Lagged { .. } => {
                let fields = fields_of(&message);
                send_packet(
                    self.out,
                    self.codec,
                    Packet::event(
                        self.nsp.clone(),
                        "lagged",
                        Args::from_values(vec![Value::Object(fields)]),
                    ),
                );
            }
            ServerMessage::UserJoined { .. } | ServerMessage::UserLeft { .. } => {
                let name = if matches!(message, ServerMessage::UserJoined { .. }) {
                    "user_joined"
                } else {
                    "user_left"
                };
                let value = serde_json::to_value(&message).unwrap_or(Value::Null);
                send_packet(
                    self.out,
                    self.codec,
                    Packet::event(self.nsp.clone(), name, Args::from_values(vec![value])),
                );
            }
        }
    }

    fn close(&mut self, _reason: CloseReason) {
        self.closed = true;
    }

    fn note(&mut self, note: Note) {
        match note {
            Note::RateLimited => self.counts.rate_limited += 1,
            Note::Dropped(n) => self.counts.dropped += n as u64,
            Note::Lagged => self.counts.lagged += 1,
        }
    }
}

/// The room every socket of namespace `nsp` with application handlers is in: the target of
/// `Io::of(nsp).emit` (a server room: clients cannot publish to it). `None` for a namespace
/// whose name makes no valid room (over 239 bytes): its sockets join none.
pub(crate) fn namespace_room(nsp: &str) -> Option<RoomName> {
    RoomName::new(&namespace_room_name(nsp)).ok()
}

/// The name of [`namespace_room`], unchecked (the application's operators check it when
/// they publish).
pub(crate) fn namespace_room_name(nsp: &str) -> String {
    format!("switchboard:sio:{nsp}")
}
