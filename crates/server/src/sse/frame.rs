//! The `text/event-stream` format (WHATWG HTML, "server-sent events"): events as bytes.

use bytes::{BufMut, BytesMut};

/// Append an event: `id:` (if any), `event:` (if any), the data split into one `data:` line
/// per line of `data` (a `\r\n`, `\r` or `\n` in it would otherwise end the field), and the
/// blank line that dispatches it. An event with an id and no data only moves the client's
/// last event id (the browser dispatches nothing).
pub(crate) fn write_event(out: &mut BytesMut, id: Option<&str>, event: Option<&str>, data: &[u8]) {
    if let Some(id) = id {
        write_field(out, b"id", id.as_bytes());
    }
    if let Some(event) = event {
        write_field(out, b"event", event.as_bytes());
    }
    if !data.is_empty() {
        for line in lines(data) {
            write_field(out, b"data", line);
        }
    }
    out.put_u8(b'\n');
}

/// The part of an event every recipient shares (`event:` and `data:` lines, no id, no blank
/// line): encoded once per delivery.
pub(crate) fn shared_part(event: &str, data: &[u8]) -> bytes::Bytes {
    let mut out = BytesMut::with_capacity(data.len() + event.len() + 16);
    write_field(&mut out, b"event", sanitize(event).as_bytes());
    for line in lines(data) {
        write_field(&mut out, b"data", line);
    }
    out.freeze()
}

/// A comment line (ignored by clients; keeps proxies from timing the stream out).
pub(crate) fn write_comment(out: &mut BytesMut, text: &str) {
    out.put_u8(b':');
    out.put_slice(text.as_bytes());
    out.put_slice(b"\n\n");
}

/// The reconnection delay hint, in milliseconds.
pub(crate) fn write_retry(out: &mut BytesMut, millis: u64) {
    out.put_slice(format!("retry: {millis}\n\n").as_bytes());
}

fn write_field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_u8(b'\n');
}

/// An event name may not contain line breaks (a client message's `type` is any string).
fn sanitize(event: &str) -> std::borrow::Cow<'_, str> {
    if event.contains(['\r', '\n']) {
        event.replace(['\r', '\n'], " ").into()
    } else {
        event.into()
    }
}

/// The lines of `data`, split at `\r\n`, `\r` or `\n`.
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.iter().position(|b| *b == b'\n' || *b == b'\r') {
            None => {
                rest = None;
                Some(s)
            }
            Some(i) => {
                let skip = if s[i] == b'\r' && s.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = Some(&s[i + skip..]);
                Some(&s[..i])
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_data_becomes_several_data_lines() {
        let mut out = BytesMut::new();
        write_event(&mut out, Some("3-abcd"), Some("chat"), b"a\nb\r\nc\rd");
        assert_eq!(
            &out[..],
            b"id: 3-abcd\nevent: chat\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        let shared = shared_part("x\ny", b"{}");
        assert_eq!(&shared[..], b"event: x y\ndata: {}\n");
    }

    #[test]
    fn an_id_only_event_has_no_data_line() {
        let mut out = BytesMut::new();
        write_event(&mut out, Some("1-0000"), None, b"");
        assert_eq!(&out[..], b"id: 1-0000\n\n");
        write_comment(&mut out, "heartbeat");
        write_retry(&mut out, 3000);
        assert_eq!(&out[..], b"id: 1-0000\n\n:heartbeat\n\nretry: 3000\n\n");
    }
}
