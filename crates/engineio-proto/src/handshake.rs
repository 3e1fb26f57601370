//! The handshake: session ids and the open packet
//! `0{"sid":…,"upgrades":[…],"pingInterval":…,"pingTimeout":…,"maxPayload":…}`.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Serialize;

use crate::config::Config;
use crate::packet::Packet;
use crate::request::Transport;
use crate::str::Str;

/// A session id (`sid`), chosen by the server.
///
/// Invariant: 1 to [`Sid::MAX_LEN`] characters of the URL-safe base64 alphabet
/// (`A–Z a–z 0–9 - _`), so it needs no escaping in a query string or JSON.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sid(Str);

/// A string that is not a valid [`Sid`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a session id is 1 to 64 characters of A-Z a-z 0-9 - _")]
pub struct InvalidSid;

impl Sid {
    /// Longest accepted id.
    pub const MAX_LEN: usize = 64;

    /// Check and wrap an id chosen by the caller.
    pub fn new(s: &str) -> Result<Sid, InvalidSid> {
        let ok = !s.is_empty()
            && s.len() <= Sid::MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Sid(Str::from(s)))
        } else {
            Err(InvalidSid)
        }
    }

    /// An id from 15 random bytes (the caller's CSPRNG): 20 characters, like the reference
    /// server's ids.
    pub fn from_random(bytes: [u8; 15]) -> Sid {
        Sid(Str::from(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sid({})", self.as_str())
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The handshake data, serialized in the key order of the reference server.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OpenData<'a> {
    sid: &'a str,
    upgrades: &'a [&'a str],
    ping_interval: u128,
    ping_timeout: u128,
    max_payload: usize,
}

/// The open packet of a new session on `transport`: `upgrades` is `["websocket"]` on polling
/// when upgrades are allowed, `[]` otherwise.
pub fn open_packet(sid: &Sid, transport: Transport, config: &Config) -> Packet {
    let upgrades: &[&str] = match transport {
        Transport::Polling if config.allow_upgrades => &["websocket"],
        _ => &[],
    };
    let data = OpenData {
        sid: sid.as_str(),
        upgrades,
        ping_interval: config.ping_interval.as_millis(),
        ping_timeout: config.ping_timeout.as_millis(),
        max_payload: config.max_payload,
    };
    // Serializing a struct of strings and integers cannot fail.
    let json = serde_json::to_string(&data).unwrap_or_default();
    Packet::Open(Str::from(json))
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    fn text(p: &Packet) -> String {
        let mut out = BytesMut::new();
        p.encode_text(&mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn open_packet_exact_bytes() {
        let sid = Sid::new("lv_VI97HAXpY6yYWAAAC").unwrap();
        let config = Config::default();
        assert_eq!(
            text(&open_packet(&sid, Transport::Polling, &config)),
            r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
        );
        assert_eq!(
            text(&open_packet(&sid, Transport::WebSocket, &config)),
            r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
        );
        let no_upgrades = Config {
            allow_upgrades: false,
            ..Config::default()
        };
        assert_eq!(
            text(&open_packet(&sid, Transport::Polling, &no_upgrades)),
            r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
        );
    }

    #[test]
    fn sids() {
        let sid = Sid::from_random([0xff; 15]);
        assert_eq!(sid.as_str(), "____________________");
        assert_eq!(Sid::from_random([0; 15]).as_str().len(), 20);
        assert!(Sid::new("").is_err());
        assert!(Sid::new("a=b").is_err());
        assert!(Sid::new("a b").is_err());
        assert!(Sid::new(&"a".repeat(65)).is_err());
        assert!(Sid::new(&"a".repeat(64)).is_ok());
        assert!(Sid::new("Ab-_09").is_ok());
    }
}
