//! Event and ack arguments: JSON values plus binary attachments.
//!
//! # How binary values are represented
//!
//! [`Args`] holds the arguments as plain `serde_json::Value`s and the binary values beside
//! them, in a list of attachments. A binary value inside the arguments is the placeholder
//! object `{"_placeholder":true,"num":i}` standing for attachment `i` — exactly what the
//! default Socket.IO parser puts on the wire. So:
//!
//! - the server can stamp, store and relay the JSON part like any other message (no second
//!   value type to convert to and from), and relaying a binary event forwards the same
//!   `Bytes` without copying them;
//! - [`Args::binary`] resolves a placeholder to its bytes, [`Args::attach`] and
//!   [`Args::push_binary`] add binary values;
//! - the MessagePack parser (where binary values are inline `bin` values) converts to and
//!   from this form.
//!
//! Placeholders only mean something when the packet has attachments, as with the reference
//! parser: in a packet without attachments a placeholder-shaped object is a plain object, and
//! it goes out as one (as a plain `EVENT`).
//!
//! Decoded arguments are canonical: placeholders are numbered `0, 1, …` in the order they
//! appear in the JSON text, each attachment is used once, and the placeholder objects hold
//! nothing else — what the reference encoder would produce for the reconstructed values.

use bytes::Bytes;
use serde_json::{Map, Value};

/// The arguments of an event (after its name) or of an acknowledgement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Args {
    values: Vec<Value>,
    attachments: Vec<Bytes>,
}

impl Args {
    /// No arguments.
    pub fn new() -> Args {
        Args::default()
    }

    /// JSON arguments without binary values.
    pub fn from_values(values: Vec<Value>) -> Args {
        Args {
            values,
            attachments: Vec::new(),
        }
    }

    /// Arguments with binary attachments. `values` should refer to each attachment with a
    /// placeholder (see the module docs); they are renumbered in order of appearance when
    /// encoded, and a placeholder whose `num` is out of range stays a plain object.
    pub fn from_parts(values: Vec<Value>, attachments: Vec<Bytes>) -> Args {
        Args {
            values,
            attachments,
        }
    }

    /// Append a JSON argument.
    pub fn push(&mut self, value: Value) {
        self.values.push(value);
    }

    /// Append a binary argument.
    pub fn push_binary(&mut self, data: Bytes) {
        let placeholder = self.attach(data);
        self.values.push(placeholder);
    }

    /// Register a binary value and return the placeholder to put where it belongs (for binary
    /// values nested in objects or arrays).
    pub fn attach(&mut self, data: Bytes) -> Value {
        let num = self.attachments.len();
        self.attachments.push(data);
        placeholder(num)
    }

    /// The JSON arguments (binary values as placeholders).
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// The JSON arguments, to modify them (e.g. stamp fields on a relayed message).
    pub fn values_mut(&mut self) -> &mut Vec<Value> {
        &mut self.values
    }

    /// The binary attachments, in placeholder order.
    pub fn attachments(&self) -> &[Bytes] {
        &self.attachments
    }

    /// Whether there are binary values (the packet goes out as `BINARY_EVENT`/`BINARY_ACK`).
    pub fn has_binary(&self) -> bool {
        !self.attachments.is_empty()
    }

    /// Number of arguments.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are no arguments.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The bytes a value stands for, if it is a placeholder of these arguments.
    pub fn binary(&self, value: &Value) -> Option<&Bytes> {
        if self.attachments.is_empty() {
            return None;
        }
        placeholder_num(value).and_then(|num| self.attachments.get(num))
    }

    /// The JSON values and the attachments.
    pub fn into_parts(self) -> (Vec<Value>, Vec<Bytes>) {
        (self.values, self.attachments)
    }

    /// Whether the placeholders are numbered `0..n` in order of appearance and use each of
    /// the `n` attachments once (then the arguments encode as they are).
    pub(crate) fn is_canonical(&self) -> bool {
        if self.attachments.is_empty() {
            return true;
        }
        let mut next = 0usize;
        let ok = self
            .values
            .iter()
            .all(|v| visit_placeholders(v, &mut |num| check_next(num, &mut next)));
        ok && next == self.attachments.len()
    }

    /// Renumber placeholders in order of appearance, keeping only attachments used (once per
    /// use). With `strict`, a placeholder with an invalid `num` is an error (decoding: the
    /// reference parser's "illegal attachments"); without, it is left as a plain object.
    pub(crate) fn canonicalize(&mut self, strict: bool) -> Result<(), IllegalPlaceholder> {
        if self.attachments.is_empty() {
            return Ok(());
        }
        let old = std::mem::take(&mut self.attachments);
        let mut new = Vec::with_capacity(old.len());
        for value in &mut self.values {
            renumber(value, &old, &mut new, strict)?;
        }
        self.attachments = new;
        Ok(())
    }
}

/// A placeholder whose `num` is not an attachment index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IllegalPlaceholder;

/// `{"_placeholder":true,"num":num}`.
pub(crate) fn placeholder(num: usize) -> Value {
    let mut map = Map::new();
    map.insert("_placeholder".to_owned(), Value::Bool(true));
    map.insert("num".to_owned(), Value::from(num));
    Value::Object(map)
}

/// Whether an object is marked as a placeholder (`_placeholder: true`), whatever its `num`.
fn is_marked(map: &Map<String, Value>) -> bool {
    map.get("_placeholder") == Some(&Value::Bool(true))
}

/// The `num` of a placeholder object (a non-negative integer, also written as `0.0`).
fn placeholder_num(value: &Value) -> Option<usize> {
    let map = value.as_object()?;
    if !is_marked(map) {
        return None;
    }
    match map.get("num")? {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                usize::try_from(u).ok()
            } else {
                let f = n.as_f64()?;
                // Integral, non-negative and small enough to be an index.
                (f >= 0.0 && f.fract() == 0.0 && f < 1e15).then_some(f as usize)
            }
        }
        _ => None,
    }
}

fn check_next(num: Option<usize>, next: &mut usize) -> bool {
    if num == Some(*next) {
        *next += 1;
        true
    } else {
        false
    }
}

/// Call `f` with each placeholder's `num` (in order of appearance) until it returns false;
/// also false for a placeholder that is not exactly `{"_placeholder":true,"num":i}`.
fn visit_placeholders(value: &Value, f: &mut impl FnMut(Option<usize>) -> bool) -> bool {
    match value {
        Value::Array(items) => items.iter().all(|v| visit_placeholders(v, f)),
        Value::Object(map) if is_marked(map) => map.len() == 2 && f(placeholder_num(value)),
        Value::Object(map) => map.values().all(|v| visit_placeholders(v, f)),
        _ => true,
    }
}

fn renumber(
    value: &mut Value,
    old: &[Bytes],
    new: &mut Vec<Bytes>,
    strict: bool,
) -> Result<(), IllegalPlaceholder> {
    match value {
        Value::Array(items) => {
            for item in items {
                renumber(item, old, new, strict)?;
            }
        }
        Value::Object(map) if is_marked(map) => {
            match placeholder_num(value).and_then(|num| old.get(num)) {
                Some(data) => {
                    new.push(data.clone());
                    *value = placeholder(new.len() - 1);
                }
                None if strict => return Err(IllegalPlaceholder),
                None => {}
            }
        }
        Value::Object(map) => {
            for item in map.values_mut() {
                renumber(item, old, new, strict)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn attach_returns_numbered_placeholders() {
        let mut args = Args::new();
        args.push(json!("x"));
        args.push_binary(Bytes::from_static(b"\x01"));
        let nested = args.attach(Bytes::from_static(b"\x02"));
        args.push(json!({ "file": nested }));
        assert_eq!(
            args.values(),
            &[
                json!("x"),
                json!({"_placeholder":true,"num":0}),
                json!({"file":{"_placeholder":true,"num":1}})
            ]
        );
        assert!(args.is_canonical());
        assert_eq!(args.binary(&args.values()[1]).unwrap().as_ref(), b"\x01");
        assert_eq!(args.binary(&args.values()[0]), None);
        assert_eq!(args.len(), 3);
    }

    #[test]
    fn canonicalize_renumbers_in_order_of_appearance() {
        let a = Bytes::from_static(b"a");
        let b = Bytes::from_static(b"b");
        let unused = Bytes::from_static(b"u");
        let mut args = Args::from_parts(
            vec![
                json!({"_placeholder":true,"num":1,"extra":1}),
                json!([{"_placeholder":true,"num":0.0}, {"_placeholder":true,"num":1}]),
            ],
            vec![a.clone(), b.clone(), unused],
        );
        assert!(!args.is_canonical());
        args.canonicalize(true).unwrap();
        assert!(args.is_canonical());
        assert_eq!(
            args.values(),
            &[
                json!({"_placeholder":true,"num":0}),
                json!([{"_placeholder":true,"num":1}, {"_placeholder":true,"num":2}])
            ]
        );
        assert_eq!(args.attachments(), &[b.clone(), a, b]);
    }

    #[test]
    fn invalid_placeholders_are_errors_when_strict() {
        for bad in [json!(3), json!(-1), json!(0.5), json!("0"), json!(null)] {
            let mut args = Args::from_parts(
                vec![json!({"_placeholder":true,"num":bad})],
                vec![Bytes::from_static(b"a")],
            );
            assert_eq!(args.clone().canonicalize(true), Err(IllegalPlaceholder));
            args.canonicalize(false).unwrap();
            assert!(args.attachments().is_empty());
        }
        // Without attachments nothing is a placeholder.
        let args = Args::from_values(vec![json!({"_placeholder":true,"num":0})]);
        assert!(args.is_canonical());
        assert_eq!(args.binary(&args.values()[0]), None);
    }
}
