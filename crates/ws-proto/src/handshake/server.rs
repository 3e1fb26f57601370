//! Server side of the opening handshake (RFC 6455 §4.2).
//!
//! [`validate_request`] reads like §4.2.1: each numbered requirement has its own
//! [`HandshakeError`] variant, and each error knows its HTTP status. The HTTP layer (hyper in
//! our server) hands over the method, version and headers; [`parse_request`] does the same from
//! raw bytes for servers without an HTTP stack, and for fuzzing.

use std::fmt::Write as _;

use base64::Engine as _;

use super::{accept_key, has_token};
use crate::deflate::params::{negotiate_server, parse_extensions, ExtensionOffer};
use crate::deflate::{DeflateConfig, DeflateParams};

/// The largest request head [`parse_request`] accepts (bytes).
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// Why an upgrade request was refused. [`HandshakeError::status`] is the HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// §4.2.1 (1): the method must be GET.
    #[error("the method must be GET")]
    MethodNotGet,
    /// §4.2.1 (1): HTTP/1.1 or higher.
    #[error("HTTP/1.1 or later is required")]
    HttpVersion,
    /// §4.2.1 (2): a Host header.
    #[error("missing Host header")]
    MissingHost,
    /// §4.2.1 (3): `Upgrade: websocket`.
    #[error("missing or invalid Upgrade header (expected \"websocket\")")]
    MissingUpgrade,
    /// §4.2.1 (4): `Connection: Upgrade`.
    #[error("missing or invalid Connection header (expected \"Upgrade\")")]
    MissingConnectionUpgrade,
    /// §4.2.1 (5): a key that decodes to 16 bytes.
    #[error("missing or invalid Sec-WebSocket-Key")]
    InvalidKey,
    /// §4.2.1 (6): version 13 (answered 426 with `Sec-WebSocket-Version: 13`).
    #[error("unsupported Sec-WebSocket-Version (only 13 is supported)")]
    UnsupportedVersion,
    /// A header value that is not visible ASCII where a token list is expected.
    #[error("malformed {0} header")]
    MalformedHeader(&'static str),
    /// The raw request is not valid HTTP, or its head is too large.
    #[error("malformed HTTP request")]
    MalformedRequest,
}

impl HandshakeError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::UnsupportedVersion => 426,
            HandshakeError::MethodNotGet => 405,
            _ => 400,
        }
    }

    /// Extra response headers the status needs.
    pub fn response_headers(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            HandshakeError::UnsupportedVersion => &[("Sec-WebSocket-Version", "13")],
            HandshakeError::MethodNotGet => &[("Allow", "GET")],
            _ => &[],
        }
    }

    /// A complete HTTP/1.1 error response (for servers without an HTTP stack).
    pub fn to_response(&self) -> Vec<u8> {
        let body = format!("{self}\n");
        let mut r = format!("HTTP/1.1 {} {}\r\n", self.status(), reason(self.status()));
        for (k, v) in self.response_headers() {
            let _ = write!(r, "{k}: {v}\r\n");
        }
        let _ = write!(
            r,
            "Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        r.into_bytes()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        _ => "Bad Request",
    }
}

/// A valid upgrade request: what the server needs to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRequest {
    /// The `Sec-WebSocket-Key` as sent.
    pub key: String,
    /// Subprotocols offered, in the client's order of preference.
    pub protocols: Vec<String>,
    /// Extensions offered (malformed extension headers are ignored: no extension then).
    pub extensions: Vec<ExtensionOffer>,
    /// The `Origin` header, if any (checked against an allowlist by the server).
    pub origin: Option<String>,
}

/// Validate an upgrade request (RFC 6455 §4.2.1).
///
/// `headers` yields every header line (name, raw value); repeated headers are all seen.
pub fn validate_request<'h>(
    method: &str,
    http_1_1_or_later: bool,
    headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
) -> Result<UpgradeRequest, HandshakeError> {
    // (1) GET, HTTP/1.1 or later.
    if method != "GET" {
        return Err(HandshakeError::MethodNotGet);
    }
    if !http_1_1_or_later {
        return Err(HandshakeError::HttpVersion);
    }
    let (mut host, mut upgrade, mut connection, mut version) = (false, false, false, None);
    let mut key: Option<&[u8]> = None;
    let mut key_count = 0;
    let mut protocols = Vec::new();
    let mut extension_values = Vec::new();
    let mut origin = None;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("host") {
            host = true;
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= has_token(value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection |= has_token(value, "upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            key = Some(value);
            key_count += 1;
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            version = Some(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            let v = std::str::from_utf8(value)
                .map_err(|_| HandshakeError::MalformedHeader("Sec-WebSocket-Protocol"))?;
            protocols.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned),
            );
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            if let Ok(v) = std::str::from_utf8(value) {
                extension_values.push(v);
            }
        } else if name.eq_ignore_ascii_case("origin") {
            origin = std::str::from_utf8(value).ok().map(str::to_owned);
        }
    }
    // (2) Host.
    if !host {
        return Err(HandshakeError::MissingHost);
    }
    // (3) Upgrade: websocket. (4) Connection: Upgrade.
    if !upgrade {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !connection {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    // (5) Sec-WebSocket-Key: base64 of 16 bytes, exactly once.
    let key = match key {
        Some(k) if key_count == 1 && is_valid_key(k.trim_ascii()) => k.trim_ascii(),
        _ => return Err(HandshakeError::InvalidKey),
    };
    // (6) Sec-WebSocket-Version: 13.
    if version.map(<[u8]>::trim_ascii) != Some(b"13") {
        return Err(HandshakeError::UnsupportedVersion);
    }
    // (7)/(8) Origin, protocols and extensions are optional; malformed extension lists are
    // declined rather than refused, so a client with an odd extension still connects.
    let extensions = extension_values
        .iter()
        .filter_map(|v| parse_extensions(v).ok())
        .flatten()
        .collect();
    Ok(UpgradeRequest {
        // `is_valid_key` accepted only base64 characters, so this is ASCII.
        key: String::from_utf8_lossy(key).into_owned(),
        protocols,
        extensions,
        origin,
    })
}

fn is_valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|k| k.len() == 16)
}

/// The agreed outcome of a successful handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Headers of the `101 Switching Protocols` response (besides `Upgrade`/`Connection`).
    pub headers: Vec<(&'static str, String)>,
    /// The subprotocol chosen, if any.
    pub protocol: Option<String>,
    /// permessage-deflate parameters, if compression was agreed.
    pub deflate: Option<DeflateParams>,
}

impl UpgradeRequest {
    /// Accept the request: compute the accept key, pick the first offered subprotocol that
    /// `supported` contains, and negotiate permessage-deflate if `deflate` is given.
    pub fn accept(&self, supported: &[&str], deflate: Option<&DeflateConfig>) -> Accepted {
        let mut headers = vec![("Sec-WebSocket-Accept", accept_key(self.key.as_bytes()))];
        let protocol = self
            .protocols
            .iter()
            .find(|p| supported.contains(&p.as_str()))
            .cloned();
        if let Some(p) = &protocol {
            headers.push(("Sec-WebSocket-Protocol", p.clone()));
        }
        let deflate = deflate.and_then(|config| negotiate_server(&self.extensions, config));
        let deflate = deflate.map(|(params, header)| {
            headers.push(("Sec-WebSocket-Extensions", header));
            params
        });
        Accepted {
            headers,
            protocol,
            deflate,
        }
    }
}

impl Accepted {
    /// The complete `101` response (for servers without an HTTP stack).
    pub fn to_response(&self) -> Vec<u8> {
        let mut r = String::from(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        );
        for (k, v) in &self.headers {
            let _ = write!(r, "{k}: {v}\r\n");
        }
        r.push_str("\r\n");
        r.into_bytes()
    }
}

/// Parse and validate a raw request head from the start of `buf`.
///
/// `Ok(None)`: incomplete, read more (nothing consumed). `Ok(Some((request, path, len)))`: the
/// head was `len` bytes. A head over [`MAX_REQUEST_HEAD`] is an error, so a slow or hostile
/// client can not make the server buffer without bound.
pub fn parse_request(
    buf: &[u8],
) -> Result<Option<(UpgradeRequest, String, usize)>, HandshakeError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut storage);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_REQUEST_HEAD {
                Err(HandshakeError::MalformedRequest)
            } else {
                Ok(None)
            }
        }
        Ok(httparse::Status::Complete(len)) => {
            if len > MAX_REQUEST_HEAD {
                return Err(HandshakeError::MalformedRequest);
            }
            let method = req.method.unwrap_or_default();
            let path = req.path.unwrap_or("/").to_owned();
            let modern = req.version == Some(1);
            let request = validate_request(
                method,
                modern,
                req.headers.iter().map(|h| (h.name, h.value)),
            )?;
            Ok(Some((request, path, len)))
        }
        Err(_) => Err(HandshakeError::MalformedRequest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    fn with(replace: &str, by: &str) -> Vec<u8> {
        GOOD.replace(replace, by).into_bytes()
    }

    #[test]
    fn rfc6455_sample_request_is_accepted() {
        let (req, path, len) = parse_request(GOOD.as_bytes()).unwrap().unwrap();
        assert_eq!((path.as_str(), len), ("/chat", GOOD.len()));
        assert_eq!(req.protocols, ["chat", "superchat"]);
        assert_eq!(req.origin.as_deref(), Some("http://example.com"));
        let acc = req.accept(&["superchat"], None);
        let resp = String::from_utf8(acc.to_response()).unwrap();
        assert!(resp.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(resp.contains("Sec-WebSocket-Protocol: superchat\r\n"));
    }

    #[test]
    fn token_lists_in_any_case_are_accepted() {
        let req = with("Connection: Upgrade", "connection: keep-alive, UPGRADE");
        let req = String::from_utf8(req)
            .unwrap()
            .replace("Upgrade: websocket", "upgrade: WebSocket");
        assert!(parse_request(req.as_bytes()).unwrap().is_some());
    }

    #[test]
    fn each_rule_has_its_error_and_status() {
        let cases: Vec<(Vec<u8>, HandshakeError, u16)> = vec![
            (
                with("GET /chat", "POST /chat"),
                HandshakeError::MethodNotGet,
                405,
            ),
            (
                with("HTTP/1.1", "HTTP/1.0"),
                HandshakeError::HttpVersion,
                400,
            ),
            (
                with("Host: server.example.com\r\n", ""),
                HandshakeError::MissingHost,
                400,
            ),
            (
                with("Upgrade: websocket", "Upgrade: h2c"),
                HandshakeError::MissingUpgrade,
                400,
            ),
            (
                with("Connection: Upgrade", "Connection: keep-alive"),
                HandshakeError::MissingConnectionUpgrade,
                400,
            ),
            (
                with("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZQ=="),
                HandshakeError::InvalidKey,
                400,
            ),
            (
                with("dGhlIHNhbXBsZSBub25jZQ==", "!!!!!!!!!!!!!!!!!!!!!!!!"),
                HandshakeError::InvalidKey,
                400,
            ),
            (
                with("Version: 13", "Version: 8"),
                HandshakeError::UnsupportedVersion,
                426,
            ),
            (
                b"\x00\x01garbage\r\n\r\n".to_vec(),
                HandshakeError::MalformedRequest,
                400,
            ),
        ];
        for (req, err, status) in cases {
            let got = parse_request(&req).unwrap_err();
            assert_eq!(got, err);
            assert_eq!(got.status(), status);
            let resp = String::from_utf8(got.to_response()).unwrap();
            assert!(resp.starts_with(&format!("HTTP/1.1 {status} ")), "{resp}");
        }
        let resp = String::from_utf8(HandshakeError::UnsupportedVersion.to_response()).unwrap();
        assert!(resp.contains("Sec-WebSocket-Version: 13\r\n"));
    }

    #[test]
    fn partial_heads_are_incomplete_and_oversized_heads_are_refused() {
        for i in 0..GOOD.len() {
            assert_eq!(parse_request(&GOOD.as_bytes()[..i]), Ok(None), "prefix {i}");
        }
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_REQUEST_HEAD));
        assert_eq!(
            parse_request(huge.as_bytes()),
            Err(HandshakeError::MalformedRequest)
        );
    }

    #[test]
    fn deflate_offer_is_negotiated_in_the_response() {
        let req = with(
            "Sec-WebSocket-Version: 13\r\n",
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
        );
        let (req, _, _) = parse_request(&req).unwrap().unwrap();
        let acc = req.accept(&[], Some(&DeflateConfig::default()));
        assert!(acc.deflate.is_some());
        assert!(acc
            .headers
            .iter()
            .any(|(k, v)| *k == "Sec-WebSocket-Extensions" && v.starts_with("permessage-deflate")));
    }
}
