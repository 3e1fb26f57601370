//! Client → server messages (SPEC §2).

use serde_json::{Map, Value};

use crate::room::{RoomName, RoomNameError};

/// A replay position: the last offset the client saw in a history epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    /// Last offset received.
    pub offset: u64,
    /// The epoch that offset belongs to.
    pub epoch: String,
}

/// What a client asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// `auth {token}`: first-message authentication.
    Auth {
        /// The credential.
        token: String,
    },
    /// `refresh {token}`: extend an expiring session.
    Refresh {
        /// The new credential.
        token: String,
    },
    /// `join {room, since?}` (alias `subscribe {channel}`).
    Join {
        /// The room.
        room: RoomName,
        /// Replay from here, if given.
        since: Option<Since>,
        /// The display name the client joins with (`user`, as the seeds' chat client sends
        /// it), if given.
        user: Option<String>,
    },
    /// `leave {room}` (alias `unsubscribe {channel}`).
    Leave {
        /// The room.
        room: RoomName,
    },
    /// `ping`: answered with `pong`.
    Ping,
    /// `history {room, since?, limit?}`.
    History {
        /// The room.
        room: RoomName,
        /// Messages after this offset (default: all retained).
        since: Option<u64>,
        /// At most this many (the newest ones).
        limit: Option<usize>,
    },
    /// `presence {room}`.
    Presence {
        /// The room.
        room: RoomName,
    },
    /// `ack {id}`: confirms a server message.
    Ack {
        /// The acknowledged message id.
        id: String,
    },
    /// `publish {room, data}` or any other type: relayed to the room with the sender's whole
    /// object. `room` is `None` when the message named none (the session may know the room).
    Relay {
        /// The type, e.g. `chat`, `chat.message`, `publish`.
        kind: String,
        /// Target room, if named.
        room: Option<RoomName>,
        /// The client's object as sent.
        body: Map<String, Value>,
    },
}

/// A parsed message and its optional client-chosen `id` (for `ack` and deduplication).
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    /// The message.
    pub message: ClientMessage,
    /// The `id` field, if it was a string or number.
    pub id: Option<String>,
}

/// Why a message was refused. `Display` is the text of the `error` reply (SPEC §2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON.
    #[error("Invalid JSON")]
    InvalidJson,
    /// Not MessagePack, or MessagePack that has no JSON equivalent (binary or extension
    /// values, map keys that are not strings).
    #[error("Invalid MessagePack")]
    InvalidMessagePack,
    /// JSON, but not an object with a string `type`.
    #[error("Invalid message format")]
    InvalidFormat,
    /// A type the server does not know, without a room to relay it to.
    #[error("Unknown message type")]
    UnknownType,
    /// A required field is missing or has the wrong type.
    #[error("Missing or invalid field: {0}")]
    MissingField(&'static str),
    /// The room name is not acceptable.
    #[error("Invalid room name: {0}")]
    InvalidRoom(RoomNameError),
}

impl ParseError {
    /// The machine-readable `code` of the `error` reply.
    pub fn code(&self) -> &'static str {
        match self {
            ParseError::InvalidJson => "invalid_json",
            ParseError::InvalidMessagePack => "invalid_msgpack",
            ParseError::InvalidFormat => "invalid_format",
            ParseError::UnknownType => "unknown_type",
            ParseError::MissingField(_) => "invalid_field",
            ParseError::InvalidRoom(_) => "invalid_room",
        }
    }
}

/// Parse one text message.
pub fn parse(text: &[u8]) -> Result<Incoming, ParseError> {
    let value: Value = serde_json::from_slice(text).map_err(|_| ParseError::InvalidJson)?;
    parse_value(value)
}

/// Parse one message already decoded from its wire format into a JSON value (MessagePack
/// maps become JSON objects; see `wire`).
pub fn parse_value(value: Value) -> Result<Incoming, ParseError> {
    let Value::Object(body) = value else {
        return Err(ParseError::InvalidFormat);
    };
    let Some(Value::String(kind)) = body.get("type") else {
        return Err(ParseError::InvalidFormat);
    };
    let kind = kind.clone();
    let id = message_id(&body)?;
    let message = match kind.as_str() {
        "auth" | "refresh" => {
            let token = string_field(&body, "token")?;
            if kind == "auth" {
                ClientMessage::Auth { token }
            } else {
                ClientMessage::Refresh { token }
            }
        }
        "join" | "subscribe" => ClientMessage::Join {
            room: required_room(&body)?,
            since: since(&body)?,
            user: display_name(&body)?,
        },
        "leave" | "unsubscribe" => ClientMessage::Leave {
            room: required_room(&body)?,
        },
        "ping" => ClientMessage::Ping,
        "history" => ClientMessage::History {
            room: required_room(&body)?,
            since: match body.get("since") {
                None | Some(Value::Null) => None,
                Some(Value::Object(o)) => Some(
                    o.get("offset")
                        .and_then(Value::as_u64)
                        .ok_or(ParseError::MissingField("since.offset"))?,
                ),
                Some(v) => Some(v.as_u64().ok_or(ParseError::MissingField("since"))?),
            },
            limit: match body.get("limit") {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.as_u64().ok_or(ParseError::MissingField("limit"))? as usize),
            },
        },
        "presence" => ClientMessage::Presence {
            room: required_room(&body)?,
        },
        "ack" => ClientMessage::Ack {
            id: id.clone().ok_or(ParseError::MissingField("id"))?,
        },
        _ => {
            let room = optional_room(&body)?;
            ClientMessage::Relay { kind, room, body }
        }
    };
    Ok(Incoming { message, id })
}

/// A message's `id` (for `ack` and deduplication): a string, or a number in its text form.
/// An id of another JSON type is refused rather than ignored: it would be replaced by a
/// generated one on relay (a field lost) and the sender's retries would not be recognised.
pub fn message_id(body: &Map<String, Value>) -> Result<Option<String>, ParseError> {
    match body.get("id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(ParseError::MissingField("id")),
    }
}

fn string_field(body: &Map<String, Value>, name: &'static str) -> Result<String, ParseError> {
    match body.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(ParseError::MissingField(name)),
    }
}

/// The room: `room` or `channel` at the top level, else inside `payload` (the seeds' envelope).
fn optional_room(body: &Map<String, Value>) -> Result<Option<RoomName>, ParseError> {
    let payload = body.get("payload").and_then(Value::as_object);
    let found = ["room", "channel"]
        .iter()
        .find_map(|k| body.get(*k))
        .or_else(|| payload.and_then(|p| ["room", "channel"].iter().find_map(|k| p.get(*k))));
    match found {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => RoomName::new(s).map(Some).map_err(ParseError::InvalidRoom),
        Some(_) => Err(ParseError::MissingField("room")),
    }
}

/// Longest display name accepted, in bytes.
pub const MAX_DISPLAY_NAME: usize = 128;

/// The optional `user` display name: a string of 1 to 128 bytes without control characters.
fn display_name(body: &Map<String, Value>) -> Result<Option<String>, ParseError> {
    match body.get("user") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s))
            if !s.is_empty() && s.len() <= MAX_DISPLAY_NAME && !s.chars().any(char::is_control) =>
        {
            Ok(Some(s.clone()))
        }
        Some(_) => Err(ParseError::MissingField("user")),
    }
}

fn required_room(body: &Map<String, Value>) -> Result<RoomName, ParseError> {
    optional_room(body)?.ok_or(ParseError::MissingField("room"))
}

fn since(body: &Map<String, Value>) -> Result<Option<Since>, ParseError> {
    match body.get("since") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => {
            let offset = o
                .get("offset")
                .and_then(Value::as_u64)
                .ok_or(ParseError::MissingField("since.offset"))?;
            let epoch = match o.get("epoch") {
                Some(Value::String(e)) => e.clone(),
                _ => return Err(ParseError::MissingField("since.epoch")),
            };
            Ok(Some(Since { offset, epoch }))
        }
        Some(_) => Err(ParseError::MissingField("since")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(s: &str) -> RoomName {
        RoomName::new(s).unwrap()
    }

    #[test]
    fn seeds_messages_parse() {
        let m = parse(br#"{"type":"join","room":"general","user":"jane_dev"}"#).unwrap();
        assert_eq!(
            m.message,
            ClientMessage::Join {
                room: room("general"),
                since: None,
                user: Some("jane_dev".into()),
            }
        );
        let m = parse(br#"{"type":"subscribe","channel":"orders"}"#).unwrap();
        assert!(matches!(m.message, ClientMessage::Join { room: r, .. } if r == room("orders")));
        let m = parse(br#"{"type":"chat","room":"general","message":"Hello!"}"#).unwrap();
        assert!(
            matches!(m.message, ClientMessage::Relay { ref kind, room: Some(ref r), .. } if kind == "chat" && *r == room("general"))
        );
        let m = parse(br#"{"type":"chat.message","payload":{"room":"r1","text":"hi"},"id":"abc"}"#)
            .unwrap();
        assert_eq!(m.id.as_deref(), Some("abc"));
        assert!(
            matches!(m.message, ClientMessage::Relay { room: Some(ref r), .. } if *r == room("r1"))
        );
        assert_eq!(
            parse(br#"{"type":"ping"}"#).unwrap().message,
            ClientMessage::Ping
        );
    }

    #[test]
    fn join_with_since_and_history_parse() {
        let m = parse(br#"{"type":"join","room":"a","since":{"offset":5,"epoch":"e1"}}"#).unwrap();
        assert_eq!(
            m.message,
            ClientMessage::Join {
                room: room("a"),
                since: Some(Since {
                    offset: 5,
                    epoch: "e1".into()
                }),
                user: None,
            }
        );
        let m = parse(br#"{"type":"history","room":"a","since":3,"limit":10}"#).unwrap();
        assert_eq!(
            m.message,
            ClientMessage::History {
                room: room("a"),
                since: Some(3),
                limit: Some(10)
            }
        );
    }

    #[test]
    fn bad_input_has_the_spec_error_texts() {
        assert_eq!(parse(b"{nope").unwrap_err().to_string(), "Invalid JSON");
        assert_eq!(ParseError::UnknownType.to_string(), "Unknown message type");
        // A relay without a room is the session's to resolve (it may know the room).
        assert!(matches!(
            parse(br#"{"type":"dance"}"#).map(|m| m.message),
            Ok(ClientMessage::Relay { room: None, .. })
        ));
        assert_eq!(parse(b"[1]").unwrap_err(), ParseError::InvalidFormat);
        assert_eq!(
            parse(br#"{"type":"join"}"#).unwrap_err(),
            ParseError::MissingField("room")
        );
        assert_eq!(
            parse(br#"{"type":"chat","room":"a","id":{"x":1}}"#).unwrap_err(),
            ParseError::MissingField("id")
        );
        assert_eq!(
            parse(br#"{"type":"join","room":"a","user":7}"#).unwrap_err(),
            ParseError::MissingField("user")
        );
        let long = format!(r#"{{"type":"join","room":"{}"}}"#, "x".repeat(256));
        assert_eq!(
            parse(long.as_bytes()).unwrap_err(),
            ParseError::InvalidRoom(RoomNameError::TooLong)
        );
    }
}
