//! The per-connection state: namespaces, connect timeout, ack ids, replies.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_socketio_proto::{
    connect_error, connect_ok, disconnect, parse, AckId, Args, ConnectErrorReason, Incoming,
    Namespace, Packet, PacketType, SocketState, StateConfig, StateError, StateEvent,
};

fn nsp(name: &str) -> Namespace {
    Namespace::new(name).unwrap()
}

fn handle(state: &mut SocketState, text: &str) -> Result<Option<Incoming>, StateError> {
    state.handle_packet(parse(text).unwrap())
}

#[test]
fn replies_are_exact() {
    let root = Namespace::root();
    assert_eq!(connect_ok(&root, "abc", None), r#"0{"sid":"abc"}"#);
    assert_eq!(
        connect_ok(&nsp("/chat"), "abc", Some("p\"1")),
        r#"0/chat,{"sid":"abc","pid":"p\"1"}"#
    );
    assert_eq!(
        connect_error(&nsp("/admin"), &ConnectErrorReason::InvalidNamespace, None),
        r#"4/admin,{"message":"Invalid namespace"}"#
    );
    assert_eq!(
        connect_error(&root, &ConnectErrorReason::AuthenticationFailed, None),
        r#"4{"message":"Authentication failed"}"#
    );
    assert_eq!(
        connect_error(
            &root,
            &ConnectErrorReason::Other("nope".into()),
            Some(&json!({"retry":false}))
        ),
        r#"4{"message":"nope","data":{"retry":false}}"#
    );
    assert_eq!(disconnect(&root), "1");
    assert_eq!(disconnect(&nsp("/chat")), "1/chat,");
    // The replies parse back as what they say.
    assert!(matches!(
        parse(&connect_ok(&root, "abc", Some("p"))),
        Ok(Packet::Connect { .. })
    ));
    assert!(matches!(
        parse(&connect_error(
            &root,
            &ConnectErrorReason::InvalidNamespace,
            None
        )),
        Ok(Packet::ConnectError { .. })
    ));
}

#[test]
fn connect_accept_reject_and_packets_per_namespace() {
    let now = Instant::now();
    let mut state = SocketState::new(StateConfig::default(), now);
    assert_eq!(
        handle(&mut state, r#"0{"token":"t"}"#),
        Ok(Some(Incoming::Connect {
            nsp: Namespace::root(),
            auth: Some(json!({"token":"t"}).as_object().unwrap().clone()),
        }))
    );
    // Events before the CONNECT is accepted, or a second CONNECT: protocol errors.
    assert_eq!(
        handle(&mut state, r#"2["a"]"#),
        Err(StateError::NotConnected(Namespace::root()))
    );
    assert_eq!(
        handle(&mut state, "0"),
        Err(StateError::AlreadyConnected(Namespace::root()))
    );
    assert_eq!(
        state
            .accept_connect(&Namespace::root(), "s1", None)
            .unwrap(),
        r#"0{"sid":"s1"}"#
    );
    assert!(state.is_connected(&Namespace::root()));
    assert_eq!(
        handle(&mut state, "0"),
        Err(StateError::AlreadyConnected(Namespace::root()))
    );
    assert_eq!(
        state.accept_connect(&Namespace::root(), "s1", None),
        Err(StateError::NotConnecting(Namespace::root()))
    );

    // An unknown namespace is refused; the connection stays usable.
    assert!(matches!(
        handle(&mut state, "0/nope"),
        Ok(Some(Incoming::Connect { .. }))
    ));
    assert_eq!(
        state
            .reject_connect(&nsp("/nope"), &ConnectErrorReason::InvalidNamespace, None)
            .unwrap(),
        r#"4/nope,{"message":"Invalid namespace"}"#
    );
    assert_eq!(
        handle(&mut state, r#"2/nope,["a"]"#),
        Err(StateError::NotConnected(nsp("/nope")))
    );
    assert_eq!(
        state.reject_connect(&nsp("/nope"), &ConnectErrorReason::InvalidNamespace, None),
        Err(StateError::NotConnecting(nsp("/nope")))
    );

    // Events with and without ack id.
    assert_eq!(
        handle(&mut state, r#"21["ask",1]"#),
        Ok(Some(Incoming::Event {
            nsp: Namespace::root(),
            name: "ask".into(),
            args: Args::from_values(vec![json!(1)]),
            ack: Some(AckId(1)),
        }))
    );
    // A second namespace, with recovery (pid).
    assert!(handle(&mut state, "0/chat,").unwrap().is_some());
    assert_eq!(
        state
            .accept_connect(&nsp("/chat"), "s2", Some("p2"))
            .unwrap(),
        r#"0/chat,{"sid":"s2","pid":"p2"}"#
    );
    assert_eq!(state.connected().count(), 2);
    assert_eq!(
        handle(&mut state, "1/chat,"),
        Ok(Some(Incoming::Disconnect { nsp: nsp("/chat") }))
    );
    assert!(!state.is_connected(&nsp("/chat")));
    assert_eq!(
        handle(&mut state, "1/chat,"),
        Err(StateError::NotConnected(nsp("/chat")))
    );
    // A client does not send CONNECT_ERROR.
    assert_eq!(
        handle(&mut state, r#"4{"message":"x"}"#),
        Err(StateError::UnexpectedPacket(PacketType::ConnectError))
    );
    // Server-side disconnect.
    assert_eq!(state.disconnect(&Namespace::root()).as_deref(), Some("1"));
    assert_eq!(state.disconnect(&Namespace::root()), None);
}

#[test]
fn connect_timeout_is_a_deadline() {
    let t0 = Instant::now();
    let config = StateConfig {
        connect_timeout: Duration::from_secs(45),
        ..StateConfig::default()
    };
    let mut state = SocketState::new(config, t0);
    assert_eq!(state.poll_timeout(), Some(t0 + Duration::from_secs(45)));
    state.handle_timeout(t0 + Duration::from_secs(44));
    assert_eq!(state.poll_event(), None);
    // A CONNECT waiting for auth does not stop the timer.
    handle(&mut state, "0").unwrap();
    state.handle_timeout(t0 + Duration::from_secs(45));
    assert_eq!(state.poll_event(), Some(StateEvent::ConnectTimeout));
    assert_eq!(state.poll_event(), None);
    assert_eq!(state.poll_timeout(), None);

    // A refused CONNECT does not stop it either; an accepted one does.
    let mut state = SocketState::new(config, t0);
    handle(&mut state, "0/x,").unwrap();
    state
        .reject_connect(&nsp("/x"), &ConnectErrorReason::InvalidNamespace, None)
        .unwrap();
    assert_eq!(state.poll_timeout(), Some(t0 + Duration::from_secs(45)));
    handle(&mut state, "0").unwrap();
    state.accept_connect(&Namespace::root(), "s", None).unwrap();
    assert_eq!(state.poll_timeout(), None);
    state.handle_timeout(t0 + Duration::from_secs(100));
    assert_eq!(state.poll_event(), None);
}

#[test]
fn ack_ids_are_monotonic_and_bounded() {
    let t0 = Instant::now();
    let config = StateConfig {
        max_pending_acks: 3,
        ..StateConfig::default()
    };
    let mut state = SocketState::new(config, t0);
    assert_eq!(
        state.next_ack_id(&Namespace::root(), None),
        Err(StateError::NotConnected(Namespace::root()))
    );
    handle(&mut state, "0").unwrap();
    state.accept_connect(&Namespace::root(), "s", None).unwrap();
    handle(&mut state, "0/chat,").unwrap();
    state.accept_connect(&nsp("/chat"), "s2", None).unwrap();

    let root = Namespace::root();
    let a = state
        .next_ack_id(&root, Some(t0 + Duration::from_secs(5)))
        .unwrap();
    let b = state.next_ack_id(&root, None).unwrap();
    let c = state
        .next_ack_id(&nsp("/chat"), Some(t0 + Duration::from_secs(2)))
        .unwrap();
    assert_eq!((a, b, c), (AckId(0), AckId(1), AckId(2)));
    assert_eq!(
        state.next_ack_id(&root, None),
        Err(StateError::TooManyPendingAcks { limit: 3 })
    );
    let emit = Packet::Event {
        nsp: root.clone(),
        name: "q".into(),
        args: Args::new(),
        ack: Some(b),
    };
    assert_eq!(emit.encode().text, r#"21["q"]"#);

    // The client's ACK for b.
    assert_eq!(
        handle(&mut state, r#"31["yes"]"#),
        Ok(Some(Incoming::Ack {
            nsp: root.clone(),
            id: AckId(1),
            args: Args::from_values(vec![json!("yes")])
        }))
    );
    // Again, unknown, or on the wrong namespace: ignored.
    assert_eq!(handle(&mut state, r#"31["yes"]"#), Ok(None));
    assert_eq!(handle(&mut state, r#"399[]"#), Ok(None));
    assert_eq!(handle(&mut state, r#"32[]"#), Ok(None));
    assert_eq!(state.pending_acks(), 2);

    // Deadlines.
    assert_eq!(state.poll_timeout(), Some(t0 + Duration::from_secs(2)));
    state.handle_timeout(t0 + Duration::from_secs(3));
    assert_eq!(
        state.poll_event(),
        Some(StateEvent::AckTimeout {
            nsp: nsp("/chat"),
            id: c
        })
    );
    assert_eq!(state.poll_event(), None);
    assert_eq!(state.poll_timeout(), Some(t0 + Duration::from_secs(5)));

    // Ids keep increasing after acks and timeouts.
    let d = state.next_ack_id(&root, None).unwrap();
    assert_eq!(d, AckId(3));
    // Leaving the namespace cancels its pending acks.
    assert_eq!(
        handle(&mut state, "1"),
        Ok(Some(Incoming::Disconnect { nsp: root.clone() }))
    );
    assert_eq!(
        state.poll_event(),
        Some(StateEvent::AckCancelled {
            nsp: root.clone(),
            id: a
        })
    );
    assert_eq!(
        state.poll_event(),
        Some(StateEvent::AckCancelled {
            nsp: root.clone(),
            id: d
        })
    );
    assert_eq!(state.poll_event(), None);
    assert_eq!(state.pending_acks(), 0);
}

#[test]
fn namespaces_are_bounded() {
    let config = StateConfig {
        max_namespaces: 2,
        ..StateConfig::default()
    };
    let mut state = SocketState::new(config, Instant::now());
    handle(&mut state, "0/a").unwrap();
    handle(&mut state, "0/b").unwrap();
    assert_eq!(
        handle(&mut state, "0/c"),
        Err(StateError::TooManyNamespaces { limit: 2 })
    );
}
