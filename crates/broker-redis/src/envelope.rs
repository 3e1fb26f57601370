//! What travels on a room's pub/sub channel, as text lines before the payload.
//!
//! A published message: what a node needs to deliver it (`epoch`, `offset`, `timestamp`,
//! the origin connection, the `type`). The script writes the first three; the publisher
//! gives the head ([`head`]).
//!
//! ```text
//! <epoch>\n<offset>\n<timestamp>\n<origin or empty>\n<kind length>\n<kind><message>
//! ```
//!
//! A presence change (`user_joined` / `user_left`, not stored), marked by a first line no
//! epoch can be (epochs are hex):
//!
//! ```text
//! ~p\n<1 joined | 0 left>\n<origin>\n<timestamp>\n<user length>\n<name length or ->\n<user><name>
//! ```
//!
//! An origin is `<node>.<connection>`: connection ids are unique per process only, so a
//! node honours an origin only when it names that node.

use bytes::Bytes;

/// A connection somewhere in the deployment: the node (as the store registered it) and the
/// connection's id on it.
pub type Origin = (u32, u64);

pub(crate) fn origin_text(origin: Option<Origin>) -> String {
    origin
        .map(|(node, conn)| format!("{node}.{conn}"))
        .unwrap_or_default()
}

pub(crate) fn parse_origin(text: &str) -> Option<Option<Origin>> {
    if text.is_empty() {
        return Some(None);
    }
    let (node, conn) = text.split_once('.')?;
    Some(Some((node.parse().ok()?, conn.parse().ok()?)))
}

/// The part of a message envelope the publisher knows: origin connection and `type`.
pub fn head(origin: Option<Origin>, kind: &str) -> Vec<u8> {
    format!("{}\n{}\n{kind}", origin_text(origin), kind.len()).into_bytes()
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
    pub origin: Option<Origin>,
    /// Its `type`.
    pub kind: String,
    /// The message's JSON.
    pub message: Bytes,
}

/// A presence change received from a room's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEnvelope {
    /// Joined (`true`) or left.
    pub joined: bool,
    /// The connection that joined or left.
    pub origin: Origin,
    /// When (ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// The user.
    pub user: String,
    /// Their display name, if they gave one.
    pub name: Option<String>,
}

/// Anything on a room's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A published message.
    Message(Envelope),
    /// A presence change.
    Presence(PresenceEnvelope),
}

const PRESENCE_MARK: &str = "~p";

/// The bytes of a presence change.
pub fn presence(change: &PresenceEnvelope) -> Vec<u8> {
    let name_len = change
        .name
        .as_ref()
        .map_or_else(|| "-".to_owned(), |n| n.len().to_string());
    let mut out = format!(
        "{PRESENCE_MARK}\n{}\n{}\n{}\n{}\n{name_len}\n",
        u8::from(change.joined),
        origin_text(Some(change.origin)),
        change.timestamp_ms,
        change.user.len()
    )
    .into_bytes();
    out.extend_from_slice(change.user.as_bytes());
    if let Some(name) = &change.name {
        out.extend_from_slice(name.as_bytes());
    }
    out
}

/// Reads `\n`-terminated text lines off the front of a payload.
struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Lines<'a> {
    fn line(&mut self) -> Option<&'a str> {
        let end = self.rest.iter().position(|b| *b == b'\n')?;
        let text = std::str::from_utf8(&self.rest[..end]).ok()?;
        self.rest = &self.rest[end + 1..];
        Some(text)
    }

    fn take(&mut self, n: usize) -> Option<&'a str> {
        let text = std::str::from_utf8(self.rest.get(..n)?).ok()?;
        self.rest = &self.rest[n..];
        Some(text)
    }
}

/// Read what arrived on a room's channel; `None` if it is not ours (another publisher).
pub fn parse_received(payload: &Bytes) -> Option<Received> {
    if payload.starts_with(PRESENCE_MARK.as_bytes()) {
        parse_presence(payload).map(Received::Presence)
    } else {
        parse(payload).map(Received::Message)
    }
}

fn parse_presence(payload: &Bytes) -> Option<PresenceEnvelope> {
    let mut lines = Lines { rest: payload };
    if lines.line()? != PRESENCE_MARK {
        return None;
    }
    let joined = match lines.line()? {
        "1" => true,
        "0" => false,
        _ => return None,
    };
    let origin = parse_origin(lines.line()?)??;
    let timestamp_ms = lines.line()?.parse().ok()?;
    let user_len: usize = lines.line()?.parse().ok()?;
    let name_len = match lines.line()? {
        "-" => None,
        n => Some(n.parse::<usize>().ok()?),
    };
    let user = lines.take(user_len)?.to_owned();
    let name = match name_len {
        Some(n) => Some(lines.take(n)?.to_owned()),
        None => None,
    };
    lines.rest.is_empty().then_some(PresenceEnvelope {
        joined,
        origin,
        timestamp_ms,
        user,
        name,
    })
}

/// Read a message envelope; `None` if it is not one.
pub fn parse(payload: &Bytes) -> Option<Envelope> {
    let mut lines = Lines { rest: payload };
    let epoch = lines.line()?.to_owned();
    let offset = lines.line()?.parse().ok()?;
    let timestamp_ms = lines.line()?.parse().ok()?;
    let origin = parse_origin(lines.line()?)?;
    let kind_len: usize = lines.line()?.parse().ok()?;
    let kind = lines.take(kind_len)?.to_owned();
    let start = payload.len() - lines.rest.len();
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
        payload.extend(head(Some((3, 7)), "odd\nkind"));
        payload.extend(br#"{"type":"odd\nkind"}"#);
        let envelope = parse(&Bytes::from(payload)).unwrap();
        assert_eq!(
            (
                envelope.epoch.as_str(),
                envelope.offset,
                envelope.origin,
                envelope.kind.as_str()
            ),
            ("e1", 42, Some((3, 7)), "odd\nkind")
        );
        assert_eq!(&envelope.message[..], br#"{"type":"odd\nkind"}"#);
        assert_eq!(parse(&Bytes::from_static(b"junk")), None);
    }

    #[test]
    fn a_presence_change_reads_back_with_and_without_a_name() {
        for name in [None, Some("Ada\n~p".to_owned()), Some(String::new())] {
            let change = PresenceEnvelope {
                joined: name.is_some(),
                origin: (9, 1 << 41),
                timestamp_ms: 1_796_507_184_564,
                user: "user\nwith newline".to_owned(),
                name,
            };
            let bytes = Bytes::from(presence(&change));
            assert_eq!(
                parse_received(&bytes),
                Some(Received::Presence(change.clone()))
            );
            // Cut short or with trailing junk: not ours.
            assert_eq!(parse_received(&bytes.slice(..bytes.len() - 1)), None);
            let mut longer = bytes.to_vec();
            longer.push(b'x');
            assert_eq!(parse_received(&Bytes::from(longer)), None);
        }
    }
}
