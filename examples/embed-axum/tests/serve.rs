//! The example application under plain `axum::serve`: Switchboard's WebSocket works there
//! (the upgraded IO is hyper-util's, not our listener's), next to the application's routes,
//! with the per-IP limit and graceful shutdown.

#![allow(clippy::unwrap_used)]

#[path = "../../../crates/server/tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;

use serde_json::json;
use support::TestClient;
use switchboard_server::{Embedded, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// The example application, served by `axum::serve` on a free port.
struct App {
    addr: SocketAddr,
    shutdown: CancellationToken,
    switchboard: Embedded,
    task: tokio::task::JoinHandle<()>,
}

async fn serve(config: ServerConfig) -> App {
    let shutdown = CancellationToken::new();
    let (app, switchboard) = embed_axum::app(config, shutdown.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .unwrap();
    });
    App {
        addr,
        shutdown,
        switchboard,
        task,
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchboard_works_inside_an_axum_application() {
    let App {
        addr,
        shutdown,
        switchboard,
        task,
    } = serve(ServerConfig {
        max_connections_per_ip: 3,
        ..ServerConfig::default()
    })
    .await;
    assert!(http_get(addr, "/").await.ends_with("my application\n"));
    assert!(http_get(addr, "/health")
        .await
        .contains("\"status\":\"ok\""));

    let mut alice = TestClient::connect(addr, "/ws", false).await;
    let mut bob = TestClient::connect(addr, "/ws", true).await;
    for c in [&mut alice, &mut bob] {
        c.expect_type("welcome").await;
        c.send_text(r#"{"type":"join","room":"lobby"}"#).await;
        c.expect_type("joined").await;
    }
    // Small and large messages, compressed for bob: a 300 KB message crosses the embedded
    // transport's write chunks several times.
    let big = "z".repeat(300_000);
    for text in ["hello", big.as_str()] {
        alice
            .send_text(&json!({"type":"chat","text":text}).to_string())
            .await;
        for c in [&mut alice, &mut bob] {
            let m = c.expect_type("chat").await;
            assert_eq!(m["text"], text);
        }
    }

    // The per-IP limit applies (the peer address comes from ConnectInfo): two more, then 429.
    let _third = TestClient::connect(addr, "/ws", false).await;
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = vec![0u8; 12];
    raw.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 429");

    // Graceful shutdown: every WebSocket gets 1001.
    shutdown.cancel();
    assert_eq!(alice.close_code().await, Some(1001));
    assert_eq!(bob.close_code().await, Some(1001));
    assert!(switchboard.drain().await);
    task.await.unwrap();
}
