//! What runs above an Engine.IO session (Socket.IO, the echo endpoint), and the session and
//! application together as one unit ([`Engine`]).

use std::cell::OnceCell;
use std::task::{Context, Poll};
use std::time::Instant;

use switchboard_engineio_proto::{CloseReason, Event, Message, SendError, Session, Str, WsId};
use switchboard_ws_proto::{Connection, PreparedMessage};

/// The layer above Engine.IO: it gets the client's messages and sends its own through
/// [`Out`]. Called under the session's lock (or by the WebSocket driver that owns it):
/// methods must not block.
pub(crate) trait App: Send + Sync + 'static {
    /// The client sent `message`.
    fn on_message(&mut self, message: Message, out: &mut Out<'_>);
    /// Ready when the application has messages from elsewhere (a hub outbox) to send;
    /// otherwise `cx`'s waker is kept (only the latest) and woken when it has.
    fn poll_outbound(&self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
    /// Send what [`App::poll_outbound`] announced.
    fn write_outbound(&mut self, _out: &mut Out<'_>) {}
    /// When [`App::on_timer`] must run next (`None`: no timer).
    fn timer(&self) -> Option<Instant> {
        None
    }
    /// [`App::timer`] passed.
    fn on_timer(&mut self, _out: &mut Out<'_>) {}
    /// The session closed (once; nothing can be sent any more).
    fn on_close(&mut self, _reason: CloseReason) {}
    /// The connection is about to be parked: free scratch memory.
    fn on_park(&mut self) {}
}

/// The application's handle on its session while one of its methods runs.
pub(crate) struct Out<'a> {
    session: &'a mut Session,
    /// When the call happens, read from the clock the first time it is asked for: most
    /// calls (a connection's deliveries, once per wake-up of every member of a room) never
    /// ask.
    now: OnceCell<Instant>,
    /// The WebSocket connection the session runs on, when the caller owns it (see
    /// [`Out::send_shared`]).
    owned: Option<OwnedWs<'a>>,
}

/// The connection of a session that was opened on WebSocket, lent by its driver.
pub(crate) struct OwnedWs<'a> {
    pub(crate) conn: &'a mut Connection,
    pub(crate) ws: WsId,
}

impl Out<'_> {
    /// When the call happens.
    pub(crate) fn now(&self) -> Instant {
        *self.now.get_or_init(Instant::now)
    }

    /// Send a message. A client that does not take what it is sent (its polling queue is
    /// full) is disconnected: returns false, and the message is dropped with the session.
    pub(crate) fn send(&mut self, message: Message) -> bool {
        match self.session.send(message) {
            Ok(()) => true,
            Err(SendError::Full(_)) => {
                self.close();
                false
            }
            Err(SendError::Closed(_)) => false,
        }
    }

    /// [`Out::send`] for a text message framed once for many recipients (`4<text>`).
    pub(crate) fn send_framed_text(&mut self, framed: Str) -> bool {
        match self.session.send_framed_text(framed) {
            Ok(()) => true,
            Err(SendError::Full(_)) => {
                self.close();
                false
            }
            Err(SendError::Closed(_)) => false,
        }
    }

    /// [`Out::send_framed_text`] for a broadcast framed once for every recipient: `text`
    /// (`4<text>`) and its WebSocket frame (asked for only when used). On a session's own
    /// WebSocket the frame is copied straight into the connection's output, after what the
    /// session queued before. That skips the session's transmit queue and the text's
    /// reference count: per recipient of a broadcast, that queue hop and a contended atomic
    /// were most of our own work.
    pub(crate) fn send_shared<'f>(
        &mut self,
        frame: impl FnOnce() -> &'f PreparedMessage,
        text: &Str,
    ) -> bool {
        if let Some(owned) = self.owned.as_mut() {
            if self.session.websocket_id() == Some(owned.ws) {
                while let Some(transmit) = self.session.poll_transmit() {
                    super::ws::write_transmit(owned.conn, owned.ws, transmit);
                }
                owned.conn.send_prepared(frame());
                return true;
            }
        }
        self.send_framed_text(text.clone())
    }

    /// Send messages that belong together (a packet and its attachments), all or none; as
    /// [`Out::send`] otherwise.
    pub(crate) fn send_all(&mut self, messages: Vec<Message>) -> bool {
        if self.session.is_closed() {
            return false;
        }
        match self.session.send_all(messages) {
            Ok(()) => true,
            Err(_) => {
                self.close();
                false
            }
        }
    }

    /// Close the session (what was sent before goes first).
    pub(crate) fn close(&mut self) {
        let now = self.now();
        self.session.close(now);
    }
}

/// An Engine.IO session and the application above it.
pub(crate) struct Engine<A> {
    pub(crate) session: Session,
    pub(crate) app: A,
}

impl<A: App> Engine<A> {
    /// Run `f` with the application and its [`Out`], then hand the session's events to the
    /// application.
    pub(crate) fn with_app(&mut self, now: Instant, f: impl FnOnce(&mut A, &mut Out<'_>)) {
        self.with_app_on(Some(now), None, f);
    }

    /// [`Engine::with_app`] with the session's own WebSocket connection at hand, and the
    /// time if the caller knows it (else read when first needed).
    pub(crate) fn with_app_on(
        &mut self,
        now: Option<Instant>,
        owned: Option<OwnedWs<'_>>,
        f: impl FnOnce(&mut A, &mut Out<'_>),
    ) {
        let mut out = Out {
            session: &mut self.session,
            now: now.map_or_else(OnceCell::new, OnceCell::from),
            owned,
        };
        f(&mut self.app, &mut out);
        let now = out.now.get().copied();
        self.pump_at(now);
    }

    /// Hand the session's events to the application (messages may produce more).
    pub(crate) fn pump(&mut self, now: Instant) {
        self.pump_at(Some(now));
    }

    /// [`Engine::pump`], reading the clock only if there is an event.
    fn pump_at(&mut self, mut now: Option<Instant>) {
        while let Some(event) = self.session.poll_event() {
            let now = *now.get_or_insert_with(Instant::now);
            let mut out = Out {
                session: &mut self.session,
                now: OnceCell::from(now),
                owned: None,
            };
            match event {
                Event::Message(message) => self.app.on_message(message, &mut out),
                Event::Upgraded => {}
                Event::Closed(reason) => self.app.on_close(reason),
            }
        }
    }

    /// When [`Engine::on_timer`] must run next: the session's heartbeat or the application's
    /// timer (`None` once closed).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let session = self.session.next_deadline()?;
        Some(match self.app.timer() {
            Some(app) => app.min(session),
            None => session,
        })
    }

    /// The connection is about to idle without a task: give back scratch memory.
    pub(crate) fn on_park(&mut self) {
        self.session.release_idle_memory();
        self.app.on_park();
    }

    /// Time passed: the session's deadlines (pings, the ping timeout, a stalled upgrade)
    /// and the application's.
    pub(crate) fn on_timer(&mut self, now: Instant) {
        if self.session.next_deadline().is_some_and(|d| now >= d) {
            self.session.on_deadline(now);
            self.pump(now);
        }
        if !self.session.is_closed() && self.app.timer().is_some_and(|d| now >= d) {
            self.with_app(now, |app, out| app.on_timer(out));
        }
    }
}
