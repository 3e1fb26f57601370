//! Frame header codec (RFC 6455 §5.2).
//!
//! ```text
//!  0               1               2               3
//!  0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! ```

use crate::error::ProtocolError;
use crate::opcode::OpCode;

/// The largest header: 2 bytes + 8 bytes of length + 4 bytes of mask.
pub const MAX_HEADER_LEN: usize = 14;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Final fragment of a message.
    pub fin: bool,
    /// RSV1: "compressed" when permessage-deflate is negotiated.
    pub rsv1: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, if the frame is masked.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub payload_len: u64,
}

impl FrameHeader {
    /// Parse a header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold the whole header (nothing is consumed), or
    /// the header and its length in bytes. Rejects what is wrong whatever the context: reserved
    /// opcodes, RSV2/RSV3, a 64-bit length with its top bit set, a length not in its shortest
    /// form, and control frames that are fragmented or longer than 125 bytes. Rules that depend
    /// on the connection (masking, RSV1, continuation order, size limits) are checked by the
    /// caller.
    pub fn parse(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        let fin = b0 & 0x80 != 0;
        let rsv1 = b0 & 0x40 != 0;
        if b0 & 0x30 != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        let opcode = OpCode::from_u8(b0 & 0x0f).ok_or(ProtocolError::UnknownOpcode(b0 & 0x0f))?;
        let masked = b1 & 0x80 != 0;
        let len7 = b1 & 0x7f;

        if opcode.is_control() {
            if !fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if len7 > 125 {
                return Err(ProtocolError::ControlFrameTooLong);
            }
        }

        let (payload_len, mut pos) = match len7 {
            126 => {
                let Some(ext) = buf.get(2..4) else {
                    return Ok(None);
                };
                let len = u16::from_be_bytes([ext[0], ext[1]]) as u64;
                if len < 126 {
                    return Err(ProtocolError::NonMinimalLength);
                }
                (len, 4)
            }
            127 => {
                let Some(ext) = buf.get(2..10) else {
                    return Ok(None);
                };
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(ext);
                let len = u64::from_be_bytes(bytes);
                if len >> 63 != 0 {
                    return Err(ProtocolError::LengthTopBitSet);
                }
                if len <= u16::MAX as u64 {
                    return Err(ProtocolError::NonMinimalLength);
                }
                (len, 10)
            }
            n => (n as u64, 2),
        };

        let mask = if masked {
            let Some(key) = buf.get(pos..pos + 4) else {
                return Ok(None);
            };
            pos += 4;
            Some([key[0], key[1], key[2], key[3]])
        } else {
            None
        };

        Ok(Some((
            FrameHeader {
                fin,
                rsv1,
                opcode,
                mask,
                payload_len,
            },
            pos,
        )))
    }

    /// The header of a final, unmasked frame (what a server sends).
    pub fn server(opcode: OpCode, compressed: bool, payload_len: usize) -> FrameHeader {
        FrameHeader {
            fin: true,
            rsv1: compressed,
            opcode,
            mask: None,
            payload_len: payload_len as u64,
        }
    }

    /// Append the encoded header to `out`, using the shortest length form.
    pub fn encode(&self, out: &mut impl bytes::BufMut) {
        let mut b0 = self.opcode.as_u8();
        if self.fin {
            b0 |= 0x80;
        }
        if self.rsv1 {
            b0 |= 0x40;
        }
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let len = self.payload_len;
        if len < 126 {
            out.put_slice(&[b0, mask_bit | len as u8]);
        } else if len <= u16::MAX as u64 {
            out.put_slice(&[b0, mask_bit | 126]);
            out.put_slice(&(len as u16).to_be_bytes());
        } else {
            out.put_slice(&[b0, mask_bit | 127]);
            out.put_slice(&len.to_be_bytes());
        }
        if let Some(key) = self.mask {
            out.put_slice(&key);
        }
    }

    /// Length of the encoded header.
    pub fn encoded_len(&self) -> usize {
        let len = match self.payload_len {
            0..=125 => 2,
            126..=0xffff => 4,
            _ => 10,
        };
        len + if self.mask.is_some() { 4 } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(opcode: OpCode, len: u64, mask: Option<[u8; 4]>) -> FrameHeader {
        FrameHeader {
            fin: true,
            rsv1: false,
            opcode,
            mask,
            payload_len: len,
        }
    }

    #[test]
    fn rfc6455_examples_decode() {
        // §5.7: single-frame unmasked text "Hello".
        let (h, n) = FrameHeader::parse(&[0x81, 0x05, 0x48]).unwrap().unwrap();
        assert_eq!((h, n), (hdr(OpCode::Text, 5, None), 2));
        // §5.7: masked "Hello".
        let (h, n) = FrameHeader::parse(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d])
            .unwrap()
            .unwrap();
        assert_eq!(n, 6);
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        // §5.7: 256 bytes binary in a single unmasked frame; 64 KiB binary.
        let (h, _) = FrameHeader::parse(&[0x82, 0x7E, 0x01, 0x00])
            .unwrap()
            .unwrap();
        assert_eq!(h.payload_len, 256);
        let (h, n) = FrameHeader::parse(&[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!((h.payload_len, n), (65536, 10));
    }

    #[test]
    fn every_prefix_of_a_header_is_incomplete() {
        let mut buf = Vec::new();
        hdr(OpCode::Binary, 70000, Some([1, 2, 3, 4])).encode(&mut buf);
        for i in 0..buf.len() {
            assert_eq!(FrameHeader::parse(&buf[..i]), Ok(None), "prefix {i}");
        }
        assert!(FrameHeader::parse(&buf).unwrap().is_some());
    }

    #[test]
    fn non_minimal_lengths_are_rejected() {
        assert_eq!(
            FrameHeader::parse(&[0x82, 126, 0, 125]),
            Err(ProtocolError::NonMinimalLength)
        );
        assert_eq!(
            FrameHeader::parse(&[0x82, 127, 0, 0, 0, 0, 0, 0, 0xff, 0xff]),
            Err(ProtocolError::NonMinimalLength)
        );
        assert_eq!(
            FrameHeader::parse(&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(ProtocolError::LengthTopBitSet)
        );
    }

    #[test]
    fn control_frame_rules_and_reserved_bits() {
        assert_eq!(
            FrameHeader::parse(&[0x09, 0x00]),
            Err(ProtocolError::FragmentedControlFrame)
        );
        assert_eq!(
            FrameHeader::parse(&[0x89, 126, 0, 126]),
            Err(ProtocolError::ControlFrameTooLong)
        );
        assert_eq!(
            FrameHeader::parse(&[0xA1, 0]),
            Err(ProtocolError::ReservedBits)
        );
        assert_eq!(
            FrameHeader::parse(&[0x83, 0]),
            Err(ProtocolError::UnknownOpcode(3))
        );
    }

    #[test]
    fn encode_uses_shortest_form() {
        for (len, expect) in [(125u64, 2usize), (126, 4), (65535, 4), (65536, 10)] {
            let mut out = Vec::new();
            let h = hdr(OpCode::Binary, len, None);
            h.encode(&mut out);
            assert_eq!(out.len(), expect);
            assert_eq!(h.encoded_len(), expect);
            assert_eq!(FrameHeader::parse(&out).unwrap(), Some((h, expect)));
        }
    }
}
