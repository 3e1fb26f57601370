//! A minimal WebSocket test client built on our own sans-IO codec in the client role, for
//! driving the server over real sockets byte by byte (including bytes no library would send).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use switchboard_server::state::AppState;
use switchboard_server::{Server, ServerConfig};
use switchboard_ws_proto::{ClientHandshake, CloseFrame, Config, Connection, DeflateConfig, Event};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const TIMEOUT: Duration = Duration::from_secs(5);

pub struct TestServer {
    pub addr: SocketAddr,
    /// The server's shared state (counts, metrics, parking lots).
    pub state: Arc<AppState>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<bool>,
}

pub async fn start(config: ServerConfig) -> TestServer {
    let shutdown = CancellationToken::new();
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..config
    };
    let server = Server::bind(config, shutdown.clone()).await.unwrap();
    let addr = server.local_addr().unwrap();
    let state = server.state().clone();
    let task = tokio::spawn(server.run());
    TestServer {
        addr,
        state,
        shutdown,
        task,
    }
}

pub fn echo_config() -> ServerConfig {
    ServerConfig {
        echo: true,
        ..ServerConfig::default()
    }
}

/// A WebSocket client over any byte stream (TCP here; TLS in `tls.rs`).
pub struct TestClient<S = TcpStream> {
    pub stream: S,
    pub conn: Connection,
    input: BytesMut,
}

/// What the client saw at the end.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// A Close frame with this code (and reason).
    Close(Option<CloseFrame>),
    /// The TCP connection ended without a Close frame.
    Eof,
}

impl TestClient {
    pub async fn connect(addr: SocketAddr, path: &str, deflate: bool) -> TestClient {
        let stream = TcpStream::connect(addr).await.unwrap();
        Self::handshake(stream, &addr.to_string(), path, deflate, &[]).await
    }

    /// A client whose socket receive buffer is tiny: once it stops reading, the server's
    /// output backs up after a few kilobytes instead of megabytes of kernel buffers.
    pub async fn connect_small_window(addr: SocketAddr, path: &str) -> TestClient {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        Self::handshake(stream, &addr.to_string(), path, false, &[]).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TestClient<S> {
    /// The opening handshake on `stream`; `early` bytes (frames) are sent in the same write
    /// as the request head, before the response.
    pub async fn handshake(
        mut stream: S,
        host: &str,
        path: &str,
        deflate: bool,
        early: &[u8],
    ) -> TestClient<S> {
        let hs = ClientHandshake::new(rand_nonce(), &[], deflate);
        let mut request = hs.request(host, path, &[]);
        request.extend_from_slice(early);
        stream.write_all(&request).await.unwrap();
        let mut input = BytesMut::new();
        let accepted = loop {
            if let Some((acc, len)) = hs.parse_response(&input).unwrap() {
                let _ = input.split_to(len);
                break acc;
            }
            let n = tokio::time::timeout(TIMEOUT, stream.read_buf(&mut input))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "EOF during handshake");
        };
        let mut conn = Connection::client(&Config::default());
        if let Some(params) = accepted.deflate {
            conn = conn.with_deflate(params, &DeflateConfig::default());
        }
        TestClient {
            stream,
            conn,
            input,
        }
    }

    /// Write raw bytes (possibly invalid frames).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Flush whatever the codec queued (messages, pongs, close replies).
    pub async fn flush(&mut self) {
        let out = self.conn.output().split();
        if !out.is_empty() {
            let _ = self.stream.write_all(&out).await;
        }
    }

    /// The next event, without answering pings (the codec queues pongs; `flush` sends them).
    /// `None` on EOF.
    pub async fn next_event(&mut self) -> Option<Event> {
        loop {
            match self.conn.handle_input(&mut self.input) {
                Ok(Some(e)) => return Some(e),
                Ok(None) => {}
                Err(e) => panic!("server sent invalid frames: {e}"),
            }
            let n = tokio::time::timeout(TIMEOUT, self.stream.read_buf(&mut self.input))
                .await
                .expect("timed out waiting for the server")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    /// Read until the server closes; answer its Close (as a well-behaved client does).
    pub async fn ending(&mut self) -> Ending {
        loop {
            match self.next_event().await {
                Some(Event::Close(frame)) => {
                    self.flush().await;
                    return Ending::Close(frame);
                }
                Some(_) => {}
                None => return Ending::Eof,
            }
        }
    }

    /// Send a text message and flush it.
    pub async fn send_text(&mut self, text: &str) {
        self.conn
            .send(switchboard_ws_proto::MessageKind::Text, text.as_bytes());
        self.flush().await;
    }

    /// The next text message as JSON (skipping pings); `None` at a Close frame or EOF.
    pub async fn next_json(&mut self) -> Option<serde_json::Value> {
        loop {
            match self.next_event().await? {
                Event::Text(t) => return Some(serde_json::from_slice(&t).unwrap()),
                Event::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// The next JSON message of `kind` (skipping others).
    pub async fn expect_type(&mut self, kind: &str) -> serde_json::Value {
        loop {
            let m = self.next_json().await.expect("connection ended");
            if m["type"] == kind {
                return m;
            }
        }
    }

    /// The close code the server ends with.
    pub async fn close_code(&mut self) -> Option<u16> {
        match self.ending().await {
            Ending::Close(Some(f)) => Some(f.code.as_u16()),
            _ => None,
        }
    }
}

fn rand_nonce() -> [u8; 16] {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    t.to_le_bytes()
}

/// A masked client frame with the given first byte (FIN/RSV/opcode) and payload.
pub fn raw_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0xa1, 0xb2, 0xc3, 0xd4];
    let mut out = vec![b0];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    let start = out.len();
    out.extend_from_slice(payload);
    switchboard_ws_proto::mask::apply_mask(&mut out[start..], key, 0);
    out
}

/// Send a raw HTTP request and return the status code of the answer.
/// Whether `buf` holds a whole response head, and the whole body when the head gives its
/// length.
fn response_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match length {
        Some(length) => buf.len() >= end + 4 + length,
        None => true,
    }
}

pub async fn http_status(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(TIMEOUT, s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        buf.extend_from_slice(&chunk[..n]);
        if n == 0 || response_complete(&buf) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}
