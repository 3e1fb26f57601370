//! `GET /metrics`: the Prometheus text follows what connections do.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::{http_status, start, TestClient};
use switchboard_server::ServerConfig;

/// The value of the sample line that starts with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix} in\n{text}"))
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let (status, text) = http_status(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 200, "{text}");
    text
}

#[tokio::test]
async fn metrics_count_connections_messages_deliveries_and_disconnects() {
    let server = start(ServerConfig {
        max_connections_per_ip: 2,
        ..ServerConfig::default()
    })
    .await;
    let mut a = TestClient::connect(server.addr, "/ws", false).await;
    let mut b = TestClient::connect(server.addr, "/ws", false).await;
    for c in [&mut a, &mut b] {
        c.expect_type("welcome").await;
        c.send_text(r#"{"type":"join","room":"m"}"#).await;
        c.expect_type("joined").await;
    }
    // A third connection from the same address is refused (429) and counted.
    let (status, _) = http_status(
        server.addr,
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert_eq!(status, 429);
    for i in 0..8 {
        a.send_text(&format!(r#"{{"type":"chat","room":"m","message":"{i}"}}"#))
            .await;
    }
    for _ in 0..8 {
        b.expect_type("chat").await;
    }

    let text = scrape(server.addr).await;
    assert_eq!(
        sample(&text, "switchboard_connections{transport=\"websocket\"}"),
        2.0
    );
    assert_eq!(
        sample(&text, "switchboard_connects_total{transport=\"websocket\"}"),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            "switchboard_handshakes_refused_total{reason=\"per_ip\"}"
        ),
        1.0
    );
    // 2 joins + 8 chats.
    assert_eq!(sample(&text, "switchboard_messages_received_total"), 10.0);
    // Each: welcome + joined (+ user_joined for a) + 8 chats each (a gets its own too).
    assert!(sample(&text, "switchboard_messages_sent_total") >= 20.0);
    assert!(sample(&text, "switchboard_sent_bytes_total") > 0.0);
    assert!(sample(&text, "switchboard_received_bytes_total") > 0.0);
    assert_eq!(
        sample(&text, "switchboard_delivery_latency_seconds_count"),
        // One message in 8 is sampled (offset 8), delivered to both members.
        2.0
    );
    assert_eq!(sample(&text, "switchboard_channels"), 1.0);
    assert!(sample(&text, "switchboard_process_resident_memory_bytes") > 1e6);

    // A clean close by the client, and a vanished one.
    a.conn.close(switchboard_ws_proto::CloseCode::Normal, "bye");
    a.flush().await;
    let _ = a.ending().await;
    drop(a); // the server lingers until our FIN (RFC 6455 §7.1.1)
    drop(b);
    let mut text = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        text = scrape(server.addr).await;
        if sample(&text, "switchboard_connections{transport=\"websocket\"}") == 0.0 {
            break;
        }
    }
    assert_eq!(
        sample(&text, "switchboard_connections{transport=\"websocket\"}"),
        0.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "switchboard_disconnects_total{transport=\"websocket\",code=\"1000\",reason=\"closed\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "switchboard_disconnects_total{transport=\"websocket\",code=\"1006\",reason=\"peer_gone\"}"
        ),
        1.0
    );
}
