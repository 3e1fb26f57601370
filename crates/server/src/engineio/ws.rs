//! An Engine.IO session's WebSocket, as a handler of our WebSocket driver.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use switchboard_engineio_proto::{Str, Transmit, TransportState, WsFrame, WsId};
use switchboard_ws_proto::{CloseCode, Connection, MessageKind};

use super::app::{App, Engine, OwnedWs};
use super::slot::{Shared, Slot, WsOut};
use super::Endpoint;
use crate::ws::handler::Handler;

/// The WebSocket of a session: its own (opened by a WebSocket handshake), or one upgrading
/// or upgraded from polling (the session is then shared with its HTTP requests).
pub(crate) struct EngineWs<A> {
    ws: WsId,
    inner: Inner<A>,
}

// The owned engine is the common case (every WebSocket-only client): boxing it would cost
// every such connection an allocation to spare the rare upgraded one some bytes.
#[allow(clippy::large_enum_variant)]
enum Inner<A> {
    Owned(Engine<A>),
    Shared {
        endpoint: Arc<Endpoint<A>>,
        slot: Arc<Slot<A>>,
        sid: Arc<str>,
    },
}

impl<A: App> EngineWs<A> {
    pub(crate) fn owned(engine: Engine<A>, ws: WsId) -> EngineWs<A> {
        EngineWs {
            ws,
            inner: Inner::Owned(engine),
        }
    }

    pub(crate) fn shared(
        endpoint: Arc<Endpoint<A>>,
        slot: Arc<Slot<A>>,
        sid: Arc<str>,
        ws: WsId,
    ) -> EngineWs<A> {
        EngineWs {
            ws,
            inner: Inner::Shared {
                endpoint,
                slot,
                sid,
            },
        }
    }

    /// Run `f` on the engine, then write what it produced for this WebSocket.
    fn with_engine(&mut self, conn: &mut Connection, f: impl FnOnce(&mut Engine<A>, WsId)) {
        let ws = self.ws;
        match &mut self.inner {
            Inner::Owned(engine) => {
                f(engine, ws);
                while let Some(transmit) = engine.session.poll_transmit() {
                    write_transmit(conn, ws, transmit);
                }
            }
            Inner::Shared {
                endpoint,
                slot,
                sid,
            } => {
                let closed = {
                    let mut shared = slot.lock();
                    f(&mut shared.engine, ws);
                    let closed = endpoint.settle(sid, &mut shared);
                    take_mine(&mut shared, ws, conn);
                    if shared.engine.session.transport_state() == TransportState::WebSocket {
                        // Upgraded: the polling admission is over, this connection's counts.
                        shared._guard = None;
                    }
                    closed
                };
                if closed {
                    endpoint.remove(sid);
                }
            }
        }
    }

    /// Whether this WebSocket carries the session now (not only trying to upgrade).
    fn carries(&self, shared: &Shared<A>) -> bool {
        shared.engine.session.websocket_id() == Some(self.ws)
    }
}

/// Write what a session opened on WebSocket `ws` transmits.
pub(super) fn write_transmit(conn: &mut Connection, ws: WsId, transmit: Transmit) {
    match transmit {
        Transmit::Ws { ws: to, frame } if to == ws => write(conn, frame),
        Transmit::CloseWs { ws: to } if to == ws => close(conn),
        // A session opened on WebSocket never polls.
        _ => {}
    }
}

/// Write the frames and closes queued for WebSocket `ws`; drop those for WebSockets gone.
fn take_mine<A>(shared: &mut Shared<A>, ws: WsId, conn: &mut Connection) {
    while let Some(out) = shared.ws_out.pop_front() {
        match out {
            WsOut::Frame(to, frame) if to == ws => write(conn, frame),
            WsOut::Close(to) if to == ws => close(conn),
            _ => {}
        }
    }
}

fn write(conn: &mut Connection, frame: WsFrame) {
    if !conn.is_open() {
        return;
    }
    match frame {
        WsFrame::Text(text) => conn.send_bytes(MessageKind::Text, text.into_bytes()),
        WsFrame::Binary(bytes) => conn.send_bytes(MessageKind::Binary, bytes),
    }
}

fn close(conn: &mut Connection) {
    if conn.is_open() {
        conn.close(CloseCode::Normal, "");
    }
}

impl<A: App> Handler for EngineWs<A> {
    fn on_open(&mut self, conn: &mut Connection) {
        // The open packet of a new session, or frames queued for an upgrading one.
        self.with_engine(conn, |_, _| {});
    }

    fn on_message(&mut self, conn: &mut Connection, kind: MessageKind, payload: Bytes) {
        let frame = match kind {
            // The codec checked the UTF-8 of text messages.
            MessageKind::Text => match Str::from_utf8(payload) {
                Ok(text) => WsFrame::Text(text),
                Err(_) => return close(conn),
            },
            MessageKind::Binary => WsFrame::Binary(payload),
        };
        let now = Instant::now();
        self.with_engine(conn, |engine, ws| {
            engine.session.handle_ws_message(ws, frame, now);
            engine.pump(now);
        });
    }

    fn on_close(&mut self) {
        let now = Instant::now();
        let ws = self.ws;
        let close_it = |engine: &mut Engine<A>| {
            engine.session.handle_ws_closed(ws, now);
            engine.pump(now);
        };
        match &mut self.inner {
            Inner::Owned(engine) => close_it(engine),
            Inner::Shared {
                endpoint,
                slot,
                sid,
            } => {
                let closed = {
                    let mut shared = slot.lock();
                    close_it(&mut shared.engine);
                    shared.ws_waker = None;
                    endpoint.settle(sid, &mut shared)
                };
                if closed {
                    endpoint.remove(sid);
                }
            }
        }
    }

    fn poll_outbound(&self, cx: &mut Context<'_>) -> Poll<()> {
        match &self.inner {
            Inner::Owned(engine) => engine.app.poll_outbound(cx),
            Inner::Shared { slot, .. } => {
                let mut shared = slot.lock();
                if !shared.ws_out.is_empty() {
                    return Poll::Ready(());
                }
                shared.ws_waker = Some(cx.waker().clone());
                if self.carries(&shared) {
                    return shared.engine.app.poll_outbound(cx);
                }
                Poll::Pending
            }
        }
    }

    fn write_outbound(&mut self, conn: &mut Connection) {
        if let Inner::Owned(engine) = &mut self.inner {
            let ws = self.ws;
            // (The clock is read only if something needs the time: deliveries do not.)
            engine.with_app_on(None, Some(OwnedWs { conn, ws }), |app, out| {
                app.write_outbound(out)
            });
            return self.with_engine(conn, |_, _| {});
        }
        let now = Instant::now();
        let carries = match &self.inner {
            Inner::Owned(_) => true,
            Inner::Shared { slot, .. } => self.carries(&slot.lock()),
        };
        self.with_engine(conn, |engine, _| {
            if carries {
                engine.with_app(now, |app, out| app.write_outbound(out));
            }
        });
    }

    fn on_park(&mut self) {
        match &mut self.inner {
            Inner::Owned(engine) => engine.on_park(),
            Inner::Shared { slot, .. } => slot.lock().engine.on_park(),
        }
    }

    fn timer(&self) -> Option<Instant> {
        match &self.inner {
            Inner::Owned(engine) => engine.deadline(),
            // The endpoint's timer keeps shared sessions' deadlines.
            Inner::Shared { .. } => None,
        }
    }

    fn on_timer(&mut self, conn: &mut Connection, now: Instant) {
        self.with_engine(conn, |engine, _| engine.on_timer(now));
    }

    fn is_text_heartbeat(&self, payload: &[u8]) -> bool {
        // The pong, for a session on its own WebSocket (an upgrading one's probe is not).
        payload == b"3" && matches!(self.inner, Inner::Owned(_))
    }
}
