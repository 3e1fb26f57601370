//! Just enough framing for an echo benchmark: encode one masked client frame
//! (RFC 6455 requires client-to-server masking), and count complete messages in
//! the server's byte stream without copying payloads.

use std::io::{self, ErrorKind};

/// Opcode of a text frame.
pub const TEXT: u8 = 0x1;
/// Opcode of a binary frame.
pub const BINARY: u8 = 0x2;

/// One final, masked client frame with a `size`-byte payload of ASCII `x`
/// (valid UTF-8, so it works as a text frame as well).
pub fn client_frame(opcode: u8, size: usize, mask: [u8; 4]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(size + 14);
    frame.push(0x80 | opcode);
    if size < 126 {
        frame.push(0x80 | size as u8);
    } else if let Ok(len) = u16::try_from(size) {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&len.to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(size as u64).to_be_bytes());
    }
    frame.extend_from_slice(&mask);
    frame.extend((0..size).map(|i| b'x' ^ mask[i % 4]));
    frame
}

/// Counts complete echoed messages in what the server sends back.
pub enum Decoder {
    /// `--raw`: a message is `size` bytes, boundaries don't exist on the wire.
    Raw {
        /// Bytes per message.
        size: u64,
        /// Bytes received towards the next message.
        partial: u64,
    },
    /// WebSocket frames from the server.
    Ws(FrameParser),
}

impl Decoder {
    /// A decoder for echoes of `size`-byte messages.
    pub fn new(raw: bool, size: usize) -> Self {
        if raw {
            Decoder::Raw {
                size: size.max(1) as u64,
                partial: 0,
            }
        } else {
            Decoder::Ws(FrameParser::new(size as u64))
        }
    }

    /// Consumes received bytes; returns how many messages they completed.
    pub fn feed(&mut self, data: &[u8]) -> io::Result<u64> {
        match self {
            Decoder::Raw { size, partial } => {
                let total = *partial + data.len() as u64;
                *partial = total % *size;
                Ok(total / *size)
            }
            Decoder::Ws(parser) => parser.feed(data),
        }
    }
}

/// A minimal parser of unmasked server frames (2-, 4- and 10-byte headers).
/// Payloads are skipped, not copied: only their lengths are checked.
pub struct FrameParser {
    /// Header bytes collected so far (a header can straddle two reads).
    head: [u8; 10],
    head_len: usize,
    /// Payload bytes of the current frame still to skip.
    remaining: u64,
    /// Whether the end of the current frame's payload ends a data message.
    completes: bool,
    /// Payload bytes of the current data message, over all its fragments.
    message_len: u64,
    /// The echo of our message must be exactly this long.
    expected_len: u64,
}

impl FrameParser {
    /// A parser expecting echoes of `expected_len`-byte messages.
    pub fn new(expected_len: u64) -> Self {
        FrameParser {
            head: [0; 10],
            head_len: 0,
            remaining: 0,
            completes: false,
            message_len: 0,
            expected_len,
        }
    }

    /// Consumes received bytes; returns how many messages they completed.
    pub fn feed(&mut self, mut data: &[u8]) -> io::Result<u64> {
        let mut done = 0;
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len() as u64);
                data = &data[n as usize..];
                self.remaining -= n;
                if self.remaining == 0 && self.completes {
                    done += 1;
                }
                continue;
            }
            // Collect the header: 2 bytes, then the extended length if any.
            let need = match self.head_len {
                0 | 1 => 2,
                _ => match self.head[1] & 0x7f {
                    126 => 4,
                    127 => 10,
                    _ => 2,
                },
            };
            let n = (need - self.head_len).min(data.len());
            self.head[self.head_len..self.head_len + n].copy_from_slice(&data[..n]);
            self.head_len += n;
            data = &data[n..];
            // Complete once `need` no longer grows: 2 bytes with a 7-bit length, or
            // the extended length too.
            let complete = self.head_len == need && (need > 2 || self.head[1] & 0x7f < 126);
            if complete && self.start_frame()? {
                done += 1;
            }
        }
        Ok(done)
    }

    /// Interprets a complete header. Returns true if it completed an empty message.
    fn start_frame(&mut self) -> io::Result<bool> {
        let (b0, b1) = (self.head[0], self.head[1]);
        let len = match b1 & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
            127 => u64::from_be_bytes(self.head[2..10].try_into().unwrap_or_default()),
            n => u64::from(n),
        };
        self.head_len = 0;
        if b1 & 0x80 != 0 {
            return Err(invalid("server frame is masked"));
        }
        let fin = b0 & 0x80 != 0;
        self.completes = match b0 & 0x0f {
            // Continuation, text, binary.
            0..=2 => {
                self.message_len += len;
                fin
            }
            0x8 => return Err(invalid("server sent a close frame")),
            // Ping and pong: not an echo, skip it.
            0x9 | 0xA => false,
            op => return Err(invalid(format!("unknown opcode {op:#x}"))),
        };
        if self.completes {
            let got = std::mem::take(&mut self.message_len);
            if got != self.expected_len {
                return Err(invalid(format!(
                    "echo is {got} bytes, sent {}",
                    self.expected_len
                )));
            }
        }
        self.remaining = len;
        Ok(len == 0 && self.completes)
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unmasked frame a server would echo.
    fn server_frame(opcode: u8, fin: bool, size: usize) -> Vec<u8> {
        let mut frame = client_frame(opcode, size, [0; 4]);
        frame[0] = if fin { 0x80 } else { 0 } | opcode;
        frame[1] &= 0x7f;
        let header = frame.len() - size - 4;
        frame.drain(header..header + 4);
        frame
    }

    #[test]
    fn masks_the_payload() {
        let frame = client_frame(BINARY, 3, [1, 2, 3, 4]);
        assert_eq!(
            frame,
            [0x82, 0x83, 1, 2, 3, 4, b'x' ^ 1, b'x' ^ 2, b'x' ^ 3]
        );
        assert_eq!(
            client_frame(TEXT, 16384, [0; 4])[..4],
            [0x81, 0xfe, 0x40, 0x00]
        );
        assert_eq!(client_frame(TEXT, 70000, [0; 4]).len(), 70000 + 14);
    }

    #[test]
    fn counts_frames_split_at_every_byte() {
        for size in [0, 20, 125, 126, 16384, 70000] {
            let mut stream = server_frame(BINARY, true, size);
            stream.extend(server_frame(0x9, true, 4)); // a ping in between
            stream.extend(server_frame(TEXT, true, size));
            for step in [1, 3, 7, 4096, usize::MAX] {
                let mut parser = FrameParser::new(size as u64);
                let done: u64 = stream
                    .chunks(step.min(stream.len()).max(1))
                    .map(|c| parser.feed(c).unwrap())
                    .sum();
                assert_eq!(done, 2, "size {size}, step {step}");
            }
        }
    }

    #[test]
    fn reassembles_fragments() {
        let mut stream = server_frame(TEXT, false, 10);
        stream.extend(server_frame(0, true, 10));
        let mut parser = FrameParser::new(20);
        assert_eq!(parser.feed(&stream).unwrap(), 1);
    }

    #[test]
    fn rejects_close_masked_and_short_echoes() {
        assert!(FrameParser::new(0).feed(&[0x88, 0]).is_err());
        assert!(FrameParser::new(0).feed(&[0x82, 0x80, 0, 0, 0, 0]).is_err());
        assert!(FrameParser::new(5)
            .feed(&server_frame(BINARY, true, 4))
            .is_err());
    }

    #[test]
    fn raw_counts_bytes() {
        let mut decoder = Decoder::new(true, 20);
        assert_eq!(decoder.feed(&[0; 30]).unwrap(), 1);
        assert_eq!(decoder.feed(&[0; 30]).unwrap(), 2);
    }
}
