//! Hubs on Redis for the tests: a node (a hub with the Redis store and broker, as a
//! process would have), and its operations awaited.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_broker_redis::{connect, RedisConfig};
use switchboard_hub::{
    Appended, Body, Hub, HubConfig, HubConn, Joined, Offset, PresenceEntry, RoomName, UserId,
};

pub(crate) fn room(s: &str) -> RoomName {
    RoomName::new(s).unwrap()
}

pub(crate) fn user(s: &str) -> UserId {
    UserId(Arc::from(s))
}

pub(crate) async fn node(url: &str, config: HubConfig) -> Arc<Hub> {
    let redis = connect(RedisConfig::new(url, config.memory_store()))
        .await
        .unwrap();
    Hub::with_backends(config, redis.store, redis.broker)
}

/// A callback's answer, awaited.
pub(crate) fn answer<T: Send + 'static>() -> (
    impl FnOnce(T) + Send + 'static,
    tokio::sync::oneshot::Receiver<T>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    (move |v| drop(tx.send(v)), rx)
}

pub(crate) async fn join(
    hub: &Hub,
    conn: &HubConn,
    r: &RoomName,
    since: Option<(u64, &str)>,
) -> Joined {
    let (done, rx) = answer();
    hub.join(
        conn,
        r,
        since.map(|(o, e)| (Offset(o), switchboard_hub::Epoch::from(e))),
        done,
    );
    tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .unwrap()
        .unwrap()
}

pub(crate) async fn publish(
    hub: &Hub,
    r: &RoomName,
    text: &str,
    once: Option<(&UserId, &str)>,
) -> Appended {
    let (done, rx) = answer();
    let text = text.to_owned();
    hub.publish(
        r,
        "test",
        once,
        move |offset, ts| {
            Bytes::from(format!(
                r#"{{"text":"{text}","offset":{offset},"timestamp":{ts}}}"#
            ))
        },
        done,
    );
    tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .unwrap()
        .unwrap()
}

pub(crate) async fn presence(hub: &Hub, r: &RoomName) -> Vec<PresenceEntry> {
    let (done, rx) = answer();
    hub.presence(r, done);
    rx.await.unwrap().unwrap()
}

/// What `conn` got, as text: messages without their timestamp, presence as `+user`/`-user`;
/// and the lagged count.
#[derive(Default)]
pub(crate) struct Received {
    pub(crate) items: Vec<String>,
    pub(crate) lagged: u64,
}

pub(crate) fn drain(conn: &HubConn, into: &Mutex<Received>) {
    let mut v = Vec::new();
    let lagged = conn.outbox.drain(&mut v);
    let mut r = into.lock().unwrap();
    r.lagged += lagged;
    for d in v {
        r.items.push(match d.body() {
            Body::Message { json, .. } => {
                let v: serde_json::Value = serde_json::from_slice(json).unwrap();
                format!("{}@{}", v["text"].as_str().unwrap(), v["offset"])
            }
            Body::Presence(p) => format!("{}{}", if p.joined { "+" } else { "-" }, p.user),
            Body::Reply(m) => format!("reply {m:?}"),
        });
    }
}

/// Drain `conn` until it has `n` items (or fail after 5 s).
pub(crate) async fn received(conn: &HubConn, n: usize) -> Received {
    let into = Mutex::new(Received::default());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        drain(conn, &into);
        if into.lock().unwrap().items.len() >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {:?}",
            into.lock().unwrap().items
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Nothing more than expected arrives.
    tokio::time::sleep(Duration::from_millis(100)).await;
    drain(conn, &into);
    into.into_inner().unwrap()
}

pub(crate) fn published(a: &Appended) -> u64 {
    match a {
        Appended::Published { offset, .. } => offset.0,
        other => panic!("{other:?}"),
    }
}

/// What `conn` holds now (see [`received`]), without waiting.
pub(crate) fn received_now(conn: &HubConn) -> Received {
    let into = Mutex::new(Received::default());
    drain(conn, &into);
    into.into_inner().unwrap()
}
