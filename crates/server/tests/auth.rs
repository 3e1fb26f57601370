//! Authentication at the handshake of every transport (SPEC §4): WebSocket (accepted, then
//! closed 4001 with a reason), SSE and long polling (401/403), the HTTP API (user tokens
//! with that user's rights), one-time tickets, the `Origin` allowlist, expiry of SSE streams.
//! Tokens here are minted by the auth crate; tests/interop/python mints them with PyJWT.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use support::{http_status, start, TestClient, TestServer};
use switchboard_auth::{mint, mint_at, unix_now, Algorithm, AuthConfig, Authenticator};
use switchboard_server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &[u8] = b"test-secret-of-enough-length-0123456789";

async fn server() -> TestServer {
    let config: AuthConfig = serde_json::from_value(json!({
        "jwt": {"secrets": [std::str::from_utf8(SECRET).unwrap()], "leeway": 0},
        "allowed_origins": ["https://app.example.com", "https://*.example.org"],
        "permissions": [
            {"rooms": "user:*", "allow": {"match": "user:{sub}"}},
            {"rooms": "admin", "allow": "nobody"},
            {"rooms": "news", "actions": ["subscribe", "history"], "allow": "anyone"},
            {"rooms": "news", "actions": ["publish"], "allow": "nobody"},
        ],
    }))
    .unwrap();
    let auth = Authenticator::new(&config).unwrap();
    start(ServerConfig {
        auth: Some(Arc::new(auth)),
        api_keys: vec!["backend-key".into()],
        auth_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    })
    .await
}

fn token(sub: &str, ttl: Duration) -> String {
    mint(SECRET, Algorithm::HS256, sub, ttl, Map::new()).unwrap()
}

/// Status and whole body of a request on a fresh connection (`Connection: close`).
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// Open an SSE stream and read until `marker` (the whole text so far).
async fn sse_until(addr: SocketAddr, path: &str, headers: &str, marker: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&buf).contains(marker) {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("timed out")
            .unwrap();
        assert!(
            n > 0,
            "ended before {marker:?}: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn websocket_handshakes_authenticate_or_close_4001_with_the_reason() {
    let server = server().await;
    let alice = token("alice", Duration::from_secs(60));

    let mut ok = TestClient::connect(server.addr, &format!("/ws?token={alice}"), false).await;
    let welcome = ok.expect_type("welcome").await;
    assert_eq!(welcome["userId"], "alice");
    // Her personal room is hers; someone else's and a closed one are refused, the
    // connection stays open.
    ok.send_text(r#"{"type":"join","room":"user:alice"}"#).await;
    ok.expect_type("joined").await;

    let cases = [
        (format!("/ws?token={alice}x"), "Invalid token"),
        ("/ws?token=not-a-jwt".to_owned(), "Invalid token"),
        (
            format!(
                "/ws?token={}",
                mint_at(
                    SECRET,
                    Algorithm::HS256,
                    "bob",
                    Duration::from_secs(60),
                    Map::new(),
                    unix_now() - 3600
                )
                .unwrap()
            ),
            "Token expired",
        ),
        (
            format!(
                "/ws?token={}",
                mint(
                    b"another-secret-of-enough-length-000000",
                    Algorithm::HS256,
                    "eve",
                    Duration::from_secs(60),
                    Map::new()
                )
                .unwrap()
            ),
            "Invalid token",
        ),
    ];
    for (path, reason) in cases {
        let mut c = TestClient::connect(server.addr, &path, false).await;
        match c.ending().await {
            support::Ending::Close(Some(frame)) => {
                assert_eq!(frame.code.as_u16(), 4001, "{path}");
                assert_eq!(frame.reason, reason, "{path}");
            }
            other => panic!("{path}: {other:?}"),
        }
    }
    // Counted by reason.
    let (_, metrics) = request(server.addr, "GET", "/metrics", "", "").await;
    assert!(
        metrics.contains("switchboard_auth_failures_total{reason=\"expired\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn without_handshake_credentials_the_first_message_authenticates() {
    let server = server().await;
    // `auth` first: messages sent before it are held and handled after `auth_success`.
    let mut c = TestClient::connect(server.addr, "/ws", false).await;
    c.send_text(r#"{"type":"join","room":"user:dora","id":"j1"}"#)
        .await;
    let t = token("dora", Duration::from_secs(60));
    c.send_text(&format!(r#"{{"type":"auth","token":"{t}"}}"#))
        .await;
    let first = c.next_json().await.unwrap();
    assert_eq!(first["type"], "auth_success", "{first}");
    assert_eq!(first["userId"], "dora");
    assert_eq!(c.expect_type("joined").await["room"], "user:dora");
    // Authorized per message: someone else's room is refused, the connection stays.
    c.send_text(r#"{"type":"join","room":"user:erin","id":"j2"}"#)
        .await;
    let refused = c.expect_type("error").await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    c.send_text(r#"{"type":"ping"}"#).await;
    c.expect_type("pong").await;

    // A bad token closes 4001; silence closes 4000 after auth_timeout.
    let mut bad = TestClient::connect(server.addr, "/ws", false).await;
    bad.send_text(r#"{"type":"auth","token":"nope"}"#).await;
    assert_eq!(bad.close_code().await, Some(4001));
    let mut silent = TestClient::connect(server.addr, "/ws", false).await;
    assert_eq!(silent.close_code().await, Some(4000));
}

#[tokio::test]
async fn a_websocket_closes_at_expiry_unless_refreshed() {
    let server = server().await;
    let mut c = TestClient::connect(
        server.addr,
        &format!("/ws?token={}", token("fay", Duration::from_secs(2))),
        false,
    )
    .await;
    c.expect_type("welcome").await;
    c.send_text(&format!(
        r#"{{"type":"refresh","token":"{}"}}"#,
        token("fay", Duration::from_secs(60))
    ))
    .await;
    assert!(c.expect_type("refreshed").await["exp"].is_u64());
    let mut short = TestClient::connect(
        server.addr,
        &format!("/ws?token={}", token("gus", Duration::from_secs(2))),
        false,
    )
    .await;
    short.expect_type("welcome").await;
    let started = std::time::Instant::now();
    match short.ending().await {
        support::Ending::Close(Some(frame)) => {
            assert_eq!(
                (frame.code.as_u16(), frame.reason.as_str()),
                (4001, "Token expired")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() <= Duration::from_secs(4));
    // The refreshed one is still open after its first token's expiry.
    c.send_text(r#"{"type":"ping"}"#).await;
    c.expect_type("pong").await;
}

#[tokio::test]
async fn unlisted_origins_are_refused_before_any_upgrade_or_stream() {
    let server = server().await;
    let alice = token("alice", Duration::from_secs(60));
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    for (origin, want) in [
        ("https://evil.example.net", 403),
        ("https://app.example.com", 101),
        ("https://eu.example.org", 101),
    ] {
        let (status, _) = http_status(
            server.addr,
            &format!(
                "GET /ws?token={alice} HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n{upgrade}\r\n"
            ),
        )
        .await;
        assert_eq!(status, want, "{origin}");
    }
    let (status, body) = request(
        server.addr,
        "GET",
        &format!("/events?channels=news&token={alice}"),
        "Origin: https://evil.example.net\r\n",
        "",
    )
    .await;
    assert_eq!(status, 403, "{body}");
}

#[tokio::test]
async fn sse_and_polling_answer_401_and_403_and_name_the_user() {
    let server = server().await;
    let alice = token("alice", Duration::from_secs(60));
    let bearer = format!("Authorization: Bearer {alice}\r\n");

    let text = sse_until(
        server.addr,
        "/events?channels=user:alice,news",
        &bearer,
        "event: connected",
    )
    .await;
    assert!(text.contains(r#""userId":"alice""#), "{text}");

    // A cookie carries the token too (the seeds' cookie pattern).
    let text = sse_until(
        server.addr,
        "/events?channels=news",
        &format!("Cookie: session={alice}\r\n"),
        "event: connected",
    )
    .await;
    assert!(text.contains(r#""userId":"alice""#), "{text}");

    for (path, headers, want) in [
        ("/events?channels=user:bob", bearer.as_str(), 403),
        ("/events?channels=admin", bearer.as_str(), 403),
        (
            "/events?channels=news",
            "Authorization: Bearer garbage\r\n",
            401,
        ),
        ("/events?channels=user:alice", "", 401),
        ("/poll?channels=user:bob", bearer.as_str(), 403),
        (
            "/poll?channels=news",
            "Authorization: Bearer garbage\r\n",
            401,
        ),
    ] {
        let (status, body) = request(server.addr, "GET", path, headers, "").await;
        assert_eq!(status, want, "{path} {headers}: {body}");
        assert!(
            serde_json::from_str::<Value>(&body).unwrap()["error"].is_string(),
            "{body}"
        );
    }

    let (status, body) =
        request(server.addr, "GET", "/poll?channels=user:alice", &bearer, "").await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["messages"][0]["userId"], "alice", "{body}");
    // The cursor belongs to alice: bob's poll with it starts a session of his own (he may
    // read his room only), never continues hers.
    let cursor = answer["cursor"].as_str().unwrap();
    let bob = format!(
        "Authorization: Bearer {}\r\n",
        token("bob", Duration::from_secs(60))
    );
    let (status, _) = request(
        server.addr,
        "GET",
        &format!("/poll?channels=user:alice&cursor={cursor}"),
        &bob,
        "",
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn the_api_takes_user_tokens_with_their_rights_and_the_key_with_all() {
    let server = server().await;
    let alice = format!(
        "Authorization: Bearer {}\r\n",
        token("alice", Duration::from_secs(60))
    );
    let key = "Authorization: Bearer backend-key\r\n";
    let publish = |room: &str| json!({"channel": room, "text": "hi"}).to_string();
    for (headers, room, want) in [
        (alice.as_str(), "user:alice", 200),
        (alice.as_str(), "user:bob", 403),
        (alice.as_str(), "news", 403),
        (key, "news", 200),
        ("Authorization: Bearer wrong\r\n", "news", 401),
    ] {
        let (status, body) =
            request(server.addr, "POST", "/api/publish", headers, &publish(room)).await;
        assert_eq!(status, want, "{headers} {room}: {body}");
    }
    // Published as the user.
    let (status, body) = request(
        server.addr,
        "GET",
        "/api/history?channel=user:alice",
        &alice,
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let history: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(history["messages"][0]["userId"], "alice", "{body}");
    let (status, _) = request(
        server.addr,
        "GET",
        "/api/history?channel=user:bob",
        &alice,
        "",
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = request(
        server.addr,
        "GET",
        "/api/presence?channel=admin",
        &alice,
        "",
    )
    .await;
    assert_eq!(status, 403);
    // Backend-only endpoints stay the key's.
    let (status, _) = request(server.addr, "GET", "/api/channels", &alice, "").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_ticket_opens_one_connection_once() {
    let server = server().await;
    let alice = format!(
        "Authorization: Bearer {}\r\n",
        token("alice", Duration::from_secs(60))
    );
    let (status, body) = request(server.addr, "POST", "/api/ticket", &alice, "").await;
    assert_eq!(status, 200, "{body}");
    let ticket = serde_json::from_str::<Value>(&body).unwrap()["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(ticket.len() >= 22, "{ticket}");
    let path = format!("/events?channels=user:alice&ticket={ticket}");
    let text = sse_until(server.addr, &path, "", "event: connected").await;
    assert!(text.contains(r#""userId":"alice""#), "{text}");
    let (status, _) = request(server.addr, "GET", &path, "", "").await;
    assert_eq!(status, 401, "a ticket is valid once");

    // A backend names the user; anonymous callers get none.
    let (status, body) = request(
        server.addr,
        "POST",
        "/api/ticket",
        "Authorization: Bearer backend-key\r\n",
        r#"{"sub":"carol"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let ticket = serde_json::from_str::<Value>(&body).unwrap()["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ws = TestClient::connect(server.addr, &format!("/ws?ticket={ticket}"), false).await;
    assert_eq!(ws.expect_type("welcome").await["userId"], "carol");
    let (status, _) = request(server.addr, "POST", "/api/ticket", "", "").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn an_sse_stream_ends_when_its_token_expires() {
    let server = server().await;
    let short = token("alice", Duration::from_secs(2));
    let started = std::time::Instant::now();
    let text = sse_until(
        server.addr,
        &format!("/events?channels=user:alice&token={short}"),
        "",
        "Token expired",
    )
    .await;
    assert!(text.contains("event: disconnect"), "{text}");
    assert!(text.contains(r#""code":4001"#), "{text}");
    let took = started.elapsed();
    assert!(took <= Duration::from_secs(4), "ended after {took:?}");
}

#[tokio::test]
async fn cookies_from_other_origins_count_only_where_explicitly_allowed() {
    // Default origins (`*`): tokens from any page are fine, a cookie only from the same
    // origin — a page of any site can make the browser send the user's cookie.
    let config: AuthConfig = serde_json::from_value(json!({
        "jwt": {"secrets": [std::str::from_utf8(SECRET).unwrap()]},
    }))
    .unwrap();
    let server = start(ServerConfig {
        auth: Some(Arc::new(Authenticator::new(&config).unwrap())),
        ..ServerConfig::default()
    })
    .await;
    let alice = token("alice", Duration::from_secs(60));
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    let host = format!("127.0.0.1:{}", server.addr.port());
    for (credential, origin, want) in [
        (
            format!("Cookie: session={alice}\r\n"),
            "https://evil.example.net".to_owned(),
            403,
        ),
        (
            format!("Cookie: session={alice}\r\n"),
            format!("http://{host}"),
            101,
        ),
        (
            format!("Authorization: Bearer {alice}\r\n"),
            "https://evil.example.net".to_owned(),
            101,
        ),
    ] {
        let (status, _) = http_status(
            server.addr,
            &format!(
                "GET /ws HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\n{credential}{upgrade}\r\n"
            ),
        )
        .await;
        assert_eq!(status, want, "{credential} from {origin}");
    }
    let (status, body) = request(
        server.addr,
        "POST",
        "/api/publish",
        &format!("Cookie: session={alice}\r\nOrigin: https://evil.example.net\r\n"),
        r#"{"channel":"news","text":"csrf"}"#,
    )
    .await;
    assert_eq!(status, 403, "{body}");
}

#[tokio::test]
async fn a_parked_websocket_and_a_parked_stream_still_end_at_expiry() {
    let config: AuthConfig = serde_json::from_value(json!({
        "jwt": {"secrets": [std::str::from_utf8(SECRET).unwrap()], "leeway": 0},
    }))
    .unwrap();
    let server = start(ServerConfig {
        auth: Some(Arc::new(Authenticator::new(&config).unwrap())),
        park_idle_after: Some(Duration::from_millis(200)),
        ..ServerConfig::default()
    })
    .await;
    let short = token("hal", Duration::from_secs(2));
    let mut ws = TestClient::connect(server.addr, &format!("/ws?token={short}"), false).await;
    ws.expect_type("welcome").await;
    let started = std::time::Instant::now();
    // (Idle: parked after 200 ms, long before the token expires.)
    match ws.ending().await {
        support::Ending::Close(Some(frame)) => {
            assert_eq!(
                (frame.code.as_u16(), frame.reason.as_str()),
                (4001, "Token expired")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() <= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let text = sse_until(
        server.addr,
        &format!(
            "/events?channels=news&token={}",
            token("ida", Duration::from_secs(2))
        ),
        "",
        "Token expired",
    )
    .await;
    assert!(text.contains(r#""code":4001"#), "{text}");
}
