//! The per-session state machine: one Engine.IO session across its transports (polling
//! requests, the WebSocket, the upgrade between them), its heartbeat and its send queue.
//!
//! # States
//!
//! ```text
//!            handle_ws_open        2probe → 3probe           5
//!  Polling ───────────────► Upgrading ──────────► (probed) ──────► WebSocket
//!     │  ▲                      │ anything else, the probe closes,    │
//!     │  └──────────────────────┘ or upgrade_timeout                  │
//!     │ close() with no GET waiting                                   │
//!     ▼                                                               │
//!  Closing ── next GET (queue + `1`) or close_timeout ──► Closed ◄────┘
//! ```
//!
//! A session made by [`Session::websocket`] starts in WebSocket.
//!
//! # Call order
//!
//! 1. Create with [`Session::polling`] (answer the handshake GET with the returned body) or
//!    [`Session::websocket`].
//! 2. Feed input as it comes: [`Session::handle_get`], [`Session::handle_poll_gone`],
//!    [`Session::handle_post_start`] / [`Session::handle_post`] /
//!    [`Session::handle_post_aborted`] / [`Session::handle_post_too_large`],
//!    [`Session::handle_ws_open`], [`Session::handle_ws_message`],
//!    [`Session::handle_ws_closed`]; send with [`Session::send`]; close with
//!    [`Session::close`].
//! 3. After each call (under the same lock, if the session is shared), drain
//!    [`Session::poll_transmit`] (bytes to write) and [`Session::poll_event`] (messages and
//!    state changes for the layer above), and re-arm the timer at
//!    [`Session::next_deadline`]; when it passes, call [`Session::on_deadline`] and drain
//!    again.
//! 4. Once [`Event::Closed`] came out, forget the session (requests with its sid are then
//!    answered [`RequestError::UnknownSid`]).

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::num::NonZeroU64;
use std::time::Instant;

use bytes::Bytes;

use crate::config::Config;
use crate::error::DecodeError;
use crate::handshake::{open_packet, Sid};
use crate::heartbeat::{Heartbeat, HeartbeatAction};
use crate::packet::{base64_len, Message, Packet, WsFrame};
use crate::payload::{decode_payload, encode_payload};
use crate::request::{RequestError, Transport};
use crate::str::Str;

/// The `Content-Type` of a GET answer (every v4 payload is text).
pub const POLL_CONTENT_TYPE: &str = "text/plain; charset=UTF-8";

/// The body of a successful POST answer (`200`, `Content-Type: text/html` in the reference).
pub const POST_OK: &[u8] = b"ok";

/// Names a GET the server holds until the session answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PollId(NonZeroU64);

/// Names a POST whose body the server is reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PostId(NonZeroU64);

/// Names a WebSocket attached to the session (the session's own, or one trying to upgrade).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WsId(NonZeroU64);

/// The transport state, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportState {
    /// On HTTP long-polling.
    Polling,
    /// On polling, with a WebSocket attempting the upgrade.
    Upgrading,
    /// On WebSocket (from the start, or upgraded).
    WebSocket,
    /// Closed by the server on polling; the next GET carries the close.
    Closing,
    /// Closed.
    Closed,
}

/// The immediate answer to a GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetOutcome {
    /// Answer now: `200`, [`POLL_CONTENT_TYPE`], this body.
    Respond(Bytes),
    /// Hold the request; [`Transmit::Poll`] with this id answers it later. If the client goes
    /// away first, call [`Session::handle_poll_gone`].
    Wait(PollId),
}

/// Bytes to write, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Answer the held GET `id`: `200`, [`POLL_CONTENT_TYPE`], this body.
    Poll {
        /// The GET.
        id: PollId,
        /// The payload.
        body: Bytes,
    },
    /// Send one message on WebSocket `ws`.
    Ws {
        /// The WebSocket.
        ws: WsId,
        /// The message.
        frame: WsFrame,
    },
    /// Close WebSocket `ws` (after what was sent on it before). May name a WebSocket that is
    /// already closed; then there is nothing to do.
    CloseWs {
        /// The WebSocket.
        ws: WsId,
    },
}

/// What happened, for the layer above (Socket.IO, the echo endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The client sent a message.
    Message(Message),
    /// The session moved to WebSocket.
    Upgraded,
    /// The session is closed; forget it.
    Closed(CloseReason),
}

/// Why a session closed (the reference server's reasons; [`fmt::Display`] spells them as it
/// does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed: a close packet, or its WebSocket closed.
    TransportClose,
    /// The client broke a transport rule.
    TransportError(TransportError),
    /// The client sent an invalid packet.
    ParseError(DecodeError),
    /// No pong within `pingTimeout`.
    PingTimeout,
    /// The server closed it ([`Session::close`]).
    ForcedClose,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::TransportClose => "transport close",
            CloseReason::TransportError(_) => "transport error",
            CloseReason::ParseError(_) => "parse error",
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::ForcedClose => "forced close",
        })
    }
}

/// A transport rule the client broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// A second GET while one was held.
    #[error("overlap from client")]
    PollOverlap,
    /// A second POST while one was being read.
    #[error("data request overlap from client")]
    PostOverlap,
    /// The held GET's connection closed before it was answered.
    #[error("poll connection closed prematurely")]
    PollCancelled,
    /// A POST's connection closed before its body was read.
    #[error("data request connection closed prematurely")]
    PostCancelled,
    /// A POST with `Content-Type: application/octet-stream` (v4 payloads are text).
    #[error("invalid content")]
    BinaryPostBody,
    /// A POST body or WebSocket message above `maxPayload`.
    #[error("payload too large")]
    PayloadTooLarge,
    /// A ping from the client (in v4 the server pings).
    #[error("invalid heartbeat direction")]
    HeartbeatDirection,
}

/// A send the session could not take; the message is handed back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The session is closing or closed.
    #[error("session closed")]
    Closed(Message),
    /// The queue for the next GET is at `max_queued_bytes`.
    #[error("send queue full")]
    Full(Message),
}

#[derive(Debug)]
enum Mode {
    Polling { upgrade: Option<Upgrade> },
    WebSocket { ws: WsId },
    Closing { deadline: Instant },
    Closed(CloseReason),
}

#[derive(Debug, Clone, Copy)]
struct Upgrade {
    ws: WsId,
    /// `2probe` answered: GETs get a noop, sends wait for the WebSocket.
    probed: bool,
    deadline: Instant,
}

/// One Engine.IO v4 session (see the module doc for the states and the call order).
#[derive(Debug)]
pub struct Session {
    sid: Sid,
    /// Shared by every session of an endpoint (one pointer, not a copy, in each).
    config: std::sync::Arc<Config>,
    mode: Mode,
    /// The polling transport's state: made when the session first polls, dropped once it
    /// idles on a WebSocket (a WebSocket-only session never has one: this is the state of
    /// every idle connection, paid per byte).
    polling: Option<Box<Polling>>,
    next_id: u64,
    heartbeat: Heartbeat,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

/// What only the polling transport needs.
#[derive(Debug, Default)]
struct Polling {
    /// Packets for the next GET (polling, upgrading).
    queue: VecDeque<Packet>,
    /// Their encoded size, separators included.
    queued_bytes: usize,
    get: Option<PollId>,
    post: Option<PostId>,
}

impl Session {
    /// The polling state, made if missing.
    fn polling_mut(&mut self) -> &mut Polling {
        self.polling.get_or_insert_with(Box::default)
    }

    fn new(sid: Sid, config: std::sync::Arc<Config>, mode: Mode, now: Instant) -> Session {
        let heartbeat = Heartbeat::new(now, config.ping_interval);
        Session {
            sid,
            config,
            mode,
            polling: None,
            next_id: 0,
            heartbeat,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// A session opened by a polling handshake (a GET validated by
    /// [`classify`](crate::classify)). Answer that GET with the returned body (the open
    /// packet): `200`, [`POLL_CONTENT_TYPE`].
    pub fn polling(
        sid: Sid,
        config: impl Into<std::sync::Arc<Config>>,
        now: Instant,
    ) -> (Session, Bytes) {
        let config = config.into();
        let open = open_packet(&sid, Transport::Polling, &config);
        let session = Session::new(sid, config, Mode::Polling { upgrade: None }, now);
        (session, encode_payload([&open]))
    }

    /// A session opened by a WebSocket handshake (no sid). The open packet is the first
    /// [`Transmit::Ws`] on the returned WebSocket.
    pub fn websocket(
        sid: Sid,
        config: impl Into<std::sync::Arc<Config>>,
        now: Instant,
    ) -> (Session, WsId) {
        let config = config.into();
        let open = open_packet(&sid, Transport::WebSocket, &config);
        // The session's first id; later ones count from it (`next_id`).
        let ws = WsId(NonZeroU64::MIN);
        let mut session = Session::new(sid, config, Mode::WebSocket { ws }, now);
        session.next_id = 1;
        session.transmits.push_back(Transmit::Ws {
            ws,
            frame: open.encode_ws(),
        });
        (session, ws)
    }

    fn id(&mut self) -> NonZeroU64 {
        self.next_id += 1;
        // Counted from 1: never zero (ids are `NonZero`, so an `Option` of one costs nothing).
        NonZeroU64::new(self.next_id).unwrap_or(NonZeroU64::MIN)
    }

    // ---- getters ----

    /// The session id.
    pub fn sid(&self) -> &Sid {
        &self.sid
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The transport state.
    pub fn transport_state(&self) -> TransportState {
        match self.mode {
            Mode::Polling { upgrade: None } => TransportState::Polling,
            Mode::Polling { upgrade: Some(_) } => TransportState::Upgrading,
            Mode::WebSocket { .. } => TransportState::WebSocket,
            Mode::Closing { .. } => TransportState::Closing,
            Mode::Closed(_) => TransportState::Closed,
        }
    }

    /// Whether the session is closed.
    pub fn is_closed(&self) -> bool {
        matches!(self.mode, Mode::Closed(_))
    }

    /// Why the session closed.
    pub fn close_reason(&self) -> Option<CloseReason> {
        match self.mode {
            Mode::Closed(reason) => Some(reason),
            _ => None,
        }
    }

    /// The WebSocket the session runs on, once on WebSocket.
    pub fn websocket_id(&self) -> Option<WsId> {
        match self.mode {
            Mode::WebSocket { ws } => Some(ws),
            _ => None,
        }
    }

    /// The GET the session holds, if any.
    pub fn held_get(&self) -> Option<PollId> {
        self.polling.as_ref().and_then(|p| p.get)
    }

    fn held_post(&self) -> Option<PostId> {
        self.polling.as_ref().and_then(|p| p.post)
    }

    /// Bytes queued for the next GET.
    pub fn queued_bytes(&self) -> usize {
        self.polling.as_ref().map_or(0, |p| p.queued_bytes)
    }

    /// The heartbeat state.
    pub fn heartbeat(&self) -> &Heartbeat {
        &self.heartbeat
    }

    /// Give back the memory of empty queues (call before a session idles for long: an idle
    /// connection should hold no capacity it is not using).
    pub fn release_idle_memory(&mut self) {
        if let Some(polling) = &mut self.polling {
            let idle = polling.queue.is_empty() && polling.get.is_none() && polling.post.is_none();
            if idle && matches!(self.mode, Mode::WebSocket { .. }) {
                self.polling = None;
            } else {
                for_empty(&mut polling.queue);
            }
        }
        for_empty(&mut self.transmits);
        for_empty(&mut self.events);
    }

    // ---- output ----

    /// The next bytes to write.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the layer above.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Session::on_deadline`] must be called next (`None`: never, the session is
    /// closed).
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.mode {
            Mode::Closed(_) => None,
            Mode::Closing { deadline } => Some(*deadline),
            Mode::Polling { upgrade: Some(up) } => Some(
                self.heartbeat
                    .next_deadline()
                    .map_or(up.deadline, |hb| hb.min(up.deadline)),
            ),
            Mode::Polling { upgrade: None } | Mode::WebSocket { .. } => {
                self.heartbeat.next_deadline()
            }
        }
    }

    /// Time passed: send a ping, time the session out, give up a stalled upgrade or a
    /// closing session. Early calls are harmless.
    pub fn on_deadline(&mut self, now: Instant) {
        match &mut self.mode {
            Mode::Closed(_) => return,
            Mode::Closing { deadline } => {
                if now >= *deadline {
                    self.finish(CloseReason::ForcedClose);
                }
                return;
            }
            Mode::Polling { upgrade: Some(up) } if now >= up.deadline => self.abort_upgrade(),
            _ => {}
        }
        match self.heartbeat.on_deadline(now, self.config.ping_timeout) {
            HeartbeatAction::Wait => {}
            HeartbeatAction::SendPing => self.send_packet(Packet::Ping(Str::new())),
            HeartbeatAction::TimedOut => self.terminate(CloseReason::PingTimeout, Packet::Close),
        }
    }

    // ---- commands ----

    /// Send a message: on the WebSocket at once, or queued for the next GET (answering the
    /// held one, if any). While an upgrade is probed, sends wait for the WebSocket.
    pub fn send(&mut self, message: Message) -> Result<(), SendError> {
        match self.mode {
            Mode::Closed(_) | Mode::Closing { .. } => Err(SendError::Closed(message)),
            Mode::WebSocket { ws } => {
                self.transmits.push_back(Transmit::Ws {
                    ws,
                    frame: Packet::Message(message).encode_ws(),
                });
                Ok(())
            }
            Mode::Polling { .. } => {
                if self.polling_mut().queued_bytes + message_queued_len(&message)
                    > self.config.max_queued_bytes
                {
                    return Err(SendError::Full(message));
                }
                self.enqueue(Packet::Message(message));
                self.flush_poll();
                Ok(())
            }
        }
    }

    /// [`Session::send`] for a text message already framed as its packet, `4<text>` (see
    /// [`encode_text_message`](crate::encode_text_message)): a broadcast framed once is sent
    /// to every WebSocket recipient without a copy of its own. Text not starting with `4` is
    /// refused as [`SendError::Closed`] is not: it is a caller bug, handed back as `Full`.
    pub fn send_framed_text(&mut self, framed: Str) -> Result<(), SendError> {
        if !framed.as_bytes().starts_with(b"4") {
            return Err(SendError::Full(Message::Text(framed)));
        }
        match self.mode {
            Mode::WebSocket { ws } => {
                self.transmits.push_back(Transmit::Ws {
                    ws,
                    frame: WsFrame::Text(framed),
                });
                Ok(())
            }
            _ => {
                let text = framed.slice_from(1).unwrap_or_default();
                self.send(Message::Text(text))
            }
        }
    }

    /// Send messages that belong together (a Socket.IO packet and its binary attachments):
    /// all are taken, or none (handed back when the session is closing or the queue would
    /// pass `max_queued_bytes`). On polling they go in the same payload.
    pub fn send_all(&mut self, messages: Vec<Message>) -> Result<(), Vec<Message>> {
        match self.mode {
            Mode::Closed(_) | Mode::Closing { .. } => return Err(messages),
            Mode::WebSocket { ws } => {
                for m in messages {
                    self.transmits.push_back(Transmit::Ws {
                        ws,
                        frame: Packet::Message(m).encode_ws(),
                    });
                }
                return Ok(());
            }
            Mode::Polling { .. } => {}
        }
        let size: usize = messages.iter().map(message_queued_len).sum();
        if self.polling_mut().queued_bytes + size > self.config.max_queued_bytes {
            return Err(messages);
        }
        for m in messages {
            self.enqueue(Packet::Message(m));
        }
        self.flush_poll();
        Ok(())
    }

    /// Close the session from the server. On WebSocket the socket closes after what was sent;
    /// on polling the close packet goes with the queued packets in the answer to the held GET,
    /// or the next one (within `close_timeout`).
    pub fn close(&mut self, now: Instant) {
        match self.mode {
            Mode::Closed(_) | Mode::Closing { .. } => {}
            Mode::WebSocket { .. } => self.terminate(CloseReason::ForcedClose, Packet::Close),
            Mode::Polling { .. } => {
                self.abort_upgrade();
                if let Some(id) = self.polling.as_mut().and_then(|p| p.get.take()) {
                    self.enqueue(Packet::Close);
                    let body = self.drain_queue();
                    self.transmits.push_back(Transmit::Poll { id, body });
                    self.finish(CloseReason::ForcedClose);
                } else {
                    self.mode = Mode::Closing {
                        deadline: now + self.config.close_timeout,
                    };
                }
            }
        }
    }

    // ---- polling input ----

    /// A GET (receive) for this session arrived.
    ///
    /// Refused with `400` after an upgrade (the session goes on) and when a GET is already
    /// held (the session closes, the held GET gets `1`). During a probed upgrade the answer is
    /// a noop (`6`) at once.
    pub fn handle_get(&mut self, _now: Instant) -> Result<GetOutcome, RequestError> {
        match self.mode {
            Mode::Closed(_) => Err(RequestError::UnknownSid),
            Mode::WebSocket { .. } => Err(RequestError::BadRequest),
            Mode::Closing { .. } => {
                self.enqueue(Packet::Close);
                let body = self.drain_queue();
                self.finish(CloseReason::ForcedClose);
                Ok(GetOutcome::Respond(body))
            }
            Mode::Polling { upgrade } => {
                if self.held_get().is_some() {
                    self.terminate(
                        CloseReason::TransportError(TransportError::PollOverlap),
                        Packet::Close,
                    );
                    return Err(RequestError::BadRequest);
                }
                if upgrade.is_some_and(|up| up.probed) {
                    return Ok(GetOutcome::Respond(encode_payload([&Packet::Noop])));
                }
                if !self.polling.as_ref().is_none_or(|p| p.queue.is_empty()) {
                    return Ok(GetOutcome::Respond(self.drain_queue()));
                }
                let id = PollId(self.id());
                self.polling_mut().get = Some(id);
                Ok(GetOutcome::Wait(id))
            }
        }
    }

    /// The held GET `id` ended before it was answered (the client went away): the session
    /// closes. Stale ids (already answered) are ignored.
    pub fn handle_poll_gone(&mut self, id: PollId, _now: Instant) {
        if self.held_get() == Some(id) {
            self.polling_mut().get = None;
            self.terminate(
                CloseReason::TransportError(TransportError::PollCancelled),
                Packet::Close,
            );
        }
    }

    /// A POST (send) for this session arrived; read its body (at most `max_payload` bytes)
    /// and pass it to [`Session::handle_post`].
    ///
    /// Refused with `400` after an upgrade (the session goes on) and when a POST is already
    /// being read (the session closes).
    pub fn handle_post_start(&mut self, _now: Instant) -> Result<PostId, RequestError> {
        match self.mode {
            Mode::Closed(_) => Err(RequestError::UnknownSid),
            Mode::WebSocket { .. } => Err(RequestError::BadRequest),
            Mode::Polling { .. } | Mode::Closing { .. } => {
                if self.held_post().is_some() {
                    self.terminate(
                        CloseReason::TransportError(TransportError::PostOverlap),
                        Packet::Close,
                    );
                    return Err(RequestError::BadRequest);
                }
                let id = PostId(self.id());
                self.polling_mut().post = Some(id);
                Ok(id)
            }
        }
    }

    /// The body of POST `id`. `binary`: it came with `Content-Type: application/octet-stream`.
    ///
    /// `Ok`: answer `200` with [`POST_OK`]. An invalid payload, a binary body or one above
    /// `max_payload` closes the session and is refused (`400`, `413`). A close packet closes
    /// the session (the held GET gets `6`) and is still answered `ok`.
    pub fn handle_post(
        &mut self,
        id: PostId,
        body: Bytes,
        binary: bool,
        now: Instant,
    ) -> Result<(), RequestError> {
        if self.held_post() != Some(id) {
            return Err(match self.mode {
                Mode::Closed(_) => RequestError::UnknownSid,
                _ => RequestError::BadRequest,
            });
        }
        self.polling_mut().post = None;
        match self.mode {
            Mode::Closed(_) => return Err(RequestError::UnknownSid),
            // The reference ignores packets once the server closed.
            Mode::Closing { .. } => return Ok(()),
            Mode::Polling { .. } | Mode::WebSocket { .. } => {}
        }
        if binary {
            self.terminate(
                CloseReason::TransportError(TransportError::BinaryPostBody),
                Packet::Close,
            );
            return Err(RequestError::BadRequest);
        }
        let packets = match decode_payload(&body, self.config.max_payload) {
            Ok(packets) => packets,
            Err(DecodeError::TooLarge { .. }) => {
                self.terminate(
                    CloseReason::TransportError(TransportError::PayloadTooLarge),
                    Packet::Close,
                );
                return Err(RequestError::PayloadTooLarge);
            }
            Err(e) => {
                self.terminate(CloseReason::ParseError(e), Packet::Close);
                return Err(RequestError::BadRequest);
            }
        };
        for packet in packets {
            self.on_packet(packet, now)?;
            if self.is_closed() {
                break;
            }
        }
        Ok(())
    }

    /// POST `id`'s connection closed before its body was read: the session closes.
    pub fn handle_post_aborted(&mut self, id: PostId, _now: Instant) {
        if self.held_post() == Some(id) {
            self.polling_mut().post = None;
            self.terminate(
                CloseReason::TransportError(TransportError::PostCancelled),
                Packet::Close,
            );
        }
    }

    /// POST `id`'s body passed `max_payload` while it was read: the session closes; answer
    /// the returned error (`413`).
    pub fn handle_post_too_large(&mut self, id: PostId, _now: Instant) -> RequestError {
        if self.held_post() == Some(id) {
            self.polling_mut().post = None;
            self.terminate(
                CloseReason::TransportError(TransportError::PayloadTooLarge),
                Packet::Close,
            );
        }
        RequestError::PayloadTooLarge
    }

    // ---- WebSocket input ----

    /// A WebSocket for this session (an upgrade request with its sid) wants to open. `Ok`:
    /// complete the WebSocket handshake and feed its messages with the id. Refused (`400`, or
    /// close it at once) when the session is already on WebSocket or upgrading, or upgrades
    /// are off.
    pub fn handle_ws_open(&mut self, now: Instant) -> Result<WsId, RequestError> {
        match self.mode {
            Mode::Closed(_) => Err(RequestError::UnknownSid),
            Mode::Polling { upgrade: None } if self.config.allow_upgrades => {
                let ws = WsId(self.id());
                self.mode = Mode::Polling {
                    upgrade: Some(Upgrade {
                        ws,
                        probed: false,
                        deadline: now + self.config.upgrade_timeout,
                    }),
                };
                Ok(ws)
            }
            _ => Err(RequestError::BadRequest),
        }
    }

    /// A message arrived on WebSocket `ws`.
    pub fn handle_ws_message(&mut self, ws: WsId, frame: WsFrame, now: Instant) {
        match self.mode {
            Mode::WebSocket { ws: main } if main == ws => {
                if frame.len() > self.config.max_payload {
                    self.terminate(
                        CloseReason::TransportError(TransportError::PayloadTooLarge),
                        Packet::Close,
                    );
                    return;
                }
                match Packet::decode_ws(&frame) {
                    // A refusal only matters to a POST: the session already closed.
                    Ok(packet) => _ = self.on_packet(packet, now),
                    Err(e) => self.terminate(CloseReason::ParseError(e), Packet::Close),
                }
            }
            Mode::Polling { upgrade: Some(up) } if up.ws == ws => {
                self.on_probe_packet(up, Packet::decode_ws(&frame));
            }
            // A WebSocket the session no longer knows.
            _ => self.transmits.push_back(Transmit::CloseWs { ws }),
        }
    }

    /// WebSocket `ws` closed (by the peer, or on a protocol error). The session's own
    /// WebSocket closing closes the session; an upgrading one closing leaves it on polling.
    pub fn handle_ws_closed(&mut self, ws: WsId, _now: Instant) {
        match self.mode {
            Mode::WebSocket { ws: main } if main == ws => {
                self.terminate(CloseReason::TransportClose, Packet::Close);
            }
            Mode::Polling { upgrade: Some(up) } if up.ws == ws => {
                self.mode = Mode::Polling { upgrade: None };
            }
            _ => {}
        }
    }

    // ---- internals ----

    /// A packet from the client on the session's transport.
    fn on_packet(&mut self, packet: Packet, now: Instant) -> Result<(), RequestError> {
        self.heartbeat.on_packet(now);
        match packet {
            Packet::Message(m) => self.events.push_back(Event::Message(m)),
            Packet::Pong(_) => self.heartbeat.on_pong(now, self.config.ping_interval),
            Packet::Ping(_) => {
                self.terminate(
                    CloseReason::TransportError(TransportError::HeartbeatDirection),
                    Packet::Close,
                );
                return Err(RequestError::BadRequest);
            }
            // The reference answers a held GET with a noop when the client closes.
            Packet::Close => self.terminate(CloseReason::TransportClose, Packet::Noop),
            Packet::Open(_) | Packet::Upgrade | Packet::Noop => {}
        }
        Ok(())
    }

    /// A packet on the WebSocket trying to upgrade.
    fn on_probe_packet(&mut self, up: Upgrade, packet: Result<Packet, DecodeError>) {
        match packet {
            Ok(Packet::Ping(data)) if !up.probed && data == Packet::PROBE => {
                self.transmits.push_back(Transmit::Ws {
                    ws: up.ws,
                    frame: Packet::Pong(Str::from_static(Packet::PROBE)).encode_ws(),
                });
                self.mode = Mode::Polling {
                    upgrade: Some(Upgrade { probed: true, ..up }),
                };
                // End the held poll so the client can pause polling.
                self.answer_get_with(Packet::Noop);
            }
            Ok(Packet::Upgrade) if up.probed => {
                self.answer_get_with(Packet::Noop);
                self.mode = Mode::WebSocket { ws: up.ws };
                self.polling_mut().queued_bytes = 0;
                for packet in std::mem::take(&mut self.polling_mut().queue) {
                    self.transmits.push_back(Transmit::Ws {
                        ws: up.ws,
                        frame: packet.encode_ws(),
                    });
                }
                self.events.push_back(Event::Upgraded);
            }
            // Anything else ends the attempt; the session stays on polling.
            _ => self.abort_upgrade(),
        }
    }

    fn abort_upgrade(&mut self) {
        if let Mode::Polling { upgrade: Some(up) } = self.mode {
            self.transmits.push_back(Transmit::CloseWs { ws: up.ws });
            self.mode = Mode::Polling { upgrade: None };
        }
    }

    fn answer_get_with(&mut self, packet: Packet) {
        if let Some(id) = self.polling.as_mut().and_then(|p| p.get.take()) {
            self.transmits.push_back(Transmit::Poll {
                id,
                body: encode_payload([&packet]),
            });
        }
    }

    /// Queue a packet the session itself sends (ping), past the queue bound.
    fn send_packet(&mut self, packet: Packet) {
        match self.mode {
            Mode::WebSocket { ws } => self.transmits.push_back(Transmit::Ws {
                ws,
                frame: packet.encode_ws(),
            }),
            Mode::Polling { .. } => {
                self.enqueue(packet);
                self.flush_poll();
            }
            Mode::Closing { .. } | Mode::Closed(_) => {}
        }
    }

    fn enqueue(&mut self, packet: Packet) {
        self.polling_mut().queued_bytes += queued_len(&packet);
        self.polling_mut().queue.push_back(packet);
    }

    fn drain_queue(&mut self) -> Bytes {
        let body = encode_payload(&self.polling_mut().queue);
        self.polling_mut().queue.clear();
        self.polling_mut().queued_bytes = 0;
        body
    }

    /// Answer the held GET with the queue, unless an upgrade is probed (the queue then waits
    /// for the WebSocket).
    fn flush_poll(&mut self) {
        let probed = matches!(self.mode, Mode::Polling { upgrade: Some(up) } if up.probed);
        if probed || self.polling.as_ref().is_none_or(|p| p.queue.is_empty()) {
            return;
        }
        if let Some(id) = self.polling.as_mut().and_then(|p| p.get.take()) {
            let body = self.drain_queue();
            self.transmits.push_back(Transmit::Poll { id, body });
        }
    }

    /// Close now: the held GET gets `answer`, every WebSocket closes, the queue is dropped.
    fn terminate(&mut self, reason: CloseReason, answer: Packet) {
        if self.is_closed() {
            return;
        }
        self.answer_get_with(answer);
        match self.mode {
            Mode::Polling { upgrade: Some(up) } => {
                self.transmits.push_back(Transmit::CloseWs { ws: up.ws });
            }
            Mode::WebSocket { ws } => self.transmits.push_back(Transmit::CloseWs { ws }),
            _ => {}
        }
        self.finish(reason);
    }

    fn finish(&mut self, reason: CloseReason) {
        // Nothing more is sent: the queue and the held GET go (the POST may still finish).
        if let Some(polling) = &mut self.polling {
            polling.queue.clear();
            polling.queued_bytes = 0;
            polling.get = None;
        }
        self.mode = Mode::Closed(reason);
        self.events.push_back(Event::Closed(reason));
    }
}

/// Drop an empty queue's allocation.
fn for_empty<T>(queue: &mut VecDeque<T>) {
    if queue.is_empty() && queue.capacity() > 0 {
        *queue = VecDeque::new();
    }
}

/// A packet's share of a payload: its text form and a separator.
fn queued_len(packet: &Packet) -> usize {
    packet.encoded_len() + 1
}

/// [`queued_len`] of a message packet.
fn message_queued_len(message: &Message) -> usize {
    1 + match message {
        Message::Text(s) => 1 + s.len(),
        Message::Binary(b) => 1 + base64_len(b.len()),
    }
}
