//! The hub: rooms, membership, presence, history and replay, acknowledgement deduplication,
//! and per-connection outboxes.
//!
//! It knows nothing of WebSocket, SSE or HTTP: a transport registers a connection, joins rooms
//! on its behalf, publishes, and drains the connection's [`Outbox`]. Messages are encoded once
//! ([`Delivery`]) and shared by every recipient.
//!
//! Locking: rooms live in sharded maps; each room has its own lock, held while a publish
//! assigns its offset and pushes to the members' outboxes (that keeps every member's view of
//! the room in offset order). No lock is global, none is held across an `.await`.

mod dedup;
mod delivery;
mod history;
mod hub;
mod outbox;
mod pattern;

pub use dedup::{Dedup, Recorded};
pub use delivery::{Delivery, ENCODING_SLOTS};
pub use history::{History, HistoryLimits};
pub use hub::{
    json_string_literal, now_ms, ConnId, HistoryPage, Hub, HubConfig, HubConn, Joined,
    OverflowPolicy, PresenceEntry, PublishOnce, Published, UserId,
};
pub use outbox::{Kick, Outbox, Pushed};
pub use pattern::RoomPattern;
pub use switchboard_native_proto::RoomName;
