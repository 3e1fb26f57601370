//! The native protocol of SPEC §2: JSON objects with a `type`, as the seeds' clients send them.
//!
//! Parsing keeps the client's whole object (a relayed message keeps every field the sender
//! sent) and pulls out what the server needs: the type, the room (top level `room`/`channel`, or
//! inside `payload`), the `id`. No I/O, no hub: the server maps these to hub operations.

mod client;
mod room;
mod server;
mod wire;

pub use client::{
    message_id, parse, parse_value, ClientMessage, Incoming, ParseError, Since, MAX_DISPLAY_NAME,
};
pub use room::{RoomName, RoomNameError, SYSTEM_PREFIX};
pub use server::{splice_messages, stamp_relay, PresenceMember, ServerMessage, Stamp};
pub use wire::WireFormat;
