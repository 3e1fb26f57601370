//! One WebSocket connection in the client role: TCP (or TLS with rustls), the HTTP upgrade,
//! then frames through `ws-proto`'s sans-IO [`Connection`] (which masks every frame with
//! keys from the OS's CSPRNG). The reconnecting logic lives in [`crate::client`].

use std::io::IoSlice;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use switchboard_ws_proto::{
    ClientHandshake, CloseCode, Config, Connection, DeflateConfig, Event, MessageKind,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use crate::error::ConnectError;

/// A byte stream: plain TCP or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where to connect, from a `ws://` or `wss://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) tls: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Path and query, e.g. `/ws?format=msgpack`.
    pub(crate) target: String,
}

impl Endpoint {
    pub(crate) fn parse(url: &str) -> Result<Endpoint, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("bad URL {url:?}: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(format!("bad URL {url:?}: the scheme must be ws or wss")),
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("bad URL {url:?}: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let target = uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        Ok(Endpoint {
            tls,
            host,
            port,
            target: if target.is_empty() {
                "/".into()
            } else {
                target
            },
        })
    }

    /// The `Host` header value.
    fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.tls, self.port) {
            (false, 80) | (true, 443) => host,
            _ => format!("{host}:{}", self.port),
        }
    }
}

/// What a connection attempt sends besides the upgrade itself.
pub(crate) struct Upgrade<'a> {
    /// Path and query (the endpoint's, plus credentials in the query when configured).
    pub(crate) target: &'a str,
    pub(crate) headers: &'a [(&'a str, &'a str)],
    pub(crate) protocols: &'a [&'a str],
    pub(crate) deflate: bool,
}

/// An open WebSocket.
pub(crate) struct WsConn {
    reader: ReadHalf<Box<dyn Io>>,
    writer: WriteHalf<Box<dyn Io>>,
    conn: Connection,
    input: BytesMut,
    /// The subprotocol the server chose.
    pub(crate) protocol: Option<String>,
}

/// The largest message accepted from the server (the server's own default limit is 1 MiB;
/// history pages are at most 512 KiB of messages).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

pub(crate) async fn connect(
    endpoint: &Endpoint,
    upgrade: &Upgrade<'_>,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<WsConn, ConnectError> {
    let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(ConnectError::Io)?;
    let _ = tcp.set_nodelay(true);
    let mut io: Box<dyn Io> = if let (true, Some(tls)) = (endpoint.tls, tls) {
        let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
            .map_err(|e| ConnectError::Tls(e.to_string()))?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| ConnectError::Tls(e.to_string()))?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    let mut nonce = [0u8; 16];
    getrandom::getrandom(&mut nonce).map_err(|e| ConnectError::Tls(e.to_string()))?;
    let handshake = ClientHandshake::new(nonce, upgrade.protocols, upgrade.deflate);
    let request = handshake.request(&endpoint.authority(), upgrade.target, upgrade.headers);
    io.write_all(&request).await.map_err(ConnectError::Io)?;
    let mut input = BytesMut::with_capacity(4096);
    let (accepted, head) = loop {
        if io.read_buf(&mut input).await.map_err(ConnectError::Io)? == 0 {
            return Err(ConnectError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        match handshake.parse_response(&input) {
            Ok(Some(done)) => break done,
            Ok(None) => continue,
            Err(switchboard_ws_proto::ClientHandshakeError::Status { status }) => {
                return Err(ConnectError::Status(status))
            }
            Err(e) => return Err(ConnectError::Handshake(e.to_string())),
        }
    };
    let _ = input.split_to(head);
    let config = Config {
        max_message_size: MAX_MESSAGE,
    };
    let mut conn = Connection::client(&config);
    if let Some(params) = accepted.deflate {
        conn = conn.with_deflate(params, &DeflateConfig::default());
    }
    let (reader, writer) = tokio::io::split(io);
    Ok(WsConn {
        reader,
        writer,
        conn,
        input,
        protocol: accepted.protocol,
    })
}

/// What [`WsConn::next_event`] found.
pub(crate) enum Received {
    Text(Bytes),
    Binary(Bytes),
    /// Any frame counts as a sign of life; this one carried no message.
    Control,
    /// The close handshake (our echo is queued): the code (1005 without one) and reason.
    Closed(u16, String),
}

impl WsConn {
    /// The next event decoded from what was read so far, `None` when more input is needed.
    /// A protocol error closes the connection (its Close frame is queued).
    pub(crate) fn next_event(&mut self) -> Result<Option<Received>, (u16, String)> {
        match self.conn.handle_input(&mut self.input) {
            Ok(Some(Event::Text(b))) => Ok(Some(Received::Text(b))),
            Ok(Some(Event::Binary(b))) => Ok(Some(Received::Binary(b))),
            Ok(Some(Event::Ping(_) | Event::Pong(_))) => Ok(Some(Received::Control)),
            Ok(Some(Event::Close(frame))) => Ok(Some(match frame {
                Some(f) => Received::Closed(f.code.as_u16(), f.reason.to_string()),
                None => Received::Closed(1005, String::new()),
            })),
            Ok(None) => Ok(None),
            Err(e) => Err((e.close_code().as_u16(), e.to_string())),
        }
    }

    /// Read more input. Cancel-safe (a cancelled read loses nothing). `Ok(0)`: the peer
    /// closed the stream.
    pub(crate) async fn read_more(&mut self) -> std::io::Result<usize> {
        self.split_io().0.read_more().await
    }

    /// The reading and the writing side, to wait on both at once.
    pub(crate) fn split_io(&mut self) -> (ReadSide<'_>, WriteSide<'_>) {
        (
            ReadSide {
                reader: &mut self.reader,
                input: &mut self.input,
            },
            WriteSide {
                writer: &mut self.writer,
                conn: &mut self.conn,
            },
        )
    }

    pub(crate) fn send(&mut self, kind: MessageKind, payload: &[u8]) {
        self.conn.send(kind, payload);
    }

    pub(crate) fn ping(&mut self) {
        self.conn.send_ping(b"sb");
    }

    pub(crate) fn close(&mut self, code: u16, reason: &str) {
        self.conn.close(CloseCode::from_u16(code), reason);
    }

    /// Whether frames wait to be written.
    pub(crate) fn has_output(&mut self) -> bool {
        !self.conn.output().is_empty()
    }

    /// Write everything queued. Cancel-safe: each write completes within one poll, and the
    /// output advances only by what was written.
    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
        self.split_io().1.flush().await
    }

    /// Send a Close and give the server a moment to answer it.
    pub(crate) async fn shutdown(mut self, code: u16, reason: &str) {
        self.close(code, reason);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            self.flush().await?;
            loop {
                while let Ok(Some(event)) = self.next_event() {
                    if let Received::Closed(..) = event {
                        return Ok(());
                    }
                }
                if self.read_more().await? == 0 {
                    return Ok::<(), std::io::Error>(());
                }
            }
        })
        .await;
        let _ = self.writer.shutdown().await;
    }
}

/// The reading side of a [`WsConn`].
pub(crate) struct ReadSide<'a> {
    reader: &'a mut ReadHalf<Box<dyn Io>>,
    input: &'a mut BytesMut,
}

impl ReadSide<'_> {
    /// Read more input. Cancel-safe (a cancelled read loses nothing). `Ok(0)`: the peer
    /// closed the stream.
    pub(crate) async fn read_more(&mut self) -> std::io::Result<usize> {
        if self.input.capacity() - self.input.len() < 4096 {
            self.input.reserve(16 * 1024);
        }
        self.reader.read_buf(self.input).await
    }
}

/// The writing side of a [`WsConn`].
pub(crate) struct WriteSide<'a> {
    writer: &'a mut WriteHalf<Box<dyn Io>>,
    conn: &'a mut Connection,
}

impl WriteSide<'_> {
    /// Write everything queued (cancel-safe: see [`WsConn::flush`]).
    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
        loop {
            let out = self.conn.output();
            if out.is_empty() {
                break;
            }
            let mut slices = [IoSlice::new(&[]); 64];
            let n = out.io_slices(&mut slices);
            let written = self.writer.write_vectored(&slices[..n]).await?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.conn.output().advance(written);
        }
        self.writer.flush().await
    }
}

/// The TLS settings for `endpoint` (`None` for `ws://`): the OS trust store, plus
/// `extra_roots` (PEM certificates, e.g. a development CA). Without extra roots one config
/// is built per process and shared: the OS store is ~150 certificates, parsed once (built
/// per client it cost ~100 KB of every client's memory).
pub(crate) fn tls_for(
    endpoint: &Endpoint,
    extra_roots: &[Vec<u8>],
) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    static SHARED: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    if !endpoint.tls {
        return Ok(None);
    }
    if extra_roots.is_empty() {
        return SHARED
            .get_or_init(|| tls_config(&[]).map(Arc::new))
            .clone()
            .map(Some);
    }
    tls_config(extra_roots).map(|c| Some(Arc::new(c)))
}

fn tls_config(extra_roots: &[Vec<u8>]) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    for pem in extra_roots {
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("bad PEM in the extra roots: {e:?}"))?;
        if certs.is_empty() {
            return Err("no certificate in the extra root PEM".into());
        }
        for cert in certs {
            roots.add(cert).map_err(|e| e.to_string())?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_scheme_host_port_and_target() {
        let e = Endpoint::parse("ws://127.0.0.1:8080/ws?format=msgpack").expect("url");
        assert_eq!(
            e,
            Endpoint {
                tls: false,
                host: "127.0.0.1".into(),
                port: 8080,
                target: "/ws?format=msgpack".into()
            }
        );
        assert_eq!(e.authority(), "127.0.0.1:8080");
        let e = Endpoint::parse("wss://example.com").expect("url");
        assert_eq!((e.tls, e.port, e.target.as_str()), (true, 443, "/"));
        assert_eq!(e.authority(), "example.com");
        let e = Endpoint::parse("ws://[::1]:9/x").expect("url");
        assert_eq!(
            (e.host.as_str(), e.authority().as_str()),
            ("::1", "[::1]:9")
        );
        assert!(Endpoint::parse("http://example.com/").is_err());
        assert!(Endpoint::parse("not a url").is_err());
    }
}
