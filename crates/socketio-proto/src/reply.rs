//! The server's `CONNECT` and `CONNECT_ERROR` replies, written byte for byte as the reference
//! server writes them (its key order, which a sorted `serde_json::Map` would not keep).

use serde_json::Value;

use crate::json;
use crate::namespace::Namespace;

/// Why a `CONNECT` was refused; `message` is the text the client's `connect_error` sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectErrorReason {
    /// The namespace is not configured: `{"message":"Invalid namespace"}`.
    InvalidNamespace,
    /// The credentials were refused: `{"message":"Authentication failed"}`.
    AuthenticationFailed,
    /// Any other message (a middleware's error).
    Other(String),
}

impl ConnectErrorReason {
    /// The message.
    pub fn message(&self) -> &str {
        match self {
            ConnectErrorReason::InvalidNamespace => "Invalid namespace",
            ConnectErrorReason::AuthenticationFailed => "Authentication failed",
            ConnectErrorReason::Other(message) => message,
        }
    }
}

fn header(out: &mut Vec<u8>, kind: u8, nsp: &Namespace) {
    out.push(kind);
    if !nsp.is_root() {
        out.extend_from_slice(nsp.as_str().as_bytes());
        out.push(b',');
    }
}

fn finish(out: Vec<u8>) -> String {
    // ASCII header plus serde_json output: UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The `CONNECT` reply accepting `nsp`: `0{"sid":"…"}`, or `0{"sid":"…","pid":"…"}` when
/// connection state recovery is on for the namespace (`pid` is the private id the client
/// presents to recover).
pub fn connect_ok(nsp: &Namespace, sid: &str, pid: Option<&str>) -> String {
    let mut out = Vec::with_capacity(48);
    header(&mut out, b'0', nsp);
    out.extend_from_slice(b"{\"sid\":");
    json::write(&mut out, sid);
    if let Some(pid) = pid {
        out.extend_from_slice(b",\"pid\":");
        json::write(&mut out, pid);
    }
    out.push(b'}');
    finish(out)
}

/// The `CONNECT_ERROR` refusing `nsp`: `44/admin,{"message":"Invalid namespace"}` (the
/// Engine.IO `4` not included: `4/admin,{…}`), with `"data"` after the message when given.
pub fn connect_error(nsp: &Namespace, reason: &ConnectErrorReason, data: Option<&Value>) -> String {
    let mut out = Vec::with_capacity(48);
    header(&mut out, b'4', nsp);
    out.extend_from_slice(b"{\"message\":");
    json::write(&mut out, reason.message());
    if let Some(data) = data {
        out.extend_from_slice(b",\"data\":");
        json::write(&mut out, data);
    }
    out.push(b'}');
    finish(out)
}

/// The `DISCONNECT` the server sends to close a namespace: `1` or `1/chat,`.
pub fn disconnect(nsp: &Namespace) -> String {
    let mut out = Vec::with_capacity(16);
    header(&mut out, b'1', nsp);
    finish(out)
}
