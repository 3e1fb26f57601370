//! The transport-neutral session core: the rules of the native protocol (SPEC §2, §3, §6) for
//! one client connection, whatever carries it.
//!
//! Sans-IO: no sockets, no tasks, no clock reads (the caller passes `now`). A transport
//! (WebSocket today; SSE, long polling and Socket.IO next) decodes client messages into
//! [`Incoming`](switchboard_native_proto::Incoming), hands them to [`Session::handle`] and
//! gets typed [`ServerMessage`](switchboard_native_proto::ServerMessage) replies and
//! [`CloseReason`]s back through a [`Sink`], which it encodes and frames its own way.
//! Deliveries from the hub (other members' messages) come through [`Session::drain`].
//!
//! [`publish`] is the one publish + dedup flow: client relays and the HTTP API both use it.

mod auth;
mod close;
mod encode;
mod later;
mod publish;
pub mod rate;
mod session;

pub use auth::{MAX_HELD_BYTES, MAX_HELD_MESSAGES};
pub use close::CloseReason;
pub use encode::encode_delivery;
pub use publish::{authorize, publish, publish_as, PublishRequest, Published};
pub use session::{Note, Session, SessionConfig, Shared, Sink};
