//! Transcript tests: client messages in, the exact replies and deliveries out. No server,
//! no sockets.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::json;
use switchboard_hub::{HubConfig, Kick};
use switchboard_native_proto::WireFormat;

use super::*;
use crate::rate::RateLimit;

/// Records what the core sends, as JSON values, and the closes it asks for.
#[derive(Default)]
struct Transcript {
    sent: Vec<Value>,
    closed: Vec<CloseReason>,
    notes: Vec<Note>,
}

impl Sink for Transcript {
    fn send(&mut self, message: ServerMessage) {
        self.sent
            .push(serde_json::from_slice(&message.to_json()).unwrap());
    }
    fn close(&mut self, reason: CloseReason) {
        self.closed.push(reason);
    }
    fn note(&mut self, note: Note) {
        self.notes.push(note);
    }
}

fn shared(config: SessionConfig) -> Arc<Shared> {
    Arc::new(Shared {
        hub: Hub::new(HubConfig::default()),
        config,
        transport: (),
    })
}

fn unlimited() -> SessionConfig {
    SessionConfig {
        rate_limit: None,
        ..SessionConfig::default()
    }
}

struct Client {
    session: Session,
    out: Transcript,
}

impl Client {
    fn new(shared: &Arc<Shared>, user: &str) -> Client {
        Client {
            session: Session::new(shared.clone(), UserId(Arc::from(user)), Instant::now()),
            out: Transcript::default(),
        }
    }

    /// Send `message`, return the replies (not deliveries).
    fn send(&mut self, message: Value) -> Vec<Value> {
        let text = message.to_string();
        self.session
            .on_text(text.as_bytes(), Instant::now(), &mut self.out);
        std::mem::take(&mut self.out.sent)
    }

    /// What the hub delivered, with the stamped `timestamp` removed (it is the clock's).
    fn deliveries(&mut self) -> Vec<Value> {
        let mut batch = Vec::new();
        self.session.drain(&mut batch, &mut self.out);
        let mut out = std::mem::take(&mut self.out.sent);
        out.extend(batch.iter().map(|d| {
            let bytes = crate::encode_delivery(WireFormat::Json, d).unwrap();
            let mut v: Value = serde_json::from_slice(&bytes).unwrap();
            if let Some(o) = v.as_object_mut() {
                assert!(o.remove("timestamp").is_none_or(|t| t.is_u64()));
            }
            v
        }));
        out
    }
}

#[test]
fn the_seeds_chat_flow() {
    let shared = shared(unlimited());
    let mut jane = Client::new(&shared, "u-jane");
    let mut bob = Client::new(&shared, "u-bob");
    let epoch = shared
        .hub
        .history(&RoomName::new("general").unwrap(), None, None, 1)
        .epoch;
    assert_eq!(
        bob.send(json!({"type":"join","room":"general","user":"bob"})),
        [
            json!({"type":"joined","room":"general","offset":0,"epoch":bob_epoch(&shared),"recovered":true})
        ]
    );
    assert_ne!(
        epoch.to_string(),
        bob_epoch(&shared),
        "unknown rooms have the boot epoch"
    );
    jane.send(json!({"type":"join","room":"general","user":"jane_dev"}));
    assert_eq!(
        bob.deliveries(),
        [json!({"type":"user_joined","userId":"u-jane","user":"jane_dev","room":"general"})]
    );
    // `{type:'chat', text}` without a room goes to the only room joined.
    assert_eq!(
        jane.send(json!({"type":"chat","text":"Hello!","id":"m1"})),
        [json!({"type":"ack","id":"m1","offset":1})]
    );
    let expected = json!({"type":"chat","text":"Hello!","id":"m1","userId":"u-jane",
        "user":"jane_dev","room":"general","offset":1});
    assert_eq!(bob.deliveries(), std::slice::from_ref(&expected));
    assert_eq!(jane.deliveries(), [expected], "the sender is a member too");
    assert_eq!(
        bob.send(json!({"type":"presence","room":"general"})),
        [json!({"type":"presence","room":"general","members":[
            {"userId":"u-bob","user":"bob","connections":1},
            {"userId":"u-jane","user":"jane_dev","connections":1}]})]
    );
    drop(jane);
    assert_eq!(
        bob.deliveries(),
        [json!({"type":"user_left","userId":"u-jane","user":"jane_dev","room":"general"})],
        "dropping a session leaves its rooms"
    );
}

fn bob_epoch(shared: &Shared) -> String {
    shared
        .hub
        .history(&RoomName::new("general").unwrap(), None, None, 1)
        .epoch
        .to_string()
}

#[test]
fn bad_input_gets_the_spec_errors_and_changes_nothing() {
    let shared = shared(unlimited());
    let mut c = Client::new(&shared, "u");
    let error = |code: &str, message: &str| json!({"type":"error","code":code,"message":message});
    let mut out = Transcript::default();
    c.session.on_text(b"{nope", Instant::now(), &mut out);
    assert_eq!(out.sent, [error("invalid_json", "Invalid JSON")]);
    assert_eq!(
        c.send(json!({"type":"dance"})),
        [error("unknown_type", "Unknown message type")]
    );
    assert_eq!(
        c.send(json!({"type":"chat","room":"elsewhere","text":"x"})),
        [error("not_in_room", "Not in room")]
    );
    assert_eq!(
        c.send(json!({"type":"chat","room":"r","id":[1]})),
        [error("invalid_field", "Missing or invalid field: id")]
    );
    assert_eq!(
        c.send(json!({"type":"history","room":"nowhere"}))[0]["messages"],
        json!([])
    );
    assert_eq!(shared.hub.channel_count(), 0, "lookups create no room");
}

#[test]
fn a_repeated_id_is_acked_again_and_delivered_once() {
    let shared = shared(unlimited());
    let mut c = Client::new(&shared, "u");
    c.send(json!({"type":"join","room":"r"}));
    let chat = json!({"type":"chat","room":"r","text":"x","id":7});
    assert_eq!(
        c.send(chat.clone()),
        [json!({"type":"ack","id":"7","offset":1})]
    );
    assert_eq!(c.send(chat), [json!({"type":"ack","id":"7","offset":1})]);
    let delivered = c.deliveries();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0]["id"], json!(7), "the id keeps its JSON type");
}

#[test]
fn history_replies_are_bounded_and_page_through_the_rest() {
    let shared = shared(SessionConfig {
        rate_limit: None,
        max_history_reply: 2_500,
    });
    let mut c = Client::new(&shared, "u");
    c.send(json!({"type":"join","room":"r"}));
    for i in 0..5 {
        c.send(json!({"type":"chat","text":"x".repeat(1000),"n":i}));
    }
    let mut seen = Vec::new();
    let mut since = 0;
    loop {
        let reply = c.send(json!({"type":"history","room":"r","since":since}));
        let messages = reply[0]["messages"].as_array().unwrap().clone();
        assert!(
            messages.len() <= 2,
            "{} messages in one page",
            messages.len()
        );
        seen.extend(messages.iter().map(|m| m["n"].as_u64().unwrap()));
        since = messages.last().unwrap()["offset"].as_u64().unwrap();
        if reply[0]["more"] == json!(false) {
            break;
        }
    }
    assert_eq!(seen, [0, 1, 2, 3, 4]);
}

#[test]
fn flooding_is_warned_then_closed_with_the_rate_limit_reason() {
    let shared = shared(SessionConfig {
        rate_limit: Some(RateLimit {
            messages: 1,
            per: Duration::from_secs(60),
            burst: 2,
        }),
        ..SessionConfig::default()
    });
    let mut c = Client::new(&shared, "u");
    let now = Instant::now();
    let mut out = Transcript::default();
    // Two accepted, one warned, one dropped, then (more than a burst refused) closed.
    for _ in 0..5 {
        c.session.on_text(br#"{"type":"ping"}"#, now, &mut out);
    }
    assert_eq!(
        out.sent,
        [
            json!({"type":"pong"}),
            json!({"type":"pong"}),
            json!({"type":"error","code":"rate_limited","message":"Rate limit exceeded"}),
        ]
    );
    assert_eq!(out.closed, [CloseReason::RateLimited]);
    assert_eq!(out.notes, [Note::RateLimited; 3]);
}

#[test]
fn a_disconnect_request_closes_and_ending_unregisters() {
    let shared = shared(unlimited());
    let mut c = Client::new(&shared, "u");
    c.send(json!({"type":"join","room":"r"}));
    assert_eq!(shared.hub.connection_count(), 1);
    assert_eq!(shared.hub.disconnect_user(&UserId(Arc::from("u"))), 1);
    let mut out = Transcript::default();
    let mut batch = Vec::new();
    c.session.drain(&mut batch, &mut out);
    assert_eq!(out.closed, [CloseReason::DisconnectedByServer]);
    assert_eq!(CloseReason::DisconnectedByServer.code(), 1008);
    let _ = Kick::ByServer;
    c.session.end();
    c.session.end();
    assert_eq!(shared.hub.connection_count(), 0);
    assert_eq!(shared.hub.channel_count(), 0);
}

#[test]
fn a_panic_unwinding_through_the_owner_still_unregisters_the_session() {
    let shared = shared(unlimited());
    let inner = shared.clone();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let mut c = Client::new(&inner, "u");
        c.send(json!({"type":"join","room":"r"}));
        assert_eq!(inner.hub.connection_count(), 1);
        panic!("a bug in a transport's handler");
    }));
    assert!(result.is_err());
    assert_eq!(shared.hub.connection_count(), 0);
    assert!(shared.hub.presence(&RoomName::new("r").unwrap()).is_empty());
}
