//! Client side of the opening handshake (RFC 6455 §4.1): the request, and verification of the
//! server's response including `Sec-WebSocket-Accept`.

use std::fmt::Write as _;

use super::{accept_key, generate_key, has_token};
use crate::deflate::params::{accept_client, client_offer};
use crate::deflate::DeflateParams;

/// Why a server's handshake response was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientHandshakeError {
    /// Not a valid HTTP response, or its head is too large.
    #[error("malformed HTTP response")]
    Malformed,
    /// A status other than 101.
    #[error("server answered {status} instead of 101")]
    Status {
        /// The status received.
        status: u16,
    },
    /// Missing `Upgrade: websocket` or `Connection: Upgrade`.
    #[error("response lacks Upgrade: websocket / Connection: Upgrade")]
    MissingUpgrade,
    /// `Sec-WebSocket-Accept` missing or not derived from our key.
    #[error("Sec-WebSocket-Accept does not match the key")]
    BadAccept,
    /// A subprotocol we did not offer.
    #[error("server selected a subprotocol we did not offer")]
    UnexpectedProtocol,
    /// An extension we did not offer or invalid parameters.
    #[error("invalid Sec-WebSocket-Extensions in response: {0}")]
    BadExtensions(String),
}

/// The client's half of the handshake: build the request, then check the answer.
#[derive(Debug, Clone)]
pub struct ClientHandshake {
    key: String,
    protocols: Vec<String>,
    offer_deflate: bool,
}

/// What the server agreed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAccepted {
    /// The subprotocol the server chose.
    pub protocol: Option<String>,
    /// permessage-deflate parameters, if agreed.
    pub deflate: Option<DeflateParams>,
}

impl ClientHandshake {
    /// Start a handshake with a key made from 16 random bytes supplied by the caller.
    pub fn new(nonce: [u8; 16], protocols: &[&str], offer_deflate: bool) -> ClientHandshake {
        ClientHandshake {
            key: generate_key(nonce),
            protocols: protocols.iter().map(|p| p.to_string()).collect(),
            offer_deflate,
        }
    }

    /// The request head for `host` (with port if not default) and `path` (with query).
    /// `extra` headers (e.g. `Authorization`) are added verbatim.
    pub fn request(&self, host: &str, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
        let mut r = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n",
            self.key
        );
        if !self.protocols.is_empty() {
            let _ = write!(
                r,
                "Sec-WebSocket-Protocol: {}\r\n",
                self.protocols.join(", ")
            );
        }
        if self.offer_deflate {
            let _ = write!(r, "Sec-WebSocket-Extensions: {}\r\n", client_offer());
        }
        for (k, v) in extra {
            let _ = write!(r, "{k}: {v}\r\n");
        }
        r.push_str("\r\n");
        r.into_bytes()
    }

    /// Parse and verify the response head at the start of `buf`. `Ok(None)`: incomplete.
    /// On success also returns the head's length; bytes after it are WebSocket frames.
    pub fn parse_response(
        &self,
        buf: &[u8],
    ) -> Result<Option<(ClientAccepted, usize)>, ClientHandshakeError> {
        let mut storage = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut storage);
        let len = match resp.parse(buf) {
            Ok(httparse::Status::Partial) if buf.len() > 16 * 1024 => {
                return Err(ClientHandshakeError::Malformed)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Ok(httparse::Status::Complete(len)) => len,
            Err(_) => return Err(ClientHandshakeError::Malformed),
        };
        let status = resp.code.unwrap_or(0);
        if status != 101 {
            return Err(ClientHandshakeError::Status { status });
        }
        let (mut upgrade, mut connection, mut accept_ok) = (false, false, false);
        let mut protocol = None;
        let mut deflate = None;
        let expected = accept_key(self.key.as_bytes());
        for h in resp.headers.iter() {
            let name = h.name;
            if name.eq_ignore_ascii_case("upgrade") {
                upgrade |= has_token(h.value, "websocket");
            } else if name.eq_ignore_ascii_case("connection") {
                connection |= has_token(h.value, "upgrade");
            } else if name.eq_ignore_ascii_case("sec-websocket-accept") {
                accept_ok = h.value.trim_ascii() == expected.as_bytes();
            } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
                let p = String::from_utf8_lossy(h.value).trim().to_owned();
                if !self.protocols.contains(&p) {
                    return Err(ClientHandshakeError::UnexpectedProtocol);
                }
                protocol = Some(p);
            } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
                let v = String::from_utf8_lossy(h.value);
                if !self.offer_deflate {
                    return Err(ClientHandshakeError::BadExtensions(v.into_owned()));
                }
                deflate = accept_client(&v)
                    .map_err(|e| ClientHandshakeError::BadExtensions(e.to_string()))?;
            }
        }
        if !(upgrade && connection) {
            return Err(ClientHandshakeError::MissingUpgrade);
        }
        if !accept_ok {
            return Err(ClientHandshakeError::BadAccept);
        }
        Ok(Some((ClientAccepted { protocol, deflate }, len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deflate::DeflateConfig;
    use crate::handshake::server::parse_request;

    #[test]
    fn client_request_is_accepted_by_our_server_and_the_answer_verified() {
        let hs = ClientHandshake::new([7; 16], &["json", "msgpack"], true);
        let req = hs.request(
            "127.0.0.1:8080",
            "/ws?x=1",
            &[("Authorization", "Bearer t")],
        );
        let (upgrade, path, _) = parse_request(&req).unwrap().unwrap();
        assert_eq!(path, "/ws?x=1");
        let accepted = upgrade.accept(&["msgpack"], Some(&DeflateConfig::default()));
        let mut resp = accepted.to_response();
        resp.extend_from_slice(&[0x81, 0x00]);
        let (ok, len) = hs.parse_response(&resp).unwrap().unwrap();
        assert_eq!(len, resp.len() - 2);
        assert_eq!(ok.protocol.as_deref(), Some("msgpack"));
        assert_eq!(ok.deflate, accepted.deflate);
    }

    #[test]
    fn wrong_accept_or_status_is_rejected() {
        let hs = ClientHandshake::new([1; 16], &[], false);
        let bad =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                    Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert_eq!(hs.parse_response(bad), Err(ClientHandshakeError::BadAccept));
        let refused = b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            hs.parse_response(refused),
            Err(ClientHandshakeError::Status { status: 426 })
        );
        assert_eq!(hs.parse_response(b"HTTP/1.1 101 Swi"), Ok(None));
    }
}
