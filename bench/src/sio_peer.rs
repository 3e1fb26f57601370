//! The bench's Socket.IO events on socketioxide, shared by `peer-socketioxide-broadcast`
//! (one process, socketioxide's default in-memory adapter) and
//! `peer-socketioxide-redis-broadcast` (several processes sharing rooms through
//! `socketioxide-redis`): the same handlers, generic over the adapter. Namespace "/" with
//! the bench's event semantics, the same as switchboard's built-in rooms and the
//! `node-socketio` peer (`bench/node/sio-server.js`):
//!
//! * `join_room` `"<room>"`: joins the room; its ack is `{"status":"ok","room":"<room>"}`
//!   (`{"status":"error",…}` if the room is not a string);
//! * `publish` `{"room","data"}`: emits `message` with `{type: "publish", room, data,
//!   userId, user, timestamp, offset, id}` (switchboard's fields, so the deliveries are about
//!   as long) to every socket in the room (`within`: the sender included; with a remote
//!   adapter, on every node);
//! * `message` `<args>`: answered with `message-back` `<args>`, and `message-with-ack`
//!   `<args>` acknowledged with `<args>`, as in socketioxide's own echo example (the
//!   Socket.IO conformance events), but with all the arguments ([`Args`]) where
//!   `Data<Value>` would keep only the first.
//!
//! socketioxide runs every event handler as a task of its own (handlers must be async), so
//! acks may come back in another order than the requests: `sio-echo` matches them by id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Data, SocketRef, TryData};

/// What a `publish` event carries.
#[derive(Deserialize)]
struct Publish {
    room: String,
    data: Value,
}

/// What the room receives as the `message` event.
#[derive(Serialize)]
struct Delivery<'a> {
    r#type: &'static str,
    room: &'a str,
    data: &'a Value,
    #[serde(rename = "userId")]
    user_id: &'a str,
    user: &'a str,
    timestamp: u64,
    offset: u64,
    id: String,
}

/// The `join_room` ack.
#[derive(Serialize)]
struct Joined<'a> {
    status: &'static str,
    room: &'a str,
}

/// The `join_room` ack when the room is not a string.
#[derive(Serialize)]
struct Refused {
    status: &'static str,
    error: &'static str,
}

/// All the arguments of an event, echoed as they came. socketioxide expands tuple-like data
/// into the packet's arguments (and reads all of them into one), and takes anything else as
/// the first argument only: so this (de)serializes as a tuple of any length.
struct Args(Vec<Value>);

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct All;
        impl<'de> Visitor<'de> for All {
            type Value = Args;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("event arguments")
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Args, S::Error> {
                let mut args = Vec::new();
                while let Some(arg) = seq.next_element()? {
                    args.push(arg);
                }
                Ok(Args(args))
            }
        }
        deserializer.deserialize_tuple(usize::MAX, All)
    }
}

impl Serialize for Args {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(self.0.len())?;
        for arg in &self.0 {
            tuple.serialize_element(arg)?;
        }
        tuple.end()
    }
}

/// Per-room message counters (the deliveries' `offset`), and the id counter. They live in
/// the process: with several nodes, each node numbers the messages published on it (the
/// Redis adapter carries packets, not counters), unlike switchboard's offsets, which one
/// Redis script assigns for all nodes.
#[derive(Default)]
pub struct Rooms {
    offsets: HashMap<String, u64>,
    ids: u64,
}

/// Registers the bench's event handlers on a newly connected socket.
pub fn register<A: Adapter>(socket: &SocketRef<A>, rooms: Arc<Mutex<Rooms>>) {
    socket.on(
        "join_room",
        async |socket: SocketRef<A>, TryData::<String>(room), ack: AckSender<A>| match room {
            Ok(room) => {
                socket.join(room.clone());
                let _ = ack.send(&Joined {
                    status: "ok",
                    room: &room,
                });
            }
            Err(_) => {
                let _ = ack.send(&Refused {
                    status: "error",
                    error: "room must be a string",
                });
            }
        },
    );
    socket.on(
        "publish",
        async move |socket: SocketRef<A>, Data::<Publish>(publish)| {
            let (offset, id) = {
                let mut rooms = rooms.lock().unwrap_or_else(|e| e.into_inner());
                rooms.ids += 1;
                let ids = rooms.ids;
                let offset = rooms.offsets.entry(publish.room.clone()).or_default();
                *offset += 1;
                (*offset, ids)
            };
            let delivery = Delivery {
                r#type: "publish",
                room: &publish.room,
                data: &publish.data,
                user_id: socket.id.as_str(),
                user: socket.id.as_str(),
                timestamp: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                offset,
                id: format!("{id:016x}"),
            };
            let room = publish.room.clone();
            let _ = socket.within(room).emit("message", &delivery).await;
        },
    );
    socket.on(
        "message",
        async |socket: SocketRef<A>, Data::<Args>(args)| {
            let _ = socket.emit("message-back", &args);
        },
    );
    socket.on(
        "message-with-ack",
        async |Data::<Args>(args), ack: AckSender<A>| {
            let _ = ack.send(&args);
        },
    );
}
