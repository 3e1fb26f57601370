//! Just enough Socket.IO v5 over Engine.IO v4 (websocket transport only, text packets) for
//! the Socket.IO rows, written at the byte level like the rest of loadgen.
//!
//! The event semantics every server under test implements (switchboard's built-in rooms,
//! and the `socketioxide` and `node-socketio` peers written to match):
//!
//! * `421["join_room","bench"]` joins room `bench`, acknowledged with
//!   `431[{"status":"ok","room":"bench",…}]`;
//! * `42["publish",{"room":"bench","data":"P…"}]` is delivered to every socket in the room,
//!   the sender included, as `42["message",{…,"data":"P…",…}]` (an object whose key order is
//!   not fixed, possibly followed by more arguments);
//! * `42<id>["message-with-ack",<args>]` is acknowledged with `43<id>[<args>]` (echo mode).
//!
//! Engine.IO: the server opens with `0{"sid":…}`, the client sends `40` (CONNECT to `/`),
//! the server answers `40{"sid":…}`; the server pings with `2`, the client answers `3`.

use std::io::{self, ErrorKind};

use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::fanout::{client_frame, parse_frame, push_frame};

/// Engine.IO ping (server to client).
pub const PING: &[u8] = b"2";
/// Engine.IO pong (client to server).
pub const PONG: &[u8] = b"3";

/// Ack id of the `join_room` request a member sends.
const JOIN_ACK_ID: u64 = 1;

/// Whether a text frame is a Socket.IO EVENT named `event` on namespace `/` (without an
/// ack id): `42["<event>",`.
pub fn is_event(payload: &[u8], event: &str) -> bool {
    let Some(rest) = payload.strip_prefix(b"42[\"") else {
        return false;
    };
    rest.strip_prefix(event.as_bytes())
        .is_some_and(|r| r.starts_with(b"\","))
}

/// A Socket.IO ACK on namespace `/`: `43<id>[…]` → (id, the arguments' JSON array).
pub fn parse_ack(payload: &[u8]) -> Option<(u64, &[u8])> {
    let rest = payload.strip_prefix(b"43")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 || rest.get(digits) != Some(&b'[') {
        return None;
    }
    let id = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    Some((id, &rest[digits..]))
}

/// A packet that ends the session on namespace `/` (or the whole Engine.IO session), with a
/// description, or `None`: Socket.IO DISCONNECT (`41`) or CONNECT_ERROR (`44…`), Engine.IO
/// CLOSE (`1`).
pub fn ended(payload: &[u8]) -> Option<String> {
    let what = if payload.starts_with(b"44") {
        "server refused the namespace (CONNECT_ERROR)"
    } else if payload.starts_with(b"41") {
        "server disconnected the socket (DISCONNECT)"
    } else if payload == b"1" {
        "server closed the Engine.IO session (CLOSE)"
    } else {
        return None;
    };
    Some(format!("{what}: {}", String::from_utf8_lossy(payload)))
}

/// The client's `publish` event carrying `data` (a JSON-safe string) to `room`.
pub fn publish(room: &str, data: &str) -> Vec<u8> {
    format!(r#"42["publish",{{"room":"{room}","data":"{data}"}}]"#).into_bytes()
}

/// Appends the masked frame of `42<id>["message-with-ack","<data>"]`.
pub fn push_echo_request(out: &mut Vec<u8>, id: u64, data: &str, mask: [u8; 4]) {
    let text = format!(r#"42{id}["message-with-ack","{data}"]"#);
    push_frame(out, 0x1, text.as_bytes(), mask);
}

/// Opens the Socket.IO session on a freshly upgraded connection: waits for the Engine.IO
/// open packet, sends CONNECT to `/` and waits for its answer. `buf` holds the bytes
/// received after the upgrade; on return it holds those after the CONNECT answer.
pub async fn connect(stream: &mut TcpStream, buf: &mut Vec<u8>, mask: [u8; 4]) -> io::Result<()> {
    wait_for(stream, buf, mask, |p| {
        if p.starts_with(b"0{") {
            Ok(true)
        } else {
            Ok(false)
        }
    })
    .await?;
    stream.write_all(&client_frame(b"40", mask)).await?;
    wait_for(stream, buf, mask, |p| {
        if p.starts_with(b"40{") || p == b"40" {
            Ok(true)
        } else if let Some(why) = ended(p) {
            Err(invalid(&why))
        } else {
            Ok(false)
        }
    })
    .await
}

/// Joins `room` with `join_room` and waits for its ack, which must say `"status":"ok"`.
pub async fn join(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    mask: [u8; 4],
    room: &str,
) -> io::Result<()> {
    let request = format!(r#"42{JOIN_ACK_ID}["join_room","{room}"]"#);
    stream
        .write_all(&client_frame(request.as_bytes(), mask))
        .await?;
    wait_for(stream, buf, mask, |p| match parse_ack(p) {
        Some((JOIN_ACK_ID, args)) => {
            if memmem::find(args, br#""status":"ok""#).is_some() {
                Ok(true)
            } else {
                Err(invalid(&format!(
                    "join_room refused: {}",
                    String::from_utf8_lossy(p)
                )))
            }
        }
        _ => match ended(p) {
            Some(why) => Err(invalid(&why)),
            None => Ok(false),
        },
    })
    .await
}

/// Reads until a text frame for which `found` says true (frames before it are dropped,
/// Engine.IO pings answered); bytes after it stay in `buf`.
async fn wait_for(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    mask: [u8; 4],
    found: impl Fn(&[u8]) -> io::Result<bool>,
) -> io::Result<()> {
    loop {
        let mut at = 0;
        let mut hit = false;
        let mut reply = Vec::new();
        while let Some((opcode, payload, next)) = parse_frame(&buf[at..])? {
            at += next;
            match opcode {
                0x1 if payload == PING => push_frame(&mut reply, 0x1, PONG, mask),
                0x1 if found(payload)? => {
                    hit = true;
                    break;
                }
                0x9 => push_frame(&mut reply, 0xA, payload, mask),
                _ => {}
            }
        }
        buf.drain(..at);
        if !reply.is_empty() {
            stream.write_all(&reply).await?;
        }
        if hit {
            return Ok(());
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "closed during setup",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Holds an idle Socket.IO connection: reads what the server sends and answers its
/// Engine.IO pings (`2` → `3`) and WebSocket pings, so that the server keeps the session
/// however long the hold lasts. Returns when the server closes the connection.
pub async fn hold(mut stream: TcpStream, mut buf: Vec<u8>, mask: [u8; 4]) -> io::Result<()> {
    loop {
        let mut at = 0;
        let mut reply = Vec::new();
        while let Some((opcode, payload, next)) = parse_frame(&buf[at..])? {
            at += next;
            match opcode {
                0x1 if payload == PING => push_frame(&mut reply, 0x1, PONG, mask),
                0x1 => {
                    if let Some(why) = ended(payload) {
                        return Err(invalid(&why));
                    }
                }
                0x9 => push_frame(&mut reply, 0xA, payload, mask),
                _ => {}
            }
        }
        buf.drain(..at);
        if !reply.is_empty() {
            stream.write_all(&reply).await?;
        }
        let mut chunk = [0u8; 512];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, message.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_events_and_acks() {
        assert!(is_event(br#"42["message",{"data":"P"}]"#, "message"));
        assert!(!is_event(br#"42["message-back","P"]"#, "message"));
        assert!(!is_event(br#"421["message",{}]"#, "message"));
        assert!(!is_event(br#"42/chat,["message",{}]"#, "message"));
        assert_eq!(
            parse_ack(br#"431[{"status":"ok","room":"bench"}]"#),
            Some((1, &br#"[{"status":"ok","room":"bench"}]"#[..]))
        );
        assert_eq!(
            parse_ack(br#"4312345["Pxx"]"#),
            Some((12345, &br#"["Pxx"]"#[..]))
        );
        assert_eq!(parse_ack(br#"43["x"]"#), None);
        assert_eq!(parse_ack(br#"42["x"]"#), None);
        assert!(ended(br#"44{"message":"Invalid namespace"}"#).is_some());
        assert!(ended(b"41").is_some());
        assert!(ended(b"40{\"sid\":\"x\"}").is_none());
    }

    #[test]
    fn encodes_requests() {
        assert_eq!(
            publish("bench", "PSYNC"),
            br#"42["publish",{"room":"bench","data":"PSYNC"}]"#.to_vec()
        );
        let mut out = Vec::new();
        push_echo_request(&mut out, 7, "Pabc", [0, 0, 0, 0]);
        let (opcode, payload, len) = parse_unmasked(&out);
        assert_eq!(opcode, 0x1);
        assert_eq!(payload, br#"427["message-with-ack","Pabc"]"#);
        assert_eq!(len, out.len());
    }

    /// Reads back a client frame masked with the zero key.
    fn parse_unmasked(frame: &[u8]) -> (u8, &[u8], usize) {
        let len = usize::from(frame[1] & 0x7f);
        assert!(len < 126);
        (frame[0] & 0x0f, &frame[6..6 + len], 6 + len)
    }
}
