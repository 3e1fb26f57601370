//! Socket.IO v5 on the Engine.IO endpoint at `/socket.io/` (SPEC §1.4): each connection's
//! packets decoded by `switchboard-socketio-proto`, each connected namespace a socket on the
//! session core ([`socket`]), so that Socket.IO rooms are Switchboard channels shared with
//! every other transport, under the same limits, permissions and metrics.
//!
//! With no application code the server behaves like the seeds' Socket.IO servers:
//! `join_room`/`subscribe` and `leave_room`/`unsubscribe` (acked `{status:"ok", room}`),
//! events naming a room relayed to it (stamped with `userId`, `timestamp`, `offset`, `id`),
//! `typing` to the others only. Credentials: `socket.handshake.auth.token`, else the
//! handshake request's header, query or cookie (refusals are `CONNECT_ERROR {"message":
//! "Authentication failed"}`). Under `--echo` the root namespace also answers `message` with
//! `message-back` and acknowledges `message-with-ack` with its arguments, and `/custom`
//! exists; every namespace emits `auth` with the `CONNECT` payload (conformance runs). For
//! server → client acks, `emit-with-ack` makes the server emit `ack-request` with the same
//! arguments and an ack id, and the client's answer comes back as `ack-response`.
//!
//! Both parsers are served: the default one (text packets, binary attachments) and
//! `socket.io-msgpack-parser` (one binary message per packet); a connection's first packet
//! decides which (`socket::Codec`), the other kind afterwards closes it. Public behaviour:
//! docs/socketio.md.

mod app;
pub(crate) mod recovery;
mod socket;

pub use app::{Ack, AckError, Data, EmitError, Handlers, Io, RoomOperator, SocketRef};
pub use recovery::SharedRecords;
pub use switchboard_socketio_proto::Args;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use serde_json::{Map, Value};
use switchboard_auth::{ConnectInfo, Identity};
use switchboard_engineio_proto::{CloseReason as EngineClose, Message};
use switchboard_hub::Delivery;
use switchboard_socketio_proto::msgpack;
use switchboard_socketio_proto::{
    ConnectErrorReason, Decoder, DecoderConfig, Incoming, Namespace, Packet, SocketState,
    StateConfig, StateEvent,
};

use crate::engineio::{App, Handshake, Out};
use crate::native::NativeShared;
use crate::state::AppState;
use socket::{send_packet, send_text_packet, Codec, Connect, NsSocket, ShortId};

/// How long the echo mode's `ack-request` waits for the client's ack.
const ECHO_ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What every Socket.IO connection of a server shares.
pub(crate) struct SioShared {
    native: Arc<NativeShared>,
    namespaces: Vec<Namespace>,
    state: StateConfig,
    decoder: DecoderConfig,
    /// The conformance behaviours of `--echo`.
    echo: bool,
    /// Namespaces with connection state recovery, the window, and the lost sockets.
    recovery: Vec<Namespace>,
    recovery_window: std::time::Duration,
    records: recovery::Records,
    /// The application's handlers (none: the built-in behaviour only).
    handlers: Handlers,
}

impl SioShared {
    pub(crate) fn new(state: &AppState) -> Arc<SioShared> {
        let config = &state.config.socketio;
        let mut namespaces: Vec<Namespace> = config
            .namespaces
            .iter()
            .filter_map(|n| Namespace::new(n.as_str()).ok())
            .collect();
        let mut extra: Vec<&str> = config.handlers.namespaces().collect();
        if state.config.echo {
            extra.extend(["/", "/custom"]);
        }
        for extra in extra {
            if let Ok(nsp) = Namespace::new(extra) {
                if !namespaces.contains(&nsp) {
                    namespaces.push(nsp);
                }
            }
        }
        Arc::new(SioShared {
            native: state.native.clone(),
            namespaces,
            state: StateConfig {
                connect_timeout: config.connect_timeout,
                ..StateConfig::default()
            },
            decoder: DecoderConfig {
                max_attachment_bytes: config.max_payload,
                ..DecoderConfig::default()
            },
            echo: state.config.echo,
            recovery: config
                .recovery
                .iter()
                .filter_map(|n| Namespace::new(n.as_str()).ok())
                .collect(),
            recovery_window: config.recovery_window,
            records: recovery::Records::new(
                state
                    .config
                    .backends
                    .as_ref()
                    .and_then(|b| b.records.clone()),
            ),
            handlers: config.handlers.clone(),
        })
    }
}

/// The credentials of the handshake request (header, query, cookie), checked once.
enum HandshakeAuth {
    /// None given.
    None,
    /// Valid: the user of every namespace connected without a token of its own.
    Identity(Box<Identity>),
    /// Given and refused.
    Refused,
}

/// What a connection keeps for authenticating its namespaces.
struct AuthContext {
    handshake: HandshakeAuth,
    info: ConnectInfo,
}

/// One Socket.IO connection (the application above its Engine.IO session).
pub(crate) struct SioConnection {
    shared: Arc<SioShared>,
    state: SocketState,
    decoder: Decoder,
    /// With authentication configured: the handshake's credentials and what the connect
    /// proxy is told (one pointer: most of the state of an idle connection is paid per byte).
    auth: Option<Box<AuthContext>>,
    /// A boxed slice, not a `Vec`: 8 bytes fewer in every idle connection (namespaces are
    /// connected and left rarely; each change rebuilds it).
    sockets: Box<[NsSocket]>,
    /// The parser the client speaks (decided by its first packet).
    codec: Codec,
}

thread_local! {
    /// Scratch for draining outboxes, per worker thread (a drain never nests).
    static BATCH: std::cell::RefCell<Vec<Arc<Delivery>>> = const {
        std::cell::RefCell::new(Vec::new())
    };
}

impl SioConnection {
    /// A connection for `handshake`: its credentials (if any) are verified now.
    pub(crate) async fn open(
        shared: &Arc<SioShared>,
        state: &Arc<AppState>,
        handshake: Handshake,
    ) -> SioConnection {
        let mut auth = HandshakeAuth::None;
        let mut context = None;
        if let Some(authenticator) = &state.config.auth {
            let connect_info =
                crate::access::connect_info(&handshake.headers, handshake.ip, "socketio");
            if authenticator
                .extract(&handshake.headers, &handshake.uri)
                .is_some()
            {
                auth = match crate::access::identify_http(
                    state,
                    &handshake.headers,
                    &handshake.uri,
                    handshake.ip,
                    "socketio",
                )
                .await
                {
                    Ok(Some(identity)) => HandshakeAuth::Identity(Box::new(identity)),
                    Ok(None) => HandshakeAuth::None,
                    Err(_) => HandshakeAuth::Refused,
                };
            }
            context = Some(connect_info);
        }
        SioConnection {
            shared: shared.clone(),
            state: SocketState::new(shared.state, Instant::now()),
            decoder: Decoder::new(shared.decoder),
            auth: context.map(|info| {
                Box::new(AuthContext {
                    handshake: auth,
                    info,
                })
            }),
            sockets: Box::default(),
            codec: Codec::Undecided,
        }
    }

    fn push_socket(&mut self, socket: NsSocket) {
        let mut sockets = std::mem::take(&mut self.sockets).into_vec();
        sockets.push(socket);
        self.sockets = sockets.into_boxed_slice();
    }

    fn remove_socket(&mut self, i: usize) -> NsSocket {
        let mut sockets = std::mem::take(&mut self.sockets).into_vec();
        let socket = sockets.remove(i);
        self.sockets = sockets.into_boxed_slice();
        socket
    }

    fn socket(&mut self, nsp: &Namespace) -> Option<&mut NsSocket> {
        self.sockets.iter_mut().find(|s| &s.nsp == nsp)
    }

    /// A `CONNECT` to `nsp` with `auth` (the client's `auth` option).
    fn on_connect(&mut self, nsp: Namespace, auth: Option<Map<String, Value>>, out: &mut Out<'_>) {
        if !self.shared.namespaces.contains(&nsp) {
            return self.refuse(&nsp, ConnectErrorReason::InvalidNamespace, out);
        }
        let Some(sid) = ShortId::random() else {
            return self.refuse(&nsp, ConnectErrorReason::Other("no randomness".into()), out);
        };
        let native = self.shared.native.clone();
        let now = out.now();
        let token = auth
            .as_ref()
            .and_then(|a| a.get("token"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let authenticator = native.auth.clone();
        let info = || {
            self.auth
                .as_ref()
                .map(|a| a.info.clone())
                .unwrap_or_default()
        };
        let handshake = self
            .auth
            .as_ref()
            .map_or(&HandshakeAuth::None, |a| &a.handshake);
        let session = match (&authenticator, token, handshake) {
            (None, _, _) => socket::SioSession::anonymous(native, now),
            // A token in the `CONNECT` is verified like a first `auth` message.
            (Some(_), Some(token), _) => {
                let session = socket::SioSession::awaiting_auth(native, info(), now);
                let mut socket = NsSocket::new(nsp, sid, session, self.codec);
                socket.authenticate(token, out);
                return self.connected_or_pending(socket, auth, out);
            }
            (Some(_), None, HandshakeAuth::Identity(identity)) => {
                socket::SioSession::authenticated(native, (**identity).clone(), info(), now)
            }
            (Some(auth), None, HandshakeAuth::None) if auth.anonymous_allowed() => {
                socket::SioSession::anonymous(native, now).with_connect_info(info())
            }
            (Some(_), None, _) => {
                self.count_auth_failure();
                return self.refuse(&nsp, ConnectErrorReason::AuthenticationFailed, out);
            }
        };
        let socket = NsSocket::new(nsp, sid, session, self.codec);
        self.connected_or_pending(socket, auth, out);
    }

    fn count_auth_failure(&self) {
        self.shared
            .native
            .transport
            .auth_failure("socketio_connect");
    }

    /// Answer the `CONNECT` of `socket` if its credentials are settled, else keep it waiting.
    fn connected_or_pending(
        &mut self,
        mut socket: NsSocket,
        auth: Option<Map<String, Value>>,
        out: &mut Out<'_>,
    ) {
        match socket.connect_state() {
            Connect::Accepted => {
                if self.shared.recovery.contains(&socket.nsp)
                    && self.recover(&mut socket, auth.as_ref(), out)
                {
                    // Its record is asked of the shared store: answered when it is back.
                    return self.push_socket(socket);
                }
                self.accept(&mut socket, auth, out);
                self.push_socket(socket);
            }
            Connect::Refused => {
                self.count_auth_failure();
                self.refuse(&socket.nsp, ConnectErrorReason::AuthenticationFailed, out);
            }
            Connect::Pending => self.push_socket(socket),
        }
    }

    /// Make `socket` recoverable, and recover the lost socket its `CONNECT` names (`pid`,
    /// `offset`) when the server still has it and every room's history covers the gap.
    /// `true`: the `CONNECT` waits — for the shared store's record of the `pid`, or for the
    /// store's answers to the rejoins — and is answered in `write_outbound` when they are in
    /// ([`recovery::Records::progress`]).
    fn recover(
        &mut self,
        socket: &mut NsSocket,
        auth: Option<&Map<String, Value>>,
        out: &mut Out<'_>,
    ) -> bool {
        let Some(pid) = ShortId::random() else {
            return false;
        };
        socket.recovery = Some(socket::Recovery {
            pid,
            track: recovery::Track::default(),
        });
        let claim = auth.and_then(|a| a.get("pid")).and_then(Value::as_str);
        let Some(claim) = claim.and_then(ShortId::parse) else {
            return false;
        };
        let offset = auth.and_then(|a| a.get("offset")).and_then(Value::as_str);
        let Some(record) = self.shared.records.take(&claim.as_str(), out.now()) else {
            let outbox = socket.session.outbox().clone();
            let claim = recovery::Claim {
                pid: claim.as_str().to_owned(),
                offset: offset.map(str::to_owned),
            };
            return self.shared.records.start_remote(
                socket.session.connection_id(),
                socket.nsp.as_str(),
                claim,
                self.shared.recovery_window,
                move || outbox.notify(),
            );
        };
        self.apply_record(socket, record, claim, offset, out)
    }

    /// Recover `socket` as the lost one of `record` (claimed with `claim` and `offset`) when
    /// it is the same namespace and user and every room's history covers the gap; else it
    /// stays a new socket. `true`: the rejoins are answered later (a networked store), the
    /// `CONNECT` waits for them.
    fn apply_record(
        &mut self,
        socket: &mut NsSocket,
        record: recovery::Record,
        claim: ShortId,
        offset: Option<&str>,
        out: &mut Out<'_>,
    ) -> bool {
        let user = socket
            .session
            .identity()
            .map(|_| socket.session.user().clone());
        if record.nsp != socket.nsp.as_str() || record.user != user {
            return false;
        }
        let (expected, answers) = socket.rejoin(record.joins(offset), out);
        if answers.len() < expected {
            self.shared.records.await_rejoins(
                socket.session.connection_id(),
                socket.nsp.as_str(),
                expected,
                answers,
                record.sid,
                claim.as_str().to_owned(),
            );
            return true;
        }
        finish_rejoin(socket, answers.iter().all(|r| *r), &record.sid, claim, out);
        false
    }

    fn accept(
        &mut self,
        socket: &mut NsSocket,
        auth: Option<Map<String, Value>>,
        out: &mut Out<'_>,
    ) {
        let pid = socket.recovery.as_ref().map(|r| r.pid.as_str());
        let Ok(text) = self
            .state
            .accept_connect(&socket.nsp, &socket.sid.as_str(), pid.as_deref())
        else {
            return;
        };
        socket.connected = true;
        send_text_packet(out, self.codec, text);
        self.share_record(socket);
        if self.shared.handlers.covers(&socket.nsp) {
            socket.join_namespace_room(out);
            let app = app::SocketInner::new(
                &socket.sid.as_str(),
                switchboard_hub::ConnId(socket.session.connection_id()),
                socket.nsp.clone(),
                socket.session.user().clone(),
                socket.session.identity().cloned(),
                socket.session.outbox().clone(),
                self.shared.handlers.clone(),
                Io::new(
                    self.shared.native.hub.clone(),
                    self.shared.native.transport.clone(),
                ),
            );
            self.shared.handlers.connected(&app);
            socket.app = Some(app);
        }
        if self.shared.echo {
            // The conformance suite's servers greet with the auth payload.
            let payload = Value::Object(auth.unwrap_or_default());
            let packet =
                Packet::event(socket.nsp.clone(), "auth", Args::from_values(vec![payload]));
            send_packet(out, self.codec, packet);
        }
    }

    fn refuse(&mut self, nsp: &Namespace, reason: ConnectErrorReason, out: &mut Out<'_>) {
        if let Ok(text) = self.state.reject_connect(nsp, &reason, None) {
            send_text_packet(out, self.codec, text);
        }
    }

    /// One decoded packet.
    fn on_packet(&mut self, packet: Packet, out: &mut Out<'_>) {
        let incoming = match self.state.handle_packet(packet) {
            Ok(Some(incoming)) => incoming,
            Ok(None) => return,
            // The reference server closes the connection on a packet out of place.
            Err(_) => return out.close(),
        };
        match incoming {
            Incoming::Connect { nsp, auth } => self.on_connect(nsp, auth, out),
            Incoming::Event {
                nsp,
                name,
                args,
                ack,
            } => {
                let echo = self.shared.echo && nsp.is_root();
                let name = name.as_str().into_owned();
                match (echo, name.as_str(), ack) {
                    (true, "message", _) => {
                        send_packet(out, self.codec, Packet::event(nsp, "message-back", args));
                    }
                    (true, "message-with-ack", Some(id)) => {
                        send_packet(out, self.codec, Packet::Ack { nsp, id, args });
                    }
                    // The other direction: the server asks for an ack, and says what came.
                    (true, "emit-with-ack", _) => {
                        let deadline = Some(out.now() + ECHO_ACK_TIMEOUT);
                        if let Ok(id) = self.state.next_ack_id(&nsp, deadline) {
                            let name = "ack-request".into();
                            let ack = Some(id);
                            send_packet(
                                out,
                                self.codec,
                                Packet::Event {
                                    nsp,
                                    name,
                                    args,
                                    ack,
                                },
                            );
                        }
                    }
                    _ => {
                        if let Some(socket) = self.socket(&nsp) {
                            socket.on_event(&name, args, ack, out);
                        }
                    }
                }
            }
            // The application's `emit_with_ack`, or the echo mode's `ack-request`.
            Incoming::Ack { nsp, id, args } => {
                if let Some(app) = self.socket(&nsp).and_then(|s| s.app.clone()) {
                    app.answer_ack(id, Ok(app::ack_value(args)));
                } else if self.shared.echo {
                    send_packet(out, self.codec, Packet::event(nsp, "ack-response", args));
                }
            }
            Incoming::Disconnect { nsp } => {
                let mut sockets = std::mem::take(&mut self.sockets).into_vec();
                for socket in sockets.iter().filter(|s| s.nsp == nsp) {
                    if let Some(recovery) = &socket.recovery {
                        // On purpose: nothing to recover, on any node.
                        self.shared.records.forget(&recovery.pid.as_str());
                    }
                }
                sockets.retain(|s| s.nsp != nsp);
                self.sockets = sockets.into_boxed_slice();
            }
        }
        self.settle(out);
    }

    /// Carry out what the application's handlers asked of socket `i`, in order.
    fn apply_commands(&mut self, i: usize, out: &mut Out<'_>) {
        let Some(app) = self.sockets[i].app.clone() else {
            return;
        };
        for command in app.take_commands() {
            let socket = &mut self.sockets[i];
            let nsp = socket.nsp.clone();
            match command {
                app::Command::Emit {
                    event,
                    args,
                    answer,
                } => {
                    let mut ack = None;
                    if let Some((timeout, answer)) = answer {
                        match self.state.next_ack_id(&nsp, Some(out.now() + timeout)) {
                            Ok(id) => {
                                app.await_ack(id, answer);
                                ack = Some(id);
                            }
                            Err(_) => {
                                let _ = answer.send(Err(AckError::Disconnected));
                                continue;
                            }
                        }
                    }
                    let name = event.into();
                    let packet = Packet::Event {
                        nsp,
                        name,
                        args,
                        ack,
                    };
                    send_packet(out, socket.codec, packet);
                }
                app::Command::Ack(id, args) => {
                    send_packet(out, socket.codec, Packet::Ack { nsp, id, args });
                }
                app::Command::Join(room, done) => {
                    let _ = done.send(socket.join_or_leave(room, true, out));
                }
                app::Command::Leave(room, done) => {
                    let _ = done.send(socket.join_or_leave(room, false, out));
                }
                app::Command::Disconnect => socket.ended = true,
            }
        }
    }

    /// Disconnect the sockets the core ended, and close the connection on the state's timeouts.
    /// Socket `i`'s `CONNECT` is accepted but not answered yet: its credentials were
    /// verified later, or its recovery waited (for the shared store's record, or for the
    /// answers to its rejoins, `rejoined` being those that just arrived). Answer it once
    /// nothing is waited for.
    fn connect_later(&mut self, i: usize, rejoined: &[bool], out: &mut Out<'_>) {
        let conn = self.sockets[i].session.connection_id();
        let progress = self
            .shared
            .records
            .progress(conn, self.sockets[i].nsp.as_str(), rejoined);
        // (Taken out and put back: `accept` borrows the connection.)
        let mut socket = self.remove_socket(i);
        let waits = match progress {
            recovery::Progress::Waiting => true,
            recovery::Progress::None => false,
            recovery::Progress::Record(None, _) => false,
            recovery::Progress::Record(Some(record), claim) => match ShortId::parse(&claim.pid) {
                Some(pid) => {
                    self.apply_record(&mut socket, record, pid, claim.offset.as_deref(), out)
                }
                None => false,
            },
            recovery::Progress::Rejoined {
                recovered,
                sid,
                pid,
            } => {
                if let Some(pid) = ShortId::parse(&pid) {
                    finish_rejoin(&mut socket, recovered, &sid, pid, out);
                }
                false
            }
        };
        if !waits {
            self.accept(&mut socket, None, out);
        }
        let mut sockets = std::mem::take(&mut self.sockets).into_vec();
        sockets.insert(i, socket);
        self.sockets = sockets.into_boxed_slice();
    }

    /// The shared store's copy of `socket`'s record (recoverable sockets, with a shared
    /// store): so another node can recover it if this one dies.
    fn share_record(&self, socket: &NsSocket) {
        let Some(recovery) = &socket.recovery else {
            return;
        };
        let user = socket
            .session
            .identity()
            .map(|_| socket.session.user().clone());
        self.shared.records.share(
            &recovery.pid.as_str(),
            socket.nsp.as_str(),
            &socket.sid.as_str(),
            user.as_ref(),
            &recovery.track,
        );
    }

    fn settle(&mut self, out: &mut Out<'_>) {
        if socket::ROOMS_CHANGED.replace(false) {
            for socket in self.sockets.iter().filter(|s| s.connected && !s.ended) {
                self.share_record(socket);
            }
        }
        while let Some(event) = self.state.poll_event() {
            match event {
                StateEvent::ConnectTimeout => out.close(),
                StateEvent::AckTimeout { nsp, id } => {
                    if let Some(app) = self.socket(&nsp).and_then(|s| s.app.as_ref()) {
                        app.answer_ack(id, Err(AckError::Timeout));
                    }
                }
                StateEvent::AckCancelled { nsp, id } => {
                    if let Some(app) = self.socket(&nsp).and_then(|s| s.app.as_ref()) {
                        app.answer_ack(id, Err(AckError::Disconnected));
                    }
                }
            }
        }
        let mut i = 0;
        while i < self.sockets.len() {
            if !self.sockets[i].ended {
                i += 1;
                continue;
            }
            let socket = self.remove_socket(i);
            if let Some(recovery) = &socket.recovery {
                // Ended by the server: a reconnect is a new socket, anywhere.
                self.shared.records.forget(&recovery.pid.as_str());
            }
            if socket.connected {
                if let Some(text) = self.state.disconnect(&socket.nsp) {
                    send_text_packet(out, self.codec, text);
                }
            } else {
                self.count_auth_failure();
                self.refuse(&socket.nsp, ConnectErrorReason::AuthenticationFailed, out);
            }
        }
    }
}

impl App for SioConnection {
    fn on_message(&mut self, message: Message, out: &mut Out<'_>) {
        let decoded = match (message, self.codec) {
            // A MessagePack client's first packet (its CONNECT) is binary; a default-parser
            // client's is text.
            (Message::Binary(data), Codec::Undecided | Codec::MsgPack) => {
                self.codec = Codec::MsgPack;
                msgpack::decode(&data).map(Some)
            }
            (Message::Text(_), Codec::MsgPack) => {
                // Text has no meaning to the MessagePack parser.
                return out.close();
            }
            (Message::Text(text), _) => {
                self.codec = Codec::Json;
                self.decoder.decode_text(&text)
            }
            (Message::Binary(data), Codec::Json) => self.decoder.decode_binary(data),
        };
        match decoded {
            Ok(Some(packet)) => self.on_packet(packet, out),
            Ok(None) => {}
            // An invalid packet closes the connection, as in the reference server.
            Err(_) => out.close(),
        }
    }

    fn poll_outbound(&self, cx: &mut Context<'_>) -> Poll<()> {
        // Every socket's outbox gets the waker (no early return).
        let mut ready = false;
        for socket in &self.sockets {
            ready |= socket.poll_outbound(cx);
        }
        if ready {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn write_outbound(&mut self, out: &mut Out<'_>) {
        BATCH.with_borrow_mut(|batch| {
            for i in 0..self.sockets.len() {
                self.apply_commands(i, out);
                let was_connected = self.sockets[i].connected;
                let rejoined = self.sockets[i].write_outbound(batch, out);
                if !was_connected && !self.sockets[i].ended {
                    if let Connect::Accepted = self.sockets[i].connect_state() {
                        self.connect_later(i, &rejoined, out);
                    }
                }
            }
            if batch.capacity() > 4096 {
                *batch = Vec::new();
            }
        });
        self.settle(out);
    }

    fn timer(&self) -> Option<Instant> {
        let expiry = self.sockets.iter().filter_map(NsSocket::expires_at).min();
        match (self.state.poll_timeout(), expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_timer(&mut self, out: &mut Out<'_>) {
        let now = out.now();
        self.state.handle_timeout(now);
        for socket in &mut self.sockets {
            if socket.expires_at().is_some_and(|at| now >= at) {
                socket.expire_if_due(out);
            }
        }
        self.settle(out);
    }

    fn on_park(&mut self) {
        self.state.release_idle_memory();
        for socket in &mut self.sockets {
            socket.release_idle_memory();
        }
    }

    fn on_close(&mut self, _reason: EngineClose) {
        // The connection is lost (the client's own DISCONNECTs removed their sockets
        // before): recoverable sockets are kept for the window.
        let now = Instant::now();
        for mut socket in std::mem::take(&mut self.sockets).into_vec() {
            if !socket.connected {
                // Perhaps waiting for the shared store: not any more.
                self.shared
                    .records
                    .forget_pending(socket.session.connection_id());
            }
            if !socket.connected || socket.ended {
                continue;
            }
            let Some(recovery) = socket.recovery.take() else {
                continue;
            };
            let user = socket
                .session
                .identity()
                .map(|_| socket.session.user().clone());
            self.shared.records.keep(
                &recovery.pid.as_str(),
                socket.nsp.as_str(),
                &socket.sid.as_str(),
                user,
                recovery.track,
                now,
                self.shared.recovery_window,
            );
        }
        // (Dropping the sockets left their rooms and the hub.)
    }
}

/// A recovery's rejoins are all answered: `socket` is the lost one again (its id and pid)
/// when every room recovered; else a new socket (new id and pid, so the client sees
/// `recovered: false`) in no room.
fn finish_rejoin(
    socket: &mut NsSocket,
    recovered: bool,
    sid: &str,
    pid: ShortId,
    out: &mut Out<'_>,
) {
    if recovered {
        if let Some(sid) = ShortId::parse(sid) {
            socket.sid = sid;
        }
        if let Some(r) = &mut socket.recovery {
            r.pid = pid;
        }
    } else {
        socket.leave_all(out);
    }
}

#[cfg(test)]
mod size {
    /// Every connected namespace of an idle Socket.IO connection is one of these, in its own
    /// allocation: 192 B is a mimalloc size class, and 8 B more cost the next one (224 B)
    /// per socket (`bench --only switchboard,idle-sio`). Make room before adding a field.
    #[test]
    fn a_socket_fits_its_allocation_class() {
        let size = std::mem::size_of::<super::NsSocket>();
        assert!(size <= 192, "a Socket.IO socket is {size} B");
    }

    /// Ids are held decoded (15 bytes); any id of our form reads back as the same text,
    /// anything else is no id.
    #[test]
    fn short_ids_round_trip() {
        use super::socket::ShortId;
        for text in [
            "AAAAAAAAAAAAAAAAAAAA",
            "____________________",
            "aZ09-_bY18_-cX27-_dW",
        ] {
            let id = ShortId::parse(text).expect(text);
            assert_eq!(&*id.as_str(), text);
        }
        let random = ShortId::random().expect("random");
        assert_eq!(ShortId::parse(&random.as_str()), Some(random));
        for bad in [
            "",
            "AAAA",
            "AAAAAAAAAAAAAAAAAAA=",
            "AAAAAAAAAAAAAAAAAAA+",
            "AAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert_eq!(ShortId::parse(bad), None, "{bad}");
        }
    }
}
