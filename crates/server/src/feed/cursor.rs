//! A stream's position in each of its rooms, as one short text: the SSE event id (sent back
//! by the browser as `Last-Event-ID`) and the long-poll cursor.
//!
//! The form is one item per room, in the order of the stream's `channels`, joined by `.`:
//! `<offset in base 36>-<epoch tag>`, or `_` for a room with no position yet. The epoch tag is
//! 4 base-36 digits of a hash of the room's epoch: enough to tell that a room's history was
//! reset (a different epoch) without carrying the epoch itself, so the id stays short with
//! many rooms (about 8 bytes per room). Offsets are the store's, so any node can read it.

use bytes::{BufMut, BytesMut};
use switchboard_hub::{Epoch, Offset};

/// A room's position: the last offset the client has, and a tag of its epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) offset: Offset,
    pub(crate) tag: u32,
}

const TAG_SPACE: u32 = 36 * 36 * 36 * 36;

/// The tag of an epoch (FNV-1a, folded into 4 base-36 digits).
pub(crate) fn epoch_tag(epoch: &Epoch) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in epoch.as_str().bytes() {
        h = (h ^ b as u32).wrapping_mul(0x0100_0193);
    }
    h % TAG_SPACE
}

/// Why a cursor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CursorError {
    #[error("the cursor names {got} channels, the request {want}")]
    WrongLength { got: usize, want: usize },
    #[error("malformed cursor")]
    Malformed,
}

/// Positions, one per room of the stream.
pub(crate) fn encode(positions: &[Option<Position>]) -> String {
    let mut out = BytesMut::with_capacity(positions.len() * 9);
    encode_into(positions, &mut out);
    // Only ASCII digits, letters, `-`, `.` and `_` are written.
    String::from_utf8_lossy(&out).into_owned()
}

/// [`encode`], appended to `out` (an SSE stream writes its event ids this way: no string
/// per delivery).
pub(crate) fn encode_into(positions: &[Option<Position>], out: &mut BytesMut) {
    for (i, p) in positions.iter().enumerate() {
        if i > 0 {
            out.put_u8(b'.');
        }
        match p {
            None => out.put_u8(b'_'),
            Some(p) => {
                push_base36(out, p.offset.0, 1);
                out.put_u8(b'-');
                push_base36(out, u64::from(p.tag), 4);
            }
        }
    }
}

/// Read a cursor for a stream of `rooms` rooms. An empty text means "no positions".
pub(crate) fn decode(text: &str, rooms: usize) -> Result<Vec<Option<Position>>, CursorError> {
    if text.is_empty() {
        return Ok(vec![None; rooms]);
    }
    // A bound before splitting: a cursor is at most ~20 bytes per room.
    if text.len() > rooms.saturating_mul(24) {
        return Err(CursorError::Malformed);
    }
    let items: Vec<&str> = text.split('.').collect();
    if items.len() != rooms {
        return Err(CursorError::WrongLength {
            got: items.len(),
            want: rooms,
        });
    }
    items
        .into_iter()
        .map(|item| {
            if item == "_" {
                return Ok(None);
            }
            let (offset, tag) = item.split_once('-').ok_or(CursorError::Malformed)?;
            let offset = parse_base36(offset).ok_or(CursorError::Malformed)?;
            let tag = parse_base36(tag)
                .filter(|t| *t < u64::from(TAG_SPACE))
                .ok_or(CursorError::Malformed)?;
            Ok(Some(Position {
                offset: Offset(offset),
                tag: tag as u32,
            }))
        })
        .collect()
}

fn push_base36(out: &mut BytesMut, mut n: u64, min_digits: usize) {
    let mut digits = [0u8; 13];
    let mut len = 0;
    while n > 0 || len < min_digits {
        digits[len] = b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize];
        n /= 36;
        len += 1;
    }
    digits[..len].reverse();
    out.put_slice(&digits[..len]);
}

fn parse_base36(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 13 {
        return None;
    }
    let mut n: u64 = 0;
    for c in s.bytes() {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'z' => c - b'a' + 10,
            _ => return None,
        };
        n = n.checked_mul(36)?.checked_add(u64::from(d))?;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_stay_short() {
        let p = |o, e: &str| {
            Some(Position {
                offset: Offset(o),
                tag: epoch_tag(&Epoch::from(e)),
            })
        };
        let positions = vec![p(0, "a-1"), None, p(123_456, "b-2"), p(u64::MAX, "c")];
        let text = encode(&positions);
        assert_eq!(decode(&text, 4).unwrap(), positions);
        let many: Vec<_> = (0..100).map(|i| p(1000 + i, "e")).collect();
        assert!(encode(&many).len() <= 100 * 9, "about 8 bytes per room");
    }

    #[test]
    fn bad_cursors_are_refused() {
        assert_eq!(decode("", 2).unwrap(), vec![None, None]);
        assert_eq!(
            decode("1-0000", 2),
            Err(CursorError::WrongLength { got: 1, want: 2 })
        );
        for bad in [
            "x",
            "1-",
            "-0000",
            "1-zzzzz",
            "1-00!0",
            "zzzzzzzzzzzzzz-0000",
            "1_0000",
        ] {
            assert_eq!(decode(bad, 1), Err(CursorError::Malformed), "{bad}");
        }
        assert_eq!(
            decode(&"1-0000.".repeat(1000), 2),
            Err(CursorError::Malformed)
        );
    }
}
