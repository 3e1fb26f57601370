//! Nodes on a Redis Cluster (three masters on loopback, real `redis-server` processes)
//! behave as on one Redis: rooms spread over every shard, sharded pub/sub, our own
//! resubscription after a shard's connection breaks or a slot moves, node-level keys,
//! connection limits, presence of dead nodes and forwarding.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::hub::*;
use common::{redis_cluster, RedisCluster};
use switchboard_broker_redis::{channel, connect, ForwardError, Limited, Redis, RedisConfig};
use switchboard_hub::{HubConfig, HubConn, RoomName};

/// `count` rooms whose slots cover all three shards.
fn rooms_on_every_shard(cluster: &RedisCluster, count: usize) -> Vec<RoomName> {
    let rooms: Vec<RoomName> = (0..count).map(|i| room(&format!("room-{i}"))).collect();
    let shards: HashSet<usize> = rooms
        .iter()
        .map(|r| cluster.owner_of(&channel(r.as_str())).0)
        .collect();
    assert_eq!(
        shards.len(),
        3,
        "pick other names: not every shard has a room"
    );
    rooms
}

/// The messages in `items` (`<room>/<n>@<offset>`), per room, in arrival order.
fn per_room(items: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut rooms: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for item in items.iter().filter(|i| !i.starts_with(['+', '-'])) {
        let (room, rest) = item.split_once('/').unwrap();
        rooms
            .entry(room.to_owned())
            .or_default()
            .push(rest.to_owned());
    }
    rooms
}

/// Drain `conn` until it has `n` messages (presence changes not counted).
async fn messages(conn: &HubConn, n: usize) -> Received {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut all = Received::default();
    loop {
        let got = received_now(conn);
        all.items.extend(got.items);
        all.lagged += got.lagged;
        let count = all
            .items
            .iter()
            .filter(|i| !i.starts_with(['+', '-']))
            .count();
        if count >= n {
            break;
        }
        assert!(Instant::now() < deadline, "only {:?}", all.items);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Nothing more than expected arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late = received_now(conn);
    all.items.extend(late.items);
    all.lagged += late.lagged;
    all
}

/// Publish `count` messages to each room (`<room>/<n>`, n from `first`), from the nodes in
/// turn.
async fn publish_rounds(
    nodes: &[&switchboard_hub::Hub],
    rooms: &[RoomName],
    first: usize,
    count: usize,
) {
    for n in first..first + count {
        for (i, r) in rooms.iter().enumerate() {
            let hub = nodes[(n + i) % nodes.len()];
            publish(hub, r, &format!("{}/{n}", r.as_str()), None).await;
        }
    }
}

/// What each room should show: `<n>@<offset>` for n in `0..count` (offset n + 1).
fn expected(rooms: &[RoomName], count: usize) -> BTreeMap<String, Vec<String>> {
    rooms
        .iter()
        .map(|r| {
            let list = (0..count).map(|n| format!("{n}@{}", n + 1)).collect();
            (r.as_str().to_owned(), list)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_three_nodes_get_every_message_of_rooms_on_every_shard_once_in_order() {
    let cluster = redis_cluster();
    let (a, b, c) = (
        node(&cluster.url, HubConfig::default()).await,
        node(&cluster.url, HubConfig::default()).await,
        node(&cluster.url, HubConfig::default()).await,
    );
    let rooms = rooms_on_every_shard(&cluster, 9);
    let members: Vec<HubConn> = [&a, &b, &c]
        .iter()
        .enumerate()
        .map(|(i, hub)| hub.connect(user(&format!("u{i}"))))
        .collect();
    for r in &rooms {
        let mut epochs = HashSet::new();
        for (hub, member) in [&a, &b, &c].iter().zip(&members) {
            epochs.insert(join(hub, member, r, None).await.epoch);
        }
        assert_eq!(
            epochs.len(),
            1,
            "one epoch per room, whichever node answered"
        );
    }
    publish_rounds(&[&a, &b, &c], &rooms, 0, 6).await;
    for member in &members {
        let got = messages(member, rooms.len() * 6).await;
        assert_eq!(per_room(&got.items), expected(&rooms, 6));
        assert_eq!(got.lagged, 0);
    }
    // Presence is the deployment's, on every shard.
    for r in &rooms {
        let mut users: Vec<String> = presence(&c, r)
            .await
            .into_iter()
            .map(|e| e.user.0.to_string())
            .collect();
        users.sort();
        assert_eq!(users, ["u0", "u1", "u2"], "{r:?}");
    }
    // A leave on one node reaches the others.
    assert!(b.leave(&members[1], &rooms[0]));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while !seen.contains(&"-u1".to_owned()) {
        assert!(
            Instant::now() < deadline,
            "the leave never arrived: {seen:?}"
        );
        seen.extend(received_now(&members[0]).items);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shard_cutting_its_pubsub_connections_loses_nothing() {
    common::trace();
    let cluster = redis_cluster();
    let (a, b) = (
        node(&cluster.url, HubConfig::default()).await,
        node(&cluster.url, HubConfig::default()).await,
    );
    let rooms = rooms_on_every_shard(&cluster, 9);
    let bob = b.connect(user("bob"));
    for r in &rooms {
        join(&b, &bob, r, None).await;
    }
    publish_rounds(&[&a], &rooms, 0, 1).await;
    assert_eq!(messages(&bob, rooms.len()).await.lagged, 0);
    // Every shard drops every pub/sub connection (both nodes' subscribers); publishing goes
    // on meanwhile. (redis 1.8's own resubscription would leave the rooms of any shard
    // with two subscribed slots unsubscribed: one SSUBSCRIBE per shard is refused.)
    // (A shard whose connection the client is already replacing may have none to kill.)
    let killed: i64 = (0..3)
        .map(|node| {
            let killed = cluster.cli(node, &["CLIENT", "KILL", "TYPE", "pubsub"]);
            killed.trim().parse::<i64>().unwrap()
        })
        .sum();
    assert!(killed >= 3, "only {killed} pub/sub connections to cut");
    publish_rounds(&[&a], &rooms, 1, 10).await;
    // Live again (not only filled from history): these arrive over pub/sub.
    tokio::time::sleep(Duration::from_millis(500)).await;
    publish_rounds(&[&a], &rooms, 11, 1).await;
    let got = messages(&bob, rooms.len() * 11).await;
    let want: BTreeMap<String, Vec<String>> = expected(&rooms, 12)
        .into_iter()
        .map(|(r, list)| (r, list[1..].to_vec()))
        .collect();
    assert_eq!(per_room(&got.items), want, "no gap, no duplicate, in order");
    assert_eq!(got.lagged, 0);
    for r in &rooms {
        let (owner, _) = cluster.owner_of(&channel(r.as_str()));
        let subscribers = cluster.cli(owner, &["PUBSUB", "SHARDNUMSUB", &channel(r.as_str())]);
        assert_eq!(
            subscribers.lines().nth(1),
            Some("1"),
            "{r:?} subscribed again on its shard"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_whose_slot_moves_to_another_shard_keeps_its_history_and_its_members() {
    let cluster = redis_cluster();
    let (a, b) = (
        node(&cluster.url, HubConfig::default()).await,
        node(&cluster.url, HubConfig::default()).await,
    );
    let mover = room("mover");
    let bob = b.connect(user("bob"));
    let joined = join(&b, &bob, &mover, None).await;
    publish_rounds(&[&a], std::slice::from_ref(&mover), 0, 3).await;
    assert_eq!(messages(&bob, 3).await.lagged, 0);
    let (from, slot) = cluster.owner_of(&channel("mover"));
    let to = (from + 1) % 3;
    // The old shard drops the room's subscription when the slot leaves it.
    cluster.move_slot(slot, from, to);
    assert_eq!(cluster.owner_of(&channel("mover")).0, to);
    publish_rounds(&[&a], std::slice::from_ref(&mover), 3, 3).await;
    let got = messages(&bob, 3).await;
    assert_eq!(
        per_room(&got.items)["mover"],
        ["3@4", "4@5", "5@6"],
        "subscribed again at the new shard"
    );
    assert_eq!(got.lagged, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while cluster
        .cli(to, &["PUBSUB", "SHARDNUMSUB", &channel("mover")])
        .lines()
        .nth(1)
        != Some("1")
    {
        assert!(Instant::now() < deadline, "not subscribed at the new shard");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The history moved with the slot: a member back from before the move is replayed.
    let ann = a.connect(user("ann"));
    let resumed = join(&a, &ann, &mover, Some((2, joined.epoch.as_str()))).await;
    assert!(resumed.recovered);
    assert_eq!(resumed.replayed, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_dead_nodes_and_forwarding_work_across_shards() {
    let cluster = redis_cluster();
    let config = HubConfig {
        presence_expiry: Duration::from_millis(900),
        ..HubConfig::default()
    };
    let connect_node = || connect(RedisConfig::new(&cluster.url, config.memory_store()));
    let (a, b): (Redis, Redis) = (connect_node().await.unwrap(), connect_node().await.unwrap());

    // Connection limits over both nodes (the counters sit on several shards).
    for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
        assert_eq!(
            a.limits.acquire(Some(ip), Some("ann"), 2, 3).await,
            Ok(true)
        );
        assert_eq!(b.limits.acquire(Some(ip), None, 2, 2).await, Ok(true));
        assert_eq!(
            b.limits.acquire(Some(ip), None, 2, 2).await,
            Err(Limited::Address)
        );
    }
    assert_eq!(
        b.limits.acquire(None, Some("ann"), 2, 3).await,
        Err(Limited::User)
    );

    // Forwarding to a node's inbox (a shard channel) and to a node that does not exist.
    b.forwarder.serve(Arc::new(|request: Bytes| {
        Box::pin(async move { Bytes::from([b"ran: ".as_slice(), &request].concat()) })
    }));
    let target = b.forwarder.node();
    let deadline = Instant::now() + Duration::from_secs(5);
    let answer = loop {
        let answer = a
            .forwarder
            .request(target, Bytes::from_static(b"x"), Duration::from_secs(1))
            .await;
        if answer.is_ok() || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(answer, Ok(Bytes::from_static(b"ran: x")));
    let nobody = target.wrapping_add(1);
    assert_eq!(
        a.forwarder
            .request(nobody, Bytes::from_static(b"x"), Duration::from_secs(30))
            .await,
        Err(ForwardError::Gone)
    );

    // A node that dies with members and connections: its presence and its share of the
    // counts go with its heartbeat (node-level keys in one slot: the sweep's pipelines).
    let hub_a =
        switchboard_hub::Hub::with_backends(config.clone(), a.store.clone(), a.broker.clone());
    let rooms = rooms_on_every_shard(&cluster, 9);
    let watchers: Vec<HubConn> = rooms
        .iter()
        .map(|_| hub_a.connect(user("watcher")))
        .collect();
    for (r, w) in rooms.iter().zip(&watchers) {
        join(&hub_a, w, r, None).await;
    }
    {
        let doomed = connect_node().await.unwrap();
        assert_eq!(
            doomed.limits.acquire(None, Some("zed"), 2, 1).await,
            Ok(true)
        );
        let hub = switchboard_hub::Hub::with_backends(config.clone(), doomed.store, doomed.broker);
        let zed = hub.connect(user("zed"));
        for r in &rooms {
            join(&hub, &zed, r, None).await;
        }
        for (r, w) in rooms.iter().zip(&watchers) {
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut seen = Vec::new();
            while !seen.contains(&"+zed".to_owned()) {
                assert!(Instant::now() < deadline, "{r:?}: {seen:?}");
                seen.extend(received_now(w).items);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // Dropped without leaving: the node's tasks end with it, as a killed process's.
        std::mem::forget(zed);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    hub_a.sweep();
    for (r, w) in rooms.iter().zip(&watchers) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        while !seen.contains(&"-zed".to_owned()) {
            assert!(Instant::now() < deadline, "{r:?}: zed never left: {seen:?}");
            seen.extend(received_now(w).items);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let users: Vec<String> = presence(&hub_a, r)
            .await
            .into_iter()
            .map(|e| e.user.0.to_string())
            .collect();
        assert_eq!(users, ["watcher"]);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.limits.acquire(None, Some("zed"), 2, 1).await != Ok(true) {
        assert!(
            Instant::now() < deadline,
            "zed's dead share is still counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
