//! Sans-IO Engine.IO v4: the transport layer under Socket.IO.
//!
//! No sockets, no runtime, no clock: requests, bodies, frames and `Instant`s in; bodies,
//! frames, events and deadlines out. The server crate drives it over hyper/axum and its
//! WebSocket driver; tests drive it directly.
//!
//! - [`packet`]: the seven packet types, their text form (`4hello`, `2probe`) and WebSocket
//!   framing (binary messages as raw bytes).
//! - [`payload`]: polling bodies, packets joined by `\x1e`, binary as `b<base64>`.
//! - [`handshake`]: session ids and the open packet
//!   `0{"sid","upgrades","pingInterval","pingTimeout","maxPayload"}`.
//! - [`request`]: query and method validation with the reference server's errors
//!   (`400 {"code":N,"message":"…"}`).
//! - [`heartbeat`]: server pings every `pingInterval`, a pong due within `pingTimeout`.
//! - [`session`]: one session's state machine across polling, the upgrade and WebSocket.
//!
//! Engine.IO v3 (`EIO=3`, Socket.IO v2 clients) is not implemented: it is refused with code 5.
//!
//! # How the server drives it
//!
//! The server keeps `sid → Arc<Mutex<Session>>` (plus, per session, the waker of the held GET
//! and the outbox of its WebSocket driver). Every call below is made under the session's lock,
//! followed by draining [`Session::poll_transmit`] and [`Session::poll_event`] and re-arming
//! the session's timer entry at [`Session::next_deadline`] (one timer wheel or sweeper for all
//! sessions: no task per session). When a deadline passes, call [`Session::on_deadline`] and
//! drain again.
//!
//! **HTTP handler** (`GET`/`POST` on the Engine.IO path, and the WebSocket upgrade request):
//!
//! 1. [`classify`] the method and query (the server decides whether it is a WebSocket upgrade
//!    request); on error answer [`RequestError::status`] with [`RequestError::body`]
//!    (`Content-Type` [`RequestError::content_type`]). For an upgrade request the reference
//!    answers `400` with the message as the body.
//! 2. Origin and credential checks: a refusal is [`RequestError::Forbidden`] (`403`).
//! 3. By [`EngineRequest`]:
//!    - `Handshake { Polling }`: [`Session::polling`] with a fresh [`Sid`]
//!      ([`Sid::from_random`]); answer `200` with the returned body
//!      ([`POLL_CONTENT_TYPE`]).
//!    - `Handshake { WebSocket }`: upgrade, then [`Session::websocket`]; its first transmit
//!      is the open packet.
//!    - `Poll { sid }` / `Post { sid }` / `Upgrade { sid }` with an unknown sid:
//!      [`RequestError::UnknownSid`].
//!    - `Poll`: [`Session::handle_get`]. `Respond(body)`: answer now. `Wait(id)`: hold the
//!      request (its future registers a waker, no task of its own) until a
//!      [`Transmit::Poll`] with that id arrives; if the client disconnects first, call
//!      [`Session::handle_poll_gone`] (the session closes, as in the reference).
//!    - `Post`: [`Session::handle_post_start`], then read the body bounded by
//!      [`Config::max_payload`]: [`Session::handle_post`] with it (answer `200` [`POST_OK`]
//!      or the error), [`Session::handle_post_too_large`] when the bound is passed,
//!      [`Session::handle_post_aborted`] when the client goes away.
//!    - `Upgrade`: [`Session::handle_ws_open`]; on `Ok(ws)` complete the WebSocket
//!      handshake and run a driver for it.
//!
//! **WebSocket driver** (one per WebSocket; it owns the socket and
//! `switchboard-ws-proto`'s connection with `max_message_size` = `max_payload`):
//!
//! - each text or binary message → [`Session::handle_ws_message`] with the driver's
//!   [`WsId`];
//! - the socket closing (or a WebSocket protocol error) → [`Session::handle_ws_closed`];
//! - [`Transmit::Ws`] / [`Transmit::CloseWs`] for its id → write the frame / close (1000).
//!
//! **Layer above** (Socket.IO, the echo endpoint): [`Event::Message`] for received data,
//! [`Session::send`] / [`Session::send_all`] to send, [`Session::close`] to disconnect,
//! [`Event::Closed`] to forget the session.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use switchboard_engineio_proto::*;
//!
//! let t0 = Instant::now();
//! let sid = Sid::new("s1").unwrap();
//! let (mut session, open) = Session::polling(sid, Config::default(), t0);
//! assert!(open.starts_with(br#"0{"sid":"s1","upgrades":["websocket"]"#));
//!
//! // The client polls: nothing to send yet, the GET is held.
//! let GetOutcome::Wait(get) = session.handle_get(t0).unwrap() else { panic!() };
//! // The client posts a message, the application answers it.
//! let post = session.handle_post_start(t0).unwrap();
//! session.handle_post(post, "4hello".into(), false, t0).unwrap();
//! assert_eq!(session.poll_event(), Some(Event::Message(Message::Text("hello".into()))));
//! session.send(Message::Text("hi".into())).unwrap();
//! assert_eq!(session.poll_transmit(), Some(Transmit::Poll { id: get, body: "4hi".into() }));
//! // The first ping is due one pingInterval after the handshake.
//! assert_eq!(session.next_deadline(), Some(t0 + Duration::from_secs(25)));
//! ```

pub mod config;
pub mod error;
pub mod handshake;
pub mod heartbeat;
pub mod packet;
pub mod payload;
pub mod request;
pub mod session;
pub mod str;

pub use config::Config;
pub use error::DecodeError;
pub use handshake::{open_packet, InvalidSid, Sid};
pub use heartbeat::{Heartbeat, HeartbeatAction};
pub use packet::{encode_text_message, Message, Packet, PacketType, WsFrame};
pub use payload::{decode_payload, encode_payload, SEPARATOR};
pub use request::{classify, EngineRequest, Method, Query, RequestError, Transport, Transports};
pub use session::{
    CloseReason, Event, GetOutcome, PollId, PostId, SendError, Session, Transmit, TransportError,
    TransportState, WsId, POLL_CONTENT_TYPE, POST_OK,
};
pub use str::Str;
