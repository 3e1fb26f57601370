//! Sans-IO Socket.IO v5: the packets carried inside Engine.IO message packets.
//!
//! No sockets, no runtime, no clock: strings and bytes in, packets and strings out. The
//! Engine.IO layer (`engineio-proto`) delivers each message packet's payload (text or binary);
//! this crate turns them into [`Packet`]s and keeps the per-connection Socket.IO state.
//!
//! - [`Packet`], [`PacketType`], [`Namespace`], [`AckId`], [`EventName`]: the packet model;
//!   [`Packet::encode`] writes exactly what the reference encoder (`socket.io-parser`) writes,
//!   e.g. `2["message","hi"]`, `3/chat,12[{"ok":true}]`.
//! - [`Args`]: event and ack arguments, JSON values plus binary attachments (placeholders
//!   `{"_placeholder":true,"num":i}` in the JSON, the bytes beside them; see [`args`]).
//! - [`Decoder`]: the default parser's decoder, reassembling binary packets from their
//!   attachment messages within [`DecoderConfig`] limits, with the reference parser's
//!   validation rules ([`ParseError`]: each one closes the connection).
//! - [`msgpack`]: the `socket.io-msgpack-parser` wire format (one binary message per packet).
//! - [`SocketState`]: namespaces connected, the connect timeout as a deadline, ack ids for
//!   server → client emits, and the `CONNECT`/`CONNECT_ERROR` replies ([`connect_ok`],
//!   [`connect_error`]).
//!
//! # How the server drives it
//!
//! ```
//! use std::time::{Duration, Instant};
//! use switchboard_socketio_proto::{
//!     Args, ConnectErrorReason, Decoder, Incoming, Namespace, Packet, SocketState, StateConfig,
//! };
//!
//! let now = Instant::now();
//! let mut decoder = Decoder::default();
//! let mut state = SocketState::new(StateConfig::default(), now);
//! // The driver sleeps until `state.poll_timeout()` and then calls `handle_timeout(now)`;
//! // `StateEvent::ConnectTimeout` from `poll_event()` means: close the connection.
//! let mut sent: Vec<String> = Vec::new();
//!
//! // Each Engine.IO message packet's text (without its `4`) goes to the decoder, then the
//! // state; an error from either closes the connection.
//! for text in [r#"0{"token":"abc"}"#, "0/admin,", r#"2["message","hi"]"#, r#"21["ping"]"#] {
//!     let Some(packet) = decoder.decode_text(text).unwrap() else { continue };
//!     match state.handle_packet(packet).unwrap() {
//!         Some(Incoming::Connect { nsp, auth }) if nsp.is_root() => {
//!             // Check `auth` with the auth layer, then:
//!             sent.push(state.accept_connect(&nsp, "dGhlIHNpZA", None).unwrap());
//!         }
//!         Some(Incoming::Connect { nsp, .. }) => {
//!             let reason = ConnectErrorReason::InvalidNamespace;
//!             sent.push(state.reject_connect(&nsp, &reason, None).unwrap());
//!         }
//!         Some(Incoming::Event { nsp, name, args, ack: Some(id) }) => {
//!             let reply = Packet::Ack { nsp, id, args: Args::from_values(vec!["pong".into()]) };
//!             sent.push(reply.encode().text);
//!         }
//!         Some(Incoming::Event { nsp, name, args, ack: None }) => {
//!             // Relay to the room, etc. A server emit that wants an answer:
//!             let id = state.next_ack_id(&nsp, Some(now + Duration::from_secs(5))).unwrap();
//!             let packet = Packet::Event { nsp, name: "hello".into(), args: Args::new(), ack: Some(id) };
//!             sent.push(packet.encode().text);
//!         }
//!         _ => {}
//!     }
//! }
//! assert_eq!(
//!     sent,
//!     [
//!         r#"0{"sid":"dGhlIHNpZA"}"#,
//!         r#"4/admin,{"message":"Invalid namespace"}"#,
//!         r#"20["hello"]"#,
//!         r#"31["pong"]"#,
//!     ]
//! );
//! ```
//!
//! Binary packets: [`Packet::encode`] returns the text and the attachments; send the text,
//! then each attachment as a binary Engine.IO message, in order. A broadcast is encoded once
//! and the same strings and `Bytes` go to every recipient.
//!
//! # Not covered
//!
//! Socket.IO v4 (Engine.IO v3, the protocol of Socket.IO 2.x clients: implicit connect to
//! `/`, query strings in the `CONNECT` namespace, string `ERROR` packets) is not implemented.

pub mod args;
mod decode;
mod error;
pub mod json;
pub mod msgpack;
mod namespace;
mod packet;
mod reply;
mod state;

pub use args::Args;
pub use decode::{parse, Decoder, DecoderConfig};
pub use error::ParseError;
pub use namespace::{AckId, Namespace, NamespaceError};
pub use packet::{Encoded, EventName, Packet, PacketType, RESERVED_EVENTS};
pub use reply::{connect_error, connect_ok, disconnect, ConnectErrorReason};
pub use state::{Incoming, SocketState, StateConfig, StateError, StateEvent};
