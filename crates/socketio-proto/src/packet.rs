//! The packet model and the text encoder of the default parser (`socket.io-parser`).
//!
//! Wire form of a text packet:
//!
//! ```text
//! <type>[<attachments>-][<namespace>,][<ack id>][<JSON data>]
//! ```
//!
//! The namespace is written only when it is not `/`; `BINARY_EVENT`/`BINARY_ACK` (types 5 and
//! 6) are `EVENT`/`ACK` whose arguments hold binary values, followed by one binary message per
//! attachment.

use bytes::Bytes;
use serde_json::{Map, Number, Value};
use std::fmt;

use crate::args::Args;
use crate::json;
use crate::namespace::{AckId, Namespace};

/// The packet types of Socket.IO v5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// `0`: connect to a namespace (client), or its acceptance (server).
    Connect = 0,
    /// `1`: leave a namespace.
    Disconnect = 1,
    /// `2`: an event.
    Event = 2,
    /// `3`: the answer to an event that asked for one.
    Ack = 3,
    /// `4`: a refused `CONNECT`.
    ConnectError = 4,
    /// `5`: an event with binary attachments.
    BinaryEvent = 5,
    /// `6`: an ack with binary attachments.
    BinaryAck = 6,
}

impl PacketType {
    /// The type of a wire digit.
    pub fn from_char(c: char) -> Option<PacketType> {
        Some(match c {
            '0' => PacketType::Connect,
            '1' => PacketType::Disconnect,
            '2' => PacketType::Event,
            '3' => PacketType::Ack,
            '4' => PacketType::ConnectError,
            '5' => PacketType::BinaryEvent,
            '6' => PacketType::BinaryAck,
            _ => return None,
        })
    }

    /// The wire digit.
    pub fn as_char(self) -> char {
        (b'0' + self as u8) as char
    }
}

/// Event names the protocol reserves (the reference parser refuses events named so).
pub const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// The name of an event: a string, or (as the reference parser allows) a number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventName {
    /// The usual case, e.g. `"message"`.
    Text(String),
    /// A numeric name, e.g. `socket.emit(1, …)`; Node delivers it to listeners of `"1"`.
    Number(Number),
}

impl EventName {
    /// The name as a string (a number written as JSON writes it).
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        match self {
            EventName::Text(s) => std::borrow::Cow::Borrowed(s),
            EventName::Number(n) => std::borrow::Cow::Owned(match n.as_f64() {
                Some(f) if n.is_f64() => json::js_number(f),
                _ => n.to_string(),
            }),
        }
    }

    /// Whether it is one of [`RESERVED_EVENTS`].
    pub fn is_reserved(&self) -> bool {
        matches!(self, EventName::Text(s) if RESERVED_EVENTS.contains(&s.as_str()))
    }

    pub(crate) fn to_value(&self) -> Value {
        match self {
            EventName::Text(s) => Value::String(s.clone()),
            EventName::Number(n) => Value::Number(n.clone()),
        }
    }
}

impl From<&str> for EventName {
    fn from(s: &str) -> Self {
        EventName::Text(s.to_owned())
    }
}

impl From<String> for EventName {
    fn from(s: String) -> Self {
        EventName::Text(s)
    }
}

impl PartialEq<&str> for EventName {
    fn eq(&self, other: &&str) -> bool {
        matches!(self, EventName::Text(s) if s == other)
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

/// One Socket.IO packet, as decoded (with its binary attachments reconstructed) or to encode.
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    /// `CONNECT`: from the client with its auth payload (`socket.handshake.auth`), from the
    /// server with `{"sid":…}` (see [`crate::connect_ok`] for the exact reply bytes).
    Connect {
        /// The namespace.
        nsp: Namespace,
        /// The data object, if any.
        data: Option<Map<String, Value>>,
    },
    /// `DISCONNECT`.
    Disconnect {
        /// The namespace left.
        nsp: Namespace,
    },
    /// `EVENT` (or `BINARY_EVENT` when `args` hold binary values).
    Event {
        /// The namespace.
        nsp: Namespace,
        /// The event name (first element of the data array).
        name: EventName,
        /// The other elements.
        args: Args,
        /// Set when the sender wants an `ACK`.
        ack: Option<AckId>,
    },
    /// `ACK` (or `BINARY_ACK` when `args` hold binary values).
    Ack {
        /// The namespace.
        nsp: Namespace,
        /// The id of the event acknowledged.
        id: AckId,
        /// The acknowledgement's arguments.
        args: Args,
    },
    /// `CONNECT_ERROR`: a string (older servers) or an object such as
    /// `{"message":"Invalid namespace"}`.
    ConnectError {
        /// The namespace refused.
        nsp: Namespace,
        /// The error.
        data: Value,
    },
}

/// An encoded packet: the text message, then one binary message per attachment, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The text part (what goes after the Engine.IO `4`).
    pub text: String,
    /// The binary attachments.
    pub attachments: Vec<Bytes>,
}

impl Packet {
    /// An `EVENT` packet.
    pub fn event(nsp: Namespace, name: impl Into<EventName>, args: Args) -> Packet {
        Packet::Event {
            nsp,
            name: name.into(),
            args,
            ack: None,
        }
    }

    /// The namespace.
    pub fn nsp(&self) -> &Namespace {
        match self {
            Packet::Connect { nsp, .. }
            | Packet::Disconnect { nsp }
            | Packet::Event { nsp, .. }
            | Packet::Ack { nsp, .. }
            | Packet::ConnectError { nsp, .. } => nsp,
        }
    }

    /// The wire type (binary types when the arguments hold binary values).
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect { .. } => PacketType::Connect,
            Packet::Disconnect { .. } => PacketType::Disconnect,
            Packet::Event { args, .. } if args.has_binary() => PacketType::BinaryEvent,
            Packet::Event { .. } => PacketType::Event,
            Packet::Ack { args, .. } if args.has_binary() => PacketType::BinaryAck,
            Packet::Ack { .. } => PacketType::Ack,
            Packet::ConnectError { .. } => PacketType::ConnectError,
        }
    }

    /// Encode with the default parser: byte for byte what `socket.io-parser`'s encoder writes
    /// for the same values (see [`crate::json`] for the object key order caveat).
    pub fn encode(&self) -> Encoded {
        let mut out = Vec::with_capacity(64);
        let attachments = self.encode_into(&mut out);
        Encoded {
            // The header is ASCII and the JSON writer writes UTF-8.
            text: String::from_utf8(out)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            attachments,
        }
    }

    /// Append the text part to `out` (e.g. after an Engine.IO `4`) and return the
    /// attachments.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Vec<Bytes> {
        // Arguments whose placeholders are not in canonical order are renumbered first.
        let canonical;
        let args = match self {
            Packet::Event { args, .. } | Packet::Ack { args, .. } if !args.is_canonical() => {
                let mut copy = args.clone();
                let _ = copy.canonicalize(false);
                canonical = copy;
                Some(&canonical)
            }
            Packet::Event { args, .. } | Packet::Ack { args, .. } => Some(args),
            _ => None,
        };
        let binary = args.is_some_and(|a| a.has_binary());
        let kind = match (self, binary) {
            (Packet::Event { .. }, true) => PacketType::BinaryEvent,
            (Packet::Ack { .. }, true) => PacketType::BinaryAck,
            _ => self.packet_type(),
        };
        out.push(kind.as_char() as u8);
        if let Some(args) = args.filter(|a| a.has_binary()) {
            out.extend_from_slice(args.attachments().len().to_string().as_bytes());
            out.push(b'-');
        }
        let nsp = self.nsp();
        if !nsp.is_root() {
            out.extend_from_slice(nsp.as_str().as_bytes());
            out.push(b',');
        }
        match self {
            Packet::Connect { data, .. } => {
                if let Some(data) = data {
                    json::write(out, data);
                }
            }
            Packet::Disconnect { .. } => {}
            Packet::Event { name, ack, .. } => {
                if let Some(id) = ack {
                    out.extend_from_slice(id.0.to_string().as_bytes());
                }
                out.push(b'[');
                json::write(out, &name.to_value());
                for value in args.map(|a| a.values()).unwrap_or_default() {
                    out.push(b',');
                    json::write(out, value);
                }
                out.push(b']');
            }
            Packet::Ack { id, .. } => {
                out.extend_from_slice(id.0.to_string().as_bytes());
                json::write(out, args.map(|a| a.values()).unwrap_or_default());
            }
            Packet::ConnectError { data, .. } => json::write(out, data),
        }
        args.map(|a| a.attachments().to_vec()).unwrap_or_default()
    }
}
