//! Long pollers (switchboard's `GET /poll`, docs/protocol.md): opening a poller's session,
//! and reading answers in place.
//!
//! The first poll (no cursor) joins the rooms and is answered at once with `connected`
//! and a cursor; every later poll passes the last cursor and is held until something
//! arrives. An answer is `{"messages":[…],"cursor":"…"}` with a `Content-Length`, and
//! its messages are the JSON a WebSocket client gets: the fan-out finds deliveries in it
//! with the same `"data":"P<timestamp>` search as in native WebSocket frames. Each poller
//! polls again as soon as an answer is complete, on the same keep-alive connection.

use std::io;
use std::net::SocketAddr;

use memchr::{memchr, memmem};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::http;
use super::target::Target;

/// The request for the next answer: `cursor` is the last answer's (`None`: first poll).
pub fn request(host: SocketAddr, channels: &str, cursor: Option<&[u8]>) -> Vec<u8> {
    let mut path = format!("/poll?channels={channels}");
    if let Some(cursor) = cursor {
        // Cursors are made of [0-9a-z._:-] (checked in `cursor`): nothing to escape.
        path.push_str("&cursor=");
        path.push_str(std::str::from_utf8(cursor).unwrap_or_default());
    }
    http::get(host, &path, "application/json")
}

/// Opens a poller's session on `channels`: the first poll is answered at once (by then
/// the session is in every room), and the second, sent before returning, is held until a
/// message arrives. Returns the connection and any bytes read beyond the first answer.
pub async fn open(target: &Target, channels: &str) -> io::Result<(TcpStream, Vec<u8>)> {
    let mut stream = target.connect().await?;
    stream
        .write_all(&request(target.addr, channels, None))
        .await?;
    let mut buf = Vec::with_capacity(1024);
    let (body, len) = loop {
        if let Some(answer) = answer(&buf)? {
            break answer;
        }
        http::read_more(&mut stream, &mut buf).await?;
    };
    let next = request(target.addr, channels, Some(cursor(&buf[body.clone()])?));
    stream.write_all(&next).await?;
    buf.drain(..len);
    Ok((stream, buf))
}

/// The complete answer at the start of `data`: its body's range and its total length
/// (`None`: not complete yet).
pub fn answer(data: &[u8]) -> io::Result<Option<(std::ops::Range<usize>, usize)>> {
    let Some(head) = http::head(data, "application/json")? else {
        return Ok(None);
    };
    let length = head
        .content_length
        .ok_or_else(|| http::invalid("poll answer without Content-Length".into()))?;
    let end = head.len + length;
    Ok((data.len() >= end).then_some((head.len..end, end)))
}

/// The answer's cursor (the last field of the body).
pub fn cursor(body: &[u8]) -> io::Result<&[u8]> {
    const KEY: &[u8] = br#""cursor":""#;
    let missing = || http::invalid(format!("no cursor in {}", String::from_utf8_lossy(body)));
    let start = memmem::rfind(body, KEY).ok_or_else(missing)? + KEY.len();
    let len = memchr(b'"', &body[start..]).ok_or_else(missing)?;
    let cursor = &body[start..start + len];
    let url_safe = |c: &u8| matches!(c, b'0'..=b'9' | b'a'..=b'z' | b'.' | b'_' | b':' | b'-');
    if !cursor.iter().all(url_safe) {
        return Err(http::invalid(format!(
            "cursor {:?} is not URL-safe",
            String::from_utf8_lossy(cursor)
        )));
    }
    Ok(cursor)
}

/// Whether the answer ends the session (`disconnect`: shutdown, a backend's kick, an
/// overflow under the `close` policy).
pub fn ended(body: &[u8]) -> bool {
    memmem::find(body, br#""type":"disconnect""#).is_some()
}

/// Copies the server reported dropped in this body's `lagged` notices (rare: parsed).
pub fn missed(body: &[u8]) -> u64 {
    let Ok(answer) = serde_json::from_slice::<serde_json::Value>(body) else {
        return 0;
    };
    let messages = answer["messages"].as_array().map_or(&[][..], |m| m);
    messages
        .iter()
        .filter(|m| m["type"] == "lagged")
        .filter_map(|m| m["missed"].as_u64())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_answers_and_cursors() {
        let body = br#"{"messages":[{"data":"P0000000000001234xxx","type":"publish"}],"cursor":"56377e0edd3f040745d8f4c06dc475d0.2:1-dj0k"}"#;
        let mut data = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        data.extend_from_slice(body);
        assert_eq!(answer(&data[..data.len() - 1]).unwrap(), None);
        let (range, len) = answer(&data).unwrap().unwrap();
        assert_eq!(len, data.len());
        assert_eq!(&data[range.clone()], &body[..]);
        assert_eq!(
            cursor(&data[range]).unwrap(),
            b"56377e0edd3f040745d8f4c06dc475d0.2:1-dj0k"
        );
        let req = request(
            "127.0.0.1:80".parse().unwrap(),
            "bench",
            Some(b"ab.1:0-dj0k"),
        );
        assert!(req.starts_with(b"GET /poll?channels=bench&cursor=ab.1:0-dj0k HTTP/1.1\r\n"));
        assert!(cursor(br#"{"messages":[]}"#).is_err());
        assert!(cursor(br#"{"messages":[],"cursor":"A%"}"#).is_err());
        let lagged = br#"{"messages":[{"type":"lagged","missed":7}],"cursor":"a.1:_"}"#;
        assert_eq!(missed(lagged), 7);
    }
}
