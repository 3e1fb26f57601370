use super::*;
use crate::outbox::Kick;

fn room(s: &str) -> RoomName {
    RoomName::new(s).unwrap()
}

fn user(s: &str) -> UserId {
    UserId(Arc::from(s))
}

/// What `conn` was sent: messages as their text, presence changes in the shape the native
/// protocol gives them (the hub itself writes no JSON).
fn drained(conn: &HubConn) -> Vec<String> {
    let mut v = Vec::new();
    conn.outbox.drain(&mut v);
    v.iter()
        .map(|d| match d.body() {
            crate::Body::Message { json, .. } => String::from_utf8_lossy(json).into_owned(),
            crate::Body::Reply(m) => format!("reply {m:?}"),
            crate::Body::Presence(p) => format!(
                r#"{{"type":"{}","userId":"{}","user":"{}","room":"{}"}}"#,
                d.kind(),
                p.user,
                p.name.as_deref().unwrap_or(&p.user.0),
                d.room()
            ),
        })
        .collect()
}

fn publish(hub: &Hub, r: &RoomName, text: &str) -> Published {
    let text = text.to_owned();
    hub.publish_now(r, "test", move |offset, _| {
        Bytes::from(format!("{text}@{offset}"))
    })
}

/// What a publish did, as the memory store answers it (at once).
#[derive(Debug)]
struct Published {
    offset: Offset,
    delivered: usize,
    dropped: usize,
}

/// The hub's operations with the memory store's answers, which come at once.
trait Now {
    fn join_now(&self, c: &HubConn, r: &RoomName, since: Option<(Offset, &str)>) -> Joined;
    fn history_now(
        &self,
        r: &RoomName,
        since: Option<Offset>,
        limit: Option<usize>,
        max_bytes: usize,
    ) -> HistoryPage;
    fn presence_now(&self, r: &RoomName) -> Vec<PresenceEntry>;
    fn publish_now(
        &self,
        r: &RoomName,
        kind: &str,
        build: impl FnOnce(Offset, u64) -> Bytes + Send + 'static,
    ) -> Published;
    fn publish_once_now(
        &self,
        r: &RoomName,
        kind: &str,
        sender: &UserId,
        id: &str,
        build: impl FnOnce(Offset, u64) -> Bytes + Send + 'static,
    ) -> Appended;
}

impl Now for Hub {
    fn join_now(&self, c: &HubConn, r: &RoomName, since: Option<(Offset, &str)>) -> Joined {
        let since = since.map(|(o, e)| (o, Epoch::from(e)));
        crate::answered_at_once(|done| self.join(c, r, since, done)).unwrap()
    }

    fn history_now(
        &self,
        r: &RoomName,
        since: Option<Offset>,
        limit: Option<usize>,
        max_bytes: usize,
    ) -> HistoryPage {
        crate::answered_at_once(|done| self.history(r, since, limit, max_bytes, done))
            .unwrap()
            .unwrap()
    }

    fn presence_now(&self, r: &RoomName) -> Vec<PresenceEntry> {
        crate::answered_at_once(|done| self.presence(r, done))
            .unwrap()
            .unwrap()
    }

    fn publish_now(
        &self,
        r: &RoomName,
        kind: &str,
        build: impl FnOnce(Offset, u64) -> Bytes + Send + 'static,
    ) -> Published {
        match crate::answered_at_once(|done| self.publish(r, kind, None, build, done)).unwrap() {
            Appended::Published { offset, fanout, .. } => Published {
                offset,
                delivered: fanout.delivered,
                dropped: fanout.dropped,
            },
            dup => panic!("no id, yet {dup:?}"),
        }
    }

    fn publish_once_now(
        &self,
        r: &RoomName,
        kind: &str,
        sender: &UserId,
        id: &str,
        build: impl FnOnce(Offset, u64) -> Bytes + Send + 'static,
    ) -> Appended {
        crate::answered_at_once(|done| self.publish(r, kind, Some((sender, id)), build, done))
            .unwrap()
    }
}

#[test]
fn members_get_publishes_and_join_leave_events() {
    let hub = Hub::new(HubConfig::default());
    let r = room("general");
    let a = hub.connect(user("alice"));
    let b = hub.connect(user("bob"));
    hub.join_now(&a, &r, None);
    hub.join_now(&b, &r, None);
    assert_eq!(
        drained(&a),
        [r#"{"type":"user_joined","userId":"bob","user":"bob","room":"general"}"#]
    );
    assert!(drained(&b).is_empty(), "no event about yourself");
    let p = publish(&hub, &r, "hi");
    assert_eq!((p.offset, p.delivered), (Offset(1), 2));
    assert_eq!(drained(&a), ["hi@1"]);
    assert_eq!(drained(&b), ["hi@1"]);
    assert!(hub.leave(&b, &r));
    assert!(!hub.leave(&b, &r));
    assert_eq!(
        drained(&a),
        [r#"{"type":"user_left","userId":"bob","user":"bob","room":"general"}"#]
    );
    publish(&hub, &r, "after");
    assert!(drained(&b).is_empty());
}

#[test]
fn a_display_name_is_carried_in_join_leave_events_and_presence() {
    let hub = Hub::new(HubConfig::default());
    let r = room("general");
    let a = hub.connect(user("alice"));
    let mut b = hub.connect(user("u-b"));
    b.name = Some(Arc::from("jane_dev"));
    hub.join_now(&a, &r, None);
    hub.join_now(&b, &r, None);
    assert_eq!(
        drained(&a),
        [r#"{"type":"user_joined","userId":"u-b","user":"jane_dev","room":"general"}"#]
    );
    let p = hub.presence_now(&r);
    assert_eq!(p[1].name.as_deref(), Some("jane_dev"));
    assert_eq!(p[0].name, None);
    hub.leave(&b, &r);
    assert_eq!(
        drained(&a),
        [r#"{"type":"user_left","userId":"u-b","user":"jane_dev","room":"general"}"#]
    );
}

#[test]
fn replay_from_since_has_no_gap_and_no_duplicate() {
    let hub = Hub::new(HubConfig::default());
    let r = room("feed");
    let publisher = hub.connect(user("p"));
    hub.join_now(&publisher, &r, None);
    for i in 1..=5 {
        publish(&hub, &r, &format!("m{i}"));
    }
    let epoch = hub.history_now(&r, None, None, usize::MAX).epoch;
    let late = hub.connect(user("late"));
    let j = hub.join_now(&late, &r, Some((Offset(2), epoch.as_str())));
    assert_eq!((j.offset, j.recovered, j.replayed), (Offset(5), true, 3));
    publish(&hub, &r, "m6");
    assert_eq!(drained(&late), ["m3@3", "m4@4", "m5@5", "m6@6"]);
}

#[test]
fn replay_is_not_recovered_for_another_epoch_or_a_trimmed_gap() {
    let hub = Hub::new(HubConfig {
        default_history: HistoryLimits {
            max_messages: 2,
            max_age: Duration::from_secs(60),
        },
        ..HubConfig::default()
    });
    let r = room("x");
    let keep = hub.connect(user("keep"));
    hub.join_now(&keep, &r, None);
    for i in 1..=5 {
        publish(&hub, &r, &format!("m{i}"));
    }
    let epoch = hub.history_now(&r, None, None, usize::MAX).epoch;
    let c = hub.connect(user("c"));
    assert!(
        !hub.join_now(&c, &r, Some((Offset(1), epoch.as_str())))
            .recovered,
        "3 was trimmed"
    );
    let d = hub.connect(user("d"));
    assert!(
        !hub.join_now(&d, &r, Some((Offset(4), "other-epoch")))
            .recovered
    );
    let e = hub.connect(user("e"));
    let j = hub.join_now(&e, &r, Some((Offset(3), epoch.as_str())));
    assert!(j.recovered);
    assert_eq!(drained(&e), ["m4@4", "m5@5"]);
}

#[test]
fn a_forgotten_room_comes_back_in_the_same_epoch_so_positions_there_still_recover() {
    let hub = Hub::new(HubConfig {
        default_history: HistoryLimits {
            max_messages: 0,
            max_age: Duration::from_secs(60),
        },
        ..HubConfig::default()
    });
    let r = room("tmp");
    let a = hub.connect(user("a"));
    let epoch = hub.join_now(&a, &r, None).epoch;
    let sent = publish(&hub, &r, "kept nowhere").offset;
    hub.leave(&a, &r);
    assert!(
        hub.channels().is_empty(),
        "forgotten: no members, no history"
    );
    // A client that had everything up to `sent` resumes without a reset.
    let back = hub.join_now(&a, &r, Some((sent, epoch.as_str())));
    assert_eq!((back.epoch, back.offset), (epoch.clone(), sent));
    assert!(back.recovered);
    // Offsets go on: a client with an older position learns of the gap.
    assert_eq!(publish(&hub, &r, "next").offset, Offset(sent.0 + 1));
    let b = hub.connect(user("b"));
    assert!(
        !hub.join_now(&b, &r, Some((Offset(0), epoch.as_str())))
            .recovered
    );
}

#[test]
fn presence_counts_connections_per_user() {
    let hub = Hub::new(HubConfig::default());
    let r = room("p");
    let a1 = hub.connect(user("alice"));
    let a2 = hub.connect(user("alice"));
    let b = hub.connect(user("bob"));
    for c in [&a1, &a2, &b] {
        hub.join_now(c, &r, None);
    }
    // Alice's second tab does not announce her again.
    assert_eq!(
        drained(&b),
        Vec::<String>::new(),
        "bob joined last: nothing before"
    );
    let p = hub.presence_now(&r);
    assert_eq!(p.len(), 2);
    assert_eq!((p[0].user.0.as_ref(), p[0].connections), ("alice", 2));
    hub.leave(&a1, &r);
    assert!(drained(&b).is_empty(), "alice still has a connection");
    hub.leave(&a2, &r);
    assert_eq!(drained(&b).len(), 1);
    assert_eq!(hub.presence_now(&r).len(), 1);
}

#[test]
fn join_leave_events_stop_above_the_member_limit() {
    let hub = Hub::new(HubConfig {
        join_leave_max_members: 2,
        ..HubConfig::default()
    });
    let r = room("big");
    let conns: Vec<_> = (0..4)
        .map(|i| hub.connect(user(&format!("u{i}"))))
        .collect();
    for c in &conns {
        hub.join_now(c, &r, None);
    }
    // u0 saw u1 join (2 members), not u2 or u3.
    assert_eq!(drained(&conns[0]).len(), 1);
    assert_eq!(
        hub.presence_now(&r).len(),
        4,
        "presence answers at any size"
    );
}

#[test]
fn full_outbox_drops_without_blocking_others() {
    let hub = Hub::new(HubConfig {
        outbox_budget: 500,
        ..HubConfig::default()
    });
    let r = room("fast");
    let slow = hub.connect(user("slow"));
    let fast = hub.connect(user("fast"));
    hub.join_now(&slow, &r, None);
    hub.join_now(&fast, &r, None);
    drained(&slow);
    let mut dropped = 0;
    for i in 0..20 {
        let p = publish(&hub, &r, &"x".repeat(100 + i));
        dropped += p.dropped;
        drained(&fast); // the fast reader keeps up
    }
    assert!(dropped > 0);
    let mut v = Vec::new();
    let missed = slow.outbox.drain(&mut v);
    assert_eq!(missed as usize, dropped);
    assert!(v.len() < 20);
}

#[test]
fn concurrent_joins_leaves_and_publishes_keep_presence_exact() {
    let hub = Hub::new(HubConfig::default());
    let r = room("busy");
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let hub = hub.clone();
            let r = r.clone();
            std::thread::spawn(move || {
                let conns: Vec<_> = (0..50)
                    .map(|i| hub.connect(user(&format!("t{t}-u{}", i % 10))))
                    .collect();
                for round in 0..20 {
                    for c in &conns {
                        hub.join_now(c, &r, None);
                    }
                    publish(&hub, &r, "tick");
                    for (i, c) in conns.iter().enumerate() {
                        if (i + round) % 2 == 0 {
                            hub.leave(c, &r);
                        }
                    }
                }
                for c in &conns {
                    hub.leave(c, &r);
                }
                // Leave exactly 10 connections of user t{t}-u0 joined.
                for c in conns.iter().filter(|c| c.user.0.ends_with("-u0")) {
                    hub.join_now(c, &r, None);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let p = hub.presence_now(&r);
    assert_eq!(p.len(), 8);
    assert!(p.iter().all(|e| e.connections == 5), "{p:?}");
    let last = hub.history_now(&r, None, None, usize::MAX).last_offset;
    assert_eq!(last, Offset(8 * 20));
}

#[test]
fn publish_once_publishes_a_repeated_id_once_per_room() {
    let hub = Hub::new(HubConfig::default());
    let (r, other) = (room("r"), room("other"));
    let member = hub.connect(user("m"));
    hub.join_now(&member, &r, None);
    let u = user("u");
    let first = hub.publish_once_now(&r, "test", &u, "m1", |o, _| Bytes::from(format!("a@{o}")));
    let Appended::Published { offset, epoch, .. } = first else {
        panic!("{first:?}")
    };
    let again = hub.publish_once_now(&r, "test", &u, "m1", |o, _| Bytes::from(format!("b@{o}")));
    assert_eq!(
        again,
        Appended::Duplicate {
            offset,
            epoch: epoch.clone()
        }
    );
    assert_eq!(drained(&member), ["a@1"]);
    // The same id to another room is another message.
    assert!(matches!(
        hub.publish_once_now(&other, "test", &u, "m1", |o, _| Bytes::from(format!(
            "c@{o}"
        ))),
        Appended::Published { .. }
    ));
}

#[test]
fn history_of_an_unknown_room_creates_nothing() {
    let hub = Hub::new(HubConfig::default());
    for i in 0..50 {
        let page = hub.history_now(&room(&format!("nope{i}")), None, None, usize::MAX);
        assert!(page.messages.is_empty());
        assert_eq!(page.last_offset, Offset(0));
    }
    assert!(hub.presence_now(&room("nope1")).is_empty());
    assert_eq!(hub.channel_count(), 0);
}

#[test]
fn a_replay_larger_than_the_outbox_budget_is_not_recovered_and_not_sent_in_part() {
    let hub = Hub::new(HubConfig {
        outbox_budget: 10_000,
        ..HubConfig::default()
    });
    let r = room("big");
    let keep = hub.connect(user("keep"));
    hub.join_now(&keep, &r, None);
    for _ in 0..5 {
        hub.publish_now(&r, "test", |_, _| Bytes::from(vec![b'x'; 4000]));
    }
    let epoch = hub.history_now(&r, None, None, usize::MAX).epoch;
    let late = hub.connect(user("late"));
    let j = hub.join_now(&late, &r, Some((Offset(0), epoch.as_str())));
    assert_eq!((j.recovered, j.replayed), (false, 0));
    assert!(drained(&late).is_empty());
    let small = hub.connect(user("small"));
    let j = hub.join_now(&small, &r, Some((Offset(3), epoch.as_str())));
    assert_eq!((j.recovered, j.replayed), (true, 2));
}

#[test]
fn disconnect_user_reaches_every_connection_and_disconnect_unregisters() {
    let hub = Hub::new(HubConfig::default());
    let r = room("r");
    let a1 = hub.connect(user("a"));
    let a2 = hub.connect(user("a"));
    let b = hub.connect(user("b"));
    hub.join_now(&a1, &r, None);
    assert_eq!(hub.connection_count(), 3);
    assert_eq!(hub.disconnect_user(&user("a")), 2);
    assert_eq!(a1.outbox.disconnect_requested(), Some(Kick::ByServer));
    assert_eq!(a2.outbox.disconnect_requested(), Some(Kick::ByServer));
    assert_eq!(b.outbox.disconnect_requested(), None);
    hub.disconnect(&a1, std::slice::from_ref(&r));
    hub.disconnect(&a2, &[]);
    assert_eq!(hub.connection_count(), 1);
    assert!(hub.presence_now(&r).is_empty());
    assert_eq!(hub.disconnect_user(&user("a")), 0);
}

#[test]
fn sweep_forgets_rooms_whose_history_expired() {
    let hub = Hub::new(HubConfig {
        default_history: HistoryLimits {
            max_messages: 10,
            max_age: Duration::from_millis(50),
        },
        ..HubConfig::default()
    });
    let r = room("ephemeral");
    let a = hub.connect(user("a"));
    hub.join_now(&a, &r, None);
    publish(&hub, &r, "x");
    hub.leave(&a, &r);
    assert_eq!(hub.channels().len(), 1, "history keeps the room");
    assert_eq!(hub.sweep(), 0);
    std::thread::sleep(Duration::from_millis(80));
    assert_eq!(hub.sweep(), 1);
    assert!(hub.channels().is_empty());
}

#[test]
fn overflow_policy_follows_the_room_pattern() {
    let hub = Hub::new(HubConfig {
        outbox_budget: 300,
        overflow: vec![(RoomPattern::new("strict:*"), OverflowPolicy::Close)],
        ..HubConfig::default()
    });
    let slow = hub.connect(user("slow"));
    hub.join_now(&slow, &room("strict:a"), None);
    hub.join_now(&slow, &room("loose:a"), None);
    let body = |_: Offset, _: u64| Bytes::from_static(&[b'x'; 100]);
    // `loose:a` uses the default (drop): the third message does not fit and is counted.
    for _ in 0..3 {
        hub.publish_now(&room("loose:a"), "test", body);
    }
    assert_eq!(slow.outbox.disconnect_requested(), None);
    let published = hub.publish_now(&room("strict:a"), "test", body);
    assert_eq!(published.dropped, 1);
    assert_eq!(slow.outbox.disconnect_requested(), Some(Kick::Overflow));
    assert!(slow.outbox.is_empty(), "the backlog is freed at once");
}

/// Two nodes over one shared store and broker (what Redis will be across processes).
fn two_nodes() -> (Arc<Hub>, Arc<Hub>) {
    let config = HubConfig::default();
    let store = crate::MemoryStore::new(config.memory_store(), 1);
    let broker = crate::MemoryBroker::new();
    let a = Hub::with_backends(config.clone(), store.clone(), broker.clone());
    let b = Hub::with_backends(config, store, broker);
    (a, b)
}

#[test]
fn two_nodes_share_rooms_with_one_offset_sequence_and_replay_across_nodes() {
    let (a, b) = two_nodes();
    let r = room("shared");
    let on_a = a.connect(user("x"));
    let on_b = b.connect(user("y"));
    a.join_now(&on_a, &r, None);
    b.join_now(&on_b, &r, None);
    assert_ne!(
        on_a.id, on_b.id,
        "connection ids are unique across the nodes of a process"
    );
    publish(&a, &r, "m1");
    publish(&b, &r, "m2");
    publish(&a, &r, "m3");
    // Each member gets every message once, in one offset sequence, wherever it was published;
    // y's join on node b was announced to x on node a.
    assert_eq!(
        drained(&on_a),
        [
            r#"{"type":"user_joined","userId":"y","user":"y","room":"shared"}"#,
            "m1@1",
            "m2@2",
            "m3@3"
        ]
    );
    assert_eq!(drained(&on_b), ["m1@1", "m2@2", "m3@3"]);

    // A client of node a sees m3, drops, and reconnects to node b with `since`.
    let epoch = b.history_now(&r, None, None, usize::MAX).epoch;
    assert_eq!(epoch, a.history_now(&r, None, None, usize::MAX).epoch);
    publish(&b, &r, "m4");
    publish(&a, &r, "m5");
    let back = b.connect(user("x"));
    let j = b.join_now(&back, &r, Some((Offset(3), epoch.as_str())));
    assert_eq!((j.offset, j.recovered, j.replayed), (Offset(5), true, 2));
    publish(&a, &r, "m6");
    assert_eq!(
        drained(&back),
        ["m4@4", "m5@5", "m6@6"],
        "no gap, no duplicate"
    );
}

#[test]
fn a_node_without_local_members_gets_nothing_and_lookups_on_it_create_nothing() {
    let (a, b) = two_nodes();
    let r = room("r");
    let on_a = a.connect(user("x"));
    a.join_now(&on_a, &r, None);
    let on_b = b.connect(user("y"));
    b.join_now(&on_b, &r, None);
    b.leave(&on_b, &r);
    let p = b.presence_now(&r);
    assert_eq!(p.len(), 1, "presence spans the nodes: {p:?}");
    assert_eq!(p[0].user, user("x"));
    let p = publish(&a, &r, "after");
    assert_eq!(p.delivered, 1, "only node a's member");
    assert!(drained(&on_b).is_empty());
    assert_eq!(b.history_now(&r, None, None, usize::MAX).messages.len(), 1);
}

#[test]
fn concurrent_publishes_on_two_nodes_arrive_everywhere_once_in_offset_order() {
    let (a, b) = two_nodes();
    let r = room("busy");
    let on_a = a.connect(user("x"));
    let on_b = b.connect(user("y"));
    a.join_now(&on_a, &r, None);
    b.join_now(&on_b, &r, None);
    let threads: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|hub| {
            let r = r.clone();
            std::thread::spawn(move || {
                for i in 0..500 {
                    publish(&hub, &r, &i.to_string());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for member in [&on_a, &on_b] {
        let mut v = Vec::new();
        member.outbox.drain(&mut v);
        let offsets: Vec<u64> = v.iter().filter_map(|d| d.offset()).map(|o| o.0).collect();
        assert_eq!(offsets, (1..=1000).collect::<Vec<_>>());
    }
}

#[test]
fn presence_is_the_same_on_every_node_and_counts_connections_across_nodes() {
    let (a, b) = two_nodes();
    let r = room("lobby");
    let mut jane_a = a.connect(user("jane"));
    jane_a.name = Some(Arc::from("Jane"));
    let jane_b = b.connect(user("jane"));
    let bob = b.connect(user("bob"));
    a.join_now(&jane_a, &r, None);
    b.join_now(&bob, &r, None);
    // Jane's second connection, on the other node, is not her first: no second user_joined.
    b.join_now(&jane_b, &r, None);
    assert_eq!(
        drained(&bob).len(),
        0,
        "jane was already there when bob joined"
    );
    for hub in [&a, &b] {
        let p = hub.presence_now(&r);
        let seen: Vec<_> = p
            .iter()
            .map(|e| {
                (
                    e.user.0.to_string(),
                    e.connections,
                    e.name.as_deref().map(str::to_owned),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("bob".to_owned(), 1, None),
                ("jane".to_owned(), 2, Some("Jane".to_owned()))
            ]
        );
    }
    a.leave(&jane_a, &r);
    assert!(drained(&bob).is_empty(), "jane is still there on node b");
    b.leave(&jane_b, &r);
    assert_eq!(
        drained(&bob),
        [r#"{"type":"user_left","userId":"jane","user":"jane","room":"lobby"}"#]
    );
    assert_eq!(a.presence_now(&r).len(), 1);
}

/// A hub over a store whose answers come only when released (a networked store's latency).
fn late_hub() -> (Arc<Hub>, Arc<crate::testing::LateStore>) {
    let config = HubConfig::default();
    let store = crate::testing::LateStore::new(crate::MemoryStore::new(config.memory_store(), 1));
    let hub = Hub::with_backends(config, store.clone(), crate::MemoryBroker::new());
    (hub, store)
}

/// Start `op` with a `done` that records the answer; the answer, once released.
fn later<T: Send + 'static>(
    op: impl FnOnce(Box<dyn FnOnce(T) + Send>),
) -> std::sync::mpsc::Receiver<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    op(Box::new(move |v| {
        let _ = tx.send(v);
    }));
    rx
}

#[test]
fn a_join_whose_store_answers_late_replays_without_gap_or_duplicate() {
    let (hub, store) = late_hub();
    let r = room("feed");
    let publisher = hub.connect(user("p"));
    let _ = later(|done| hub.join(&publisher, &r, None, done));
    for i in 1..=3 {
        let text = format!("m{i}");
        hub.publish(
            &r,
            "test",
            None,
            move |o, _| Bytes::from(format!("{text}@{o}")),
            |_| {},
        );
    }
    store.release();
    let epoch = later(|done| hub.history(&r, None, None, usize::MAX, done));
    store.release();
    let epoch = epoch.recv().unwrap().unwrap().epoch;

    let late = hub.connect(user("late"));
    let joined = later(|done| hub.join(&late, &r, Some((Offset(1), epoch)), done));
    // Published while the join's read is still on its way: held for the joiner (and, read
    // after them, also in its replay: they must come once).
    for i in 4..=5 {
        let text = format!("m{i}");
        hub.publish(
            &r,
            "test",
            None,
            move |o, _| Bytes::from(format!("{text}@{o}")),
            |_| {},
        );
    }
    assert!(joined.try_recv().is_err(), "not answered yet");
    assert!(drained(&late).is_empty(), "held until the replay is queued");
    store.release();
    let j = joined.recv().unwrap();
    assert_eq!((j.offset, j.recovered, j.replayed), (Offset(5), true, 4));
    hub.publish(
        &r,
        "test",
        None,
        |o, _| Bytes::from(format!("m6@{o}")),
        |_| {},
    );
    assert_eq!(
        drained(&late),
        ["m2@2", "m3@3", "m4@4", "m5@5", "m6@6"],
        "no gap, no duplicate"
    );
}

#[test]
fn messages_published_while_a_late_join_waits_follow_its_joined_offset() {
    let (hub, store) = late_hub();
    let r = room("live");
    let a = hub.connect(user("a"));
    let joined = later(|done| hub.join(&a, &r, None, done));
    // The store reads the room only after this one: it is at or before the joined offset.
    hub.publish(
        &r,
        "test",
        None,
        |o, _| Bytes::from(format!("before@{o}")),
        |_| {},
    );
    store.release();
    let j = joined.recv().unwrap();
    assert_eq!((j.offset, j.recovered, j.replayed), (Offset(1), true, 0));
    hub.publish(
        &r,
        "test",
        None,
        |o, _| Bytes::from(format!("after@{o}")),
        |_| {},
    );
    store.release();
    assert_eq!(drained(&a), ["after@2"]);
}

#[test]
fn a_dead_nodes_connections_leave_presence_after_the_expiry() {
    let config = HubConfig {
        presence_expiry: Duration::from_millis(100),
        ..HubConfig::default()
    };
    let store = crate::MemoryStore::new(config.memory_store(), 1);
    let broker = crate::MemoryBroker::new();
    let a = Hub::with_backends(config.clone(), store.clone(), broker.clone());
    let b = Hub::with_backends(config, store, broker);
    let r = room("lobby");
    let (x, y) = (a.connect(user("x")), b.connect(user("y")));
    a.join_now(&x, &r, None);
    b.join_now(&y, &r, None);
    assert_eq!(a.presence_now(&r).len(), 2);
    // Node b stops heartbeating (it died without leaving); node a sweeps on.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(50));
        a.sweep();
    }
    let p = a.presence_now(&r);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].user, user("x"));
    // Node a's entries were refreshed by its sweeps and stay.
    let z = a.connect(user("y"));
    a.join_now(&z, &r, None);
    assert_eq!(a.presence_now(&r).len(), 2);
}

/// A broker that hands messages over only when released (pub/sub slower than a read of the
/// store, as a networked broker may be).
#[derive(Debug, Default)]
struct SlowBroker {
    nodes: Mutex<Vec<Weak<dyn Node>>>,
    held: Mutex<Vec<Arc<Delivery>>>,
}

impl Broker for SlowBroker {
    fn subscribe(&self, _room: &RoomName, node: Weak<dyn Node>) {
        lock(&self.nodes).push(node);
    }

    fn unsubscribe(&self, _room: &RoomName, _node: &Weak<dyn Node>) {}

    fn publish(&self, delivery: &Arc<Delivery>) -> Fanout {
        lock(&self.held).push(delivery.clone());
        Fanout::default()
    }
}

impl SlowBroker {
    fn release(&self) {
        let held = std::mem::take(&mut *lock(&self.held));
        for delivery in held {
            for node in lock(&self.nodes).iter().filter_map(Weak::upgrade) {
                node.deliver(&delivery);
            }
        }
    }
}

#[test]
fn a_join_that_read_ahead_of_the_broker_gets_each_message_once() {
    let config = HubConfig::default();
    let broker = Arc::new(SlowBroker::default());
    let hub = Hub::with_backends(
        config.clone(),
        crate::MemoryStore::new(config.memory_store(), 1),
        broker.clone(),
    );
    let r = room("feed");
    let old = hub.connect(user("old"));
    let joined = later(|done| hub.join(&old, &r, None, done));
    let epoch = joined.recv().unwrap().epoch;
    for i in 1..=3 {
        publish(&hub, &r, &format!("m{i}"));
    }
    broker.release();
    assert_eq!(drained(&old), ["m1@1", "m2@2", "m3@3"]);
    // Stored at once, handed over by the broker only later.
    for i in 4..=5 {
        publish(&hub, &r, &format!("m{i}"));
    }
    // A member back from offset 3: its replay (read from the store) has 4 and 5 already.
    let back = hub.connect(user("back"));
    let j = later(|done| hub.join(&back, &r, Some((Offset(3), epoch)), done))
        .recv()
        .unwrap();
    assert_eq!((j.offset, j.recovered, j.replayed), (Offset(5), true, 2));
    assert_eq!(drained(&back), ["m4@4", "m5@5"]);
    broker.release();
    publish(&hub, &r, "m6");
    broker.release();
    assert_eq!(drained(&back), ["m6@6"], "4 and 5 not twice");
    let to_old: Vec<String> = drained(&old)
        .into_iter()
        .filter(|m| !m.contains("user_joined"))
        .collect();
    assert_eq!(to_old, ["m4@4", "m5@5", "m6@6"], "the others get them");
    assert!(lock(&hub.room(&r, false).unwrap().0.state).seams.is_empty());
}
