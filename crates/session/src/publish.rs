//! The one publish flow: stamp, deduplicate by id, publish to the hub. Used by client
//! relays and by the HTTP API, so both stamp and deduplicate alike.

use serde_json::{Map, Value};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use switchboard_auth::{Action, Authenticator, Denied, Identity};
use switchboard_hub::{Appended, ConnId, Epoch, Hub, Offset, RoomName, UserId};
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

/// The store could not confirm a publish ([`Appended::Unavailable`]): it may or may not
/// have been stored; a retry with the same id is safe.
pub use switchboard_hub::Unavailable;

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The message's offset (the first one's, for a duplicate).
    pub offset: Offset,
    /// The room's epoch (the first one's, for a duplicate).
    pub epoch: Epoch,
    /// A repeat of an id already published: nothing was delivered.
    pub duplicate: bool,
    /// Members it was queued for (in this process; 0 when the store answers later).
    pub delivered: usize,
    /// Members whose outbox was full (dropped for them; in this process).
    pub dropped: usize,
}

/// Publish `request` to the hub; `done` gets what it did, at once (memory store) or later
/// (a networked one), or [`Unavailable`].
pub fn publish(
    hub: &Hub,
    request: PublishRequest<'_>,
    done: impl FnOnce(Result<Published, Unavailable>) + Send + 'static,
) {
    publish_from(hub, request, None, done);
}

/// [`publish`] to everyone in the room but connection `origin` (see
/// [`Hub::publish_from`]).
pub fn publish_from(
    hub: &Hub,
    request: PublishRequest<'_>,
    origin: Option<ConnId>,
    done: impl FnOnce(Result<Published, Unavailable>) + Send + 'static,
) {
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
    let (user_id, user, room_name) = (
        sender.0.clone(),
        sender_name.map(str::to_owned),
        room.clone(),
    );
    let build = move |offset: Offset, timestamp_ms| {
        stamp_relay(
            body,
            &Stamp {
                user_id: &user_id,
                user: user.as_deref(),
                room: room_name.as_str(),
                timestamp_ms,
                offset: offset.0,
                generated_id: &generated,
            },
        )
    };
    let once = id.map(|id| (sender, id));
    hub.publish_from(room, &kind, once, origin, build, move |appended| {
        done(match appended {
            Appended::Published {
                offset,
                epoch,
                fanout,
            } => Ok(Published {
                offset,
                epoch,
                duplicate: false,
                delivered: fanout.delivered,
                dropped: fanout.dropped,
            }),
            Appended::Duplicate { offset, epoch } => Ok(Published {
                offset,
                epoch,
                duplicate: true,
                delivered: 0,
                dropped: 0,
            }),
            Appended::Unavailable => Err(Unavailable),
        })
    });
}

/// Whether `who` (`None`: anonymous) may do `action` in `room`; always, without an
/// authenticator. The same decision the sessions make per message, for callers outside a
/// session (the HTTP API with a user token: 403/401 from [`Denied::http_status`]). The
/// backend API key has all rights and does not ask.
pub fn authorize(
    auth: Option<&Authenticator>,
    who: Option<&Identity>,
    action: Action,
    room: &RoomName,
) -> Result<(), Denied> {
    // The server's own rooms (`switchboard:stats`) take no client publications.
    if action == Action::Publish && room.is_system() {
        return Err(Denied {
            action,
            authenticated: true,
        });
    }
    match auth {
        None => Ok(()),
        Some(auth) => auth.authorize(who, action, room.as_str()),
    }
}

/// [`publish`] on behalf of an authenticated user (the HTTP API with a user token): refused
/// with [`Denied`] (nothing published, `done` not called) unless `who` may publish in
/// `request.room`. The message is stamped and deduplicated as `who`'s: `request.sender` is
/// replaced by `who.user_id()`.
pub fn publish_as(
    hub: &Hub,
    auth: Option<&Authenticator>,
    who: &Identity,
    request: PublishRequest<'_>,
    done: impl FnOnce(Result<Published, Unavailable>) + Send + 'static,
) -> Result<(), Denied> {
    authorize(auth, Some(who), Action::Publish, request.room)?;
    let sender = UserId(Arc::from(who.user_id()));
    publish(
        hub,
        PublishRequest {
            sender: &sender,
            ..request
        },
        done,
    );
    Ok(())
}

/// A random-looking id: a process-random key hashed with a counter.
pub(crate) fn generated_id(hub: &Hub, prefix: &str) -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(hub.unique_id());
    format!("{prefix}{:016x}", h.finish())
}
