//! Hubs on one Redis behave as one deployment: two nodes (two hubs, each with its own
//! `RedisStore` + `RedisBroker`, as two processes would have) against a real `redis-server`.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::hub::*;
use common::redis_server;
use switchboard_broker_redis::{connect, RedisConfig};
use switchboard_hub::{Appended, Hub, HubConfig, HubConn, Offset, PresenceEntry, RoomName};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_two_nodes_get_every_message_in_one_offset_order() {
    let redis = redis_server();
    let (a, b) = (
        node(&redis.url, HubConfig::default()).await,
        node(&redis.url, HubConfig::default()).await,
    );
    let lobby = room("lobby");
    let (ann, bob) = (a.connect(user("ann")), b.connect(user("bob")));
    let joined_a = join(&a, &ann, &lobby, None).await;
    let joined_b = join(&b, &bob, &lobby, None).await;
    // One room, one epoch, whichever node answered.
    assert_eq!(joined_a.epoch, joined_b.epoch);
    assert_eq!(joined_b.offset, Offset(0));
    assert_ne!(joined_a.epoch.as_str(), "0");
    // ann sees bob join: presence crosses nodes.
    assert_eq!(received(&ann, 1).await.items, ["+bob"]);

    // Both nodes publish, interleaved; each node's member sees one sequence.
    let mut offsets = Vec::new();
    for i in 0..20 {
        let hub = if i % 2 == 0 { &a } else { &b };
        offsets.push(published(
            &publish(hub, &lobby, &format!("m{i}"), None).await,
        ));
    }
    assert_eq!(offsets, (1..=20).collect::<Vec<_>>());
    let expected: Vec<String> = (0..20).map(|i| format!("m{i}@{}", i + 1)).collect();
    let got_a = received(&ann, 20).await;
    assert_eq!(got_a.items, expected);
    let got_b = received(&bob, 20).await;
    assert_eq!(got_b.items, expected);
    assert_eq!((got_a.lagged, got_b.lagged), (0, 0));

    // Presence is the deployment's.
    let users: Vec<_> = presence(&b, &lobby)
        .await
        .into_iter()
        .map(|e| (e.user.0.to_string(), e.connections))
        .collect();
    assert_eq!(users, [("ann".to_owned(), 1), ("bob".to_owned(), 1)]);

    // A leave on one node reaches the other.
    assert!(b.leave(&bob, &lobby));
    assert_eq!(received(&ann, 1).await.items, ["-bob"]);
    let users = presence(&a, &lobby).await;
    assert_eq!(users.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_resumes_on_another_node_without_gap_and_ids_dedup_across_nodes() {
    let redis = redis_server();
    let (a, b) = (
        node(&redis.url, HubConfig::default()).await,
        node(&redis.url, HubConfig::default()).await,
    );
    let news = room("news");
    let ann = a.connect(user("ann"));
    let joined = join(&a, &ann, &news, None).await;
    for i in 0..5 {
        publish(&a, &news, &format!("n{i}"), None).await;
    }
    assert_eq!(received(&ann, 5).await.items.len(), 5);
    a.disconnect(&ann, std::slice::from_ref(&news));
    // Missed while away: published on node a.
    for i in 5..8 {
        publish(&a, &news, &format!("n{i}"), None).await;
    }
    // Back on node b, from offset 5 of the epoch it knew.
    let ann2 = b.connect(user("ann"));
    let resumed = join(&b, &ann2, &news, Some((5, joined.epoch.as_str()))).await;
    assert!(resumed.recovered);
    assert_eq!((resumed.replayed, resumed.offset), (3, Offset(8)));
    publish(&a, &news, "n8", None).await;
    assert_eq!(
        received(&ann2, 4).await.items,
        ["n5@6", "n6@7", "n7@8", "n8@9"]
    );
    // A position of another epoch cannot be vouched for.
    let ann3 = b.connect(user("ann"));
    let stale = join(&b, &ann3, &news, Some((5, "123abc"))).await;
    assert!(!stale.recovered);

    // The same sender's id, retried through the other node: published once.
    let sender = user("ann");
    let first = publish(&a, &news, "once", Some((&sender, "id-1"))).await;
    let again = publish(&b, &news, "once", Some((&sender, "id-1"))).await;
    match again {
        Appended::Duplicate { offset, .. } => assert_eq!(offset.0, published(&first)),
        other => panic!("{other:?}"),
    }
    // Another sender may use the same id.
    let other = publish(&b, &news, "once", Some((&user("bob"), "id-1"))).await;
    assert_eq!(published(&other), published(&first) + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_pubsub_connection_is_resubscribed_and_the_gap_filled_from_history() {
    let redis = redis_server();
    let (a, b) = (
        node(&redis.url, HubConfig::default()).await,
        node(&redis.url, HubConfig::default()).await,
    );
    let feed = room("feed");
    let bob = b.connect(user("bob"));
    join(&b, &bob, &feed, None).await;
    publish(&a, &feed, "before", None).await;
    assert_eq!(received(&bob, 1).await.items, ["before@1"]);

    // Redis drops every pub/sub connection; messages keep being published meanwhile.
    let mut conn = admin(&redis.url).await;
    assert!(
        kill_pubsub(&mut conn).await >= 1,
        "no pub/sub connection to break"
    );
    for i in 0..30 {
        publish(&a, &feed, &format!("during{i}"), None).await;
    }
    let mut expected: Vec<String> = (0..30).map(|i| format!("during{i}@{}", i + 2)).collect();
    publish(&a, &feed, "after", None).await;
    expected.push("after@32".to_owned());
    let got = received(&bob, 31).await;
    assert_eq!(got.items, expected, "no gap, no duplicate, in order");
    assert_eq!(got.lagged, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_the_history_no_longer_holds_is_reported_as_lagged() {
    let redis = redis_server();
    let mut config = HubConfig::default();
    config.default_history.max_messages = 5;
    let (a, b) = (
        node(&redis.url, config.clone()).await,
        node(&redis.url, config).await,
    );
    let feed = room("tight");
    let bob = b.connect(user("bob"));
    join(&b, &bob, &feed, None).await;
    publish(&a, &feed, "first", None).await;
    assert_eq!(received(&bob, 1).await.items, ["first@1"]);
    // b's subscriber is cut off and cannot subscribe again for a while.
    let mut conn = cut_pubsub(&redis.url).await;
    // Far more than the history keeps (5, trimmed approximately), while b is away.
    for i in 0..500 {
        publish(&a, &feed, &format!("x{i}"), None).await;
    }
    allow_pubsub(&mut conn).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let into = Mutex::new(Received::default());
    // Whatever is still in history arrives in order, ending with the newest; the rest is
    // counted as lagged: nothing is lost without the client being told.
    loop {
        drain(&bob, &into);
        let finished = {
            let r = into.lock().unwrap();
            let done = r.items.last().is_some_and(|l| l == "x499@501");
            if done {
                let offsets: Vec<u64> = r
                    .items
                    .iter()
                    .map(|i| i.rsplit_once('@').unwrap().1.parse().unwrap())
                    .collect();
                assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
                let replayed = r.items.len() as u64;
                assert_eq!(replayed + r.lagged, 500, "{offsets:?} lagged {}", r.lagged);
                assert!(r.lagged > 0);
            }
            done
        };
        if finished {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_users_leave_presence_and_the_others_are_told() {
    let redis = redis_server();
    let config = HubConfig {
        presence_expiry: Duration::from_millis(600),
        ..HubConfig::default()
    };
    let a = node(&redis.url, config.clone()).await;
    let lobby = room("lobby");
    let ann = a.connect(user("ann"));
    join(&a, &ann, &lobby, None).await;
    {
        let doomed = node(&redis.url, config.clone()).await;
        let zed = doomed.connect(user("zed"));
        join(&doomed, &zed, &lobby, None).await;
        assert_eq!(received(&ann, 1).await.items, ["+zed"]);
        assert_eq!(presence(&a, &lobby).await.len(), 2);
        // The node goes away without a word (its heartbeat stops with it).
        std::mem::forget(zed);
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    a.sweep();
    let deadline = Instant::now() + Duration::from_secs(5);
    while presence(&a, &lobby).await.len() != 1 {
        assert!(Instant::now() < deadline, "zed is still present");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(received(&ann, 1).await.items, ["-zed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_count_every_node_and_a_dead_nodes_share_is_dropped() {
    let redis = redis_server();
    let config = HubConfig {
        presence_expiry: Duration::from_millis(600),
        ..HubConfig::default()
    };
    let connect_node = || connect(RedisConfig::new(&redis.url, config.memory_store()));
    let (a, b) = (connect_node().await.unwrap(), connect_node().await.unwrap());
    let (a, b) = (a.limits.clone(), b.limits.clone());
    // Two per user, three per address, over both nodes.
    assert_eq!(
        a.acquire(Some("10.0.0.1"), Some("ann"), 3, 2).await,
        Ok(true)
    );
    assert_eq!(
        b.acquire(Some("10.0.0.1"), Some("ann"), 3, 2).await,
        Ok(true)
    );
    assert_eq!(
        a.acquire(Some("10.0.0.2"), Some("ann"), 3, 2).await,
        Err(switchboard_broker_redis::Limited::User)
    );
    // The refusal counted nothing: the address has room for exactly one more.
    assert_eq!(b.acquire(Some("10.0.0.1"), None, 3, 2).await, Ok(true));
    assert_eq!(
        a.acquire(Some("10.0.0.1"), Some("bob"), 3, 2).await,
        Err(switchboard_broker_redis::Limited::Address)
    );
    // A release on one node makes room on the other (once Redis has it: a release is sent
    // without waiting, on b's connection).
    b.release(Some("10.0.0.1"), Some("ann"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.acquire(Some("10.0.0.3"), Some("ann"), 3, 2).await != Ok(true) {
        assert!(Instant::now() < deadline, "the release never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A node that dies holding connections: its share goes with its heartbeat.
    {
        let doomed = connect_node().await.unwrap();
        assert_eq!(
            doomed.limits.acquire(None, Some("zed"), 3, 1).await,
            Ok(true)
        );
        assert_eq!(
            a.acquire(None, Some("zed"), 3, 1).await,
            Err(switchboard_broker_redis::Limited::User)
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match a.acquire(None, Some("zed"), 3, 1).await {
            Ok(true) => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "zed's dead share is still counted: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnecting_a_user_reaches_their_connections_on_every_node() {
    let redis = redis_server();
    let (a, b) = (
        node(&redis.url, HubConfig::default()).await,
        node(&redis.url, HubConfig::default()).await,
    );
    let (ann_a, ann_b, bob_b) = (
        a.connect(user("ann")),
        b.connect(user("ann")),
        b.connect(user("bob")),
    );
    // Subscribed to the control channel once a room's subscription is confirmed.
    join(&b, &bob_b, &room("any"), None).await;
    assert_eq!(
        a.disconnect_user(&user("ann")),
        1,
        "this node's connections"
    );
    assert!(ann_a.outbox.disconnect_requested().is_some());
    let deadline = Instant::now() + Duration::from_secs(5);
    while ann_b.outbox.disconnect_requested().is_none() {
        assert!(Instant::now() < deadline, "node b was not told");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        bob_b.outbox.disconnect_requested().is_none(),
        "only that user"
    );
}

/// A connection for the test's own commands.
async fn admin(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// Redis drops every pub/sub connection; how many there were.
async fn kill_pubsub(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(conn)
        .await
        .unwrap()
}

/// Cut every pub/sub connection and keep them from subscribing until `allow_pubsub`.
async fn cut_pubsub(url: &str) -> redis::aio::MultiplexedConnection {
    let mut conn = admin(url).await;
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("-subscribe")
        .query_async(&mut conn)
        .await
        .unwrap();
    kill_pubsub(&mut conn).await;
    conn
}

async fn allow_pubsub(conn: &mut redis::aio::MultiplexedConnection) {
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("+subscribe")
        .query_async(conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_room_cut_from_pubsub_loses_nothing() {
    let redis = redis_server();
    let (a, b) = (
        node(&redis.url, HubConfig::default()).await,
        node(&redis.url, HubConfig::default()).await,
    );
    let quiet = room("quiet");
    let bob = b.connect(user("bob"));
    join(&b, &bob, &quiet, None).await;
    // Nothing was ever delivered in the room when the connection breaks.
    let mut conn = cut_pubsub(&redis.url).await;
    for i in 0..3 {
        publish(&a, &quiet, &format!("q{i}"), None).await;
    }
    allow_pubsub(&mut conn).await;
    publish(&a, &quiet, "after", None).await;
    let got = received(&bob, 4).await;
    assert_eq!(got.items, ["q0@1", "q1@2", "q2@3", "after@4"]);
    assert_eq!(got.lagged, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_redis_lost_while_cut_is_read_from_its_new_start_and_the_loss_reported() {
    let redis = redis_server();
    let (a, b) = (
        node(&redis.url, HubConfig::default()).await,
        node(&redis.url, HubConfig::default()).await,
    );
    let r = room("lost");
    let bob = b.connect(user("bob"));
    join(&b, &bob, &r, None).await;
    publish(&a, &r, "old", None).await;
    assert_eq!(received(&bob, 1).await.items, ["old@1"]);
    let mut conn = cut_pubsub(&redis.url).await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    // (The nodes' own keys went too: heartbeats bring theirs back.)
    for i in 0..3 {
        publish(&a, &r, &format!("new{i}"), None).await;
    }
    allow_pubsub(&mut conn).await;
    let got = received(&bob, 4).await;
    // First the reset of bob's position (his client would skip offsets 1.. as seen).
    assert!(
        got.items[0].starts_with("reply Joined") && got.items[0].contains("recovered: false"),
        "{:?}",
        got.items
    );
    assert_eq!(got.items[1..], ["new0@1", "new1@2", "new2@3"]);
    assert!(
        got.lagged >= 1,
        "what the old epoch had after bob's position is unknown: said so"
    );
}

/// Redis lost its last writes but kept the room (AOF fsync'd every second and a crash; a
/// failover to a lagging replica): the offset goes back in the same epoch. A node that saw
/// the lost offsets moves the room to a new epoch and resets its members' positions, so
/// the next messages are not taken for repeats; a resume from a lost position resyncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_redis_rolled_back_moves_to_a_new_epoch_and_nothing_new_is_skipped() {
    let redis = redis_server();
    // (Its pub/sub connections broke with it.)
    let (a, _b, bob, r, old_epoch, mut conn) = rolled_back_room(&redis.url, "back").await;
    allow_pubsub(&mut conn).await;
    // Node b notices when it fills its gap, and moves the room on.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let epoch: String = redis::cmd("HGET")
            .arg("sb:{back}:m")
            .arg("epoch")
            .query_async(&mut conn)
            .await
            .unwrap();
        if epoch != old_epoch {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the room stayed in its old epoch"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publish(&a, &r, "new", None).await;
    let got = received(&bob, 2).await;
    assert!(
        got.items[0].starts_with("reply Joined") && got.items[0].contains("recovered: false"),
        "{:?}",
        got.items
    );
    assert_eq!(
        got.items[1], "new@1",
        "delivered, not skipped as a repeat of old1"
    );
    // A client that resumes from a lost position is told to resync.
    let carol = a.connect(user("carol"));
    let joined = join(&a, &carol, &r, Some((5, &old_epoch))).await;
    assert!(!joined.recovered);
}

/// The same rollback, and a publish from a node that saw the lost offsets before any node
/// filled its gap (its pub/sub is still cut): the script takes the node's position as a
/// floor and moves the room to a new epoch instead of handing out offset 4 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_into_a_rolled_back_room_starts_a_new_epoch_instead_of_reusing_an_offset() {
    let redis = redis_server();
    let (_a, b, bob, r, old_epoch, mut conn) = rolled_back_room(&redis.url, "floor").await;
    let Appended::Published { offset, epoch, .. } = publish(&b, &r, "new", None).await else {
        panic!("not published")
    };
    assert_ne!(epoch.as_str(), old_epoch, "a new epoch");
    assert_eq!(offset.0, 1);
    allow_pubsub(&mut conn).await;
    let got = received(&bob, 2).await;
    assert!(
        got.items[0].starts_with("reply Joined") && got.items[0].contains("recovered: false"),
        "{:?}",
        got.items
    );
    assert_eq!(got.items[1], "new@1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_leave_and_rejoin_does_not_wait_for_a_subscription_that_never_left() {
    let redis = redis_server();
    let config = HubConfig::default();
    let mut redis_config = RedisConfig::new(&redis.url, config.memory_store());
    // A stalled join would wait this long for its subscription.
    redis_config.timeout = Duration::from_secs(5);
    let backends = connect(redis_config).await.unwrap();
    let hub = Hub::with_backends(config, backends.store, backends.broker);
    let r = room("flicker");
    let ann = hub.connect(user("ann"));
    for _ in 0..5 {
        join(&hub, &ann, &r, None).await;
        assert!(hub.leave(&ann, &r));
        let started = Instant::now();
        join(&hub, &ann, &r, None).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the rejoin waited {:?}",
            started.elapsed()
        );
        assert!(hub.leave(&ann, &r));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_filled_from_history_keeps_its_origin() {
    let redis = redis_server();
    let b = node(&redis.url, HubConfig::default()).await;
    let r = room("origin");
    let bob = b.connect(user("bob"));
    join(&b, &bob, &r, None).await;
    publish(&b, &r, "first", None).await;
    assert_eq!(received(&bob, 1).await.items, ["first@1"]);
    let mut conn = cut_pubsub(&redis.url).await;
    // "Everyone but bob" (Socket.IO's socket.to(room)), published while b is cut off.
    let (done, rx) = answer();
    b.publish_from(
        &r,
        "test",
        None,
        Some(bob.id),
        |offset, ts| {
            Bytes::from(format!(
                r#"{{"text":"to","offset":{offset},"timestamp":{ts}}}"#
            ))
        },
        done,
    );
    assert_eq!(published(&rx.await.unwrap()), 2);
    allow_pubsub(&mut conn).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.is_empty() {
        assert!(Instant::now() < deadline, "the gap was not filled");
        bob.outbox.drain(&mut got);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(got[0].offset(), Some(Offset(2)));
    assert_eq!(got[0].origin(), Some(bob.id), "still not for bob");
}

/// A socket recovered on node B before node A, its old node, sent the expiry of its lost
/// connection: A's late expiry (and delete) must leave B's live record alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_expiry_from_the_old_node_leaves_the_recovered_sockets_record_alone() {
    let redis = redis_server();
    let config = |url: &str| {
        let mut config = RedisConfig::new(url, HubConfig::default().memory_store());
        config.recovery_window = Duration::from_secs(2);
        config
    };
    let a = connect(config(&redis.url)).await.unwrap();
    let b = connect(config(&redis.url)).await.unwrap();
    let mut conn = admin(&redis.url).await;
    let pttl = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("PTTL")
                .arg("sb:sio:pid1")
                .query_async::<i64>(&mut conn)
                .await
                .unwrap()
        }
    };
    a.records.put("pid1", "{\"n\":1}");
    // (Writes go through each node's ordered writer: wait until A's is applied.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while pttl(&mut conn).await < 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the record was not written"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(b.records.take("pid1").await.as_deref(), Some("{\"n\":1}"));
    b.records.put("pid1", "{\"n\":2}");
    while pttl(&mut conn).await < 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the record was not written"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.records.expire("pid1");
    a.records.delete("pid1");
    // (A's ordered writer applies both within the wait.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ttl = pttl(&mut conn).await;
    assert!(
        ttl > 10_000,
        "B's live record kept its long expiry ({ttl} ms)"
    );
    assert_eq!(b.records.take("pid1").await.as_deref(), Some("{\"n\":2}"));
    // Its own node's expiry applies.
    b.records.put("pid1", "{\"n\":3}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.records.expire("pid1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ttl = pttl(&mut conn).await;
    assert!((1..=2_000).contains(&ttl), "the window applies ({ttl} ms)");
}

/// Two nodes, `bob` on the second a member of `name`, five messages published from the
/// first and received; then Redis loses offsets 4 and 5 of the room (a rollback: the meta
/// hash and the stream go back, the epoch stays) while the nodes' pub/sub is cut. Returns
/// the nodes, bob, the room, its epoch and the admin connection holding pub/sub cut.
async fn rolled_back_room(
    url: &str,
    name: &str,
) -> (
    Arc<Hub>,
    Arc<Hub>,
    HubConn,
    RoomName,
    String,
    redis::aio::MultiplexedConnection,
) {
    let (a, b) = (
        node(url, HubConfig::default()).await,
        node(url, HubConfig::default()).await,
    );
    let r = room(name);
    let bob = b.connect(user("bob"));
    join(&b, &bob, &r, None).await;
    let mut old_epoch = String::new();
    for i in 1..=5 {
        if let Appended::Published { epoch, .. } = publish(&a, &r, &format!("old{i}"), None).await {
            old_epoch = epoch.as_str().to_owned();
        }
    }
    assert_eq!(received(&bob, 5).await.items.len(), 5);
    let mut conn = cut_pubsub(url).await;
    let _: () = redis::cmd("HSET")
        .arg(format!("sb:{{{name}}}:m"))
        .arg("offset")
        .arg(3)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("XDEL")
        .arg(format!("sb:{{{name}}}:s"))
        .arg("0-4")
        .arg("0-5")
        .query_async(&mut conn)
        .await
        .unwrap();
    (a, b, bob, r, old_epoch, conn)
}

/// The key of the presence entries in `r` of the node where `who` is (found in Redis: the
/// test does not know the nodes' numbers).
async fn node_presence_key(
    conn: &mut redis::aio::MultiplexedConnection,
    r: &RoomName,
    who: &str,
) -> String {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("sb:{{{}}}:p:*", r.as_str()))
        .query_async(conn)
        .await
        .unwrap();
    for key in keys {
        let n: Option<i64> = redis::cmd("HGET")
            .arg(&key)
            .arg(who)
            .query_async(conn)
            .await
            .unwrap();
        if n.is_some() {
            return key;
        }
    }
    panic!("{who} is on no node");
}

/// Who `hub` reads as present in `r`, sorted, as `user×connections`.
async fn present(hub: &Hub, r: &RoomName) -> Vec<String> {
    let mut v: Vec<String> = presence(hub, r)
        .await
        .into_iter()
        .map(|e| format!("{}×{}", e.user, e.connections))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ghost_left_by_a_lost_leave_is_removed_by_the_next_sweep_and_announced() {
    let redis = redis_server();
    let (a, b) = (
        node(&redis.url, HubConfig::default()).await,
        node(&redis.url, HubConfig::default()).await,
    );
    let lobby = room("lobby");
    let ann = a.connect(user("ann"));
    join(&a, &ann, &lobby, None).await;
    let bob = b.connect(user("bob"));
    join(&b, &bob, &lobby, None).await;
    assert_eq!(received(&ann, 1).await.items, ["+bob"]);
    // A leave of node a that Redis never applied: its entries still count "ghost".
    let mut conn = admin(&redis.url).await;
    let key = node_presence_key(&mut conn, &lobby, "ann").await;
    let _: () = redis::pipe()
        .cmd("HINCRBY")
        .arg(&key)
        .arg("ghost")
        .arg(1)
        .cmd("HINCRBY")
        .arg("sb:{lobby}:p")
        .arg("ghost")
        .arg(1)
        .cmd("INCR")
        .arg("sb:{lobby}:c")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(present(&b, &lobby).await, ["ann×1", "bob×1", "ghost×1"]);
    a.sweep();
    b.sweep();
    let deadline = Instant::now() + Duration::from_secs(5);
    while present(&b, &lobby).await != ["ann×1", "bob×1"] {
        assert!(Instant::now() < deadline, "the ghost stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        received(&bob, 1).await.items,
        ["-ghost"],
        "members are told"
    );
    assert!(received(&ann, 0)
        .await
        .items
        .contains(&"-ghost".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_forgotten_by_redis_is_restored_by_the_next_sweep() {
    let redis = redis_server();
    let a = node(&redis.url, HubConfig::default()).await;
    let lobby = room("lobby");
    let (mut ann, ann2, bob) = (
        a.connect(user("ann")),
        a.connect(user("ann")),
        a.connect(user("bob")),
    );
    ann.name = Some(Arc::from("Ann"));
    for c in [&ann, &ann2, &bob] {
        join(&a, c, &lobby, None).await;
    }
    assert_eq!(present(&a, &lobby).await, ["ann×2", "bob×1"]);
    let names = |entries: Vec<PresenceEntry>| {
        let mut v: Vec<(String, Option<String>)> = entries
            .into_iter()
            .map(|e| (e.user.to_string(), e.name.map(|n| n.to_string())))
            .collect();
        v.sort();
        v
    };
    let expected_names = [
        ("ann".to_string(), Some("Ann".to_string())),
        ("bob".to_string(), None),
    ];
    assert_eq!(names(presence(&a, &lobby).await), expected_names);
    let mut conn = admin(&redis.url).await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    assert!(present(&a, &lobby).await.is_empty(), "Redis forgot");
    a.sweep();
    let deadline = Instant::now() + Duration::from_secs(5);
    while present(&a, &lobby).await != ["ann×2", "bob×1"] {
        assert!(Instant::now() < deadline, "presence was not restored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // With the display names the connections joined with.
    assert_eq!(names(presence(&a, &lobby).await), expected_names);
    // The counts go on from there: a leave is counted once.
    assert!(a.leave(&ann2, &lobby));
    let deadline = Instant::now() + Duration::from_secs(5);
    while present(&a, &lobby).await != ["ann×1", "bob×1"] {
        assert!(Instant::now() < deadline, "the leave after the sync");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_or_leave_the_sync_already_counted_is_ignored_when_it_arrives_late() {
    let redis = redis_server();
    let log = switchboard_broker_redis::RedisLog::connect(
        &redis.url,
        switchboard_broker_redis::LogConfig::default(),
    )
    .await
    .unwrap();
    log.load_scripts().await.unwrap();
    let mut conn = admin(&redis.url).await;
    let run = |args: &[&str]| log.presence_command("lobby", 7, args);
    async fn total(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
        let n: Option<i64> = redis::cmd("HGET")
            .arg("sb:{lobby}:p")
            .arg("ann")
            .query_async(conn)
            .await
            .unwrap();
        n.unwrap_or(0)
    }
    // The snapshot at number 10 counts one connection of ann.
    let _: redis::Value = run(&["sync", "10", "ann", "1", ""])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(total(&mut conn).await, 1);
    // Its join (number 9) arrives after it: already counted.
    let _: redis::Value = run(&["join", "ann", "0", "", "9"])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(total(&mut conn).await, 1);
    // A later join counts.
    let _: redis::Value = run(&["join", "ann", "0", "", "11"])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(total(&mut conn).await, 2);
    // A late leave (number 8) is ignored; a new one counts.
    let _: redis::Value = run(&["leave", "ann", "8"])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(total(&mut conn).await, 2);
    let _: redis::Value = run(&["leave", "ann", "12"])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(total(&mut conn).await, 1);
    // A sync of nothing empties the node's share and says who vanished.
    let answer: redis::Value = run(&["sync", "13"]).query_async(&mut conn).await.unwrap();
    assert_eq!(total(&mut conn).await, 0);
    let redis::Value::Array(items) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(
        items[1],
        redis::Value::Array(vec![redis::Value::BulkString(b"ann".to_vec())])
    );
    assert_eq!(items[2], redis::Value::Int(0));
    // A sync older than a change already applied (a retried command that came late) is
    // refused: it would undo that change.
    let _: redis::Value = run(&["join", "ann", "0", "", "20"])
        .query_async(&mut conn)
        .await
        .unwrap();
    let refused: redis::Value = run(&["sync", "15", "ann", "5", ""])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(refused, redis::Value::Array(vec![]));
    assert_eq!(total(&mut conn).await, 1);
    // A sync records a display name for a user who has none, and leaves one a join gave
    // (that is the latest connection's).
    async fn name(conn: &mut redis::aio::MultiplexedConnection) -> Option<String> {
        redis::cmd("HGET")
            .arg("sb:{lobby}:n")
            .arg("ann")
            .query_async(conn)
            .await
            .unwrap()
    }
    assert_eq!(name(&mut conn).await, None);
    let _: redis::Value = run(&["sync", "21", "ann", "1", "Ann"])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(name(&mut conn).await.as_deref(), Some("Ann"));
    let _: redis::Value = run(&["join", "ann", "1", "Annie", "22"])
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: redis::Value = run(&["sync", "23", "ann", "2", "Ann"])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(name(&mut conn).await.as_deref(), Some("Annie"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ghost_in_a_room_the_node_left_is_removed_once_redis_takes_scripts_again() {
    let redis = redis_server();
    // Heartbeats (and so the resync of released rooms) every 200 ms.
    let config = HubConfig {
        presence_expiry: Duration::from_millis(600),
        ..HubConfig::default()
    };
    let (a, b) = (
        node(&redis.url, config.clone()).await,
        node(&redis.url, config).await,
    );
    let lobby = room("lobby");
    let bob = b.connect(user("bob"));
    join(&b, &bob, &lobby, None).await;
    let ann = a.connect(user("ann"));
    join(&a, &ann, &lobby, None).await;
    assert_eq!(received(&bob, 1).await.items, ["+ann"]);
    // Redis refuses scripts: ann's leave (node a's last member there) and the empty sync
    // that follows it both fail.
    let mut conn = admin(&redis.url).await;
    let acl = |rule: &'static str| {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER").arg("default").arg(rule);
        cmd
    };
    let _: () = acl("-evalsha").query_async(&mut conn).await.unwrap();
    assert!(a.leave(&ann, &lobby));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(present(&b, &lobby).await, ["ann×1", "bob×1"], "a ghost");
    let _: () = acl("+evalsha").query_async(&mut conn).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while present(&b, &lobby).await != ["bob×1"] {
        assert!(Instant::now() < deadline, "the ghost stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        received(&bob, 1).await.items,
        ["-ann"],
        "and it is announced"
    );
}
