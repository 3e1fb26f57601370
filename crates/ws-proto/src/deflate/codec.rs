//! Compression and decompression of message payloads (RFC 7692 §7.2).
//!
//! Raw DEFLATE (no zlib header); every message is flushed with a sync flush, whose trailing
//! `00 00 ff ff` is removed by the sender and appended again by the receiver.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::error::ProtocolError;

const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Decompresses the messages of one connection, with the message-size limit applied to the
/// *inflated* size as it is produced: a compression bomb fails after at most `limit` bytes of
/// output, never after allocating the whole expansion.
#[derive(Default)]
pub struct Inflater {
    // Created on the first compressed message; with `client_no_context_takeover` it is dropped
    // after every message, so an idle connection holds no zlib state.
    state: Option<Box<Decompress>>,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("active", &self.state.is_some())
            .finish()
    }
}

impl Inflater {
    /// Inflate one frame's compressed payload, appending to `out`.
    pub fn inflate(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), ProtocolError> {
        // We always inflate with the largest window: it decodes data made with any smaller one.
        let d = self
            .state
            .get_or_insert_with(|| Box::new(Decompress::new_with_window_bits(false, 15)));
        loop {
            if out.len() > limit {
                return Err(ProtocolError::MessageTooBig { limit });
            }
            // Never offer more room than one byte past the limit: that byte detects the breach.
            // zlib gets exactly `room` bytes (a `Vec`'s spare capacity may be larger), and the
            // buffer grows geometrically but never beyond that byte.
            // Start small (zlib's output is zero-filled first) and grow with the message.
            let room = (limit + 1 - out.len()).min(out.len().clamp(4096, 64 * 1024));
            let start = out.len();
            if out.capacity() - start < room {
                let target = out
                    .capacity()
                    .saturating_mul(2)
                    .clamp(start + room, limit + 1);
                out.reserve_exact(target - start);
            }
            out.resize(start + room, 0);
            let (in_before, out_before) = (d.total_in(), d.total_out());
            let status = d.decompress(input, &mut out[start..], FlushDecompress::Sync);
            let produced = (d.total_out() - out_before) as usize;
            out.truncate(start + produced);
            let status = status.map_err(|_| ProtocolError::InvalidCompressedData)?;
            let consumed = (d.total_in() - in_before) as usize;
            input = &input[consumed..];
            if out.len() > limit {
                return Err(ProtocolError::MessageTooBig { limit });
            }
            let output_full = produced == room;
            match status {
                Status::StreamEnd => {
                    // The sender ended the DEFLATE stream (BFINAL); a new one may follow.
                    d.reset(false);
                    if input.is_empty() {
                        return Ok(());
                    }
                }
                Status::Ok | Status::BufError => {
                    if input.is_empty() && !output_full {
                        return Ok(());
                    }
                    if consumed == 0 && !output_full {
                        // No progress with input left and room to write: corrupt data.
                        return Err(ProtocolError::InvalidCompressedData);
                    }
                }
            }
        }
    }

    /// The message ended: feed the stripped sync-flush trailer, then forget the context if
    /// the peer does not keep it.
    pub fn finish_message(
        &mut self,
        out: &mut Vec<u8>,
        limit: usize,
        keep_context: bool,
    ) -> Result<(), ProtocolError> {
        let result = self.inflate(&TRAILER, out, limit);
        if !keep_context || result.is_err() {
            self.state = None;
        }
        result
    }
}

/// Compresses the messages of one connection.
///
/// Without context takeover the compressor is borrowed from a per-thread pool for the duration
/// of one message (zlib's state is ~256 KB: far too much to keep per connection); with context
/// takeover the connection owns one.
pub struct Deflater {
    window_bits: u8,
    level: u32,
    owned: Option<Box<Compress>>,
    keep_context: bool,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater")
            .field("window_bits", &self.window_bits)
            .field("keep_context", &self.keep_context)
            .finish()
    }
}

thread_local! {
    // Index: window bits 9..=15 and level; a handful of compressors per thread at most.
    static POOL: RefCell<Vec<(u8, u32, Box<Compress>)>> = const { RefCell::new(Vec::new()) };
}

impl Deflater {
    /// A compressor for `window_bits` (9..=15) at zlib `level`.
    pub fn new(window_bits: u8, level: u32, keep_context: bool) -> Deflater {
        Deflater {
            window_bits,
            level: level.min(9),
            owned: None,
            keep_context,
        }
    }

    /// Compress one whole message, appending the payload (trailer removed) to `out`.
    /// `false` if the compressor failed: `out` is unchanged and the message must be sent
    /// uncompressed (RFC 7692 allows that per message).
    #[must_use]
    pub fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        if self.keep_context {
            let (bits, level) = (self.window_bits, self.level);
            let c = self.owned.get_or_insert_with(|| new_compress(bits, level));
            if compress_sync(c, input, out).is_err() {
                // Its stream is broken. A fresh one has no context, which the peer's inflater
                // does not mind: back-references simply never reach the old window.
                self.owned = None;
                return false;
            }
            true
        } else {
            compress_stateless(self.window_bits, self.level, input, out)
        }
    }
}

/// Compress one message with no context takeover using this thread's pooled compressor. The
/// output is independent of any connection, so a broadcast can be compressed once for all.
/// `false` if the compressor failed: `out` is unchanged, send the message uncompressed.
#[must_use]
pub fn compress_stateless(window_bits: u8, level: u32, input: &[u8], out: &mut Vec<u8>) -> bool {
    let mut c = POOL
        .with(|p| {
            let mut p = p.borrow_mut();
            let i = p
                .iter()
                .position(|(b, l, _)| *b == window_bits && *l == level)?;
            Some(p.swap_remove(i).2)
        })
        .unwrap_or_else(|| new_compress(window_bits, level));
    if compress_sync(&mut c, input, out).is_err() {
        // Not returned to the pool: a compressor that failed once is not trusted again.
        return false;
    }
    c.reset();
    POOL.with(|p| p.borrow_mut().push((window_bits, level, c)));
    true
}

/// The compressor reported an error (zlib never does for a sync flush of a healthy stream).
#[derive(Debug)]
struct CompressFailed;

fn new_compress(window_bits: u8, level: u32) -> Box<Compress> {
    Box::new(Compress::new_with_window_bits(
        Compression::new(level),
        false,
        window_bits,
    ))
}

/// Compress `input` with a sync flush, appending to `out`. On an error `out` is left as it
/// was: looping on a compressor that reports an error (and so makes no progress) would spin
/// forever.
fn compress_sync(
    c: &mut Compress,
    mut input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CompressFailed> {
    let start = out.len();
    out.reserve(input.len() / 2 + 64);
    loop {
        let in_before = c.total_in();
        let out_before = out.len();
        if c.compress_vec(input, out, FlushCompress::Sync).is_err() {
            out.truncate(start);
            return Err(CompressFailed);
        }
        let consumed = (c.total_in() - in_before) as usize;
        input = &input[consumed..];
        let stuck = consumed == 0 && out.len() == out_before && out.len() < out.capacity();
        if stuck && !input.is_empty() {
            // No progress with room to write and no error: not a state zlib gets into, but
            // never spin on it.
            out.truncate(start);
            return Err(CompressFailed);
        }
        // Done when all input is in and the flush fit (zlib left spare room).
        if input.is_empty() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    if out[start..].ends_with(&TRAILER) {
        out.truncate(out.len() - TRAILER.len());
    } else if out.len() == start {
        // zlib writes nothing for a sync flush with no new input right after another flush
        // (an empty message with context takeover). RFC 7692 §7.2.1 then appends an empty
        // stored block and strips its last 4 octets: the payload is the single octet 0x00. An
        // empty payload would make the receiver read the appended 00 00 ff ff as a block header.
        out.push(0x00);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_compressor_returns_instead_of_spinning() {
        let mut c = new_compress(15, 6);
        let mut sink = Vec::with_capacity(64);
        // A finished stream takes no more input: zlib answers a buffer error (which flate2
        // reports as a status, not an error) and makes no progress, forever.
        let _ = c.compress_vec(b"abc", &mut sink, FlushCompress::Finish);
        let mut out = b"head".to_vec();
        assert!(compress_sync(&mut c, &b"x".repeat(10_000), &mut out).is_err());
        assert_eq!(out, b"head", "nothing half-written");
    }

    fn roundtrip(data: &[u8], bits: u8, keep: bool) {
        let mut d = Deflater::new(bits, 6, keep);
        let mut inf = Inflater::default();
        for _ in 0..3 {
            let mut z = Vec::new();
            assert!(d.compress(data, &mut z));
            let mut out = Vec::new();
            inf.inflate(&z, &mut out, usize::MAX - 1).unwrap();
            inf.finish_message(&mut out, usize::MAX - 1, keep).unwrap();
            assert_eq!(out, data);
        }
    }

    #[test]
    fn roundtrips_for_every_window_size_with_and_without_context() {
        let text = b"Hello, hello, hello! The quick brown fox jumps over the lazy dog. ".repeat(50);
        for bits in 9..=15 {
            roundtrip(&text, bits, true);
            roundtrip(&text, bits, false);
        }
        roundtrip(b"", 15, false);
        // Consecutive empty messages on a kept context (zlib writes nothing for the flush).
        roundtrip(b"", 15, true);
    }

    #[test]
    fn rfc7692_example_hello() {
        // §7.2.3.1: "Hello" compressed without context.
        let mut inf = Inflater::default();
        let mut out = Vec::new();
        inf.inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], &mut out, 100)
            .unwrap();
        inf.finish_message(&mut out, 100, false).unwrap();
        assert_eq!(out, b"Hello");
    }

    #[test]
    fn compression_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 10 * 1024 * 1024];
        let mut z = Vec::new();
        assert!(compress_stateless(15, 9, &zeros, &mut z));
        assert!(z.len() < 20_000, "{}", z.len());
        let mut out = Vec::new();
        let err = Inflater::default()
            .inflate(&z, &mut out, 1 << 20)
            .unwrap_err();
        assert_eq!(err, ProtocolError::MessageTooBig { limit: 1 << 20 });
        assert!(out.capacity() < 3 << 20, "allocated {}", out.capacity());
    }

    #[test]
    fn garbage_is_invalid_compressed_data() {
        let mut out = Vec::new();
        let r = Inflater::default().inflate(&[0xff; 32], &mut out, 1000);
        assert_eq!(r, Err(ProtocolError::InvalidCompressedData));
    }
}
