//! Wire formats (SPEC §1.5): the same messages as JSON text or as MessagePack binary.
//!
//! MessagePack messages are the JSON messages' MessagePack image: maps with string keys,
//! the same field names and values. A client picks the format per connection (WebSocket
//! subprotocol or query); stored messages are JSON, and a broadcast is transcoded once per
//! format in use (the transport caches each format's frame on the shared delivery).

use bytes::Bytes;
use serde_json::Value;

use crate::client::{parse, parse_value, Incoming, ParseError};
use crate::server::ServerMessage;

/// Deepest nesting of a MessagePack message accepted (below serde_json's 128, which every
/// stored message must pass when it is read back as JSON).
const MAX_DEPTH: usize = 100;

/// How one connection's messages are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WireFormat {
    /// JSON text (the default).
    #[default]
    Json,
    /// MessagePack binary.
    MessagePack,
}

impl WireFormat {
    /// WebSocket subprotocols, in the server's order of preference.
    pub const SUBPROTOCOLS: [&'static str; 2] = ["switchboard.json", "switchboard.msgpack"];

    /// The format a negotiated subprotocol names.
    pub fn from_subprotocol(protocol: &str) -> Option<WireFormat> {
        match protocol {
            "switchboard.json" => Some(WireFormat::Json),
            "switchboard.msgpack" => Some(WireFormat::MessagePack),
            _ => None,
        }
    }

    /// The format a `format=` query value names (`json`, `msgpack`).
    pub fn from_query_value(value: &str) -> Option<WireFormat> {
        match value {
            "json" => Some(WireFormat::Json),
            "msgpack" | "messagepack" => Some(WireFormat::MessagePack),
            _ => None,
        }
    }

    /// Whether messages travel as binary frames.
    pub fn is_binary(self) -> bool {
        self == WireFormat::MessagePack
    }

    /// Parse one client message.
    pub fn parse(self, bytes: &[u8]) -> Result<Incoming, ParseError> {
        match self {
            WireFormat::Json => parse(bytes),
            WireFormat::MessagePack => {
                let mut decoder = rmp_serde::Deserializer::from_read_ref(bytes);
                // No deeper than JSON may nest (serde_json's limit is 128): a message that
                // could not be stored and read back as JSON must be refused here, not lost
                // later when it is transcoded for the other format's recipients. It also
                // bounds the recursion (the stack) a hostile message can ask for.
                decoder.set_max_depth(MAX_DEPTH);
                let value = <Value as serde::Deserialize>::deserialize(&mut decoder)
                    .map_err(|_| ParseError::InvalidMessagePack)?;
                parse_value(value)
            }
        }
    }

    /// Encode a server message.
    pub fn encode(self, message: &ServerMessage) -> Bytes {
        match self {
            WireFormat::Json => message.to_json(),
            WireFormat::MessagePack => message.to_msgpack(),
        }
    }

    /// Transcode a stored (JSON) message into this format; `None` if it is not valid JSON
    /// (stored messages always are).
    pub fn from_json(self, json: &Bytes) -> Option<Bytes> {
        match self {
            WireFormat::Json => Some(json.clone()),
            WireFormat::MessagePack => {
                let value: Value = serde_json::from_slice(json).ok()?;
                Some(msgpack(&value))
            }
        }
    }
}

/// The MessagePack image of a JSON value (maps with string keys).
pub(crate) fn msgpack(value: &impl serde::Serialize) -> Bytes {
    // Serializing into a Vec fails only for values with no MessagePack form; JSON values
    // and our server messages always have one.
    Bytes::from(rmp_serde::to_vec_named(value).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientMessage;
    use crate::room::RoomName;

    #[test]
    fn messagepack_messages_parse_and_encode_like_json_ones() {
        let join = serde_json::json!({"type":"join","room":"r","user":"jane"});
        let bytes = msgpack(&join);
        let m = WireFormat::MessagePack.parse(&bytes).unwrap();
        assert!(matches!(m.message, ClientMessage::Join { ref room, .. } if room.as_str() == "r"));
        assert_eq!(
            WireFormat::MessagePack.parse(b"\xc1").unwrap_err(),
            ParseError::InvalidMessagePack
        );
        // Nested deeper than JSON allows: refused (not a stack overflow, not stored).
        let mut deep = vec![0x91u8; 100_000];
        deep.push(0xc0);
        assert_eq!(
            WireFormat::MessagePack.parse(&deep).unwrap_err(),
            ParseError::InvalidMessagePack
        );
        let mut ok = vec![0x91u8; 90];
        ok.push(0xc0);
        let value: Value = rmp_serde::from_slice(&ok).unwrap();
        let nested = msgpack(&serde_json::json!({"type":"x","room":"r","v":value}));
        assert!(WireFormat::MessagePack.parse(&nested).is_ok());
        let reply = ServerMessage::Joined {
            room: RoomName::new("r").unwrap(),
            offset: 1,
            epoch: "e".into(),
            recovered: true,
        };
        let decoded: Value =
            rmp_serde::from_slice(&WireFormat::MessagePack.encode(&reply)).unwrap();
        assert_eq!(
            decoded,
            serde_json::from_slice::<Value>(&reply.to_json()).unwrap()
        );
        let stored = Bytes::from_static(br#"{"type":"chat","n":[1,2.5,null]}"#);
        let decoded: Value =
            rmp_serde::from_slice(&WireFormat::MessagePack.from_json(&stored).unwrap()).unwrap();
        assert_eq!(decoded, serde_json::json!({"type":"chat","n":[1,2.5,null]}));
    }

    #[test]
    fn history_in_messagepack_holds_the_messages_as_maps() {
        let reply = ServerMessage::History {
            room: RoomName::new("r").unwrap(),
            offset: 2,
            epoch: "e".into(),
            messages: vec![Bytes::from_static(br#"{"a":1}"#)],
            more: false,
        };
        let decoded: Value = rmp_serde::from_slice(&reply.to_msgpack()).unwrap();
        assert_eq!(
            decoded,
            serde_json::from_slice::<Value>(&reply.to_json()).unwrap()
        );
    }
}
