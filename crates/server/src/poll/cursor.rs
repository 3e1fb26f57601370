//! The long-poll cursor: which poll session it continues (if any), which answer of that
//! session the client has, and the client's position in each room.
//!
//! Form: `<session>.<answer>:<positions>` — the session id (32 hex digits, random: the
//! cursor is the poller's only credential for its session until authentication binds it to
//! a user), the number of the last answer (decimal), and the positions as in
//! [`crate::feed::cursor`]. A cursor of positions alone (no `:`) is accepted too: a page that
//! rendered state at known offsets, or a client whose server went away, starts a new session
//! there and gets the rest replayed.

use crate::feed::cursor::{self as positions, CursorError, Position};

/// A poll session's id.
pub(crate) type SessionId = [u8; 16];

/// A parsed cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PollCursor<'a> {
    /// The session and the number of the answer the client has last received.
    pub(crate) session: Option<(SessionId, u64)>,
    /// The positions, as text (compared with what the session answered).
    pub(crate) positions_text: &'a str,
    /// The positions, one per room.
    pub(crate) positions: Vec<Option<Position>>,
}

/// Read `text` for a poll of `rooms` rooms (empty: a first poll).
pub(crate) fn parse(text: &str, rooms: usize) -> Result<PollCursor<'_>, CursorError> {
    let (session, positions_text) = match text.split_once(':') {
        None => (None, text),
        Some((session, rest)) => (Some(parse_session(session)?), rest),
    };
    Ok(PollCursor {
        session,
        positions_text,
        positions: positions::decode(positions_text, rooms)?,
    })
}

fn parse_session(text: &str) -> Result<(SessionId, u64), CursorError> {
    let (id, answer) = text.split_once('.').ok_or(CursorError::Malformed)?;
    // Checked before slicing: every byte an ASCII hex digit (no sign, no multi-byte char).
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CursorError::Malformed);
    }
    if answer.is_empty() || answer.len() > 20 {
        return Err(CursorError::Malformed);
    }
    let mut session = [0u8; 16];
    for (i, byte) in session.iter_mut().enumerate() {
        *byte =
            u8::from_str_radix(&id[2 * i..2 * i + 2], 16).map_err(|_| CursorError::Malformed)?;
    }
    if !answer.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CursorError::Malformed);
    }
    let answer = answer.parse().map_err(|_| CursorError::Malformed)?;
    Ok((session, answer))
}

/// The cursor of `session`'s answer number `answer`, at `positions`.
pub(crate) fn format(session: &SessionId, answer: u64, positions: &str) -> String {
    let mut out = String::with_capacity(32 + 22 + positions.len());
    for byte in session {
        out.push_str(&format!("{byte:02x}"));
    }
    out.push('.');
    out.push_str(&answer.to_string());
    out.push(':');
    out.push_str(positions);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_with_and_without_a_session() {
        let id = [0xab; 16];
        let text = format(&id, 7, "5-0000._");
        let cursor = parse(&text, 2).unwrap();
        assert_eq!(cursor.session, Some((id, 7)));
        assert_eq!(cursor.positions_text, "5-0000._");
        assert_eq!(cursor.positions.len(), 2);
        let bare = parse("5-0000._", 2).unwrap();
        assert_eq!(bare.session, None);
        assert_eq!(parse("", 3).unwrap().positions, vec![None; 3]);
    }

    #[test]
    fn malformed_cursors_are_refused() {
        for bad in [
            ":",
            "abc.1:_",
            &format!("{}.:_", "a".repeat(32)),
            &format!("{}.x:_", "a".repeat(32)),
            &format!("{}.+1:_", "a".repeat(32)),
            &format!("{}.1:_", "g".repeat(32)),
            &format!("{}1:_", "a".repeat(32)),
            &format!("{}.99999999999999999999:_", "a".repeat(32)),
            &format!("{}.1:x", "a".repeat(32)),
            &format!("+{}.1:_", "a".repeat(31)),
            &format!("é{}.1:_", "a".repeat(30)),
        ] {
            assert!(parse(bad, 1).is_err(), "{bad}");
        }
        assert!(matches!(
            parse(&format!("{}.1:_._", "a".repeat(32)), 1),
            Err(CursorError::WrongLength { .. })
        ));
    }
}
