//! The MessagePack parser (`socket.io-msgpack-parser`): each packet is one binary message, the
//! MessagePack image of the packet object `{type, data, nsp, id?}`.
//!
//! Differences from the default parser: binary values travel inline as MessagePack `bin`
//! values (no `BINARY_EVENT`, no attachment messages: types are `0`–`4` only), and there are
//! no text messages. Decoded binary values become [`Args`] attachments with placeholders, as
//! with the default parser, so the server handles both the same way; encoding puts them back
//! inline.
//!
//! Decoding follows the reference decoder's checks (`type` an integer 0–4, `nsp` a string, the
//! data each type allows, `id` an integer) plus the default parser's event name rules, and is
//! a little stricter: `nsp` must be a valid [`Namespace`], `CONNECT` data must be a map, map
//! keys must be strings, and the only extension accepted is notepack's `undefined`
//! (`fixext1`, type 0), read as an absent value (`null` inside arrays). Unknown keys (the
//! JavaScript client's `options`) are ignored.

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{Map, Number, Value};
use std::fmt;

use crate::args::{placeholder, Args};
use crate::decode::event_name;
use crate::error::ParseError;
use crate::namespace::{AckId, Namespace};
use crate::packet::{Packet, PacketType};

/// Deepest nesting accepted (as the native protocol's MessagePack: below serde_json's 128).
const MAX_DEPTH: usize = 100;

/// Decode one MessagePack packet.
pub fn decode(data: &[u8]) -> Result<Packet, ParseError> {
    let mut attachments = Vec::new();
    let mut deserializer = rmp_serde::Deserializer::new(data);
    deserializer.set_max_depth(MAX_DEPTH);
    let value = ValueSeed {
        attachments: &mut attachments,
    }
    .deserialize(&mut deserializer)
    .map_err(|_| ParseError::InvalidMessagePack)?;
    // Trailing bytes after the packet: not one MessagePack value.
    if !deserializer.get_ref().is_empty() {
        return Err(ParseError::InvalidMessagePack);
    }
    let Some(Value::Object(mut map)) = value else {
        return Err(ParseError::InvalidMessagePack);
    };

    let kind = match map.get("type").and_then(integer) {
        Some(0) => PacketType::Connect,
        Some(1) => PacketType::Disconnect,
        Some(2) => PacketType::Event,
        Some(3) => PacketType::Ack,
        Some(4) => PacketType::ConnectError,
        _ => return Err(ParseError::UnknownType('?')),
    };
    let nsp = match map.remove("nsp") {
        Some(Value::String(s)) => Namespace::new(s).map_err(|_| ParseError::InvalidNamespace)?,
        _ => return Err(ParseError::InvalidNamespace),
    };
    let data = map.remove("data");
    let id = match map.get("id") {
        None => None,
        Some(v) => Some(AckId(integer(v).ok_or(ParseError::InvalidAckId)?)),
    };

    let packet = match kind {
        PacketType::Connect => match data {
            None | Some(Value::Null) => Packet::Connect { nsp, data: None },
            Some(Value::Object(data)) => Packet::Connect {
                nsp,
                data: Some(data),
            },
            Some(_) => return Err(ParseError::InvalidConnectPayload),
        },
        PacketType::Disconnect => match data {
            None => Packet::Disconnect { nsp },
            Some(_) => return Err(ParseError::DisconnectWithPayload),
        },
        PacketType::Event => {
            let Some(Value::Array(mut items)) = data else {
                return Err(ParseError::InvalidEventPayload);
            };
            if items.is_empty() {
                return Err(ParseError::InvalidEventPayload);
            }
            let name = event_name(items.remove(0))?;
            Packet::Event {
                nsp,
                name,
                args: args(items, attachments)?,
                ack: id,
            }
        }
        PacketType::Ack => {
            let Some(Value::Array(items)) = data else {
                return Err(ParseError::InvalidAckPayload);
            };
            Packet::Ack {
                nsp,
                id: id.ok_or(ParseError::MissingAckId)?,
                args: args(items, attachments)?,
            }
        }
        PacketType::ConnectError => match data {
            Some(data @ (Value::String(_) | Value::Object(_))) => {
                Packet::ConnectError { nsp, data }
            }
            _ => return Err(ParseError::InvalidConnectErrorPayload),
        },
        PacketType::BinaryEvent | PacketType::BinaryAck => {
            return Err(ParseError::UnknownType(kind.as_char()))
        }
    };
    Ok(packet)
}

fn args(values: Vec<Value>, attachments: Vec<Bytes>) -> Result<Args, ParseError> {
    let mut args = Args::from_parts(values, attachments);
    // The placeholders are ours (one per `bin` value, numbered in order), unless the event
    // name held a `bin` (refused above) or a literal placeholder-shaped map came along.
    args.canonicalize(true)
        .map_err(|_| ParseError::IllegalPlaceholder)?;
    Ok(args)
}

/// A non-negative integer (also written as an integral float, as JavaScript numbers may be).
fn integer(value: &Value) -> Option<u64> {
    let n = value.as_number()?;
    n.as_u64().or_else(|| {
        let f = n.as_f64()?;
        (f >= 0.0 && f.fract() == 0.0 && f <= 9_007_199_254_740_991.0).then_some(f as u64)
    })
}

/// Encode one packet as a MessagePack binary message.
pub fn encode(packet: &Packet) -> Bytes {
    // Serializing into a Vec fails only for values with no MessagePack form; JSON values and
    // bytes always have one.
    Bytes::from(rmp_serde::to_vec(&PacketImage(packet)).unwrap_or_default())
}

struct PacketImage<'a>(&'a Packet);

impl Serialize for PacketImage<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let packet = self.0;
        let mut map = serializer.serialize_map(None)?;
        let kind = match packet {
            Packet::Connect { .. } => 0u8,
            Packet::Disconnect { .. } => 1,
            Packet::Event { .. } => 2,
            Packet::Ack { .. } => 3,
            Packet::ConnectError { .. } => 4,
        };
        map.serialize_entry("type", &kind)?;
        match packet {
            Packet::Connect {
                data: Some(data), ..
            } => {
                map.serialize_entry("data", &Image::plain(&Value::Object(data.clone())))?;
            }
            Packet::Connect { data: None, .. } | Packet::Disconnect { .. } => {}
            Packet::Event {
                name, args, ack, ..
            } => {
                map.serialize_entry(
                    "data",
                    &EventData {
                        name: name.to_value(),
                        args,
                    },
                )?;
                if let Some(id) = ack {
                    map.serialize_entry("id", &id.0)?;
                }
            }
            Packet::Ack { id, args, .. } => {
                map.serialize_entry("data", &ArgsData(args))?;
                map.serialize_entry("id", &id.0)?;
            }
            Packet::ConnectError { data, .. } => {
                map.serialize_entry("data", &Image::plain(data))?;
            }
        }
        map.serialize_entry("nsp", packet.nsp().as_str())?;
        map.end()
    }
}

struct EventData<'a> {
    name: Value,
    args: &'a Args,
}

impl Serialize for EventData<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.args.len() + 1))?;
        seq.serialize_element(&Image::plain(&self.name))?;
        for value in self.args.values() {
            seq.serialize_element(&Image {
                value,
                args: Some(self.args),
            })?;
        }
        seq.end()
    }
}

struct ArgsData<'a>(&'a Args);

impl Serialize for ArgsData<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for value in self.0.values() {
            seq.serialize_element(&Image {
                value,
                args: Some(self.0),
            })?;
        }
        seq.end()
    }
}

/// A JSON value's MessagePack image, placeholders of `args` written as `bin` values.
struct Image<'a> {
    value: &'a Value,
    args: Option<&'a Args>,
}

impl<'a> Image<'a> {
    fn plain(value: &'a Value) -> Image<'a> {
        Image { value, args: None }
    }
}

impl Serialize for Image<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if let Some(data) = self.args.and_then(|a| a.binary(self.value)) {
            return serializer.serialize_bytes(data);
        }
        match self.value {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Number(n) => serialize_number(n, serializer),
            Value::String(s) => serializer.serialize_str(s),
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for value in items {
                    seq.serialize_element(&Image {
                        value,
                        args: self.args,
                    })?;
                }
                seq.end()
            }
            Value::Object(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(
                        key,
                        &Image {
                            value,
                            args: self.args,
                        },
                    )?;
                }
                map.end()
            }
        }
    }
}

/// Integral floats as integers, as a JavaScript encoder writes numbers.
fn serialize_number<S: Serializer>(n: &Number, serializer: S) -> Result<S::Ok, S::Error> {
    if let Some(u) = n.as_u64() {
        serializer.serialize_u64(u)
    } else if let Some(i) = n.as_i64() {
        serializer.serialize_i64(i)
    } else {
        let f = n.as_f64().unwrap_or(0.0);
        if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_991.0 {
            if f >= 0.0 {
                serializer.serialize_u64(f as u64)
            } else {
                serializer.serialize_i64(f as i64)
            }
        } else {
            serializer.serialize_f64(f)
        }
    }
}

/// Reads a MessagePack value as JSON (`None` for `undefined`), `bin` values as placeholders.
struct ValueSeed<'a> {
    attachments: &'a mut Vec<Bytes>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Option<Value>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a MessagePack value with a JSON form")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(Value::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(Value::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Number::from_f64(v)
            .map(|n| Some(Value::Number(n)))
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Value::String(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(Value::String(v)))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        let num = self.attachments.len();
        self.attachments.push(Bytes::copy_from_slice(v));
        Ok(Some(placeholder(num)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Some(Value::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Some(Value::Null))
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        // Extension values: only notepack's `undefined` (type 0, one zero byte).
        let (tag, data) = d.deserialize_any(ExtVisitor)?;
        if tag == 0 && data == [0] {
            Ok(None)
        } else {
            Err(de::Error::custom("unsupported extension type"))
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element_seed(ValueSeed {
            attachments: &mut *self.attachments,
        })? {
            items.push(item.unwrap_or(Value::Null));
        }
        Ok(Some(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let value = access.next_value_seed(ValueSeed {
                attachments: &mut *self.attachments,
            })?;
            if let Some(value) = value {
                map.insert(key, value);
            }
        }
        Ok(Some(Value::Object(map)))
    }
}

/// Reads an extension value as `(type, data)`.
struct ExtVisitor;

impl<'de> Visitor<'de> for ExtVisitor {
    type Value = (i8, Vec<u8>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a MessagePack extension")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let tag: i8 = seq
            .next_element()?
            .ok_or_else(|| de::Error::custom("extension without type"))?;
        let data = seq
            .next_element_seed(BytesSeed)?
            .ok_or_else(|| de::Error::custom("extension without data"))?;
        Ok((tag, data))
    }
}

struct BytesSeed;

impl<'de> DeserializeSeed<'de> for BytesSeed {
    type Value = Vec<u8>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BytesSeed {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("extension data")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(v.to_vec())
    }
}
