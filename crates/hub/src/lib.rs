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

mod broker;
mod dedup;
mod delivery;
mod history;
mod hub;
mod ids;
mod outbox;
mod pattern;
mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use broker::{Broker, Fanout, MemoryBroker, Node};
pub use dedup::{Dedup, Recorded};
pub use delivery::{Body, Delivery, EncodingKey, PresenceChange, ENCODING_SLOTS};
pub use history::{History, HistoryLimits};
pub use hub::{
    now_ms, HistoryPage, Hub, HubConfig, HubConn, Joined, OverflowPolicy, PresenceEntry,
};
pub use ids::{ConnId, Epoch, NodeId, Offset, UserId};
pub use outbox::{Kick, Outbox, Pushed};
pub use pattern::{first_match, RoomPattern};
pub use store::{
    answered_at_once, Append, Appended, BackendStats, Build, Done, MemoryStore, MemoryStoreConfig,
    Page, PresenceChanged, PresenceCount, PresenceSynced, Range, Store, Unavailable,
};
pub use switchboard_native_proto::{RoomName, SYSTEM_PREFIX};
