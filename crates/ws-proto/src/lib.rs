//! Sans-IO WebSocket protocol: RFC 6455 framing and handshake, RFC 7692 permessage-deflate.
//!
//! No sockets, no runtime, no clock: bytes in, events and bytes out. The server crate drives it
//! over tokio; the client and the tests drive it over anything.
//!
//! - [`handshake`]: validate an upgrade request and build the `101` (server), build a request
//!   and verify `Sec-WebSocket-Accept` (client).
//! - [`Connection`]: the per-connection state machine (decoder, encoder, close handshake,
//!   compression, limits).
//! - [`PreparedMessage`]: a broadcast framed once and shared by every recipient.
//!
//! ```
//! use bytes::BytesMut;
//! use switchboard_ws_proto::{Config, Connection, Event, MessageKind};
//!
//! let mut server = Connection::server(&Config::default());
//! // A masked text frame "Hello" (RFC 6455 §5.7).
//! let mut input = BytesMut::from(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58][..]);
//! let event = server.handle_input(&mut input).unwrap();
//! assert_eq!(event, Some(Event::Text("Hello".into())));
//! server.send(MessageKind::Text, b"Hello");
//! assert_eq!(server.output().to_vec(), b"\x81\x05Hello");
//! ```

pub mod close;
pub mod config;
pub mod connection;
pub mod deflate;
pub mod error;
pub mod handshake;
pub mod header;
pub mod mask;
pub mod message;
pub mod opcode;
pub mod output;
pub mod prepared;
pub mod role;
pub mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use config::Config;
pub use connection::{Connection, IdleConnection, MAX_TEXT_HEARTBEAT};
pub use deflate::{DeflateConfig, DeflateParams};
pub use error::ProtocolError;
pub use handshake::client::{ClientAccepted, ClientHandshake, ClientHandshakeError};
pub use handshake::server::{Accepted, HandshakeError, UpgradeRequest};
pub use message::{Event, MessageKind};
pub use opcode::OpCode;
pub use output::Output;
pub use prepared::PreparedMessage;
pub use role::Role;
