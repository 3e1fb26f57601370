//! Encode once, send to many: a broadcast message framed (and compressed) once and shared, as
//! `Bytes`, by every recipient.
//!
//! Server frames are unmasked, so the same bytes are valid on every connection. A compressed
//! frame is shareable only with connections that use `server_no_context_takeover` (each message
//! compressed on its own) and the same window size; [`Connection::prepared_frame`] picks.
//!
//! [`Connection::prepared_frame`]: crate::Connection::prepared_frame

use std::sync::OnceLock;

use bytes::Bytes;

use crate::deflate::codec::compress_stateless;
use crate::header::FrameHeader;
use crate::message::MessageKind;
use crate::opcode::OpCode;

/// A server-to-client message, framed once. Cheap to share (`Arc` it, or clone the `Bytes`).
#[derive(Debug)]
pub struct PreparedMessage {
    kind: MessageKind,
    payload: Bytes,
    plain: Bytes,
    /// Compressed frames for window sizes 9..=15, made on first use by a connection that needs
    /// one (so a room without compressing clients never pays for compression).
    compressed: [OnceLock<Bytes>; 7],
}

impl PreparedMessage {
    /// Frame `payload` as one unfragmented server message.
    pub fn new(kind: MessageKind, payload: Bytes) -> PreparedMessage {
        let plain = encode_server_frame(kind.into(), false, &payload);
        PreparedMessage {
            kind,
            payload,
            plain,
            compressed: Default::default(),
        }
    }

    /// The message kind.
    pub fn kind(&self) -> MessageKind {
        self.kind
    }

    /// The unframed payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The plain (uncompressed) frame.
    pub fn plain_frame(&self) -> &Bytes {
        &self.plain
    }

    /// The frame for a connection: plain when `deflate` is `None` or the payload is under the
    /// threshold, else compressed with `window_bits` at `level` (made once, then shared).
    pub fn frame_for(&self, deflate: Option<(u8, u32, usize)>) -> &Bytes {
        match deflate {
            Some((bits, level, threshold)) if self.payload.len() >= threshold => {
                let bits = bits.clamp(9, 15);
                self.compressed[(bits - 9) as usize].get_or_init(|| {
                    let mut z = Vec::with_capacity(self.payload.len() / 2 + 16);
                    if compress_stateless(bits, level, &self.payload, &mut z) {
                        encode_server_frame(self.kind.into(), true, &z)
                    } else {
                        self.plain.clone()
                    }
                })
            }
            _ => &self.plain,
        }
    }
}

/// Encode one unmasked, final frame.
pub fn encode_server_frame(opcode: OpCode, compressed: bool, payload: &[u8]) -> Bytes {
    let header = FrameHeader::server(opcode, compressed, payload.len());
    let mut buf = Vec::with_capacity(header.encoded_len() + payload.len());
    header.encode(&mut buf);
    buf.extend_from_slice(payload);
    Bytes::from(buf)
}
