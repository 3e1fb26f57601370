//! What travels on a room's pub/sub channel: the message and what a node needs to deliver
//! it (`epoch`, `offset`, `timestamp`, the origin connection, the `type`), as text lines
//! before the message. The script writes the first three; the publisher gives the head.
//!
//! ```text
//! <epoch>\n<offset>\n<timestamp>\n<origin or empty>\n<kind length>\n<kind><message>
//! ```

use bytes::Bytes;

/// The part of the envelope the publisher knows: origin connection and `type`.
pub fn head(origin: Option<u64>, kind: &str) -> Vec<u8> {
    let origin = origin.map(|o| o.to_string()).unwrap_or_default();
    format!("{origin}\n{}\n{kind}", kind.len()).into_bytes()
}

/// A message received from a room's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The room's epoch.
    pub epoch: String,
    /// The message's offset.
    pub offset: u64,
    /// When the store appended it (ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// The connection that published it for everyone else, if any.
    pub origin: Option<u64>,
    /// Its `type`.
    pub kind: String,
    /// The message's JSON.
    pub message: Bytes,
}

/// Read an envelope; `None` if it is not one (another publisher on the channel).
pub fn parse(payload: &Bytes) -> Option<Envelope> {
    let mut rest = &payload[..];
    let mut line = || {
        let end = rest.iter().position(|b| *b == b'\n')?;
        let text = std::str::from_utf8(&rest[..end]).ok()?.to_owned();
        rest = &rest[end + 1..];
        Some(text)
    };
    let epoch = line()?;
    let offset = line()?.parse().ok()?;
    let timestamp_ms = line()?.parse().ok()?;
    let origin = match line()? {
        o if o.is_empty() => None,
        o => Some(o.parse().ok()?),
    };
    let kind_len: usize = line()?.parse().ok()?;
    let kind = std::str::from_utf8(rest.get(..kind_len)?).ok()?.to_owned();
    let start = payload.len() - rest.len() + kind_len;
    Some(Envelope {
        epoch,
        offset,
        timestamp_ms,
        origin,
        kind,
        message: payload.slice(start..),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_reads_back_kinds_with_newlines_included() {
        let mut payload = b"e1\n42\n1796507184564\n".to_vec();
        payload.extend(head(Some(7), "odd\nkind"));
        payload.extend(br#"{"type":"odd\nkind"}"#);
        let envelope = parse(&Bytes::from(payload)).unwrap();
        assert_eq!(
            (
                envelope.epoch.as_str(),
                envelope.offset,
                envelope.origin,
                envelope.kind.as_str()
            ),
            ("e1", 42, Some(7), "odd\nkind")
        );
        assert_eq!(&envelope.message[..], br#"{"type":"odd\nkind"}"#);
        assert_eq!(parse(&Bytes::from_static(b"junk")), None);
    }
}
