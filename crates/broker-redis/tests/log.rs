//! The Redis log against a real `redis-server` (tests/common).
#![allow(clippy::unwrap_used)]

mod common;

use common::redis_server;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{json, Value};
use switchboard_broker_redis::{channel, parse_envelope, Appended, LogConfig, RedisLog};
use switchboard_native_proto::{stamp_relay, Stamp};

fn message(room: &str, body: Value) -> impl FnOnce(u64, u64) -> Bytes {
    let room = room.to_owned();
    move |offset, timestamp_ms| {
        let Value::Object(body) = body else {
            unreachable!()
        };
        stamp_relay(
            body,
            &Stamp {
                user_id: "u1",
                user: None,
                room: &room,
                timestamp_ms,
                offset,
                generated_id: "g",
            },
        )
    }
}

/// A plain publish of `body` (type `chat`) to `room`.
async fn chat(
    log: &RedisLog,
    room: &str,
    body: Value,
) -> Result<Appended, switchboard_broker_redis::Error> {
    log.append(room, "chat", None, None, message(room, body))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_get_one_gap_free_sequence_stored_and_published_in_order() {
    let redis = redis_server();
    let log = RedisLog::connect(&redis.url, LogConfig::default())
        .await
        .unwrap();
    // A subscriber on the room's channel (as every node with members will be).
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(channel("race")).await.unwrap();

    // Two "nodes" publish 150 messages each at once.
    let mut tasks = Vec::new();
    for node in 0..2 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut offsets = Vec::new();
            for i in 0..150 {
                let body = json!({"type": "chat", "node": node, "i": i});
                match log
                    .append("race", "chat", None, None, message("race", body))
                    .await
                    .unwrap()
                {
                    Appended::Published { offset, .. } => offsets.push(offset),
                    other => panic!("{other:?}"),
                }
            }
            offsets
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let offsets = t.await.unwrap();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "each node's offsets increase"
        );
        all.extend(offsets);
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=300).collect::<Vec<u64>>(),
        "one sequence, no gap, no repeat"
    );

    // The history holds every message, stamped with its own offset, in offset order.
    let page = log.read("race", 0, 1000).await.unwrap();
    assert_eq!(page.last_offset, 300);
    let epoch = page.epoch.clone().expect("the room has an epoch");
    // `MAXLEN ~`: at least history_len of the newest, trimmed by whole stream nodes.
    let kept: Vec<u64> = page.messages.iter().map(|m| m.0).collect();
    assert!(
        (100..=200).contains(&kept.len()),
        "kept {} messages",
        kept.len()
    );
    assert_eq!(
        kept,
        ((301 - kept.len() as u64)..=300).collect::<Vec<u64>>(),
        "the newest, gap-free"
    );
    for (offset, bytes) in &page.messages {
        let m: Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(m["offset"], *offset);
        assert!(m["timestamp"].as_u64().unwrap() > 1_700_000_000_000);
        assert_eq!(
            (m["type"].as_str(), m["room"].as_str()),
            (Some("chat"), Some("race"))
        );
    }
    let after = log.read("race", 295, 10).await.unwrap();
    assert_eq!(
        after.messages.iter().map(|m| m.0).collect::<Vec<_>>(),
        vec![296, 297, 298, 299, 300]
    );

    // The channel saw all 300 envelopes in offset order, each matching the history.
    let mut stream = pubsub.on_message();
    let mut seen = Vec::new();
    while seen.len() < 300 {
        let msg = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("a published envelope")
            .unwrap();
        let payload: Vec<u8> = msg.get_payload().unwrap();
        let envelope = parse_envelope(&Bytes::from(payload)).expect("an envelope");
        assert_eq!(
            (envelope.epoch.as_str(), envelope.kind.as_str()),
            (epoch.as_str(), "chat")
        );
        let m: Value = serde_json::from_slice(&envelope.message).unwrap();
        assert_eq!(m["offset"], envelope.offset);
        assert_eq!(m["timestamp"], envelope.timestamp_ms);
        seen.push(envelope.offset);
    }
    assert_eq!(seen, (1..=300).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_id_is_published_once_and_answers_the_first_offset() {
    let redis = redis_server();
    let log = RedisLog::connect(&redis.url, LogConfig::default())
        .await
        .unwrap();
    let first = log
        .append(
            "dedup",
            "chat",
            Some((1, 9)),
            Some(("u1", "m-1")),
            message("dedup", json!({"type": "chat", "id": "m-1"})),
        )
        .await
        .unwrap();
    let Appended::Published { offset, epoch, .. } = first else {
        panic!("{first:?}")
    };
    // Two retries at once: both duplicates of the first.
    let (a, b) = tokio::join!(
        log.append(
            "dedup",
            "chat",
            None,
            Some(("u1", "m-1")),
            message("dedup", json!({"type": "chat"}))
        ),
        log.append(
            "dedup",
            "chat",
            None,
            Some(("u1", "m-1")),
            message("dedup", json!({"type": "chat"}))
        ),
    );
    for retry in [a.unwrap(), b.unwrap()] {
        assert_eq!(
            retry,
            Appended::Duplicate {
                offset,
                epoch: epoch.clone()
            }
        );
    }
    // Another sender's same id, and the same sender's other id, are new messages.
    for once in [("u2", "m-1"), ("u1", "m-2")] {
        let r = log
            .append(
                "dedup",
                "chat",
                None,
                Some(once),
                message("dedup", json!({"type": "chat"})),
            )
            .await
            .unwrap();
        assert!(matches!(r, Appended::Published { .. }), "{once:?}: {r:?}");
    }
    assert_eq!(log.read("dedup", 0, 10).await.unwrap().messages.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_lost_by_redis_comes_back_in_a_new_epoch() {
    let redis = redis_server();
    let log = RedisLog::connect(&redis.url, LogConfig::default())
        .await
        .unwrap();
    let publish = || chat(&log, "lost", json!({"type": "chat"}));
    let Appended::Published { epoch: before, .. } = publish().await.unwrap() else {
        panic!()
    };
    assert_eq!(
        log.read("nothing", 0, 10).await.unwrap().epoch,
        None,
        "no room, no epoch"
    );
    // Redis loses everything (a restart without persistence).
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let Appended::Published {
        offset,
        epoch: after,
        ..
    } = publish().await.unwrap()
    else {
        panic!()
    };
    assert_eq!(offset, 1, "offsets start over");
    assert_ne!(after, before, "in a new epoch, so clients see the loss");
}

/// Redis lost its last writes but kept the room (an AOF fsync'd every second and a crash,
/// a failover to a lagging replica): the meta hash and the stream go back, the epoch
/// stays. A client that saw the lost offsets must not be told its position is covered:
/// the next publishes reuse those offsets, and it would skip them as already seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_past_a_rolled_back_room_is_not_covered() {
    let redis = redis_server();
    let log = RedisLog::connect(&redis.url, LogConfig::default())
        .await
        .unwrap();
    let mut epoch = String::new();
    for i in 0..10 {
        let body = json!({"type": "tick", "i": i});
        if let Appended::Published { epoch: e, .. } = log
            .append("back", "tick", None, None, message("back", body))
            .await
            .unwrap()
        {
            epoch = e;
        }
    }
    // The state Redis would come back with after losing offsets 8 to 10.
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg("sb:{back}:m")
        .arg("offset")
        .arg(7)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("XDEL")
        .arg("sb:{back}:s")
        .arg("0-8")
        .arg("0-9")
        .arg("0-10")
        .query_async(&mut conn)
        .await
        .unwrap();
    let page = log
        .read_range("back", 10, Some(&epoch), 10, 1 << 20)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((page.epoch.as_str(), page.last_offset), (epoch.as_str(), 7));
    assert!(!page.covered, "offset 10 is past the room's last offset");
    // Positions the room still has are covered as before.
    let page = log
        .read_range("back", 7, Some(&epoch), 10, 1 << 20)
        .await
        .unwrap()
        .unwrap();
    assert!(page.covered && page.entries.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_read_is_the_newest_within_bounds_and_says_whether_history_covers_the_gap() {
    let redis = redis_server();
    let config = LogConfig {
        history_len: 10,
        ..LogConfig::default()
    };
    let log = RedisLog::connect(&redis.url, config).await.unwrap();
    assert_eq!(
        log.read_range("none", 0, None, 10, 1 << 20).await.unwrap(),
        None,
        "no room"
    );
    let mut epoch = String::new();
    for i in 0..200 {
        let body = json!({"type": "tick", "i": i});
        if let Appended::Published { epoch: e, .. } = log
            .append("range", "tick", None, None, message("range", body))
            .await
            .unwrap()
        {
            epoch = e;
        }
    }
    // The newest 3 after 150, oldest first, with kind and timestamp kept.
    let page = log
        .read_range("range", 150, Some(&epoch), 3, 1 << 20)
        .await
        .unwrap()
        .unwrap();
    let offsets: Vec<u64> = page.entries.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, [198, 199, 200]);
    assert!(page
        .entries
        .iter()
        .all(|e| e.kind == "tick" && e.timestamp_ms > 1_700_000_000_000));
    let m: Value = serde_json::from_slice(&page.entries[0].message).unwrap();
    assert_eq!(
        (m["offset"].as_u64(), m["timestamp"].as_u64()),
        (Some(198), Some(page.entries[0].timestamp_ms))
    );
    assert_eq!((page.last_offset, page.more), (200, false));
    // 150 is long trimmed (history_len 10, ~): not covered; a recent position is.
    assert!(!page.covered, "offset 150 is no longer retained");
    let recent = log
        .read_range("range", 199, Some(&epoch), 10, 1 << 20)
        .await
        .unwrap()
        .unwrap();
    assert!(recent.covered);
    assert_eq!(recent.entries.len(), 1);
    // Another epoch is never covered; the present position is covered with nothing to send.
    assert!(
        !log.read_range("range", 199, Some("other"), 10, 1 << 20)
            .await
            .unwrap()
            .unwrap()
            .covered
    );
    let now = log
        .read_range("range", 200, Some(&epoch), 10, 1 << 20)
        .await
        .unwrap()
        .unwrap();
    assert!(now.covered && now.entries.is_empty());
    // The byte bound keeps the oldest that fit (at least one) and says more follow.
    let one = log
        .read_range("range", 195, Some(&epoch), 10, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (one.entries.len(), one.entries[0].offset, one.more),
        (1, 196, true)
    );
}

/// Redis dropped the room's meta hash but kept its stream (evicted under `allkeys-lru`,
/// expired apart): the new epoch starts with an empty history, not the old epoch's entries,
/// whose ids would also refuse the new offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_that_lost_its_meta_but_not_its_stream_starts_a_new_epoch_from_an_empty_history() {
    let redis = redis_server();
    let log = RedisLog::connect(&redis.url, LogConfig::default())
        .await
        .unwrap();
    let publish = |n: u64| chat(&log, "meta", json!({"type": "chat", "n": n}));
    for n in 1..=3 {
        publish(n).await.unwrap();
    }
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg("sb:{meta}:m")
        .query_async(&mut conn)
        .await
        .unwrap();
    let Appended::Published { offset, .. } = publish(4).await.unwrap() else {
        panic!("not published")
    };
    assert_eq!(offset, 1);
    let page = log.read("meta", 0, 10).await.unwrap();
    assert_eq!(page.messages.len(), 1, "only the new epoch's message");
    let body: Value = serde_json::from_slice(&page.messages[0].1).unwrap();
    assert_eq!(body["n"], 4);
}

/// An append Redis refuses (here: the stream's key holds a string) fails the publish and
/// counts no offset: the next message takes the next offset, leaving no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_append_counts_no_offset() {
    let redis = redis_server();
    let log = RedisLog::connect(&redis.url, LogConfig::default())
        .await
        .unwrap();
    let publish = || chat(&log, "refused", json!({"type": "chat"}));
    publish().await.unwrap();
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg("sb:{refused}:s")
        .arg("not a stream")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(publish().await.is_err(), "the append is refused");
    let _: () = redis::cmd("DEL")
        .arg("sb:{refused}:s")
        .query_async(&mut conn)
        .await
        .unwrap();
    let Appended::Published { offset, .. } = publish().await.unwrap() else {
        panic!("not published")
    };
    assert_eq!(offset, 2, "the refused append took no offset");
}
