//! A message's bytes with holes where its offset and timestamp go.
//!
//! The session core stamps a message (`offset`, `timestamp`) when it builds its bytes, but
//! with Redis the offset is assigned inside the publish script. So the store builds the
//! message once with two random 19-digit sentinels and cuts the bytes at them; the script
//! fills the holes with the real values. The sentinels are fresh for every publish, and are
//! looked for as `"offset":<sentinel>` and `"timestamp":<sentinel>` (a key and its value; in
//! a client's string they would be escaped), so a client cannot forge a hole.

use bytes::Bytes;

/// The bytes around the two holes, in the order they appear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Before the first hole.
    pub prefix: Bytes,
    /// Between the holes.
    pub between: Bytes,
    /// After the second hole.
    pub suffix: Bytes,
    /// Whether the offset's hole comes first (else the timestamp's).
    pub offset_first: bool,
}

/// Why a message could not be cut into a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A stamp is missing or appears more than once.
    #[error("the message does not carry exactly one offset and one timestamp stamp")]
    Stamps,
}

/// Two random sentinels (19 digits each, distinct).
pub fn sentinels() -> (u64, u64) {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let draw = |salt: u64| {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(salt);
        1_000_000_000_000_000_000 + h.finish() % 9_000_000_000_000_000_000
    };
    let a = draw(1);
    let mut b = draw(2);
    while b == a {
        b = draw(3);
    }
    (a, b)
}

/// Cut `bytes` (built with `offset_sentinel` and `timestamp_sentinel`) at the stamps.
pub fn cut(
    bytes: &Bytes,
    offset_sentinel: u64,
    timestamp_sentinel: u64,
) -> Result<Template, TemplateError> {
    let offset_key = format!("\"offset\":{offset_sentinel}");
    let ts_key = format!("\"timestamp\":{timestamp_sentinel}");
    let o = find_once(bytes, offset_key.as_bytes())?;
    let t = find_once(bytes, ts_key.as_bytes())?;
    // The holes are the digits after each key.
    let hole = |at: usize, key: &str, sentinel: u64| {
        let start = at + key.len() - sentinel.to_string().len();
        (start, at + key.len())
    };
    let (o_start, o_end) = hole(o, &offset_key, offset_sentinel);
    let (t_start, t_end) = hole(t, &ts_key, timestamp_sentinel);
    let ((a_start, a_end), (b_start, b_end), offset_first) = if o_start < t_start {
        ((o_start, o_end), (t_start, t_end), true)
    } else {
        ((t_start, t_end), (o_start, o_end), false)
    };
    Ok(Template {
        prefix: bytes.slice(..a_start),
        between: bytes.slice(a_end..b_start),
        suffix: bytes.slice(b_end..),
        offset_first,
    })
}

impl Template {
    /// The message with `offset` and `timestamp` in their holes (what the script does).
    pub fn fill(&self, offset: u64, timestamp: u64) -> Vec<u8> {
        let (a, b) = if self.offset_first {
            (offset, timestamp)
        } else {
            (timestamp, offset)
        };
        let mut out =
            Vec::with_capacity(self.prefix.len() + self.between.len() + self.suffix.len() + 40);
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(a.to_string().as_bytes());
        out.extend_from_slice(&self.between);
        out.extend_from_slice(b.to_string().as_bytes());
        out.extend_from_slice(&self.suffix);
        out
    }
}

fn find_once(haystack: &[u8], needle: &[u8]) -> Result<usize, TemplateError> {
    let mut found = None;
    for (i, window) in haystack.windows(needle.len()).enumerate() {
        if window == needle {
            if found.is_some() {
                return Err(TemplateError::Stamps);
            }
            found = Some(i);
        }
    }
    found.ok_or(TemplateError::Stamps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map, Value};
    use switchboard_native_proto::{stamp_relay, Stamp};

    fn build(body: Value, offset: u64, ts: u64) -> Bytes {
        let Value::Object(body) = body else {
            unreachable!()
        };
        stamp_relay(
            body,
            &Stamp {
                user_id: "u",
                user: None,
                room: "r",
                timestamp_ms: ts,
                offset,
                generated_id: "g",
            },
        )
    }

    #[test]
    fn a_template_filled_is_the_message_stamped_directly() {
        let body = json!({"type": "chat", "text": "hi \"offset\":1 there", "n": [1, 2]});
        let (s1, s2) = sentinels();
        let template = cut(&build(body.clone(), s1, s2), s1, s2).unwrap();
        let filled = template.fill(42, 1_796_507_184_564);
        assert_eq!(filled, build(body, 42, 1_796_507_184_564).to_vec());
    }

    #[test]
    fn a_client_that_writes_the_sentinel_in_a_string_does_not_make_a_hole() {
        let (s1, s2) = sentinels();
        // In a string the quotes are escaped: no `"offset":<s1>` sequence.
        let body = json!({"type": "chat", "text": format!("\"offset\":{s1}")});
        let bytes = build(body.clone(), s1, s2);
        let template = cut(&bytes, s1, s2).unwrap();
        let filled: Value = serde_json::from_slice(&template.fill(7, 8)).unwrap();
        assert_eq!(filled["offset"], 7);
        assert_eq!(filled["text"], format!("\"offset\":{s1}"));
    }

    #[test]
    fn a_nested_offset_key_with_the_sentinel_is_refused_not_guessed() {
        let (s1, s2) = sentinels();
        let mut inner = Map::new();
        inner.insert("offset".into(), Value::from(s1));
        let body = json!({"type": "chat", "meta": Value::Object(inner)});
        assert_eq!(
            cut(&build(body, s1, s2), s1, s2),
            Err(TemplateError::Stamps)
        );
    }
}
