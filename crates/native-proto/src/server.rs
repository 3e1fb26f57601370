//! Server → client messages (SPEC §2), typed, serialized once into `Bytes`.

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::room::RoomName;

/// One member in a `presence` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PresenceMember {
    /// The user id.
    #[serde(rename = "userId")]
    pub user_id: String,
    /// The display name the user joined with (or their token's name claim), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// How many of the user's connections are in the room.
    pub connections: usize,
}

/// A message the server sends to a client. [`ServerMessage::to_json`] produces its JSON text;
/// the transport frames it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Sent on connect: who the connection is.
    Welcome {
        /// The user id.
        #[serde(rename = "userId")]
        user_id: String,
        /// The connection id (a string: JavaScript numbers lose precision past 2^53).
        #[serde(rename = "connectionId")]
        connection_id: String,
    },
    /// The answer to `auth` (and, without authentication configured, to `refresh`).
    AuthSuccess {
        /// The user id.
        #[serde(rename = "userId")]
        user_id: String,
    },
    /// The answer to `join`; missed messages follow when `since` was given.
    Joined {
        /// The room.
        room: RoomName,
        /// The room's latest offset.
        offset: u64,
        /// The room's history epoch.
        epoch: String,
        /// With `since`: whether every missed message follows. `false`: resync (page through
        /// `history`).
        recovered: bool,
    },
    /// The answer to `leave`.
    Left {
        /// The room.
        room: RoomName,
    },
    /// The answer to `ping`.
    Pong,
    /// A client message with an `id` was accepted (or was a repeat of one that was).
    Ack {
        /// The client's id.
        id: String,
        /// The offset the message got.
        offset: u64,
    },
    /// The answer to `refresh {token}`: the connection now lives until the new token's
    /// expiry.
    Refreshed {
        /// The new token's `exp` (unix seconds); absent when it has none.
        #[serde(skip_serializing_if = "Option::is_none")]
        exp: Option<u64>,
    },
    /// A request was refused; the connection stays open.
    Error {
        /// Machine-readable code.
        code: &'static str,
        /// Human-readable text (SPEC §2 texts such as "Invalid JSON").
        message: String,
        /// The refused message's `id`, when it had one and the refusal names it (so a client
        /// that sends with ids knows which message was refused).
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Another member's first connection joined the room.
    UserJoined {
        /// Their user id.
        #[serde(rename = "userId")]
        user_id: String,
        /// Their display name (the user id when they gave none).
        user: String,
        /// The room.
        room: RoomName,
    },
    /// Another member's last connection left the room.
    UserLeft {
        /// Their user id.
        #[serde(rename = "userId")]
        user_id: String,
        /// Their display name (the user id when they gave none).
        user: String,
        /// The room.
        room: RoomName,
    },
    /// Deliveries were dropped because the client read too slowly (SPEC §6 `drop` policy).
    Lagged {
        /// How many.
        missed: u64,
    },
    /// The answer to `presence`.
    Presence {
        /// The room.
        room: RoomName,
        /// Who is there, sorted by user id.
        members: Vec<PresenceMember>,
    },
    /// The answer to `history`. Not serialized by serde: the stored messages are JSON
    /// already and are spliced in as they are (see [`splice_messages`]).
    #[serde(skip)]
    History {
        /// The room.
        room: RoomName,
        /// The room's latest offset.
        offset: u64,
        /// The room's history epoch.
        epoch: String,
        /// The stored messages' JSON, oldest first.
        messages: Vec<Bytes>,
        /// More messages follow that did not fit in one reply: ask again with `since` = the
        /// last message's offset.
        more: bool,
    },
}

impl ServerMessage {
    /// Its `type` (what SSE sends as `event:`).
    pub fn kind(&self) -> &'static str {
        match self {
            ServerMessage::Welcome { .. } => "welcome",
            ServerMessage::AuthSuccess { .. } => "auth_success",
            ServerMessage::Refreshed { .. } => "refreshed",
            ServerMessage::Joined { .. } => "joined",
            ServerMessage::Left { .. } => "left",
            ServerMessage::Pong => "pong",
            ServerMessage::Ack { .. } => "ack",
            ServerMessage::Error { .. } => "error",
            ServerMessage::UserJoined { .. } => "user_joined",
            ServerMessage::UserLeft { .. } => "user_left",
            ServerMessage::Lagged { .. } => "lagged",
            ServerMessage::Presence { .. } => "presence",
            ServerMessage::History { .. } => "history",
        }
    }

    /// `error {code, message}`.
    pub fn error(code: &'static str, message: impl Into<String>) -> ServerMessage {
        ServerMessage::Error {
            code,
            message: message.into(),
            id: None,
        }
    }

    /// `error {code, message, id}`: a refusal of the message with the client's `id` (none:
    /// as [`ServerMessage::error`]).
    pub fn error_for(
        id: Option<String>,
        code: &'static str,
        message: impl Into<String>,
    ) -> ServerMessage {
        ServerMessage::Error {
            code,
            message: message.into(),
            id,
        }
    }

    /// The MessagePack encoding (the JSON message's image: see `WireFormat`).
    pub fn to_msgpack(&self) -> Bytes {
        match self {
            // History replies are rare and bounded: the stored JSON is transcoded here, one
            // message at a time (each parses within serde_json's depth limit, as it did
            // when it was accepted; the whole reply nests two levels deeper).
            ServerMessage::History {
                room,
                offset,
                epoch,
                messages,
                more,
            } => {
                let mut reply = history_head(room, *offset, epoch, *more);
                let messages: Vec<Value> = messages
                    .iter()
                    .map(|m| serde_json::from_slice(m).unwrap_or(Value::Null))
                    .collect();
                reply["messages"] = Value::Array(messages);
                crate::wire::msgpack(&reply)
            }
            other => crate::wire::msgpack(other),
        }
    }

    /// The JSON text.
    pub fn to_json(&self) -> Bytes {
        match self {
            ServerMessage::History {
                room,
                offset,
                epoch,
                messages,
                more,
            } => {
                let head = history_head(room, *offset, epoch, *more);
                Bytes::from(splice_messages(&head, messages))
            }
            // Serializing these can not fail: every field is a string, number, bool or list.
            other => Bytes::from(serde_json::to_vec(other).unwrap_or_default()),
        }
    }
}

/// A `history` reply without its messages.
fn history_head(room: &RoomName, offset: u64, epoch: &str, more: bool) -> Value {
    serde_json::json!({
        "type": "history", "room": room, "offset": offset, "epoch": epoch, "more": more,
    })
}

/// `head` (a JSON object) with a `messages` array of stored messages appended. The stored
/// messages are JSON already: they are spliced in, not re-parsed and re-serialized.
pub fn splice_messages(head: &Value, messages: &[Bytes]) -> Vec<u8> {
    let head = head.to_string();
    let body = head.strip_suffix('}').unwrap_or(&head);
    let mut out =
        Vec::with_capacity(head.len() + messages.iter().map(|m| m.len() + 1).sum::<usize>() + 16);
    out.extend_from_slice(body.as_bytes());
    if body.len() > 1 {
        out.push(b',');
    }
    out.extend_from_slice(br#""messages":["#);
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(m);
    }
    out.extend_from_slice(b"]}");
    out
}

/// What the server adds to a relayed message: who sent it, where, when, its place in the
/// room's history, and the display name of its sender.
#[derive(Debug, Clone, Copy)]
pub struct Stamp<'a> {
    /// The sender's user id.
    pub user_id: &'a str,
    /// The sender's display name (`user`), if known; the user id otherwise.
    pub user: Option<&'a str>,
    /// The room.
    pub room: &'a str,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The room offset.
    pub offset: u64,
    /// The id to use when the message carries none (or one of the wrong JSON type).
    pub generated_id: &'a str,
}

/// Stamp a relayed message: the sender's whole object plus `userId`, `user`, `room`,
/// `timestamp` (ms), `offset` and an `id` (the client's string or number, else the
/// generated one). The stamped fields replace what the sender put there (a client can not
/// pose as another user); every other field is kept as sent.
pub fn stamp_relay(mut body: Map<String, Value>, stamp: &Stamp<'_>) -> Bytes {
    body.insert("userId".into(), Value::from(stamp.user_id));
    body.insert(
        "user".into(),
        Value::from(stamp.user.unwrap_or(stamp.user_id)),
    );
    body.insert("room".into(), Value::from(stamp.room));
    body.insert("timestamp".into(), Value::from(stamp.timestamp_ms));
    body.insert("offset".into(), Value::from(stamp.offset));
    if !matches!(body.get("id"), Some(Value::String(_) | Value::Number(_))) {
        body.insert("id".into(), Value::from(stamp.generated_id));
    }
    // Serializing a `Value` can not fail: every map key is a string.
    Bytes::from(serde_json::to_vec(&Value::Object(body)).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(m: &ServerMessage) -> Value {
        serde_json::from_slice(&m.to_json()).unwrap()
    }

    #[test]
    fn messages_have_the_spec_shapes() {
        let room = RoomName::new("general").unwrap();
        assert_eq!(
            json(&ServerMessage::Joined {
                room: room.clone(),
                offset: 3,
                epoch: "e".into(),
                recovered: true
            }),
            serde_json::json!({"type":"joined","room":"general","offset":3,"epoch":"e","recovered":true})
        );
        assert_eq!(
            json(&ServerMessage::Pong),
            serde_json::json!({"type":"pong"})
        );
        assert_eq!(
            json(&ServerMessage::error("invalid_json", "Invalid JSON")),
            serde_json::json!({"type":"error","code":"invalid_json","message":"Invalid JSON"})
        );
        assert_eq!(
            json(&ServerMessage::error_for(
                Some("m1".into()),
                "forbidden",
                "Not allowed"
            )),
            serde_json::json!({"type":"error","code":"forbidden","message":"Not allowed","id":"m1"})
        );
        assert_eq!(
            json(&ServerMessage::Refreshed { exp: Some(17) }),
            serde_json::json!({"type":"refreshed","exp":17})
        );
        assert_eq!(
            json(&ServerMessage::AuthSuccess {
                user_id: "alice".into()
            }),
            serde_json::json!({"type":"auth_success","userId":"alice"})
        );
        assert_eq!(
            json(&ServerMessage::Welcome {
                user_id: "u".into(),
                connection_id: "7".into()
            }),
            serde_json::json!({"type":"welcome","userId":"u","connectionId":"7"})
        );
        assert_eq!(
            json(&ServerMessage::Presence {
                room: room.clone(),
                members: vec![PresenceMember {
                    user_id: "u".into(),
                    user: Some("jane".into()),
                    connections: 2
                }]
            }),
            serde_json::json!({"type":"presence","room":"general",
                "members":[{"userId":"u","user":"jane","connections":2}]})
        );
        assert_eq!(
            json(&ServerMessage::History {
                room,
                offset: 2,
                epoch: "e".into(),
                messages: vec![Bytes::from_static(b"{\"a\":1}"), Bytes::from_static(b"[]")],
                more: false,
            }),
            serde_json::json!({"type":"history","room":"general","offset":2,"epoch":"e",
                "more":false,"messages":[{"a":1},[]]})
        );
    }

    #[test]
    fn stamping_keeps_every_field_and_overrides_identity() {
        let body = serde_json::json!({"type":"chat","text":"hi","user":"mallory",
            "payload":{"x":[1,2]},"id":42});
        let Value::Object(body) = body else {
            unreachable!()
        };
        let out = stamp_relay(
            body,
            &Stamp {
                user_id: "u1",
                user: Some("jane"),
                room: "general",
                timestamp_ms: 5,
                offset: 9,
                generated_id: "g",
            },
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"chat","text":"hi","user":"jane","payload":{"x":[1,2]},
                "id":42,"userId":"u1","room":"general","timestamp":5,"offset":9})
        );
    }
}
