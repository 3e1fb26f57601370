//! What a WebSocket endpoint does with the messages a connection receives.

use std::task::{Context, Poll};

use bytes::Bytes;
use switchboard_ws_proto::{Connection, MessageKind};

/// Application logic of one WebSocket connection, called by its driver task.
///
/// `Sync` because the driver polls [`Handler::poll_outbound`] through a shared reference
/// held across an await. Methods are synchronous: they run between socket reads and must not block. Replies are
/// queued on `conn` and flushed by the driver in one write per batch.
pub trait Handler: Send + Sync + 'static {
    /// The connection is open.
    fn on_open(&mut self, _conn: &mut Connection) {}
    /// A complete message arrived.
    fn on_message(&mut self, conn: &mut Connection, kind: MessageKind, payload: Bytes);
    /// The connection ended (any reason).
    fn on_close(&mut self) {}
    /// Whether the connection has the credentials it needs. While this is false the driver
    /// closes it with 4000 "Authentication timeout" once `auth_timeout` has passed since it
    /// opened (SPEC §6). Checked after every wake-up; the default needs no credentials.
    fn is_authenticated(&self) -> bool {
        true
    }
    /// Ready when the handler has messages from elsewhere (a hub outbox) to write, or a
    /// request to close the connection, since it last returned ready; otherwise `cx`'s waker
    /// is woken when it has. The waker is the driver task's, or, while the connection is
    /// parked (see `ws::park`), the parking lot's: keep only the latest.
    fn poll_outbound(&self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
    /// Queue the messages `poll_outbound` announced (called while the connection's output
    /// is below its limit).
    fn write_outbound(&mut self, _conn: &mut Connection) {}
    /// `poll_outbound` fired while the connection's output is at its limit (the client is
    /// not reading): act only on what must not wait, such as a close request. The driver
    /// calls `write_outbound` once the output has drained.
    fn on_outbound_blocked(&mut self, _conn: &mut Connection) {}
    /// The connection is about to be parked (idle, without a task): free scratch memory.
    fn on_park(&mut self) {}
    /// When the connection's credentials expire (`None`: never). The driver calls
    /// [`Handler::on_expired`] once this instant has passed, parked or not; the answer may
    /// change after any call (a `refresh` moves it).
    fn expires_at(&self) -> Option<std::time::Instant> {
        None
    }
    /// [`Handler::expires_at`] passed: close the connection (4001 "Token expired").
    fn on_expired(&mut self, _conn: &mut Connection) {}
    /// When the handler's own timer is due (`None`: no timer): an application protocol's
    /// heartbeat (Engine.IO's ping) or timeout. The driver calls [`Handler::on_timer`] once
    /// it has passed, parked or not; the answer may change after any call.
    fn timer(&self) -> Option<std::time::Instant> {
        None
    }
    /// [`Handler::timer`] passed: act (queue a ping, close the connection).
    fn on_timer(&mut self, _conn: &mut Connection, _now: std::time::Instant) {}
    /// Whether a small text message is the application protocol's heartbeat (Engine.IO's
    /// pong `3`): a parked connection then hands it to [`Handler::on_message`] in place
    /// instead of resuming a task for it. Keep it cheap and side-effect free.
    fn is_text_heartbeat(&self, _payload: &[u8]) -> bool {
        false
    }
}

/// Echoes every message back (the `/echo` endpoint).
#[derive(Debug, Default)]
pub struct Echo;

impl Handler for Echo {
    fn on_message(&mut self, conn: &mut Connection, kind: MessageKind, payload: Bytes) {
        // By reference: a large echo is written straight from the read buffer.
        conn.send_bytes(kind, payload);
    }
}

/// Accepts messages and does nothing with them: the `/ws` endpoint until the hub is wired in.
#[derive(Debug, Default)]
pub struct Discard;

impl Handler for Discard {
    fn on_message(&mut self, _conn: &mut Connection, _kind: MessageKind, _payload: Bytes) {}
}

/// Closes the connection as soon as it opens, with a code and reason: a WebSocket upgrade
/// with bad credentials is accepted and then closed (4001 and why), because a browser sees
/// close codes but never the status of a refused upgrade (SPEC §4).
#[derive(Debug)]
pub struct Refuse {
    /// The close code.
    pub code: u16,
    /// The close reason.
    pub reason: &'static str,
}

impl Handler for Refuse {
    fn on_open(&mut self, conn: &mut Connection) {
        conn.close(
            switchboard_ws_proto::CloseCode::from_u16(self.code),
            self.reason,
        );
    }

    fn on_message(&mut self, _conn: &mut Connection, _kind: MessageKind, _payload: Bytes) {}
}
