//! The WebSocket endpoint over real sockets: echo, every handshake and frame rule with the
//! status or close code SPEC.md names, timeouts, heartbeats and graceful shutdown.

mod support;

use std::time::{Duration, Instant};

use support::{echo_config, http_status, raw_frame, start, Ending, TestClient};
use switchboard_server::ServerConfig;
use switchboard_ws_proto::{CloseCode, CloseFrame, Event, MessageKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn echo_returns_text_and_binary_messages() {
    let server = start(echo_config()).await;
    for deflate in [false, true] {
        let mut c = TestClient::connect(server.addr, "/echo", deflate).await;
        assert_eq!(c.conn.deflate_params().is_some(), deflate);
        let big = "y".repeat(100_000);
        c.conn.send(MessageKind::Text, b"hello");
        c.conn.send(MessageKind::Binary, &[0, 1, 2]);
        c.conn.send(MessageKind::Text, big.as_bytes());
        c.flush().await;
        assert_eq!(c.next_event().await, Some(Event::Text("hello".into())));
        assert_eq!(
            c.next_event().await,
            Some(Event::Binary(vec![0, 1, 2].into()))
        );
        assert_eq!(c.next_event().await, Some(Event::Text(big.into())));
        c.conn.close(CloseCode::Normal, "done");
        c.flush().await;
        assert_eq!(
            c.ending().await,
            Ending::Close(Some(CloseFrame::new(CloseCode::Normal, "")))
        );
    }
}

#[tokio::test]
async fn echo_endpoint_is_off_by_default() {
    let server = start(ServerConfig::default()).await;
    let (status, _) = http_status(server.addr, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn bad_handshakes_get_the_http_status_the_spec_names() {
    let server = start(echo_config()).await;
    let good = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let cases = [
        (good.replace("Version: 13", "Version: 8"), 426),
        (good.replace("Upgrade: websocket\r\n", ""), 400),
        (
            good.replace("Connection: Upgrade", "Connection: close"),
            400,
        ),
        (good.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"), 400),
        (good.replace("GET", "POST"), 405),
        (good.replace("/ws", "/nope"), 404),
    ];
    for (request, expected) in cases {
        let (status, text) = http_status(server.addr, &request).await;
        assert_eq!(status, expected, "{request}\n->\n{text}");
        if expected == 426 {
            assert!(text
                .to_ascii_lowercase()
                .contains("sec-websocket-version: 13"));
        }
    }
    let (status, text) = http_status(server.addr, good).await;
    assert_eq!(status, 101);
    assert!(text.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
}

#[tokio::test]
async fn protocol_violations_close_with_the_spec_codes() {
    let server = start(ServerConfig {
        max_message_size: 1000,
        ..echo_config()
    })
    .await;
    let mut unmasked = raw_frame(0x81, b"hi");
    unmasked[1] &= 0x7f;
    unmasked.drain(2..6);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked frame", unmasked, 1002),
        ("reserved opcode", raw_frame(0x83, b""), 1002),
        ("rsv2 set", raw_frame(0xA1, b"x"), 1002),
        ("rsv1 without deflate", raw_frame(0xC1, b"x"), 1002),
        ("invalid utf-8", raw_frame(0x81, b"\xce\xba\xff"), 1007),
        ("ping too long", raw_frame(0x89, &[0; 126]), 1002),
        ("fragmented ping", raw_frame(0x09, b""), 1002),
        ("continuation first", raw_frame(0x80, b"x"), 1002),
        ("oversized message", raw_frame(0x82, &[0; 1001]), 1009),
        (
            "close with code 1005",
            raw_frame(0x88, &1005u16.to_be_bytes()),
            1002,
        ),
        (
            "close reason bad utf-8",
            raw_frame(0x88, b"\x03\xe8\xff"),
            1007,
        ),
    ];
    for (name, bytes, code) in cases {
        let mut c = TestClient::connect(server.addr, "/echo", false).await;
        c.send_raw(&bytes).await;
        assert_eq!(c.close_code().await, Some(code), "{name}");
        // The server then closes the TCP connection.
        assert_eq!(c.next_event().await, None, "{name}");
    }
}

#[tokio::test]
async fn compression_bomb_closes_with_1009_without_inflating_it_all() {
    let server = start(echo_config()).await; // 1 MiB limit
    let mut c = TestClient::connect(server.addr, "/echo", true).await;
    let mut z = Vec::new();
    assert!(switchboard_ws_proto::deflate::codec::compress_stateless(
        15,
        9,
        &vec![0u8; 64 << 20],
        &mut z
    ));
    assert!(z.len() < 100_000);
    c.send_raw(&raw_frame(0xC2, &z)).await;
    assert_eq!(c.close_code().await, Some(1009));
}

#[tokio::test]
async fn slow_request_head_is_dropped_after_the_handshake_timeout() {
    let server = start(ServerConfig {
        handshake_timeout: Duration::from_millis(300),
        ..echo_config()
    })
    .await;
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    // Hyper answers 408 or just closes; either way the connection ends.
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("server kept a slowloris connection open")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    // Counted (a slowloris is invisible otherwise).
    let mut m = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    m.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = Vec::new();
    m.read_to_end(&mut body).await.unwrap();
    let metrics = String::from_utf8_lossy(&body);
    assert!(
        metrics.contains("switchboard_handshake_timeouts_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn silent_connection_is_pinged_then_dropped() {
    let server = start(ServerConfig {
        heartbeat_interval: Duration::from_millis(200),
        heartbeat_timeout: Duration::from_millis(300),
        ..echo_config()
    })
    .await;
    // A client that answers pings stays.
    let mut alive = TestClient::connect(server.addr, "/echo", false).await;
    let alive = tokio::spawn(async move {
        for _ in 0..3 {
            assert!(matches!(alive.next_event().await, Some(Event::Ping(_))));
            alive.flush().await; // sends the queued pong
        }
        alive.conn.send(MessageKind::Text, b"still here");
        alive.flush().await;
        assert_eq!(
            alive.next_event().await,
            Some(Event::Text("still here".into()))
        );
    });
    // A half-open client: never answers.
    let mut dead = TestClient::connect(server.addr, "/echo", false).await;
    let started = Instant::now();
    assert!(matches!(dead.next_event().await, Some(Event::Ping(_))));
    assert_eq!(
        dead.next_event().await,
        None,
        "dropped without a close frame"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    alive.await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_every_connection_with_1001_and_finishes() {
    let server = start(echo_config()).await;
    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(TestClient::connect(server.addr, "/echo", false).await);
    }
    server.shutdown.cancel();
    for c in &mut clients {
        assert_eq!(
            c.ending().await,
            Ending::Close(Some(CloseFrame::new(
                CloseCode::Away,
                "Server shutting down"
            )))
        );
    }
    // Clients close their side once the server's FIN arrives.
    drop(clients);
    let clean = tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .unwrap()
        .unwrap();
    assert!(clean, "every connection finished within shutdown_timeout");
}

#[tokio::test]
async fn health_counts_open_websockets() {
    let server = start(echo_config()).await;
    let _a = TestClient::connect(server.addr, "/echo", false).await;
    let _b = TestClient::connect(server.addr, "/echo", false).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, text) = http_status(server.addr, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 200);
    assert!(text.contains("\"connections\":2"), "{text}");
}

#[tokio::test]
async fn connection_limits_refuse_with_429_per_address_and_503_in_total() {
    let upgrade = "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let server = start(ServerConfig {
        max_connections_per_ip: 2,
        ..echo_config()
    })
    .await;
    let _a = TestClient::connect(server.addr, "/echo", false).await;
    let b = TestClient::connect(server.addr, "/echo", false).await;
    let (status, text) = http_status(server.addr, upgrade).await;
    assert_eq!(status, 429, "{text}");
    // A slot frees when a connection ends.
    drop(b);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(http_status(server.addr, upgrade).await.0, 101);

    let server = start(ServerConfig {
        max_connections: Some(1),
        ..echo_config()
    })
    .await;
    let _a = TestClient::connect(server.addr, "/echo", false).await;
    let (status, text) = http_status(server.addr, upgrade).await;
    assert_eq!(status, 503, "{text}");
}
