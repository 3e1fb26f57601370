//! A plain WebSocket client (RFC 6455 + permessage-deflate, `ws://` and `wss://`), for
//! protocols other than Switchboard's own: what [`crate::Client`] is built on, without the
//! reconnection and the native protocol. The Autobahn fuzzingserver run
//! (`scripts/conformance.sh client`) drives this type.

use bytes::Bytes;
use switchboard_ws_proto::MessageKind;

use crate::error::{ConnectError, Error};
use crate::transport::{self, Endpoint, Received, Upgrade, WsConn};

/// What [`WebSocket::connect`] sends and accepts.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Subprotocols offered (`Sec-WebSocket-Protocol`).
    pub protocols: Vec<String>,
    /// Extra request headers (e.g. `Authorization`).
    pub headers: Vec<(String, String)>,
    /// Offer permessage-deflate.
    pub deflate: bool,
    /// Extra trusted roots for `wss://` (PEM), besides the OS trust store.
    pub extra_roots: Vec<Vec<u8>>,
}

/// A received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsMessage {
    /// A text message (valid UTF-8).
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
}

/// An open WebSocket.
pub struct WebSocket {
    conn: WsConn,
    /// The close code and reason once the close handshake happened.
    closed: Option<(u16, String)>,
}

impl WebSocket {
    /// Connect to `url` and upgrade.
    pub async fn connect(url: &str, options: &Options) -> Result<WebSocket, Error> {
        let endpoint = Endpoint::parse(url).map_err(Error::Invalid)?;
        let tls = transport::tls_for(&endpoint, &options.extra_roots).map_err(Error::Invalid)?;
        let headers: Vec<(&str, &str)> = options
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let protocols: Vec<&str> = options.protocols.iter().map(String::as_str).collect();
        let upgrade = Upgrade {
            target: &endpoint.target,
            headers: &headers,
            protocols: &protocols,
            deflate: options.deflate,
        };
        let conn = transport::connect(&endpoint, &upgrade, tls.as_ref())
            .await
            .map_err(|e: ConnectError| Error::Closed(e.to_string()))?;
        Ok(WebSocket { conn, closed: None })
    }

    /// The subprotocol the server chose.
    pub fn protocol(&self) -> Option<&str> {
        self.conn.protocol.as_deref()
    }

    /// The next message; `Ok(None)` once the connection closed (see [`WebSocket::close_code`]).
    /// Pings are answered on the way.
    pub async fn recv(&mut self) -> Result<Option<WsMessage>, Error> {
        let io = |e: std::io::Error| Error::Closed(e.to_string());
        loop {
            if self.closed.is_some() {
                return Ok(None);
            }
            match self.conn.next_event() {
                Ok(Some(Received::Text(b))) => return Ok(Some(WsMessage::Text(b))),
                Ok(Some(Received::Binary(b))) => return Ok(Some(WsMessage::Binary(b))),
                Ok(Some(Received::Control)) => self.conn.flush().await.map_err(io)?,
                Ok(Some(Received::Closed(code, reason))) => {
                    // Our echo of the Close is queued: send it, then the server closes TCP.
                    let _ = self.conn.flush().await;
                    self.closed = Some((code, reason));
                }
                Err((code, reason)) => {
                    // A protocol error: our Close with its code is queued.
                    let _ = self.conn.flush().await;
                    self.closed = Some((code, reason));
                }
                Ok(None) => {
                    if self.conn.read_more().await.map_err(io)? == 0 {
                        self.closed = Some((1006, "connection closed".into()));
                    }
                }
            }
        }
    }

    /// Send a text message.
    pub async fn send_text(&mut self, text: &str) -> Result<(), Error> {
        self.send(MessageKind::Text, text.as_bytes()).await
    }

    /// Send a binary message.
    pub async fn send_binary(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.send(MessageKind::Binary, bytes).await
    }

    async fn send(&mut self, kind: MessageKind, payload: &[u8]) -> Result<(), Error> {
        self.conn.send(kind, payload);
        self.conn
            .flush()
            .await
            .map_err(|e| Error::Closed(e.to_string()))
    }

    /// The close code and reason, once closed (1006: without a close handshake).
    pub fn close_code(&self) -> Option<(u16, &str)> {
        self.closed.as_ref().map(|(c, r)| (*c, r.as_str()))
    }

    /// Close with `code` and `reason`, waiting (2 s at most) for the server's answer.
    pub async fn close(self, code: u16, reason: &str) {
        self.conn.shutdown(code, reason).await;
    }
}
