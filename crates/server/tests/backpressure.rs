//! Backpressure policies (SPEC §6): a member that does not read loses messages under `drop`
//! (and is told how many) or is closed with 4003 under `close`; a healthy member in the same
//! rooms gets everything, in order.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::{start, Ending, TestClient};
use switchboard_hub::{HubConfig, OverflowPolicy, RoomPattern};
use switchboard_server::ServerConfig;
use switchboard_ws_proto::{CloseCode, CloseFrame, MessageKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MESSAGES: usize = 5000;

fn config() -> ServerConfig {
    ServerConfig {
        session: switchboard_server::SessionConfig {
            rate_limit: None,
            ..Default::default()
        },
        max_pending_output: 16 * 1024,
        hub: HubConfig {
            outbox_budget: 512 * 1024,
            overflow: vec![(RoomPattern::new("strict:*"), OverflowPolicy::Close)],
            ..HubConfig::default()
        },
        ..ServerConfig::default()
    }
}

/// After `welcome`, join every room in `rooms`.
async fn join(client: &mut TestClient, rooms: &[&str]) {
    client.expect_type("welcome").await;
    for room in rooms {
        client
            .send_text(&format!(r#"{{"type":"join","room":"{room}"}}"#))
            .await;
        client.expect_type("joined").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_members_are_dropped_from_or_closed_by_policy_while_others_get_everything() {
    let server = start(config()).await;
    let mut strict = TestClient::connect_small_window(server.addr, "/ws").await;
    join(&mut strict, &["strict:a"]).await;
    let mut loose = TestClient::connect_small_window(server.addr, "/ws").await;
    join(&mut loose, &["loose:a"]).await;
    let mut healthy = TestClient::connect(server.addr, "/ws", false).await;
    join(&mut healthy, &["strict:a", "loose:a"]).await;
    let mut publisher = TestClient::connect(server.addr, "/ws", false).await;
    join(&mut publisher, &["strict:a", "loose:a"]).await;

    // The healthy member reads concurrently and must see every message of both rooms.
    let reader = tokio::spawn(async move {
        let mut last = std::collections::HashMap::<String, u64>::new();
        let mut seen = 0;
        while seen < 2 * MESSAGES {
            let Some(m) = healthy.next_json().await else {
                panic!("healthy member was closed");
            };
            if m["type"] != "publish" {
                continue;
            }
            let room = m["room"].as_str().unwrap().to_owned();
            let offset = m["offset"].as_u64().unwrap();
            let prev = last.insert(room.clone(), offset).unwrap_or(0);
            assert_eq!(offset, prev + 1, "gap or reorder in {room}");
            seen += 1;
        }
    });
    // The publisher reads (and discards) everything it gets back in its own task, so that it
    // is not a slow reader of its own rooms.
    let mut codec = publisher.conn;
    let (mut from_server, mut to_server) = publisher.stream.into_split();
    let discard = tokio::spawn(async move {
        let mut scratch = vec![0u8; 64 * 1024];
        while from_server.read(&mut scratch).await.is_ok_and(|n| n > 0) {}
    });
    let filler = "x".repeat(1000);
    for i in 0..MESSAGES {
        for room in ["strict:a", "loose:a"] {
            codec.send(
                MessageKind::Text,
                format!(r#"{{"type":"publish","room":"{room}","data":"{i} {filler}"}}"#).as_bytes(),
            );
        }
        if i % 32 == 0 {
            to_server.write_all(&codec.output().split()).await.unwrap();
            // Paced so that the healthy member (an unoptimized test client) keeps up; the
            // stalled members still receive megabytes more than their budget.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    to_server.write_all(&codec.output().split()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("healthy member did not get every message in time")
        .unwrap();

    // `close` policy: what was written before the overflow, then 4003.
    let ending = tokio::time::timeout(Duration::from_secs(10), strict.ending())
        .await
        .unwrap();
    assert_eq!(
        ending,
        Ending::Close(Some(CloseFrame::new(
            CloseCode::Application(4003),
            "Buffer overflow"
        )))
    );

    // `drop` policy: the member stays, learns how many it missed, and then gets new ones.
    let lagged = tokio::time::timeout(Duration::from_secs(10), loose.expect_type("lagged"))
        .await
        .unwrap();
    let missed = lagged["missed"].as_u64().unwrap();
    assert!(missed > 0 && missed < MESSAGES as u64, "missed {missed}");
    codec.send(
        MessageKind::Text,
        br#"{"type":"publish","room":"loose:a","data":"after"}"#,
    );
    to_server.write_all(&codec.output().split()).await.unwrap();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), loose.expect_type("publish"))
            .await
            .unwrap();
        if m["data"] == "after" {
            break;
        }
    }
    discard.abort();
}
