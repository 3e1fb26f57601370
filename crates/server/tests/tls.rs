//! TLS termination: `https://` and `wss://` with a certificate generated here, checked by a
//! rustls client that trusts only that certificate.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

mod support;

use support::TestClient;
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
    let shutdown = CancellationToken::new();
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        echo: true,
        tls: Some(TlsConfig {
            cert_path: pki.dir.join("cert.pem"),
            key_path: pki.dir.join("key.pem"),
        }),
        ..ServerConfig::default()
    };
    let server = Server::bind(config, shutdown.clone()).await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.run());
    (addr, shutdown)
}

async fn tls_connect(addr: std::net::SocketAddr, pki: &Pki) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.cert_der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
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
    let mut early = Connection::client(&Config::default(), 5);
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
