//! Server → client messages (SPEC §2), serialized once into `Bytes`.

use bytes::Bytes;
use serde_json::{json, Map, Value};

/// A message the server sends. `encode` produces the JSON text once; the transport frames it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerMessage(pub Value);

impl ServerMessage {
    /// Serialize to JSON text.
    pub fn encode(&self) -> Bytes {
        // Serializing a `Value` can not fail: every map key is a string.
        Bytes::from(serde_json::to_vec(&self.0).unwrap_or_default())
    }
}

/// `error {code, message}` (the connection stays open).
pub fn error(code: &str, message: &str) -> ServerMessage {
    ServerMessage(json!({"type": "error", "code": code, "message": message}))
}

/// Stamp a relayed message: the sender's whole object plus `userId`, `room`, `timestamp` (ms),
/// `offset` and an `id` (the client's, or `generated_id` when it sent none).
pub fn stamp_relay(
    mut body: Map<String, Value>,
    user_id: &str,
    room: &str,
    timestamp_ms: u64,
    offset: u64,
    generated_id: &str,
) -> Bytes {
    body.insert("userId".into(), Value::from(user_id));
    body.insert("room".into(), Value::from(room));
    body.insert("timestamp".into(), Value::from(timestamp_ms));
    body.insert("offset".into(), Value::from(offset));
    if !matches!(body.get("id"), Some(Value::String(_) | Value::Number(_))) {
        body.insert("id".into(), Value::from(generated_id));
    }
    ServerMessage(Value::Object(body)).encode()
}
