//! One SSE stream as bytes to send, without I/O: the session, its rooms and positions, what
//! is ready to go out, and why the stream ends. Two drivers move it: the response body of a
//! hyper connection ([`super::body`]) and our own socket driver ([`super::direct`]).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use switchboard_hub::{Delivery, EncodingKey, RoomName};
use switchboard_native_proto::{ServerMessage, Since, WireFormat};
use switchboard_session::{encode_delivery, CloseReason, Session};

use super::frame;
use switchboard_auth::{ConnectInfo, Identity};

use crate::access;
use crate::feed::cursor::Position;
use crate::feed::{self, FeedSession, Output, RoomPositions};
use crate::state::{AppState, ConnectionGuard};

/// The reconnection delay the stream suggests to clients, in milliseconds.
const RETRY_MS: u64 = 2000;

/// A delivery's `event:` + `data:` lines, shared by every stream that sends it (the `id:` is
/// each stream's own).
static SSE_EVENT: std::sync::LazyLock<EncodingKey<Option<Bytes>>> =
    std::sync::LazyLock::new(EncodingKey::new);

/// A stream's state. Dropped before [`SseStream::finish`], it counts as a lost connection.
pub(crate) struct SseStream {
    session: FeedSession,
    feed: RoomPositions,
    out: BytesMut,
    guard: ConnectionGuard,
    /// Why the stream ends, once it must (the WebSocket close code it corresponds to).
    ended: Option<(u16, &'static str)>,
    finished: bool,
    /// Joins not answered yet (a networked store answers later): `event: connected` waits
    /// for them, so that a client that saw it misses nothing published afterwards.
    awaiting_joins: usize,
}

impl SseStream {
    /// Join the rooms (from `since` where the client has positions) and queue the stream's
    /// opening: `retry:`, then, once every join is answered, `event: connected` and
    /// `event: reset` for the rooms whose gap the history no longer covers.
    pub(crate) fn open(
        state: &Arc<AppState>,
        guard: ConnectionGuard,
        identity: Option<Identity>,
        info: ConnectInfo,
        rooms: Vec<RoomName>,
        positions: Vec<Option<Position>>,
        since: Vec<Option<Since>>,
    ) -> SseStream {
        let now = Instant::now();
        let mut session = match identity {
            Some(identity) => Session::authenticated(state.native.clone(), identity, info, now),
            None => Session::anonymous(state.native.clone(), now),
        };
        let replies = feed::join_all(&mut session, &rooms, since);
        let answered = replies
            .iter()
            .filter(|r| {
                matches!(
                    r,
                    ServerMessage::Joined { .. } | ServerMessage::Error { .. }
                )
            })
            .count();
        let mut stream = SseStream {
            awaiting_joins: rooms.len().saturating_sub(answered),
            session,
            feed: RoomPositions::new(rooms, positions),
            out: BytesMut::new(),
            guard,
            ended: None,
            finished: false,
        };
        frame::write_retry(&mut stream.out, RETRY_MS);
        // `joined` replies that came at once set the positions the `connected` event carries.
        for reply in &replies {
            stream.feed.apply_joined(reply);
        }
        if stream.awaiting_joins == 0 {
            stream.write_connected();
        }
        stream
    }

    /// `event: connected` (with the positions as its id), then the resets.
    fn write_connected(&mut self) {
        let connected = feed::connected_message(&self.session, self.feed.rooms());
        let id = self.feed.cursor();
        frame::write_event(
            &mut self.out,
            Some(&id),
            Some("connected"),
            connected.to_string().as_bytes(),
        );
        self.write_resets();
    }

    /// Ready when the hub queued something for the stream ([`SseStream::drain`] takes it).
    pub(crate) fn poll_outbound(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.session.poll_outbound(cx)
    }

    /// Move what the hub queued for this stream into the output.
    pub(crate) fn drain(&mut self) {
        for output in feed::drain(&self.session) {
            match output {
                Output::Reply(message) => self.write_reply(&message),
                Output::Delivery(delivery) => self.write_delivery(&delivery),
                Output::Closed(reason) => self.end_for(reason),
            }
        }
    }

    /// When the stream must end because the client's credentials expire.
    pub(crate) fn expires(&self) -> Option<Instant> {
        if self.ended.is_some() {
            return None;
        }
        self.session.expires_at().map(access::instant_of)
    }

    /// The credentials expired: `event: disconnect` (4001 "Token expired"), then the end.
    /// The client reconnects with a fresh token and its last event id: nothing is lost.
    pub(crate) fn expire(&mut self) {
        if self.ended.is_none() {
            self.end_for(CloseReason::TokenExpired);
        }
    }

    /// A comment that keeps proxies from timing the stream out.
    pub(crate) fn heartbeat(&mut self) {
        frame::write_comment(&mut self.out, "heartbeat");
    }

    /// The server shuts down: the stream ends after what is queued. Clients reconnect
    /// elsewhere (EventSource does by itself) with their Last-Event-ID: nothing is lost.
    pub(crate) fn shut_down(&mut self) {
        self.ended.get_or_insert((1001, "Server shutting down"));
    }

    /// The bytes ready to send.
    pub(crate) fn output(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// Everything ready to send, as one chunk (counted as sent).
    pub(crate) fn take_output(&mut self) -> Option<Bytes> {
        if self.out.is_empty() {
            return None;
        }
        let chunk = self.out.split().freeze();
        self.count_sent(chunk.len());
        Some(chunk)
    }

    /// `n` bytes of the output went to the client.
    pub(crate) fn count_sent(&self, n: usize) {
        self.session.shared().transport.bytes_out.add(n as u64);
    }

    /// Whether the stream must end (once its output is sent).
    pub(crate) fn is_ended(&self) -> bool {
        self.ended.is_some()
    }

    /// The stream is over: count its end (once).
    pub(crate) fn finish(&mut self) {
        if let Some((code, reason)) = self.ended {
            if !self.finished {
                self.finished = true;
                self.guard.count_disconnect(code, reason);
            }
        }
    }

    /// The server state the stream belongs to.
    pub(crate) fn state(&self) -> &Arc<AppState> {
        self.guard.state()
    }

    /// The stream's connection id (picks its parking lot).
    pub(crate) fn connection_id(&self) -> u64 {
        self.session.connection_id()
    }

    /// `event: reset` for the rooms whose gap the history no longer covers: the client
    /// reloads their state; the stream continues from the rooms' current offsets.
    fn write_resets(&mut self) {
        let rooms = self.feed.take_resets();
        if rooms.is_empty() {
            return;
        }
        let id = self.feed.cursor();
        frame::write_event(
            &mut self.out,
            Some(&id),
            Some("reset"),
            feed::reset_message(&rooms).to_string().as_bytes(),
        );
    }

    fn write_reply(&mut self, message: &ServerMessage) {
        if self.awaiting_joins > 0 {
            // The answers to the opening joins (nothing else was asked yet).
            if let ServerMessage::Joined { .. } | ServerMessage::Error { .. } = message {
                self.feed.apply_joined(message);
                self.awaiting_joins -= 1;
                if self.awaiting_joins == 0 {
                    self.write_connected();
                }
                if let ServerMessage::Joined { .. } = message {
                    return;
                }
            }
        }
        if let ServerMessage::Joined { .. } = message {
            // A late `joined`: move the client's last event id (no event is dispatched).
            if self.feed.apply_joined(message) {
                let id = self.feed.cursor();
                frame::write_event(&mut self.out, Some(&id), None, b"");
            }
            self.write_resets();
            return;
        }
        // Never `event: error`: EventSource dispatches that name to its connection-error
        // handlers.
        let kind = match message.kind() {
            "error" => "server_error",
            kind => kind,
        };
        frame::write_event(&mut self.out, None, Some(kind), &message.to_json());
    }

    fn write_delivery(&mut self, delivery: &Delivery) {
        let Some(shared) = delivery
            .encoding(&SSE_EVENT, |d| {
                encode_delivery(WireFormat::Json, d).map(|json| frame::shared_part(d.kind(), &json))
            })
            .as_ref()
        else {
            return;
        };
        // Written from the shared bytes, the id straight into the output: no allocation per
        // recipient (a fan-out writes this once per stream).
        if self.feed.advance(delivery) {
            self.out.extend_from_slice(b"id: ");
            self.feed.write_cursor(&mut self.out);
            self.out.extend_from_slice(b"\n");
        }
        self.out.extend_from_slice(shared);
        self.out.extend_from_slice(b"\n");
    }

    /// End the stream for `reason`, telling the client why first (`event: disconnect`: an
    /// event named `error` would reach EventSource's connection-error handlers).
    fn end_for(&mut self, reason: CloseReason) {
        if reason == CloseReason::BufferOverflow {
            self.session.shared().transport.overflow_closes.inc();
        }
        let data = feed::disconnect_message(reason.code(), reason.text());
        frame::write_event(
            &mut self.out,
            None,
            Some("disconnect"),
            data.to_string().as_bytes(),
        );
        self.ended = Some((reason.code(), reason.text()));
    }
}

impl Drop for SseStream {
    fn drop(&mut self) {
        if !self.finished {
            // The client went away (or the server dropped the response).
            self.guard.count_disconnect(1006, "Connection lost");
        }
    }
}
