//! TLS termination: `https://` and `wss://` with a certificate generated here, checked by a
//! rustls client that trusts only that certificate; HTTP/2 for clients that negotiate `h2`.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

mod support;

use bytes::Bytes;
use support::TestClient;
use switchboard_server::state::AppState;
use switchboard_server::{Server, ServerConfig, TlsConfig};
use switchboard_ws_proto::{CloseCode, Config, Connection, Event, MessageKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, pki_types::ServerName};
use tokio_rustls::{client::TlsStream, TlsConnector};
use tokio_util::sync::CancellationToken;

use support::TIMEOUT;

struct Pki {
    dir: PathBuf,
    cert_der: rustls::pki_types::CertificateDer<'static>,
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM files.
fn generate_pki(name: &str) -> Pki {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = std::env::temp_dir().join(format!("switchboard-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), certified.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), certified.key_pair.serialize_pem()).unwrap();
    Pki {
        dir,
        cert_der: certified.cert.der().clone(),
    }
}

async fn start(pki: &Pki) -> (std::net::SocketAddr, CancellationToken) {
    let server = start_with(pki, ServerConfig::default()).await;
    (server.addr, server.shutdown)
}

struct Running {
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    state: Arc<AppState>,
    /// `Server::run`: whether every connection finished within `shutdown_timeout`.
    task: tokio::task::JoinHandle<bool>,
}

/// A TLS server with `config`, the echo endpoint and `pki`'s certificate.
async fn start_with(pki: &Pki, config: ServerConfig) -> Running {
    let shutdown = CancellationToken::new();
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        echo: true,
        tls: Some(TlsConfig {
            cert_path: pki.dir.join("cert.pem"),
            key_path: pki.dir.join("key.pem"),
        }),
        ..config
    };
    let server = Server::bind(config, shutdown.clone()).await.unwrap();
    let addr = server.local_addr().unwrap();
    let state = server.state().clone();
    let task = tokio::spawn(server.run());
    Running {
        addr,
        shutdown,
        state,
        task,
    }
}

async fn tls_connect(addr: std::net::SocketAddr, pki: &Pki) -> TlsStream<TcpStream> {
    tls_connect_alpn(addr, pki, &[]).await
}

/// A TLS client offering the `alpn` protocols (none: no ALPN extension).
async fn tls_connect_alpn(
    addr: std::net::SocketAddr,
    pki: &Pki,
    alpn: &[&[u8]],
) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.cert_der.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

async fn wss_connect(
    addr: std::net::SocketAddr,
    pki: &Pki,
    deflate: bool,
    early: &[u8],
) -> TestClient<TlsStream<TcpStream>> {
    let stream = tls_connect(addr, pki).await;
    TestClient::handshake(stream, "localhost", "/echo", deflate, early).await
}

#[tokio::test]
async fn wss_echoes_small_and_large_messages_and_closes_cleanly() {
    let pki = generate_pki("wss");
    let (addr, _shutdown) = start(&pki).await;
    for deflate in [false, true] {
        let mut client = wss_connect(addr, &pki, deflate, &[]).await;
        client.conn.send(MessageKind::Text, b"hello over tls");
        // Bigger than a TLS record and than rustls' buffer limit: exercises partial writes.
        let big: Vec<u8> = (0..900_000u32).map(|i| (i % 251) as u8).collect();
        client.conn.send(MessageKind::Binary, &big);
        client.flush().await;
        assert_eq!(
            client.next_event().await,
            Some(Event::Text("hello over tls".into()))
        );
        match client.next_event().await {
            Some(Event::Binary(payload)) => assert!(payload[..] == big[..], "payload differs"),
            other => panic!("expected the binary echo, got {other:?}"),
        }
        client.conn.close(CloseCode::Normal, "bye");
        client.flush().await;
        match client.next_event().await {
            Some(Event::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Normal),
            other => panic!("expected the Close echo, got {other:?}"),
        }
        // Then the server ends the stream (close_notify + FIN).
        assert_eq!(client.next_event().await, None);
    }
}

#[tokio::test]
async fn wss_frames_sent_with_the_upgrade_request_are_not_stranded() {
    // A client may send its first frames right behind the request head, in the same TLS
    // records: at the upgrade they may sit in hyper's read buffer or still (decrypted) inside
    // rustls; both must reach the driver without the client sending anything more.
    let pki = generate_pki("eager");
    let (addr, _shutdown) = start(&pki).await;
    let mut early = Connection::client(&Config::default());
    early.send(MessageKind::Text, b"first");
    early.send(MessageKind::Text, b"second");
    let mut client = wss_connect(addr, &pki, false, &early.output().split()).await;
    // Both echoes arrive without the client sending anything more.
    assert_eq!(client.next_event().await, Some(Event::Text("first".into())));
    assert_eq!(
        client.next_event().await,
        Some(Event::Text("second".into()))
    );
}

#[tokio::test]
async fn https_serves_health_and_plain_http_on_the_tls_port_is_refused() {
    let pki = generate_pki("https");
    let (addr, _shutdown) = start(&pki).await;
    let mut stream = tls_connect(addr, &pki).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_string(&mut response))
        .await
        .unwrap()
        .ok();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"status\":\"ok\""), "{response}");

    // Plain HTTP to the TLS port: the handshake fails and the connection is dropped.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, plain.read_to_end(&mut buf))
        .await
        .expect("the server must drop a non-TLS client");
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
}

#[tokio::test]
async fn a_bad_key_file_is_an_error_naming_the_key() {
    let pki = generate_pki("bad");
    std::fs::write(pki.dir.join("key.pem"), "not a key").unwrap();
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(TlsConfig {
            cert_path: pki.dir.join("cert.pem"),
            key_path: pki.dir.join("key.pem"),
        }),
        ..ServerConfig::default()
    };
    let err = Server::bind(config, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("tls.key:"), "{err}");
}

/// An HTTP/2 client on a TLS connection that offered `h2` and `http/1.1` (and got `h2`).
async fn h2_connect(addr: std::net::SocketAddr, pki: &Pki) -> h2::client::SendRequest<Bytes> {
    let stream = tls_connect_alpn(addr, pki, &[b"h2", b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (client, conn) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

fn h2_get(path: &str) -> http::Request<()> {
    http::Request::get(format!("https://localhost{path}"))
        .body(())
        .unwrap()
}

/// Read `body` into `seen` until `needle` appears.
async fn read_until(body: &mut h2::RecvStream, seen: &mut String, needle: &str) {
    let read = async {
        while !seen.contains(needle) {
            let chunk = body.data().await.expect("the stream ended").unwrap();
            body.flow_control().release_capacity(chunk.len()).unwrap();
            seen.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    };
    if tokio::time::timeout(TIMEOUT, read).await.is_err() {
        panic!("no {needle:?} in {seen:?}");
    }
}

#[tokio::test]
async fn h2_serves_many_sse_streams_on_one_connection_and_ends_them_at_shutdown() {
    let pki = generate_pki("h2-sse");
    let server = start_with(
        &pki,
        ServerConfig {
            api_keys: vec!["key".into()],
            ..ServerConfig::default()
        },
    )
    .await;
    let mut client = h2_connect(server.addr, &pki).await;

    let mut streams = Vec::new();
    for path in [
        "/events?channels=news",
        "/events?channels=news,other",
        "/events?channel=news",
        "/events?channels=other,news",
    ] {
        let (response, _) = client.send_request(h2_get(path), true).unwrap();
        let response = tokio::time::timeout(TIMEOUT, response)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), http::Version::HTTP_2);
        let mut body = response.into_body();
        let mut seen = String::new();
        read_until(&mut body, &mut seen, "event: connected").await;
        streams.push((body, seen));
    }
    // The server's SETTINGS bound the streams of a connection.
    assert_eq!(client.current_max_send_streams(), 100);

    // A publish over the same connection reaches every stream.
    let publish = http::Request::post("https://localhost/api/publish")
        .header("authorization", "Bearer key")
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let (response, mut request_body) = client.send_request(publish, false).unwrap();
    request_body
        .send_data(
            Bytes::from_static(br#"{"channel":"news","data":{"n":7}}"#),
            true,
        )
        .unwrap();
    let response = tokio::time::timeout(TIMEOUT, response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    for (body, seen) in &mut streams {
        read_until(body, seen, r#""data":{"n":7}"#).await;
    }

    // WebSocket over HTTP/2 is not served: a clear 505, not a hang.
    let ws = http::Request::get("https://localhost/ws")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(ws, true).unwrap();
    let response = tokio::time::timeout(TIMEOUT, response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        response.status(),
        http::StatusCode::HTTP_VERSION_NOT_SUPPORTED
    );

    // Shutdown: every stream ends cleanly (END_STREAM), and so does the server, in time.
    server.shutdown.cancel();
    for (mut body, _) in streams {
        let end = tokio::time::timeout(TIMEOUT, async {
            while let Some(chunk) = body.data().await {
                chunk.unwrap();
            }
        });
        end.await.expect("an SSE stream did not end at shutdown");
    }
    let clean = tokio::time::timeout(TIMEOUT, server.task).await.unwrap();
    assert!(clean.unwrap(), "connections outlived shutdown_timeout");
}

#[tokio::test]
async fn h2_connections_get_goaway_when_idle_and_a_silent_one_counts_as_a_timeout() {
    let pki = generate_pki("h2-idle");
    let server = start_with(
        &pki,
        ServerConfig {
            handshake_timeout: std::time::Duration::from_millis(300),
            ..ServerConfig::default()
        },
    )
    .await;
    let connect = |addr| {
        let pki = &pki;
        async move {
            let stream = tls_connect_alpn(addr, pki, &[b"h2"]).await;
            h2::client::handshake(stream).await.unwrap()
        }
    };
    // One connection never sends a request (slowloris); one makes a request, then idles; one
    // holds an SSE stream open.
    let (_silent, silent_conn) = connect(server.addr).await;
    let (mut used, used_conn) = connect(server.addr).await;
    let (mut streaming, streaming_conn) = connect(server.addr).await;
    let silent_conn = tokio::spawn(silent_conn);
    let used_conn = tokio::spawn(used_conn);
    let streaming_conn = tokio::spawn(streaming_conn);
    let (response, _) = streaming
        .send_request(h2_get("/events?channels=news"), true)
        .unwrap();
    let mut events = tokio::time::timeout(TIMEOUT, response)
        .await
        .unwrap()
        .unwrap()
        .into_body();
    read_until(&mut events, &mut String::new(), "event: connected").await;
    let (response, _) = used.send_request(h2_get("/health"), true).unwrap();
    let response = tokio::time::timeout(TIMEOUT, response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    // Both get GOAWAY and end (the client's connection future resolves).
    for conn in [silent_conn, used_conn] {
        let ended = tokio::time::timeout(TIMEOUT, conn).await;
        ended
            .expect("an idle HTTP/2 connection was kept")
            .unwrap()
            .ok();
    }
    assert_eq!(server.state.metrics.handshake_timeouts.get(), 1);
    // A connection with an open stream is not idle: it still takes requests.
    assert!(!streaming_conn.is_finished());
    let (response, _) = streaming.send_request(h2_get("/health"), true).unwrap();
    let response = tokio::time::timeout(TIMEOUT, response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    drop(events);
}

#[tokio::test]
async fn a_client_offering_only_http11_gets_http11_on_the_tls_port() {
    let pki = generate_pki("alpn-h1");
    let (addr, _shutdown) = start(&pki).await;
    let mut stream = tls_connect_alpn(addr, &pki, &[b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_string(&mut response))
        .await
        .unwrap()
        .ok();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // And a WebSocket after ALPN `http/1.1`.
    let stream = tls_connect_alpn(addr, &pki, &[b"http/1.1"]).await;
    let mut client = TestClient::handshake(stream, "localhost", "/echo", false, &[]).await;
    client.conn.send(MessageKind::Text, b"over http/1.1");
    client.flush().await;
    assert_eq!(
        client.next_event().await,
        Some(Event::Text("over http/1.1".into()))
    );
}
