//! The decoder of the default parser: text packets, and binary packets reassembled from their
//! attachment messages.

use bytes::Bytes;
use serde_json::Value;

use crate::args::Args;
use crate::error::ParseError;
use crate::namespace::{AckId, Namespace};
use crate::packet::{EventName, Packet, PacketType};

/// Limits of the decoder. Each attachment is one Engine.IO message, already bounded by
/// `maxPayload`; these bound what one packet may hold back in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Most attachments one binary packet may announce. Default 10 (the reference parser's
    /// `maxAttachments`). Bounds the number of messages held while a packet is incomplete.
    pub max_attachments: usize,
    /// Most bytes the attachments of one packet may add up to. Default 1 000 000 (Socket.IO's
    /// `maxHttpBufferSize`). Bounds the memory one incomplete packet holds.
    pub max_attachment_bytes: usize,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            max_attachments: 10,
            max_attachment_bytes: 1_000_000,
        }
    }
}

/// A binary packet waiting for its attachments.
#[derive(Debug)]
struct Pending {
    packet: Packet,
    expected: usize,
    received: Vec<Bytes>,
    bytes: usize,
}

/// The per-connection decoder of the default parser (`socket.io-parser`).
///
/// Feed it every Engine.IO message packet in order: text with [`Decoder::decode_text`],
/// binary with [`Decoder::decode_binary`]. Each returns `Ok(Some(packet))` when a packet is
/// complete, `Ok(None)` while a binary packet still waits for attachments, and an error for an
/// invalid packet, after which the connection must be closed.
///
/// ```
/// use bytes::Bytes;
/// use switchboard_socketio_proto::{Decoder, Packet};
///
/// let mut decoder = Decoder::default();
/// assert!(decoder.decode_text(r#"51-["upload",{"_placeholder":true,"num":0}]"#)?.is_none());
/// let Some(Packet::Event { name, args, .. }) = decoder.decode_binary(Bytes::from_static(b"\x01\x02"))?
/// else { panic!() };
/// assert_eq!(name, "upload");
/// assert_eq!(args.binary(&args.values()[0]).unwrap().as_ref(), b"\x01\x02");
/// # Ok::<(), switchboard_socketio_proto::ParseError>(())
/// ```
#[derive(Debug, Default)]
pub struct Decoder {
    config: DecoderConfig,
    pending: Option<Box<Pending>>,
}

impl Decoder {
    /// A decoder with these limits.
    pub fn new(config: DecoderConfig) -> Decoder {
        Decoder {
            config,
            pending: None,
        }
    }

    /// Whether a binary packet is waiting for attachments.
    pub fn is_reconstructing(&self) -> bool {
        self.pending.is_some()
    }

    /// Drop a partly received binary packet.
    pub fn reset(&mut self) {
        self.pending = None;
    }

    /// Decode a text message.
    pub fn decode_text(&mut self, text: &str) -> Result<Option<Packet>, ParseError> {
        if self.pending.is_some() {
            self.pending = None;
            return Err(ParseError::UnexpectedText);
        }
        let (packet, attachments) = parse_text(text, &self.config)?;
        if attachments == 0 {
            return Ok(Some(packet));
        }
        self.pending = Some(Box::new(Pending {
            packet,
            expected: attachments,
            received: Vec::with_capacity(attachments),
            bytes: 0,
        }));
        Ok(None)
    }

    /// Decode a binary message: the next attachment of the waiting binary packet.
    pub fn decode_binary(&mut self, data: Bytes) -> Result<Option<Packet>, ParseError> {
        let Some(pending) = self.pending.as_mut() else {
            return Err(ParseError::UnexpectedBinary);
        };
        pending.bytes = pending.bytes.saturating_add(data.len());
        if pending.bytes > self.config.max_attachment_bytes {
            self.pending = None;
            return Err(ParseError::AttachmentsTooLarge {
                limit: self.config.max_attachment_bytes,
            });
        }
        pending.received.push(data);
        if pending.received.len() < pending.expected {
            return Ok(None);
        }
        let Some(pending) = self.pending.take() else {
            return Ok(None);
        };
        let Pending {
            mut packet,
            received,
            ..
        } = *pending;
        if let Packet::Event { args, .. } | Packet::Ack { args, .. } = &mut packet {
            let (values, _) = std::mem::take(args).into_parts();
            let mut full = Args::from_parts(values, received);
            full.canonicalize(true)
                .map_err(|_| ParseError::IllegalPlaceholder)?;
            *args = full;
        }
        Ok(Some(packet))
    }
}

/// Parse one text packet without attachments (a convenience for tests and for peers that
/// never send binary packets). A binary packet header is refused with
/// [`ParseError::IllegalAttachments`]: use a [`Decoder`] for those.
pub fn parse(text: &str) -> Result<Packet, ParseError> {
    match parse_text(text, &DecoderConfig::default())? {
        (packet, 0) => Ok(packet),
        _ => Err(ParseError::IllegalAttachments),
    }
}

/// Parse the text part of a packet: the packet (arguments with placeholders, attachments not
/// yet known) and the number of attachments announced.
fn parse_text(text: &str, config: &DecoderConfig) -> Result<(Packet, usize), ParseError> {
    let bytes = text.as_bytes();
    let first = text.chars().next().ok_or(ParseError::Empty)?;
    let kind = PacketType::from_char(first).ok_or(ParseError::UnknownType(first))?;
    let mut i = 1;

    // 1. `<n>-` for binary packets: n ≥ 1 in decimal digits, then a dash.
    let mut attachments = 0;
    if matches!(kind, PacketType::BinaryEvent | PacketType::BinaryAck) {
        let dash = bytes[i..]
            .iter()
            .position(|&b| b == b'-')
            .ok_or(ParseError::IllegalAttachments)?;
        let digits = &text[i..i + dash];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::IllegalAttachments);
        }
        // Too many digits for a usize is also too many attachments.
        let count = digits.parse::<usize>().unwrap_or(usize::MAX);
        if count == 0 {
            return Err(ParseError::IllegalAttachments);
        }
        if count > config.max_attachments {
            return Err(ParseError::TooManyAttachments {
                count,
                limit: config.max_attachments,
            });
        }
        attachments = count;
        i += dash + 1;
    }

    // 2. The namespace: from a `/` up to a `,` or the end (`40/chat` has no comma).
    let nsp = if bytes.get(i) == Some(&b'/') {
        let end = bytes[i..]
            .iter()
            .position(|&b| b == b',')
            .map_or(bytes.len(), |p| i + p);
        let nsp = Namespace::new_unchecked(&text[i..end]);
        i = (end + 1).min(bytes.len());
        nsp
    } else {
        Namespace::root()
    };

    // 3. The ack id: a run of decimal digits.
    let digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    let id = if digits > 0 {
        let id = text[i..i + digits]
            .parse::<u64>()
            .map_err(|_| ParseError::AckIdOutOfRange)?;
        i += digits;
        Some(AckId(id))
    } else {
        None
    };

    // 4. The JSON data: the rest.
    let rest = &text[i..];
    let data = if rest.is_empty() {
        None
    } else {
        Some(serde_json::from_str::<Value>(rest).map_err(|_| ParseError::InvalidJson)?)
    };

    // 5. The data each type allows.
    let packet = match kind {
        PacketType::Connect => match data {
            None => Packet::Connect { nsp, data: None },
            Some(Value::Object(map)) => Packet::Connect {
                nsp,
                data: Some(map),
            },
            Some(_) => return Err(ParseError::InvalidConnectPayload),
        },
        PacketType::Disconnect => match data {
            None => Packet::Disconnect { nsp },
            Some(_) => return Err(ParseError::DisconnectWithPayload),
        },
        PacketType::Event | PacketType::BinaryEvent => {
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
                args: Args::from_values(items),
                ack: id,
            }
        }
        PacketType::Ack | PacketType::BinaryAck => {
            let values = match data {
                None => Vec::new(),
                Some(Value::Array(items)) => items,
                Some(_) => return Err(ParseError::InvalidAckPayload),
            };
            Packet::Ack {
                nsp,
                id: id.ok_or(ParseError::MissingAckId)?,
                args: Args::from_values(values),
            }
        }
        PacketType::ConnectError => match data {
            Some(data @ (Value::String(_) | Value::Object(_))) => {
                Packet::ConnectError { nsp, data }
            }
            _ => return Err(ParseError::InvalidConnectErrorPayload),
        },
    };
    Ok((packet, attachments))
}

/// The first element of an event's data: a string that is not reserved, or a number.
pub(crate) fn event_name(value: Value) -> Result<EventName, ParseError> {
    let name = match value {
        Value::String(s) => EventName::Text(s),
        Value::Number(n) => EventName::Number(n),
        _ => return Err(ParseError::InvalidEventName),
    };
    if name.is_reserved() {
        return Err(ParseError::ReservedEventName(name.to_string()));
    }
    Ok(name)
}
