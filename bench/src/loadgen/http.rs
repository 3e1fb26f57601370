//! Just enough client-side HTTP/1.1 for switchboard's HTTP feeds (`sse`, `poll`): a GET
//! request written by hand, and response heads found and checked in place, without
//! copying, like the WebSocket frames in `fanout`.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;

use memchr::memmem;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A response head larger than this is not the server we expect.
const MAX_HEAD: usize = 8 * 1024;

/// A keep-alive `GET` (HTTP/1.1 keeps the connection open by default).
pub fn get(host: SocketAddr, path: &str, accept: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: {accept}\r\n\r\n").into_bytes()
}

/// A parsed response head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    /// Its length, the blank line included: the body starts there.
    pub len: usize,
    /// `Content-Length`, if given (a stream has none: it is chunked).
    pub content_length: Option<usize>,
    /// Whether `Content-Type` starts with this type (checked in place).
    pub content_type_ok: bool,
}

/// The head at the start of `data` if it is complete (`None`: read more). Anything but
/// `200` is an error carrying the status line (and the body's start, which says why).
pub fn head(data: &[u8], content_type: &str) -> io::Result<Option<Head>> {
    let Some(end) = memmem::find(data, b"\r\n\r\n") else {
        if data.len() > MAX_HEAD {
            return Err(invalid("response head too large".into()));
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&data[..end])
        .map_err(|_| invalid("response head is not UTF-8".into()))?;
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 200") {
        let body = String::from_utf8_lossy(&data[end + 4..data.len().min(end + 200)]);
        return Err(invalid(format!("expected 200, got {status:?} {body}")));
    }
    let mut head = Head {
        len: end + 4,
        content_length: None,
        content_type_ok: false,
    };
    for (name, value) in lines.filter_map(|l| l.split_once(':')) {
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse()
                .map_err(|_| invalid("bad Content-Length".into()))?;
            head.content_length = Some(n);
        } else if name.eq_ignore_ascii_case("content-type") {
            head.content_type_ok = value.starts_with(content_type);
        }
    }
    if !head.content_type_ok {
        return Err(invalid(format!("expected Content-Type {content_type}")));
    }
    Ok(Some(head))
}

/// Reads into `buf` until it holds a complete head, and returns it.
pub async fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    content_type: &str,
) -> io::Result<Head> {
    loop {
        if let Some(head) = head(buf, content_type)? {
            return Ok(head);
        }
        read_more(stream, buf).await?;
    }
}

/// Appends what the next read brings to `buf`; the connection closing is an error.
pub async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        return Err(io::Error::new(
            ErrorKind::UnexpectedEof,
            "closed during setup",
        ));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// An `InvalidData` error.
pub fn invalid(message: String) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads_and_refuses_other_statuses() {
        let ok =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(head(&ok[..20], "application/json").unwrap(), None);
        let h = head(ok, "application/json").unwrap().unwrap();
        assert_eq!((h.len, h.content_length), (ok.len() - 2, Some(2)));
        assert!(head(ok, "text/event-stream").is_err());
        let bad = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 9\r\n\r\n{\"error\"}";
        let e = head(bad, "application/json").unwrap_err().to_string();
        assert!(e.contains("400") && e.contains("error"), "{e}");
    }
}
