//! One long poller's session across its requests: the session of the core (its rooms,
//! presence and outbox live as long as the poller keeps polling), its positions, the
//! messages collected for the next answer, and the last answer until the client confirms it.

use std::task::{Context, Waker};
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use switchboard_hub::{RoomName, UserId};
use switchboard_native_proto::{ServerMessage, WireFormat};
use switchboard_session::{encode_delivery, CloseReason};

use super::cursor::{self, SessionId};
use crate::feed::{self, DrainSink, FeedSession, Output, RoomPositions};
use crate::state::ConnectionGuard;

/// A poller's session.
#[derive(Debug)]
pub(crate) struct Poller {
    id: SessionId,
    session: FeedSession,
    feed: RoomPositions,
    guard: ConnectionGuard,
    /// JSON messages collected for the next answer.
    pending: Vec<Bytes>,
    /// How many answers were given; the cursor names the last one the client has.
    answers: u64,
    /// The positions the last answer's cursor carried.
    answered_positions: String,
    /// The last answer, until the client polls with its cursor: sent again if it was lost.
    unconfirmed: Option<Unconfirmed>,
    /// When the last poll came or ended (the session expires some time after).
    pub(crate) last_seen: Instant,
    /// Bumped by every poll: a waiting poll that finds it changed was superseded.
    pub(crate) generation: u64,
    /// Whether a poll is waiting (the session does not expire meanwhile).
    pub(crate) waiting: bool,
    /// The waiting poll's waker (woken when a newer poll supersedes it).
    pub(crate) waiter: Option<Waker>,
    /// Why the session ended (then the answer carries a `disconnect` and the session goes).
    ended: Option<(u16, &'static str)>,
    /// The authenticated user the session belongs to (`None`: anonymous); only that user's
    /// polls continue it.
    pub(crate) user: Option<UserId>,
    /// When the credentials of the latest poll expire: the session ends then (4001).
    pub(crate) expires: Option<Instant>,
}

/// An answer the client has not confirmed yet.
#[derive(Debug)]
struct Unconfirmed {
    /// The positions of the cursor it answered.
    positions_before: String,
    messages: Vec<Bytes>,
}

impl Poller {
    /// A new session, joined to `feed`'s rooms (`replies`: what the joins answered at once).
    /// Its first answer is `connected`.
    pub(crate) fn new(
        id: SessionId,
        session: FeedSession,
        mut feed: RoomPositions,
        replies: Vec<ServerMessage>,
        guard: ConnectionGuard,
        now: Instant,
    ) -> Poller {
        for reply in &replies {
            feed.apply_joined(reply);
        }
        let connected = feed::connected_message(&session, feed.rooms());
        let mut poller = Poller {
            id,
            session,
            feed,
            guard,
            pending: vec![Bytes::from(connected.to_string())],
            answers: 0,
            answered_positions: String::new(),
            unconfirmed: None,
            last_seen: now,
            generation: 0,
            waiting: false,
            waiter: None,
            ended: None,
            user: None,
            expires: None,
        };
        poller.push_resets();
        poller
    }

    /// The user the session belongs to (`None`: anonymous).
    pub(crate) fn user(&self) -> Option<&UserId> {
        self.user.as_ref()
    }

    /// End the session (4001 "Token expired") once its credentials expired; returns whether
    /// it is ended.
    pub(crate) fn end_if_expired(&mut self, now: Instant) -> bool {
        if self.expires.is_some_and(|at| now >= at) {
            self.expires = None;
            let reason = CloseReason::TokenExpired;
            self.end(reason.code(), reason.text());
        }
        self.ended.is_some()
    }

    pub(crate) fn id(&self) -> SessionId {
        self.id
    }

    pub(crate) fn rooms(&self) -> &[RoomName] {
        self.feed.rooms()
    }

    pub(crate) fn ended(&self) -> bool {
        self.ended.is_some()
    }

    /// A poll came with a cursor of this session: its answer number and positions. `true`
    /// if it continues the session — the client has the last answer (confirmed), or has the
    /// one before and lost the last (which is then sent again, before anything newer).
    /// `false`: the cursor is not one this session gave lately; the caller starts anew.
    pub(crate) fn resume(&mut self, answer: u64, positions: &str) -> bool {
        if answer == self.answers && positions == self.answered_positions {
            self.unconfirmed = None;
            return true;
        }
        match self.unconfirmed.take() {
            Some(lost) if answer + 1 == self.answers && positions == lost.positions_before => {
                let newer = std::mem::replace(&mut self.pending, lost.messages);
                self.pending.extend(newer);
                true
            }
            other => {
                self.unconfirmed = other;
                false
            }
        }
    }

    /// Collect what the hub queued; registers `cx` to be woken when more comes.
    pub(crate) fn collect(&mut self, cx: &mut Context<'_>) {
        while self.ended.is_none() && self.session.poll_outbound(cx).is_ready() {
            self.drain();
        }
    }

    /// Whether there is something to answer: messages (once every room's position is
    /// known, so the cursor is complete), or the end of the session.
    pub(crate) fn has_answer(&self) -> bool {
        self.ended.is_some() || (!self.pending.is_empty() && self.feed.all_known())
    }

    /// End the session for `code`/`reason` (shutdown): the answer says so.
    pub(crate) fn end(&mut self, code: u16, reason: &'static str) {
        if self.ended.is_none() {
            let message = feed::disconnect_message(code, reason);
            self.pending.push(Bytes::from(message.to_string()));
            self.ended = Some((code, reason));
            // Leave the rooms now: the client will not be back to this session.
            self.session.end();
        }
    }

    /// If the hub asked for this session to end (a backend's disconnect, an overflow with
    /// the `close` policy), end it now, so it leaves its rooms without waiting for the
    /// client; its next poll is told why.
    pub(crate) fn end_if_kicked(&mut self) {
        let mut sink = DrainSink::default();
        if self.ended.is_none() && self.session.close_if_kicked(&mut sink) {
            if let Some(reason) = sink.closed {
                self.end_for(reason);
            }
        }
    }

    /// The answer to the poll: the collected messages and the cursor after them. The
    /// messages are kept until the client confirms them (see [`Poller::resume`]).
    pub(crate) fn answer(&mut self, positions_before: &str) -> Bytes {
        let messages = std::mem::take(&mut self.pending);
        self.answers += 1;
        self.answered_positions = self.feed.cursor();
        let cursor = cursor::format(&self.id, self.answers, &self.answered_positions);
        let body = answer_body(&messages, Some(&cursor));
        self.session
            .shared()
            .transport
            .bytes_out
            .add(body.len() as u64);
        self.unconfirmed = Some(Unconfirmed {
            positions_before: positions_before.to_owned(),
            messages,
        });
        body
    }

    fn drain(&mut self) {
        for output in feed::drain(&self.session) {
            match output {
                Output::Reply(message) => self.push_reply(&message),
                Output::Delivery(delivery) => {
                    if let Some(json) = encode_delivery(WireFormat::Json, &delivery) {
                        self.feed.advance(&delivery);
                        self.pending.push(json);
                    }
                }
                Output::Closed(reason) => self.end_for(reason),
            }
        }
    }

    fn push_reply(&mut self, message: &ServerMessage) {
        if let ServerMessage::Joined { .. } = message {
            // A late `joined` (a networked store): it moves the positions only.
            self.feed.apply_joined(message);
            self.push_resets();
        } else {
            self.pending.push(message.to_json());
        }
    }

    fn push_resets(&mut self) {
        let rooms = self.feed.take_resets();
        if !rooms.is_empty() {
            let reset = feed::reset_message(&rooms);
            self.pending.push(Bytes::from(reset.to_string()));
        }
    }

    fn end_for(&mut self, reason: CloseReason) {
        if reason == CloseReason::BufferOverflow {
            self.session.shared().transport.overflow_closes.inc();
        }
        self.end(reason.code(), reason.text());
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        // A session that was not ended by the server ends because its client stopped polling.
        let (code, reason) = self.ended.unwrap_or((1006, "Stopped polling"));
        self.guard.count_disconnect(code, reason);
    }
}

/// `{"messages":[…],"cursor":"…"}` (`cursor` omitted when `None`).
pub(crate) fn answer_body(messages: &[Bytes], cursor: Option<&str>) -> Bytes {
    let size = messages.iter().map(|m| m.len() + 1).sum::<usize>() + 128;
    let mut out = BytesMut::with_capacity(size);
    out.put_slice(b"{\"messages\":[");
    for (i, message) in messages.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(message);
    }
    out.put_slice(b"]");
    if let Some(cursor) = cursor {
        // Cursors are made of [0-9a-z._:-]: nothing to escape.
        out.put_slice(b",\"cursor\":\"");
        out.put_slice(cursor.as_bytes());
        out.put_u8(b'"');
    }
    out.put_u8(b'}');
    out.freeze()
}
