//! Polling payloads (HTTP long-polling bodies): text packets joined by the record separator
//! `\x1e`, binary messages as `b<base64>`.

use bytes::{Bytes, BytesMut};

use crate::error::DecodeError;
use crate::packet::Packet;
use crate::str::Str;

/// The record separator between the packets of a polling payload.
pub const SEPARATOR: u8 = 0x1e;

/// Encode `packets` as one polling payload (the body of a GET answer).
///
/// The body is always text (`Content-Type: text/plain; charset=UTF-8`): binary messages are
/// base64-encoded in v4.
pub fn encode_payload<'a>(packets: impl IntoIterator<Item = &'a Packet>) -> Bytes {
    let mut out = BytesMut::new();
    for (i, packet) in packets.into_iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(&[SEPARATOR]);
        }
        packet.encode_text(&mut out);
    }
    out.freeze()
}

/// The length of [`encode_payload`]'s output.
pub fn encoded_payload_len<'a>(packets: impl IntoIterator<Item = &'a Packet>) -> usize {
    let mut len = 0;
    for (i, packet) in packets.into_iter().enumerate() {
        len += packet.encoded_len() + usize::from(i > 0);
    }
    len
}

/// Decode a polling payload (a POST body) of at most `max_payload` bytes.
///
/// All or nothing: the first invalid packet fails the whole payload. Packets borrow `body`
/// (no copy of text data).
pub fn decode_payload(body: &Bytes, max_payload: usize) -> Result<Vec<Packet>, DecodeError> {
    if body.len() > max_payload {
        return Err(DecodeError::TooLarge { limit: max_payload });
    }
    // The separator is ASCII, so it never splits a UTF-8 sequence: checking the whole body
    // once covers every record.
    let text = Str::from_utf8(body.clone()).map_err(|_| DecodeError::InvalidUtf8)?;
    let bytes = text.as_bytes();
    let mut packets = Vec::new();
    let mut start = 0;
    loop {
        let end = bytes[start..]
            .iter()
            .position(|&b| b == SEPARATOR)
            .map_or(bytes.len(), |i| start + i);
        // A record between ASCII separators (or the ends) is UTF-8 on its own.
        let record =
            Str::from_utf8(bytes.slice(start..end)).map_err(|_| DecodeError::InvalidUtf8)?;
        packets.push(Packet::decode_text(&record)?);
        if end == bytes.len() {
            return Ok(packets);
        }
        start = end + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Packet;

    fn dec(body: &[u8]) -> Result<Vec<Packet>, DecodeError> {
        decode_payload(&Bytes::copy_from_slice(body), 1_000_000)
    }

    #[test]
    fn spec_examples() {
        let packets = vec![
            Packet::text("hello"),
            Packet::Ping(Str::new()),
            Packet::text("world"),
        ];
        assert_eq!(encode_payload(&packets), &b"4hello\x1e2\x1e4world"[..]);
        assert_eq!(dec(b"4hello\x1e2\x1e4world").unwrap(), packets);

        let packets = vec![Packet::text("hello"), Packet::binary(vec![1, 2, 3, 4])];
        assert_eq!(encode_payload(&packets), &b"4hello\x1ebAQIDBA=="[..]);
        assert_eq!(dec(b"4hello\x1ebAQIDBA==").unwrap(), packets);

        let packets = vec![Packet::text("hello"), Packet::text("€€€")];
        assert_eq!(encode_payload(&packets), "4hello\u{1e}4€€€".as_bytes());
        assert_eq!(
            encoded_payload_len(&packets),
            encode_payload(&packets).len()
        );

        assert_eq!(encode_payload(&[]), &b""[..]);
        assert_eq!(encode_payload(&[Packet::Noop]), &b"6"[..]);
    }

    #[test]
    fn invalid_payloads() {
        assert_eq!(dec(b""), Err(DecodeError::Empty));
        assert_eq!(dec(b"abc"), Err(DecodeError::UnknownType(b'a')));
        assert_eq!(
            dec(b"4a\x1e"),
            Err(DecodeError::Empty),
            "trailing separator"
        );
        assert_eq!(dec(b"4a\x1e\x1e4b"), Err(DecodeError::Empty));
        assert_eq!(dec(b"4a\x1e9"), Err(DecodeError::UnknownType(b'9')));
        assert_eq!(dec(b"4\xff\xfe"), Err(DecodeError::InvalidUtf8));
        assert_eq!(dec(b"b***"), Err(DecodeError::InvalidBase64));
        assert_eq!(
            decode_payload(&Bytes::from_static(b"4hello"), 5),
            Err(DecodeError::TooLarge { limit: 5 })
        );
        assert_eq!(
            decode_payload(&Bytes::from_static(b"4hello"), 6)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn unpadded_base64_is_accepted() {
        assert_eq!(
            dec(b"bAQIDBA").unwrap(),
            vec![Packet::binary(vec![1, 2, 3, 4])]
        );
    }
}
