//! Transcript tests of authentication and authorization (SPEC §4): per-message permissions,
//! the first-message flow with its held messages, refresh and expiry, and a verification
//! that finishes later (the connect proxy) waking the connection.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::task::Wake;

use switchboard_auth::{mint, mint_at, unix_now, Algorithm, AuthConfig, Authenticator};

use super::*;

const SECRET: &[u8] = b"session-test-secret";

/// Rooms and who may do what in them.
fn rules() -> Value {
    json!([
        {"rooms": "user:*", "allow": {"match": "user:{sub}"}},
        {"rooms": "news:*", "actions": ["subscribe"], "allow": "anyone"},
        {"rooms": "news:*", "actions": ["history"], "allow": "authenticated"},
        {"rooms": "news:*", "actions": ["publish", "presence"], "allow": "nobody"},
        {"rooms": "team:*", "allow": "channels"},
    ])
}

fn authenticator(extra: Value) -> Arc<Authenticator> {
    let mut config = json!({
        "anonymous": true,
        "jwt": {"secrets": [std::str::from_utf8(SECRET).unwrap()]},
        "permissions": rules(),
    });
    if let (Some(config), Value::Object(extra)) = (config.as_object_mut(), extra) {
        config.extend(extra);
    }
    let config: AuthConfig = serde_json::from_value(config).unwrap();
    Arc::new(Authenticator::new(&config).unwrap())
}

fn auth_shared(auth: Arc<Authenticator>) -> Arc<Shared> {
    Arc::new(Shared {
        hub: Hub::new(HubConfig::default()),
        config: unlimited(),
        auth: Some(auth),
        transport: (),
    })
}

/// A token for `sub`, valid for `ttl`, with `extra` claims.
fn token(sub: &str, ttl: u64, extra: Value) -> String {
    let Value::Object(extra) = extra else {
        unreachable!()
    };
    mint(
        SECRET,
        Algorithm::HS256,
        sub,
        Duration::from_secs(ttl),
        extra,
    )
    .unwrap()
}

fn info() -> ConnectInfo {
    ConnectInfo {
        transport: "websocket",
        ..ConnectInfo::default()
    }
}

/// Who `token` names (HS keys: answered at once).
fn identity(auth: &Arc<Authenticator>, token: &str) -> Identity {
    let credential = Credential::new(token, CredentialSource::Header);
    auth.authenticate_now_or_later(credential, info(), |_| panic!("answered at once"))
        .unwrap()
        .unwrap()
}

fn authenticated(shared: &Arc<Shared>, auth: &Arc<Authenticator>, token: &str) -> Client {
    Client {
        session: Session::authenticated(
            shared.clone(),
            identity(auth, token),
            info(),
            Instant::now(),
        ),
        out: Transcript::default(),
    }
}

fn anonymous(shared: &Arc<Shared>) -> Client {
    Client {
        session: Session::anonymous(shared.clone(), Instant::now()),
        out: Transcript::default(),
    }
}

fn awaiting(shared: &Arc<Shared>) -> Client {
    Client {
        session: Session::awaiting_auth(shared.clone(), info(), Instant::now()),
        out: Transcript::default(),
    }
}

fn error(code: &str, message: &str, id: Option<&str>) -> Value {
    let mut e = json!({"type": "error", "code": code, "message": message});
    if let Some(id) = id {
        e["id"] = json!(id);
    }
    e
}

fn forbidden(message: &str, id: Option<&str>) -> Value {
    error("forbidden", message, id)
}

/// The user ids present in `room`, as the hub sees them.
fn members(shared: &Shared, room: &str) -> Vec<String> {
    let room = RoomName::new(room).unwrap();
    answered_at_once(|done| shared.hub.presence(&room, done))
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|p| p.user.0.to_string())
        .collect()
}

fn stored(shared: &Shared, room: &str) -> usize {
    let room = RoomName::new(room).unwrap();
    answered_at_once(|done| shared.hub.history(&room, None, None, usize::MAX, done))
        .unwrap()
        .unwrap()
        .messages
        .len()
}

#[test]
fn without_an_authenticator_auth_and_refresh_answer_as_before() {
    let shared = shared(unlimited());
    let mut c = Client::new(&shared, "u1");
    assert!(c.session.is_authenticated());
    assert!(c.session.identity().is_none());
    assert_eq!(c.session.expires_at(), None);
    assert_eq!(
        c.send(json!({"type":"auth","token":"anything"})),
        [json!({"type":"auth_success","userId":"u1"})]
    );
    assert_eq!(
        c.send(json!({"type":"refresh","token":"anything"})),
        [json!({"type":"auth_success","userId":"u1"})]
    );
    let mut out = Transcript::default();
    assert!(!c.session.expire_if_due(SystemTime::now(), &mut out));
    assert!(out.closed.is_empty());
    // An awaiting session without an authenticator opens at `auth`, whatever the token.
    let mut a = awaiting(&shared);
    assert!(!a.session.is_authenticated());
    assert_eq!(a.send(json!({"type":"ping"})), [] as [Value; 0]);
    let user = a.session.user().0.to_string();
    assert_eq!(
        a.send(json!({"type":"auth","token":"x"})),
        [
            json!({"type":"auth_success","userId":user}),
            json!({"type":"pong"})
        ]
    );
    assert!(a.session.is_authenticated());
}

#[test]
fn every_message_is_authorized_and_a_refusal_keeps_the_connection() {
    let auth = authenticator(json!({}));
    let shared = auth_shared(auth.clone());
    let mut alice = authenticated(&shared, &auth, &token("alice", 3600, json!({})));
    assert_eq!(alice.session.user().0.as_ref(), "alice");
    assert_eq!(alice.session.identity().unwrap().user_id(), "alice");
    assert_eq!(
        alice.session.welcome(),
        ServerMessage::Welcome {
            user_id: "alice".into(),
            connection_id: alice.session.connection_id().to_string(),
        }
    );

    // The personal room `user:{sub}`: her own, not bob's.
    assert_eq!(
        alice.send(json!({"type":"join","room":"user:alice"}))[0]["type"],
        "joined"
    );
    assert_eq!(
        alice.send(json!({"type":"join","room":"user:bob","id":"j1"})),
        [forbidden("Not allowed to join this room", Some("j1"))]
    );
    assert_eq!(members(&shared, "user:bob"), [] as [String; 0]);
    assert_eq!(
        alice.send(json!({"type":"subscribe","channel":"user:bob"})),
        [forbidden("Not allowed to join this room", None)]
    );
    assert_eq!(
        alice.send(json!({"type":"history","room":"user:bob","id":7})),
        [forbidden(
            "Not allowed to read this room's history",
            Some("7")
        )]
    );
    assert_eq!(
        alice.send(json!({"type":"presence","room":"user:bob"})),
        [forbidden("Not allowed to see this room's presence", None)]
    );
    assert_eq!(
        alice.send(json!({"type":"publish","room":"user:bob","data":1,"id":"p1"})),
        [forbidden("Not allowed to publish in this room", Some("p1"))]
    );
    assert_eq!(stored(&shared, "user:bob"), 0, "nothing reached the hub");
    // Her own room: everything.
    assert_eq!(
        alice.send(json!({"type":"chat","room":"user:alice","text":"hi","id":"c1"})),
        [json!({"type":"ack","id":"c1","offset":1})]
    );
    assert_eq!(
        alice.send(json!({"type":"presence","room":"user:alice"})),
        [json!({"type":"presence","room":"user:alice","members":[
            {"userId":"alice","connections":1}]})]
    );
    assert_eq!(
        alice.send(json!({"type":"history","room":"user:alice"}))[0]["messages"][0]["text"],
        "hi"
    );

    // news:*: anyone joins, authenticated users read history, nobody publishes or lists.
    let mut anon = anonymous(&shared);
    assert_eq!(
        anon.send(json!({"type":"join","room":"news:today"}))[0]["type"],
        "joined"
    );
    assert_eq!(
        anon.send(json!({"type":"history","room":"news:today"})),
        [error("unauthorized", "Authentication required", None)]
    );
    assert_eq!(
        alice.send(json!({"type":"history","room":"news:today"}))[0]["type"],
        "history"
    );
    assert_eq!(
        alice.send(json!({"type":"join","room":"news:today"}))[0]["type"],
        "joined"
    );
    // A relayed typed message is a publish, refused before the membership check.
    assert_eq!(
        alice.send(json!({"type":"chat.message","room":"news:today","text":"x","id":"c2"})),
        [forbidden("Not allowed to publish in this room", Some("c2"))]
    );
    assert_eq!(
        anon.send(json!({"type":"cursor.move","channel":"news:today","x":1})),
        [error("unauthorized", "Authentication required", None)]
    );
    assert_eq!(
        alice.send(json!({"type":"presence","room":"news:today"})),
        [forbidden("Not allowed to see this room's presence", None)]
    );
    assert_eq!(stored(&shared, "news:today"), 0);
    // The first refusal did not end anything: the session still works.
    assert_eq!(alice.send(json!({"type":"ping"})), [json!({"type":"pong"})]);
    assert_eq!(
        anon.deliveries().len(),
        1,
        "alice's user_joined, nothing else"
    );
}

#[test]
fn the_channels_claim_allows_its_patterns_only() {
    let auth = authenticator(json!({}));
    let shared = auth_shared(auth.clone());
    let claims = json!({"channels": ["team:red*", "team:ops"]});
    let mut carol = authenticated(&shared, &auth, &token("carol", 3600, claims));
    let mut dave = authenticated(&shared, &auth, &token("dave", 3600, json!({})));
    for room in ["team:red", "team:red-2", "team:ops"] {
        assert_eq!(
            carol.send(json!({"type":"join","room":room}))[0]["type"],
            "joined",
            "{room}"
        );
    }
    assert_eq!(
        carol.send(json!({"type":"join","room":"team:blue"})),
        [forbidden("Not allowed to join this room", None)]
    );
    assert_eq!(
        dave.send(json!({"type":"join","room":"team:red"})),
        [forbidden("Not allowed to join this room", None)]
    );
    assert_eq!(members(&shared, "team:red"), ["carol"]);
}

#[test]
fn a_since_replay_needs_the_history_right() {
    let auth = authenticator(json!({}));
    let shared = auth_shared(auth.clone());
    // Messages in news:today, published by the backend.
    let room = RoomName::new("news:today").unwrap();
    for n in 0..2 {
        let mut body = Map::new();
        body.insert("type".into(), json!("news"));
        body.insert("n".into(), json!(n));
        crate::publish(
            &shared.hub,
            PublishRequest {
                room: &room,
                sender: &UserId(Arc::from("backend")),
                sender_name: None,
                body,
                id: None,
            },
            |_| {},
        );
    }
    let epoch = answered_at_once(|done| shared.hub.history(&room, None, None, 1, done))
        .unwrap()
        .unwrap()
        .epoch
        .to_string();
    let since = json!({"type":"join","room":"news:today","since":{"offset":0,"epoch":epoch}});

    // Anonymous: may join, may not read history: joined without the replay, told to resync.
    let mut anon = anonymous(&shared);
    let reply = anon.send(since.clone());
    assert_eq!(reply.len(), 1);
    assert_eq!(
        (&reply[0]["type"], &reply[0]["recovered"]),
        (&json!("joined"), &json!(false))
    );
    assert_eq!(anon.deliveries(), [] as [Value; 0], "no replay");
    assert_eq!(members(&shared, "news:today").len(), 1, "but joined");

    // Authenticated: the replay follows.
    let mut alice = authenticated(&shared, &auth, &token("alice", 3600, json!({})));
    let reply = alice.send(since);
    assert_eq!(reply[0]["recovered"], true);
    let replayed: Vec<Value> = alice.deliveries().iter().map(|m| m["n"].clone()).collect();
    assert_eq!(replayed, [json!(0), json!(1)]);
}

#[test]
fn first_message_auth_replays_the_held_messages_in_order_as_the_user() {
    let auth = authenticator(json!({}));
    let shared = auth_shared(auth.clone());
    let mut c = awaiting(&shared);
    assert!(!c.session.is_authenticated());
    assert_eq!(shared.hub.connection_count(), 1);
    // Sent before `auth`: held, nothing answered, nothing in the hub.
    for m in [
        json!({"type":"join","room":"user:alice","user":"Alice"}),
        json!({"type":"chat","text":"first","id":"m1"}),
        json!({"type":"ping"}),
        json!({"type":"presence","room":"user:alice"}),
        json!({"type":"join","room":"user:bob","id":"j2"}),
    ] {
        assert_eq!(c.send(m), [] as [Value; 0]);
    }
    assert_eq!(members(&shared, "user:alice"), [] as [String; 0]);
    let replies = c.send(json!({"type":"auth","token":token("alice", 3600, json!({}))}));
    let types: Vec<&str> = replies
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["auth_success", "joined", "ack", "pong", "presence", "error"],
        "{replies:?}"
    );
    assert_eq!(replies[0], json!({"type":"auth_success","userId":"alice"}));
    assert_eq!(replies[2], json!({"type":"ack","id":"m1","offset":1}));
    assert_eq!(
        replies[4]["members"],
        json!([{"userId":"alice","user":"Alice","connections":1}]),
        "presence shows the real user"
    );
    assert_eq!(
        replies[5],
        forbidden("Not allowed to join this room", Some("j2"))
    );
    assert!(c.session.is_authenticated());
    assert_eq!(c.session.identity().unwrap().user_id(), "alice");
    assert_eq!(c.session.user().0.as_ref(), "alice");
    assert_eq!(
        shared.hub.connection_count(),
        1,
        "the placeholder registration was replaced"
    );
    let delivered = c.deliveries();
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        (&delivered[0]["text"], &delivered[0]["userId"]),
        (&json!("first"), &json!("alice"))
    );
    // A per-user disconnect finds the connection under its real user.
    assert_eq!(shared.hub.disconnect_user(&UserId(Arc::from("alice"))), 1);
    // A second `auth` is not a way to become someone else.
    assert_eq!(
        c.send(json!({"type":"auth","token":token("bob", 3600, json!({}))}))[0]["code"],
        "already_authenticated"
    );
    assert_eq!(c.session.user().0.as_ref(), "alice");
}

#[test]
fn a_bad_or_expired_first_message_token_closes_4001_and_handles_nothing() {
    let auth = authenticator(json!({}));
    let shared = auth_shared(auth.clone());
    let good = token("alice", 3600, json!({}));
    let expired = mint_at(
        SECRET,
        Algorithm::HS256,
        "alice",
        Duration::from_secs(60),
        Map::new(),
        unix_now() - 7200,
    )
    .unwrap();
    let forged = mint(
        b"another-secret",
        Algorithm::HS256,
        "alice",
        Duration::from_secs(60),
        Map::new(),
    )
    .unwrap();
    for (bad, reason) in [
        (forged, "Invalid token"),
        (format!("{good}x"), "Invalid token"),
        ("not-a-jwt".to_owned(), "Invalid token"),
        (expired, "Token expired"),
    ] {
        let mut c = awaiting(&shared);
        c.send(json!({"type":"join","room":"user:alice"}));
        assert_eq!(c.send(json!({"type":"auth","token":bad})), [] as [Value; 0]);
        assert_eq!(c.out.closed.len(), 1, "{reason}");
        let close = c.out.closed[0];
        assert_eq!((close.code(), close.text()), (4001, reason));
        assert!(!c.session.is_authenticated());
        assert!(c.session.identity().is_none());
        // Nothing held was handled, nothing after it is.
        assert_eq!(c.send(json!({"type":"ping"})), [] as [Value; 0]);
        assert_eq!(members(&shared, "user:alice"), [] as [String; 0]);
    }
}

#[test]
fn held_messages_are_bounded_in_number_and_bytes() {
    let auth = authenticator(json!({}));
    let shared = auth_shared(auth.clone());
    let too_many = error(
        "auth_pending",
        "Too many messages before authentication",
        Some("p17"),
    );
    let mut c = awaiting(&shared);
    for i in 1..=crate::MAX_HELD_MESSAGES {
        assert_eq!(
            c.send(json!({"type":"ping","id":format!("p{i}")})),
            [] as [Value; 0]
        );
    }
    assert_eq!(c.send(json!({"type":"ping","id":"p17"})), [too_many]);
    assert!(c.out.closed.is_empty(), "refused, not closed");
    let replies = c.send(json!({"type":"auth","token":token("alice", 3600, json!({}))}));
    assert_eq!(replies.len(), 1 + crate::MAX_HELD_MESSAGES);
    assert!(replies[1..].iter().all(|m| m["type"] == "pong"));

    // Bytes: two 40 KiB messages do not both fit in 64 KiB.
    let mut c = awaiting(&shared);
    let big = "x".repeat(40 * 1024);
    assert_eq!(
        c.send(json!({"type":"chat","room":"user:alice","text":big,"id":"b1"})),
        [] as [Value; 0]
    );
    assert_eq!(
        c.send(json!({"type":"chat","room":"user:alice","text":big,"id":"b2"})),
        [error(
            "auth_pending",
            "Too many messages before authentication",
            Some("b2")
        )]
    );
    assert_eq!(
        c.send(json!({"type":"ping"})),
        [] as [Value; 0],
        "a small one still fits"
    );
}

#[test]
fn refresh_extends_the_session_and_a_bad_one_changes_nothing() {
    let auth = authenticator(json!({}));
    let shared = auth_shared(auth.clone());
    let short = token("alice", 60, json!({}));
    let mut c = authenticated(&shared, &auth, &short);
    let exp = c.session.identity().unwrap().token_expires_at().unwrap();
    assert_eq!(
        c.session.expires_at(),
        Some(UNIX_EPOCH + Duration::from_secs(exp))
    );

    // Another user's token, a forged one, garbage: refused, the old deadline stands.
    let forged = mint(
        b"another-secret",
        Algorithm::HS256,
        "alice",
        Duration::from_secs(3600),
        Map::new(),
    )
    .unwrap();
    for (bad, id) in [
        (token("bob", 3600, json!({})), "r1"),
        (forged, "r2"),
        ("garbage".to_owned(), "r3"),
    ] {
        assert_eq!(
            c.send(json!({"type":"refresh","token":bad,"id":id})),
            [error("invalid_token", "Invalid token", Some(id))]
        );
        assert_eq!(
            c.session.expires_at(),
            Some(UNIX_EPOCH + Duration::from_secs(exp))
        );
    }
    assert!(c.out.closed.is_empty());

    // A valid, later token for her: `refreshed {exp}`, the deadline moves.
    let longer = token("alice", 7200, json!({"role":"admin"}));
    let reply = c.send(json!({"type":"refresh","token":longer}));
    assert_eq!(reply.len(), 1);
    assert_eq!(reply[0]["type"], "refreshed");
    let new_exp = reply[0]["exp"].as_u64().unwrap();
    assert!(new_exp >= exp + 7000, "{new_exp} vs {exp}");
    assert_eq!(
        c.session.expires_at(),
        Some(UNIX_EPOCH + Duration::from_secs(new_exp))
    );
    assert_eq!(
        c.session.identity().unwrap().claim("role"),
        Some(&json!("admin"))
    );
    assert_eq!(c.session.user().0.as_ref(), "alice");

    // Refresh without being authenticated.
    let mut anon = anonymous(&shared);
    assert_eq!(
        anon.send(json!({"type":"refresh","token":token("alice", 60, json!({}))})),
        [error("unauthorized", "Not authenticated", None)]
    );
}

#[test]
fn at_the_deadline_the_session_closes_token_expired_unless_refreshed() {
    let auth = authenticator(json!({}));
    let shared = auth_shared(auth.clone());
    // `expire_at` gives the connection its own deadline, independent of `exp`.
    let at = unix_now() + 120;
    let mut c = authenticated(
        &shared,
        &auth,
        &token("alice", 3600, json!({"expire_at": at})),
    );
    let deadline = c.session.expires_at().unwrap();
    assert_eq!(deadline, UNIX_EPOCH + Duration::from_secs(at));
    let mut out = Transcript::default();
    assert!(!c
        .session
        .expire_if_due(deadline - Duration::from_secs(1), &mut out));
    assert!(out.closed.is_empty());

    // Refreshed in time: the old deadline passes without a close.
    c.send(json!({"type":"refresh","token":token("alice", 3600, json!({"expire_at": at + 600}))}));
    assert!(!c.session.expire_if_due(deadline, &mut out));
    assert!(out.closed.is_empty());
    let deadline = c.session.expires_at().unwrap();
    assert_eq!(deadline, UNIX_EPOCH + Duration::from_secs(at + 600));

    // Not refreshed: closed 4001 "Token expired"; nothing is handled after.
    c.send(json!({"type":"join","room":"user:alice"}));
    assert!(c.session.expire_if_due(deadline, &mut out));
    assert_eq!(out.closed, [CloseReason::TokenExpired]);
    assert_eq!(
        (
            CloseReason::TokenExpired.code(),
            CloseReason::TokenExpired.text()
        ),
        (4001, "Token expired")
    );
    assert_eq!(c.send(json!({"type":"ping"})), [] as [Value; 0]);
    assert!(!c.session.is_authenticated());
    c.session.end();
    assert_eq!(members(&shared, "user:alice"), [] as [String; 0]);
}

#[test]
fn the_http_api_authorizes_a_user_token_publish() {
    let auth = authenticator(json!({}));
    let shared = auth_shared(auth.clone());
    let alice = identity(&auth, &token("alice", 3600, json!({})));
    let body = |text: &str| {
        let Value::Object(m) = json!({"type":"publish","text":text}) else {
            unreachable!()
        };
        m
    };
    let bob_room = RoomName::new("user:bob").unwrap();
    let own_room = RoomName::new("user:alice").unwrap();
    let impostor = UserId(Arc::from("bob"));
    let refused = crate::publish_as(
        &shared.hub,
        Some(&auth),
        &alice,
        PublishRequest {
            room: &bob_room,
            sender: &impostor,
            sender_name: None,
            body: body("no"),
            id: None,
        },
        |_| panic!("not published"),
    )
    .unwrap_err();
    assert_eq!(
        (refused.code(), refused.http_status().as_u16()),
        ("forbidden", 403)
    );
    assert_eq!(stored(&shared, "user:bob"), 0);
    let published = Arc::new(std::sync::Mutex::new(None));
    let p = published.clone();
    crate::publish_as(
        &shared.hub,
        Some(&auth),
        &alice,
        PublishRequest {
            room: &own_room,
            sender: &impostor,
            sender_name: None,
            body: body("yes"),
            id: None,
        },
        move |done| *p.lock().unwrap() = Some(done),
    )
    .unwrap();
    assert_eq!(
        published
            .lock()
            .unwrap()
            .as_ref()
            .unwrap()
            .as_ref()
            .unwrap()
            .offset,
        Offset(1)
    );
    let history =
        answered_at_once(|done| shared.hub.history(&own_room, None, None, 1 << 20, done)).unwrap();
    let message: Value =
        serde_json::from_slice(history.unwrap().messages[0].json().unwrap()).unwrap();
    assert_eq!(
        message["userId"], "alice",
        "stamped as the token's user, not the request's"
    );
    // Anonymous callers and no authenticator.
    let denied = crate::authorize(Some(&auth), None, Action::History, &own_room).unwrap_err();
    assert_eq!(
        (denied.code(), denied.http_status().as_u16()),
        ("unauthorized", 401)
    );
    assert!(crate::authorize(None, None, Action::Publish, &bob_room).is_ok());
}

/// A connect proxy on loopback that answers one request per body sent on its channel, and
/// not before: the verification is in flight until the test says so.
fn held_proxy() -> (String, mpsc::Sender<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/connect", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for answer in rx {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 4096];
            // Headers, then the body's Content-Length.
            let (head_end, length) = loop {
                let n = stream.read(&mut chunk).unwrap();
                assert!(n > 0, "the request ended early");
                request.extend_from_slice(&chunk[..n]);
                if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&request[..i]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    break (i + 4, length);
                }
            };
            while request.len() < head_end + length {
                let n = stream.read(&mut chunk).unwrap();
                request.extend_from_slice(&chunk[..n]);
            }
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
            stream.write_all(response.as_bytes()).unwrap();
        }
    });
    (url, tx)
}

/// A waker that remembers it was woken.
#[derive(Default)]
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[track_caller]
/// Wait (up to 10 s) until the session's outbox wakes `flag`'s waker.
fn wait_for_wake(flag: &Flag) {
    for _ in 0..2000 {
        if flag.0.swap(false, Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("the connection was never woken");
}

/// What a driver does when woken: while the outbox is ready, resume and drain; the last poll
/// (pending) registers the waker on the session's current outbox.
#[track_caller]
fn woken(c: &mut Client, flag: &Flag, cx: &mut Context<'_>) -> Vec<Value> {
    wait_for_wake(flag);
    let mut out = Vec::new();
    while c.session.poll_outbound(cx).is_ready() {
        c.session.resume(&mut c.out);
        out.extend(c.deliveries());
    }
    out
}

#[test]
fn a_verification_that_finishes_later_wakes_the_connection_and_resumes() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // The transport's thread is inside the runtime (as a connection task is).
    let _inside = runtime.enter();
    let (url, answer) = held_proxy();
    let auth = authenticator(json!({"connect_proxy": {"url": url, "cache_ttl": "0s"}}));
    let shared = auth_shared(auth);
    let mut c = awaiting(&shared);
    let flag = Arc::new(Flag::default());
    let waker = std::task::Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);

    assert_eq!(
        c.send(json!({"type":"join","room":"user:erin"})),
        [] as [Value; 0]
    );
    // An opaque session credential: the connect proxy decides, on another task.
    assert_eq!(
        c.send(json!({"type":"auth","token":"opaque-session-1"})),
        [] as [Value; 0]
    );
    assert!(c.out.closed.is_empty());
    assert!(!c.session.is_authenticated(), "still verifying");
    // Held while verifying, `auth` included.
    assert_eq!(c.send(json!({"type":"ping","id":"p1"})), [] as [Value; 0]);
    assert_eq!(c.session.poll_outbound(&mut cx), Poll::Pending);
    let mut out = Transcript::default();
    c.session.resume(&mut out);
    assert!(out.sent.is_empty(), "nothing has come yet");

    answer
        .send(json!({"user_id": "erin", "expire_at": unix_now() + 900}).to_string())
        .unwrap();
    let replies = woken(&mut c, &flag, &mut cx);
    let types: Vec<&str> = replies
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["auth_success", "joined", "pong"], "{replies:?}");
    assert_eq!(replies[0]["userId"], "erin");
    assert!(c.session.is_authenticated());
    assert_eq!(members(&shared, "user:erin"), ["erin"]);
    let deadline = c.session.expires_at().unwrap();

    // A refresh through the proxy: the reply comes later, through `resume` again.
    assert_eq!(
        c.send(json!({"type":"refresh","token":"opaque-session-2","id":"r1"})),
        [] as [Value; 0]
    );
    assert_eq!(
        c.send(json!({"type":"refresh","token":"opaque-session-3","id":"r2"})),
        [error(
            "refresh_pending",
            "A refresh is already being verified",
            Some("r2")
        )]
    );
    assert_eq!(
        c.send(json!({"type":"ping"})),
        [json!({"type":"pong"})],
        "not held"
    );
    answer
        .send(json!({"user_id": "erin", "expire_at": unix_now() + 1800}).to_string())
        .unwrap();
    assert_eq!(woken(&mut c, &flag, &mut cx), [json!({"type":"refreshed"})]);
    assert!(c.session.expires_at().unwrap() > deadline);

    // The proxy names another user: the refresh is refused, the deadline stands.
    let deadline = c.session.expires_at().unwrap();
    c.send(json!({"type":"refresh","token":"opaque-session-4","id":"r3"}));
    answer
        .send(json!({"user_id": "mallory", "expire_at": unix_now() + 9000}).to_string())
        .unwrap();
    assert_eq!(
        woken(&mut c, &flag, &mut cx),
        [error("invalid_token", "Invalid token", Some("r3"))]
    );
    assert_eq!(c.session.expires_at(), Some(deadline));
}
