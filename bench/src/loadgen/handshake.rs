//! The client side of the RFC 6455 opening handshake, written by hand: one
//! `write` of the request, reads until the end of the response head, and a check of
//! the status line and `Sec-WebSocket-Accept`.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The GUID RFC 6455 appends to the key before hashing it into the accept value.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A response head larger than this is not a WebSocket server talking.
const MAX_HEAD: usize = 8 * 1024;

/// A tiny xorshift PRNG: keys and masks need to vary, not to be secret, and a
/// `rand` dependency would buy nothing here.
pub struct Rng(u64);

impl Rng {
    /// Seeds from the clock and a process-wide counter, so no two are alike.
    pub fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Rng((nanos ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Four random bytes, e.g. a frame mask key.
    pub fn mask(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_ne_bytes()
    }
}

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}

/// Upgrades `stream` to a WebSocket at `path`. Returns any bytes the server sent
/// after its response head (they belong to the frame stream).
pub async fn upgrade(
    stream: &mut TcpStream,
    host: SocketAddr,
    path: &str,
    rng: &mut Rng,
) -> io::Result<Vec<u8>> {
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&rng.next_u64().to_ne_bytes());
    nonce[8..].copy_from_slice(&rng.next_u64().to_ne_bytes());
    let key = BASE64.encode(nonce);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;

    let mut buf = Vec::with_capacity(1024);
    let head_len = loop {
        let searched = buf.len().saturating_sub(3);
        if buf.len() >= MAX_HEAD {
            return Err(invalid("response head too large"));
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "connection closed during the handshake",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf[searched..].windows(4).position(|w| w == b"\r\n\r\n") {
            break searched + i + 4;
        }
    };
    check_response(&buf[..head_len], &key)?;
    Ok(buf.split_off(head_len))
}

/// Checks for `101` and the `Sec-WebSocket-Accept` value that proves the server
/// read our key.
fn check_response(head: &[u8], key: &str) -> io::Result<()> {
    let head = std::str::from_utf8(head).map_err(|_| invalid("response head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 101") {
        return Err(invalid(format!("expected 101, got {status:?}")));
    }
    let expected = BASE64.encode(Sha1::digest(format!("{key}{WS_GUID}")));
    let accept = lines
        .filter_map(|l| l.split_once(':'))
        .find_map(|(name, value)| {
            name.trim()
                .eq_ignore_ascii_case("sec-websocket-accept")
                .then(|| value.trim())
        });
    match accept {
        Some(value) if value == expected => Ok(()),
        Some(value) => Err(invalid(format!("wrong Sec-WebSocket-Accept {value:?}"))),
        None => Err(invalid("no Sec-WebSocket-Accept header")),
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_rfc_example() {
        // RFC 6455 section 1.3: key and accept value of the sample handshake.
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert!(check_response(head, "dGhlIHNhbXBsZSBub25jZQ==").is_ok());
        assert!(check_response(head, "AAAAAAAAAAAAAAAAAAAAAA==").is_err());
    }

    #[test]
    fn rejects_other_statuses() {
        let head = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        assert!(check_response(head, "dGhlIHNhbXBsZSBub25jZQ==").is_err());
    }
}
