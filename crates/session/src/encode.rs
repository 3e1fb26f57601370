//! A delivery in a wire format: what every transport sends for it.

use bytes::Bytes;
use switchboard_hub::{Body, Delivery};
use switchboard_native_proto::{ServerMessage, WireFormat};

/// The bytes of `delivery` in `format`: a stored message transcoded from its JSON, a presence
/// change as `user_joined`/`user_left`. `None` only for a stored message that is not JSON
/// (the session core stores only JSON it wrote). Transports call this once per delivery and
/// format and cache the result on the delivery (`Delivery::encoding`).
pub fn encode_delivery(format: WireFormat, delivery: &Delivery) -> Option<Bytes> {
    match delivery.body() {
        Body::Message { json, .. } => format.from_json(json),
        Body::Presence(change) => {
            let user_id = change.user.0.to_string();
            let user = change.name.as_deref().unwrap_or(&change.user.0).to_owned();
            let room = delivery.room().clone();
            let message = if change.joined {
                ServerMessage::UserJoined {
                    user_id,
                    user,
                    room,
                }
            } else {
                ServerMessage::UserLeft {
                    user_id,
                    user,
                    room,
                }
            };
            Some(format.encode(&message))
        }
        Body::Reply(message) => Some(format.encode(message)),
    }
}
