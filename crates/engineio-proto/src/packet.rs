//! Engine.IO v4 packets: the seven types, their text form (`4hello`, `2probe`), binary messages,
//! and their WebSocket framing (one packet per frame, binary messages as raw bytes).

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::str::Str;

/// The packet type, the first character of every text packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// `0`: the handshake, server → client.
    Open,
    /// `1`: close the session (either side).
    Close,
    /// `2`: heartbeat ping, server → client (and `2probe` from the client on an upgrade).
    Ping,
    /// `3`: heartbeat pong, client → server (and `3probe` from the server on an upgrade).
    Pong,
    /// `4`: application data.
    Message,
    /// `5`: the client completes an upgrade.
    Upgrade,
    /// `6`: nothing; ends a pending poll during an upgrade or a close.
    Noop,
}

impl PacketType {
    /// The type of a type character `'0'`–`'6'`.
    pub fn from_char(c: u8) -> Option<PacketType> {
        Some(match c {
            b'0' => PacketType::Open,
            b'1' => PacketType::Close,
            b'2' => PacketType::Ping,
            b'3' => PacketType::Pong,
            b'4' => PacketType::Message,
            b'5' => PacketType::Upgrade,
            b'6' => PacketType::Noop,
            _ => return None,
        })
    }

    /// The type character.
    pub fn as_char(self) -> u8 {
        match self {
            PacketType::Open => b'0',
            PacketType::Close => b'1',
            PacketType::Ping => b'2',
            PacketType::Pong => b'3',
            PacketType::Message => b'4',
            PacketType::Upgrade => b'5',
            PacketType::Noop => b'6',
        }
    }
}

/// Application data: the payload of a message packet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Message {
    /// Text: `4<text>` on every transport.
    Text(Str),
    /// Binary: the raw bytes in a binary WebSocket frame, `b<base64>` in a polling payload.
    Binary(Bytes),
}

impl Message {
    /// The application payload's length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Message::Text(s) => s.len(),
            Message::Binary(b) => b.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One Engine.IO packet.
///
/// The data the protocol gives no meaning to (after `1`, `5`, `6`) is dropped when decoding,
/// as the reference implementation ignores it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Packet {
    /// `0{…}`: the handshake JSON (see [`crate::handshake`]).
    Open(Str),
    /// `1`.
    Close,
    /// `2` plus optional data (`2probe`).
    Ping(Str),
    /// `3` plus optional data (`3probe`).
    Pong(Str),
    /// `4<text>`, or a binary message.
    Message(Message),
    /// `5`.
    Upgrade,
    /// `6`.
    Noop,
}

/// A WebSocket message carrying one packet (the frame type matters: binary frames are binary
/// messages).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WsFrame {
    /// A text frame.
    Text(Str),
    /// A binary frame.
    Binary(Bytes),
}

impl WsFrame {
    /// The frame's payload length in bytes.
    pub fn len(&self) -> usize {
        match self {
            WsFrame::Text(s) => s.len(),
            WsFrame::Binary(b) => b.len(),
        }
    }

    /// Whether the frame's payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Decodes what clients send: the standard alphabet, padding optional (Node's decoder, which
/// the reference server uses, accepts both).
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The prefix of a base64-encoded binary packet in a polling payload.
pub const BINARY_PREFIX: u8 = b'b';

impl Packet {
    /// A `2probe` / `3probe` probe's data.
    pub const PROBE: &'static str = "probe";

    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Open(_) => PacketType::Open,
            Packet::Close => PacketType::Close,
            Packet::Ping(_) => PacketType::Ping,
            Packet::Pong(_) => PacketType::Pong,
            Packet::Message(_) => PacketType::Message,
            Packet::Upgrade => PacketType::Upgrade,
            Packet::Noop => PacketType::Noop,
        }
    }

    /// A text message packet.
    pub fn text(s: impl Into<Str>) -> Packet {
        Packet::Message(Message::Text(s.into()))
    }

    /// A binary message packet.
    pub fn binary(b: impl Into<Bytes>) -> Packet {
        Packet::Message(Message::Binary(b.into()))
    }

    /// Decode a text packet: a WebSocket text frame, or one record of a polling payload.
    ///
    /// `b<base64>` is a binary message (the reference parser accepts it on both transports).
    pub fn decode_text(s: &Str) -> Result<Packet, DecodeError> {
        let bytes = s.as_bytes();
        let Some(&first) = bytes.first() else {
            return Err(DecodeError::Empty);
        };
        if first == BINARY_PREFIX {
            let data = LENIENT
                .decode(&bytes[1..])
                .map_err(|_| DecodeError::InvalidBase64)?;
            return Ok(Packet::binary(data));
        }
        let kind = PacketType::from_char(first).ok_or(DecodeError::UnknownType(first))?;
        // The type character is ASCII, so the rest starts on a character boundary.
        let data = || Str::from_utf8(bytes.slice(1..)).unwrap_or_default();
        Ok(match kind {
            PacketType::Open => Packet::Open(data()),
            PacketType::Close => Packet::Close,
            PacketType::Ping => Packet::Ping(data()),
            PacketType::Pong => Packet::Pong(data()),
            PacketType::Message => Packet::Message(Message::Text(data())),
            PacketType::Upgrade => Packet::Upgrade,
            PacketType::Noop => Packet::Noop,
        })
    }

    /// Decode a WebSocket message: a text frame is a text packet, a binary frame a binary
    /// message.
    pub fn decode_ws(frame: &WsFrame) -> Result<Packet, DecodeError> {
        match frame {
            WsFrame::Text(s) => Packet::decode_text(s),
            WsFrame::Binary(b) => Ok(Packet::binary(b.clone())),
        }
    }

    /// Encode for a WebSocket: one frame, binary messages as raw bytes.
    pub fn encode_ws(&self) -> WsFrame {
        match self {
            Packet::Message(Message::Binary(b)) => WsFrame::Binary(b.clone()),
            other => {
                let mut out = BytesMut::with_capacity(other.encoded_len());
                other.encode_text(&mut out);
                // Only UTF-8 went in: a type character and the packet's `Str` data.
                WsFrame::Text(Str::from_utf8(out.freeze()).unwrap_or_default())
            }
        }
    }

    /// Append the text form (`4hello`, `bAQID` for a binary message) to `out`.
    pub fn encode_text(&self, out: &mut BytesMut) {
        let (kind, data) = match self {
            Packet::Message(Message::Binary(b)) => {
                out.reserve(1 + base64_len(b.len()));
                out.put_u8(BINARY_PREFIX);
                let start = out.len();
                out.resize(start + base64_len(b.len()), 0);
                // The buffer was sized by `base64_len`, the exact padded length.
                let written = STANDARD
                    .encode_slice(b, &mut out[start..])
                    .unwrap_or_default();
                out.truncate(start + written);
                return;
            }
            Packet::Open(s) | Packet::Ping(s) | Packet::Pong(s) => (self.packet_type(), Some(s)),
            Packet::Message(Message::Text(s)) => (PacketType::Message, Some(s)),
            Packet::Close | Packet::Upgrade | Packet::Noop => (self.packet_type(), None),
        };
        out.put_u8(kind.as_char());
        if let Some(s) = data {
            out.extend_from_slice(s.as_bytes());
        }
    }

    /// The length of the text form.
    pub fn encoded_len(&self) -> usize {
        match self {
            Packet::Message(Message::Binary(b)) => 1 + base64_len(b.len()),
            Packet::Open(s) | Packet::Ping(s) | Packet::Pong(s) => 1 + s.len(),
            Packet::Message(Message::Text(s)) => 1 + s.len(),
            Packet::Close | Packet::Upgrade | Packet::Noop => 1,
        }
    }
}

/// Padded base64 length of `n` bytes.
pub(crate) fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// Encode a text message for a WebSocket once (`4` + `text`), to send the same frame to many
/// sessions (a broadcast).
pub fn encode_text_message(text: &str) -> Str {
    let mut out = String::with_capacity(1 + text.len());
    out.push('4');
    out.push_str(text);
    Str::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(p: &Packet) -> Vec<u8> {
        let mut out = BytesMut::new();
        p.encode_text(&mut out);
        assert_eq!(out.len(), p.encoded_len());
        out.to_vec()
    }

    fn dec(s: &str) -> Result<Packet, DecodeError> {
        Packet::decode_text(&Str::from(s))
    }

    #[test]
    fn every_packet_type_exact_bytes() {
        let cases: &[(Packet, &[u8])] = &[
            (
                Packet::Open(Str::from(r#"{"sid":"x"}"#)),
                br#"0{"sid":"x"}"#,
            ),
            (Packet::Close, b"1"),
            (Packet::Ping(Str::new()), b"2"),
            (Packet::Ping(Str::from("probe")), b"2probe"),
            (Packet::Pong(Str::new()), b"3"),
            (Packet::Pong(Str::from("probe")), b"3probe"),
            (Packet::text("hello"), b"4hello"),
            (Packet::text(""), b"4"),
            (Packet::text("€€€"), "4€€€".as_bytes()),
            (Packet::binary(vec![1, 2, 3, 4]), b"bAQIDBA=="),
            (Packet::binary(Vec::new()), b"b"),
            (Packet::Upgrade, b"5"),
            (Packet::Noop, b"6"),
        ];
        for (packet, bytes) in cases {
            assert_eq!(enc(packet), *bytes, "{packet:?}");
            let text = std::str::from_utf8(bytes).unwrap();
            assert_eq!(&dec(text).unwrap(), packet, "{text}");
        }
    }

    #[test]
    fn websocket_frames() {
        assert_eq!(
            Packet::text("hello").encode_ws(),
            WsFrame::Text(Str::from("4hello"))
        );
        assert_eq!(
            Packet::binary(vec![1, 2, 3]).encode_ws(),
            WsFrame::Binary(Bytes::from_static(&[1, 2, 3]))
        );
        assert_eq!(
            Packet::Ping(Str::new()).encode_ws(),
            WsFrame::Text(Str::from("2"))
        );
        assert_eq!(
            Packet::decode_ws(&WsFrame::Binary(Bytes::from_static(&[4, 1]))).unwrap(),
            Packet::binary(vec![4, 1]),
            "a binary frame is a message as is (v4: no type byte)"
        );
        assert_eq!(
            Packet::decode_ws(&WsFrame::Text(Str::from("3probe"))).unwrap(),
            Packet::Pong(Str::from("probe"))
        );
        assert_eq!(encode_text_message("x"), "4x");
    }

    #[test]
    fn data_of_close_upgrade_noop_is_ignored() {
        assert_eq!(dec("1bye").unwrap(), Packet::Close);
        assert_eq!(dec("5x").unwrap(), Packet::Upgrade);
        assert_eq!(dec("6x").unwrap(), Packet::Noop);
    }

    #[test]
    fn invalid_packets() {
        assert_eq!(dec(""), Err(DecodeError::Empty));
        assert_eq!(dec("abc"), Err(DecodeError::UnknownType(b'a')));
        assert_eq!(dec("7"), Err(DecodeError::UnknownType(b'7')));
        assert_eq!(dec("\u{1e}"), Err(DecodeError::UnknownType(0x1e)));
        assert_eq!(dec("b!!"), Err(DecodeError::InvalidBase64));
        assert_eq!(dec("bAQID="), Err(DecodeError::InvalidBase64));
    }
}
