//! The one publish flow: stamp, deduplicate by id, publish to the hub. Used by client
//! relays and by the HTTP API, so both stamp and deduplicate alike.

use serde_json::{Map, Value};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use switchboard_hub::{Epoch, Hub, Offset, PublishOnce, RoomName, UserId};
use switchboard_native_proto::{stamp_relay, Stamp};

/// A message to publish.
#[derive(Debug)]
pub struct PublishRequest<'a> {
    /// Where.
    pub room: &'a RoomName,
    /// Who sends it (stamped as `userId`; the dedup key's first part).
    pub sender: &'a UserId,
    /// The sender's display name (stamped as `user`), if known.
    pub sender_name: Option<&'a str>,
    /// The message as the sender wrote it: every field is kept.
    pub body: Map<String, Value>,
    /// The sender's `id`: a repeat within the dedup window is not published again.
    pub id: Option<&'a str>,
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The message's offset (the first one's, for a duplicate).
    pub offset: Offset,
    /// The room's epoch (the first one's, for a duplicate).
    pub epoch: Epoch,
    /// A repeat of an id already published: nothing was delivered.
    pub duplicate: bool,
    /// Members it was queued for.
    pub delivered: usize,
    /// Members whose outbox was full (dropped for them).
    pub dropped: usize,
}

/// Publish `request` to the hub.
pub fn publish(hub: &Hub, request: PublishRequest<'_>) -> Published {
    let PublishRequest {
        room,
        sender,
        sender_name,
        body,
        id,
    } = request;
    // A message without an id gets one (the client's id stays as it sent it, string or
    // number).
    let generated = match id {
        Some(_) => String::new(),
        None => generated_id(hub, ""),
    };
    let kind = match body.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        _ => String::from("publish"),
    };
    let build = |offset: Offset, timestamp_ms| {
        stamp_relay(
            body,
            &Stamp {
                user_id: &sender.0,
                user: sender_name,
                room: room.as_str(),
                timestamp_ms,
                offset: offset.0,
                generated_id: &generated,
            },
        )
    };
    let outcome = match id {
        Some(id) => hub.publish_once(room, &kind, sender, id, build),
        None => PublishOnce::Published(hub.publish(room, &kind, build)),
    };
    match outcome {
        PublishOnce::Published(p) => Published {
            offset: p.offset,
            epoch: p.epoch,
            duplicate: false,
            delivered: p.delivered,
            dropped: p.dropped,
        },
        PublishOnce::Duplicate { offset, epoch } => Published {
            offset,
            epoch,
            duplicate: true,
            delivered: 0,
            dropped: 0,
        },
    }
}

/// A random-looking id: a process-random key hashed with a counter.
pub(crate) fn generated_id(hub: &Hub, prefix: &str) -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(hub.unique_id());
    format!("{prefix}{:016x}", h.finish())
}
