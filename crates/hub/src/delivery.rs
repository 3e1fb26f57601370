//! A message on its way to many connections: what it is (typed), and its encodings, each
//! made once and shared by every recipient that uses it.

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use switchboard_native_proto::{RoomName, ServerMessage};

use crate::ids::{ConnId, Epoch, Offset, UserId};

/// How many encodings a delivery can cache: one per wire format and transport framing in use
/// (WebSocket JSON, WebSocket MessagePack, SSE event, Socket.IO packet, ...).
pub const ENCODING_SLOTS: usize = 8;

/// What a delivery carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A published message, stored in history: its JSON as the session core stamped it.
    Message {
        /// Its `type` (SSE sends it as `event:`).
        kind: Arc<str>,
        /// The JSON text.
        json: Bytes,
    },
    /// A member joined or left (not stored; sent while the room is small enough).
    Presence(PresenceChange),
    /// A reply to one connection's request that the store answered late (an `ack`, a
    /// `joined`, a `history` page): queued in that connection's outbox only, in order with
    /// its deliveries.
    Reply(ServerMessage),
}

/// `user_joined` / `user_left`, as data: each transport encodes it in its own format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    /// Joined (`true`) or left.
    pub joined: bool,
    /// Who.
    pub user: UserId,
    /// Their display name, if they gave one.
    pub name: Option<Arc<str>>,
    /// The connection that joined or left (it is not told about itself).
    pub origin: ConnId,
}

/// One message as every recipient gets it. Shared by `Arc`.
pub struct Delivery {
    room: RoomName,
    body: Body,
    /// Place in the room's history (messages only).
    position: Option<(Offset, Epoch)>,
    /// The connection it was published for, when it is not to be sent back to it.
    origin: Option<ConnId>,
    timestamp_ms: u64,
    created: Instant,
    encodings: [OnceLock<Arc<dyn Any + Send + Sync>>; ENCODING_SLOTS],
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("room", &self.room)
            .field("position", &self.position)
            .field("body", &self.body)
            .finish()
    }
}

impl Delivery {
    /// A published message with its place in the room's history.
    pub fn message(
        room: RoomName,
        kind: Arc<str>,
        json: Bytes,
        offset: Offset,
        epoch: Epoch,
        timestamp_ms: u64,
    ) -> Arc<Delivery> {
        Delivery::make(
            room,
            Body::Message { kind, json },
            Some((offset, epoch)),
            timestamp_ms,
            None,
        )
    }

    /// [`Delivery::message`] published on behalf of connection `origin`, which transports
    /// that can address "everyone but the sender" (Socket.IO's `socket.to(room)`) skip.
    pub fn message_from(
        room: RoomName,
        kind: Arc<str>,
        json: Bytes,
        position: (Offset, Epoch),
        timestamp_ms: u64,
        origin: Option<ConnId>,
    ) -> Arc<Delivery> {
        Delivery::make(
            room,
            Body::Message { kind, json },
            Some(position),
            timestamp_ms,
            origin,
        )
    }

    /// A presence change in `room`.
    pub fn presence(room: RoomName, change: PresenceChange, timestamp_ms: u64) -> Arc<Delivery> {
        Delivery::make(room, Body::Presence(change), None, timestamp_ms, None)
    }

    /// A reply for one connection about `room` (see [`Body::Reply`]).
    pub fn reply(room: RoomName, message: ServerMessage) -> Arc<Delivery> {
        Delivery::make(room, Body::Reply(message), None, crate::hub::now_ms(), None)
    }

    fn make(
        room: RoomName,
        body: Body,
        position: Option<(Offset, Epoch)>,
        timestamp_ms: u64,
        origin: Option<ConnId>,
    ) -> Arc<Delivery> {
        Arc::new(Delivery {
            room,
            body,
            position,
            timestamp_ms,
            origin,
            created: Instant::now(),
            encodings: Default::default(),
        })
    }

    /// The connection that published it excluding itself ([`Delivery::message_from`]).
    pub fn origin(&self) -> Option<ConnId> {
        self.origin
    }

    /// The room it was published to.
    pub fn room(&self) -> &RoomName {
        &self.room
    }

    /// What it carries.
    pub fn body(&self) -> &Body {
        &self.body
    }

    /// The stored JSON of a message (`None` for a presence change).
    pub fn json(&self) -> Option<&Bytes> {
        match &self.body {
            Body::Message { json, .. } => Some(json),
            Body::Presence(_) | Body::Reply(_) => None,
        }
    }

    /// The message's `type` (`user_joined` / `user_left` for presence changes).
    pub fn kind(&self) -> &str {
        match &self.body {
            Body::Message { kind, .. } => kind,
            Body::Presence(p) if p.joined => "user_joined",
            Body::Presence(_) => "user_left",
            Body::Reply(_) => "reply",
        }
    }

    /// The room offset, for messages kept in history.
    pub fn offset(&self) -> Option<Offset> {
        self.position.as_ref().map(|(o, _)| *o)
    }

    /// The history epoch the offset belongs to.
    pub fn epoch(&self) -> Option<&Epoch> {
        self.position.as_ref().map(|(_, e)| e)
    }

    /// Wall-clock time of publication, milliseconds since the Unix epoch.
    pub fn timestamp_ms(&self) -> u64 {
        self.timestamp_ms
    }

    /// When it was published, by this process's monotonic clock (delivery-latency metrics).
    pub fn created(&self) -> Instant {
        self.created
    }

    /// The encoding `key` names, made by `make` on first use and shared afterwards.
    pub fn encoding<T: Any + Send + Sync>(
        &self,
        key: &EncodingKey<T>,
        make: impl FnOnce(&Delivery) -> T,
    ) -> &T {
        let cached = self.encodings[key.slot].get_or_init(|| Arc::new(make(self)));
        match cached.downcast_ref::<T>() {
            Some(value) => value,
            // Every key has a slot of its own (`EncodingKey::new`) and stores only its `T`.
            None => unreachable!("encoding slot {} holds another type", key.slot),
        }
    }

    /// Bytes this delivery counts against an outbox budget.
    pub fn cost(&self) -> usize {
        let payload = match &self.body {
            Body::Message { json, .. } => json.len(),
            Body::Presence(p) => p.user.0.len() + p.name.as_deref().map_or(0, str::len),
            // Replies are few (one per request) and mostly small; a history page's bytes
            // are bounded by `max_history_reply`.
            Body::Reply(_) => 256,
        };
        payload + 64
    }
}

/// Allocates encoding slots: one per [`EncodingKey`] ever made.
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

/// The typed name of one encoding of deliveries (say, "WebSocket frame of the MessagePack
/// format"). Each key owns a slot of its own, so the type stored there is always `T`.
/// Make each key once, in a `static` (`LazyLock`).
pub struct EncodingKey<T> {
    slot: usize,
    _type: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for EncodingKey<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodingKey")
            .field("slot", &self.slot)
            .finish()
    }
}

impl<T: Any + Send + Sync> EncodingKey<T> {
    /// A new key. Panics (at startup, where keys are made) if more than
    /// [`ENCODING_SLOTS`] keys are made in one process.
    #[allow(clippy::new_without_default)]
    pub fn new() -> EncodingKey<T> {
        let slot = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
        assert!(
            slot < ENCODING_SLOTS,
            "more than {ENCODING_SLOTS} delivery encodings registered"
        );
        EncodingKey {
            slot,
            _type: PhantomData,
        }
    }
}

#[cfg(test)]
pub(crate) fn test_message(json: &'static [u8], offset: u64) -> Arc<Delivery> {
    Delivery::message(
        RoomName::new("test").unwrap_or_else(|_| unreachable!()),
        Arc::from("test"),
        Bytes::from_static(json),
        Offset(offset),
        Epoch::from("e"),
        0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_are_made_once_per_key() {
        static A: std::sync::LazyLock<EncodingKey<String>> =
            std::sync::LazyLock::new(EncodingKey::new);
        static B: std::sync::LazyLock<EncodingKey<usize>> =
            std::sync::LazyLock::new(EncodingKey::new);
        let d = test_message(b"{}", 1);
        let mut calls = 0;
        for _ in 0..3 {
            assert_eq!(
                d.encoding(&A, |d| {
                    calls += 1;
                    d.kind().to_string()
                }),
                "test"
            );
        }
        assert_eq!(calls, 1);
        assert_eq!(*d.encoding(&B, |_| 7), 7);
    }
}
