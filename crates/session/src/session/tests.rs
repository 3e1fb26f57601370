//! Transcript tests: client messages in, the exact replies and deliveries out. No server,
//! no sockets.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::json;
use switchboard_hub::{answered_at_once, HubConfig, Kick};
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
        auth: None,
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
    let general = RoomName::new("general").unwrap();
    let epoch = answered_at_once(|done| shared.hub.history(&general, None, None, 1, done))
        .unwrap()
        .unwrap()
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
    let general = RoomName::new("general").unwrap();
    answered_at_once(|done| shared.hub.history(&general, None, None, 1, done))
        .unwrap()
        .unwrap()
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
    let r = RoomName::new("r").unwrap();
    assert!(answered_at_once(|done| shared.hub.presence(&r, done))
        .unwrap()
        .unwrap()
        .is_empty());
}

/// Sessions over a store that answers only when the test releases it (and can be made to
/// fail, as a networked store that is down).
fn late_store() -> (Arc<switchboard_hub::testing::LateStore>, Arc<Shared>) {
    let config = HubConfig::default();
    let store = switchboard_hub::testing::LateStore::new(switchboard_hub::MemoryStore::new(
        config.memory_store(),
        1,
    ));
    let hub = Hub::with_backends(config, store.clone(), switchboard_hub::MemoryBroker::new());
    let shared = Arc::new(Shared {
        hub,
        config: unlimited(),
        auth: None,
        transport: (),
    });
    (store, shared)
}

#[test]
fn answers_the_store_gives_late_reach_the_client_through_the_outbox_in_order() {
    let (store, shared) = late_store();
    let mut jane = Client::new(&shared, "u-jane");
    assert_eq!(
        jane.send(json!({"type":"join","room":"r"})),
        [] as [Value; 0]
    );
    assert!(store.pending() > 0);
    store.release();
    let joined = jane.deliveries();
    assert_eq!(joined.len(), 1, "{joined:?}");
    assert_eq!(joined[0]["type"], "joined");
    assert_eq!(joined[0]["offset"], 0);
    let epoch = joined[0]["epoch"].as_str().unwrap().to_owned();

    // The message is delivered at once (appended and handed on); its ack comes with the
    // store's answer.
    assert_eq!(
        jane.send(json!({"type":"chat","id":"m1","text":"hi"})),
        [] as [Value; 0]
    );
    let now = jane.deliveries();
    assert_eq!((now.len(), &now[0]["text"]), (1, &json!("hi")));
    store.release();
    assert_eq!(
        jane.deliveries(),
        [json!({"type":"ack","id":"m1","offset":1})]
    );

    assert_eq!(
        jane.send(json!({"type":"history","room":"r"})),
        [] as [Value; 0]
    );
    store.release();
    let history = jane.deliveries();
    assert_eq!(history[0]["type"], "history");
    assert_eq!(history[0]["messages"][0]["text"], "hi");

    // A second connection joins with `since`: `joined` comes first, then the replay.
    let mut bob = Client::new(&shared, "u-bob");
    let since = json!({"type":"join","room":"r","since":{"offset":0,"epoch":epoch}});
    assert_eq!(bob.send(since), [] as [Value; 0]);
    store.release();
    let out = bob.deliveries();
    let types: Vec<&str> = out.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["joined", "chat"], "{out:?}");
    assert_eq!(out[0]["recovered"], true);
}

#[test]
fn a_publish_the_store_could_not_confirm_is_answered_unavailable_never_silence() {
    let (store, shared) = late_store();
    let mut jane = Client::new(&shared, "u-jane");
    jane.send(json!({"type":"join","room":"r"}));
    store.release();
    assert_eq!(jane.deliveries()[0]["type"], "joined");

    store.set_unavailable(true);
    // With an id: the error names it (the client may retry it).
    assert_eq!(
        jane.send(json!({"type":"chat","id":"m1","text":"a"})),
        [] as [Value; 0]
    );
    // Without: still told.
    assert_eq!(
        jane.send(json!({"type":"chat","text":"b"})),
        [] as [Value; 0]
    );
    store.release();
    let out = jane.deliveries();
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(
        (&out[0]["type"], &out[0]["code"], &out[0]["id"]),
        (&json!("error"), &json!("unavailable"), &json!("m1"))
    );
    assert_eq!(
        (&out[1]["type"], &out[1]["code"]),
        (&json!("error"), &json!("unavailable"))
    );
    assert!(out[1].get("id").is_none());

    // Reads: a history request is answered `unavailable`; a join that asked to resume is
    // told `recovered: false` (no replay it cannot vouch for), and still joins.
    jane.send(json!({"type":"history","room":"r"}));
    jane.send(json!({"type":"presence","room":"r"}));
    let mut bob = Client::new(&shared, "u-bob");
    bob.send(json!({"type":"join","room":"r","since":{"offset":0,"epoch":"e"}}));
    store.release();
    let history = jane.deliveries();
    assert_eq!(
        (&history[0]["type"], &history[0]["code"]),
        (&json!("error"), &json!("unavailable"))
    );
    assert_eq!(
        (&history[1]["type"], &history[1]["code"]),
        (&json!("error"), &json!("unavailable")),
        "presence too: {history:?}"
    );
    let joined = bob.deliveries();
    assert_eq!(
        (&joined[0]["type"], &joined[0]["recovered"]),
        (&json!("joined"), &json!(false))
    );

    // Back up: the retry of m1 goes through once.
    store.set_unavailable(false);
    jane.send(json!({"type":"chat","id":"m1","text":"a"}));
    store.release();
    let out = jane.deliveries();
    let types: Vec<&str> = out.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["chat", "ack"], "{out:?}");
    assert_eq!(
        out[1]["offset"], 1,
        "nothing was stored while the store was down"
    );
}

mod auth;
