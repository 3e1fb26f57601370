//! Server-Sent Events subscribers (switchboard's `GET /events`, docs/protocol.md): opening
//! a stream, and cutting what arrives into events, in place.
//!
//! A stream starts with `retry:`, then `event: connected`; then each message is an event
//! `id: …` / `event: <type>` / `data: <json>` / blank line, the JSON being what a WebSocket
//! client gets. So the fan-out can classify an event's `data:` line exactly as a native
//! WebSocket frame (same `"data":"P<timestamp>` search), and the SSE and WebSocket rows
//! measure the same messages.
//!
//! The body is close-delimited (a fresh connection's stream is switchboard's own driver) or
//! chunked (hyper's, on a kept-alive connection). It is not decoded: switchboard writes whole
//! events into each chunk, so the chunk-size lines (`\r\n1a3\r\n`) only ever sit between
//! events, where they become lines no field name matches. Events end at `\n\n`, which the
//! chunk framing (`\r\n`) never forms.

use std::io;

use memchr::{memchr, memmem};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::http;
use super::target::Target;

/// Opens a stream on the rooms `channels` (comma-separated) and reads until its
/// `connected` event: by then the stream is in every room (switchboard joins before it
/// answers). Returns the stream and the bytes that came after that event.
pub async fn open(target: &Target, channels: &str) -> io::Result<(TcpStream, Vec<u8>)> {
    let mut stream = target.connect().await?;
    let path = format!("/events?channels={channels}");
    let request = http::get(target.addr, &path, "text/event-stream");
    stream.write_all(&request).await?;
    let mut buf = Vec::with_capacity(1024);
    let head = http::read_head(&mut stream, &mut buf, "text/event-stream").await?;
    buf.drain(..head.len);
    loop {
        let mut at = 0;
        while let Some(len) = event_len(&buf[at..]) {
            let event = &buf[at..at + len];
            at += len;
            if field(event, b"event") == Some(b"connected") {
                buf.drain(..at);
                return Ok((stream, buf));
            }
        }
        http::read_more(&mut stream, &mut buf).await?;
    }
}

/// The length of the complete event at the start of `data`, its blank line included
/// (`None`: it is not complete yet).
pub fn event_len(data: &[u8]) -> Option<usize> {
    static END: std::sync::LazyLock<memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memmem::Finder::new(b"\n\n"));
    END.find(data).map(|i| i + 2)
}

/// The value of the event's first `name:` field (one line: switchboard's JSON has no raw
/// line break, so `data` is a single line).
pub fn field<'a>(event: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let mut rest = event;
    loop {
        let end = memchr(b'\n', rest).unwrap_or(rest.len());
        let line = &rest[..end];
        if let Some(value) = line.strip_prefix(name).and_then(|v| v.strip_prefix(b": ")) {
            return Some(value);
        }
        rest = rest.get(end + 1..).filter(|r| !r.is_empty())?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_a_chunked_stream_into_events() {
        let body = b"e\r\nretry: 2000\n\n\r\n\
            40\r\nid: 0-dj0k\nevent: connected\ndata: {\"type\":\"connected\"}\n\n\r\n\
            50\r\nid: 1-dj0k\nevent: publish\ndata: {\"data\":\"P0000000000001234xxx\"}\n\n\r\n\
            10\r\nid: 2-dj0k\nevent: publish\ndata: {\"data\":";
        let mut at = 0;
        let mut events = Vec::new();
        while let Some(len) = event_len(&body[at..]) {
            events.push(&body[at..at + len]);
            at += len;
        }
        assert_eq!(events.len(), 3, "the last one is incomplete");
        assert_eq!(field(events[0], b"event"), None);
        assert_eq!(field(events[0], b"retry"), Some(&b"2000"[..]));
        assert_eq!(field(events[1], b"event"), Some(&b"connected"[..]));
        assert_eq!(field(events[2], b"id"), Some(&b"1-dj0k"[..]));
        assert_eq!(
            field(events[2], b"data"),
            Some(&br#"{"data":"P0000000000001234xxx"}"#[..])
        );
    }
}
