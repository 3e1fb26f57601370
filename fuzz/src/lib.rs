//! Helpers shared by the fuzz targets in `fuzz_targets/`.
//!
//! - [`alloc`]: a counting global allocator, so a target can assert that one input never makes
//!   the codec hold more than a bounded amount of heap (the "memory bounded" invariants).
//! - [`Chunker`]: splits a byte string into chunks whose sizes are derived from the input, to
//!   feed a sans-IO decoder the way a socket would (one byte at a time, in odd pieces, at once).
//! - [`parse_frames`]: decodes the frames a `Connection` queued, to check what it sends.

use switchboard_ws_proto::header::FrameHeader;
use switchboard_ws_proto::mask::apply_mask;
use switchboard_ws_proto::OpCode;

pub mod alloc {
    //! Counts live heap bytes and their peak. Every target that links this crate uses it.
    //!
    //! libFuzzer runs one input at a time on one thread, so "peak during this input" is
    //! [`reset_peak`] before and [`peak`] after.

    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    struct Counting;

    static LIVE: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);

    fn grow(n: usize) {
        let live = LIVE.fetch_add(n, Relaxed) + n;
        PEAK.fetch_max(live, Relaxed);
    }

    // SAFETY: every call is forwarded to the system allocator unchanged; only counters are kept.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = System.alloc(layout);
            if !p.is_null() {
                grow(layout.size());
            }
            p
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let p = System.alloc_zeroed(layout);
            if !p.is_null() {
                grow(layout.size());
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            System.dealloc(ptr, layout);
            LIVE.fetch_sub(layout.size(), Relaxed);
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let p = System.realloc(ptr, layout, new_size);
            if !p.is_null() {
                // Count the old and new block as both live: that is what a moving realloc holds.
                grow(new_size);
                LIVE.fetch_sub(layout.size(), Relaxed);
            }
            p
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    /// Heap bytes allocated through Rust's allocator and not yet freed.
    pub fn live() -> usize {
        LIVE.load(Relaxed)
    }

    /// Start measuring a new peak from the current live size.
    pub fn reset_peak() {
        PEAK.store(LIVE.load(Relaxed), Relaxed);
    }

    /// Highest live size since the last [`reset_peak`].
    pub fn peak() -> usize {
        PEAK.load(Relaxed)
    }
}

/// Splits `data` into consecutive chunks. `mode` (one input byte) picks the pattern:
/// 0 = everything at once, 1 = one byte at a time, otherwise pseudo-random sizes in
/// `1..=mode` (from an xorshift seeded by `mode` and `data.len()`), so every split of a short
/// input is reachable and the pattern is reproducible from the input alone.
pub struct Chunker<'a> {
    rest: &'a [u8],
    mode: u8,
    rng: u64,
}

impl<'a> Chunker<'a> {
    /// Chunks of `data` in the pattern `mode`.
    pub fn new(data: &'a [u8], mode: u8) -> Self {
        Chunker {
            rest: data,
            mode,
            rng: 0x9e37_79b9_7f4a_7c15 ^ ((mode as u64) << 32) ^ data.len() as u64,
        }
    }
}

impl<'a> Iterator for Chunker<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let n = match self.mode {
            0 => self.rest.len(),
            1 => 1,
            m => {
                let mut x = self.rng;
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                self.rng = x;
                1 + (x % m as u64) as usize
            }
        };
        let (chunk, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        Some(chunk)
    }
}

/// One decoded frame of a `Connection`'s output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutFrame {
    /// Its header.
    pub header: FrameHeader,
    /// Its payload, unmasked.
    pub payload: Vec<u8>,
}

/// Decode every frame in `out`, which must hold whole, well-formed frames and nothing else
/// (panics otherwise: that is a bug in the encoder).
pub fn parse_frames(mut out: &[u8]) -> Vec<OutFrame> {
    let mut frames = Vec::new();
    while !out.is_empty() {
        let (header, len) = match FrameHeader::parse(out) {
            Ok(Some(h)) => h,
            other => panic!("output is not a sequence of frames: {other:?} at {out:02x?}"),
        };
        let end = len + usize::try_from(header.payload_len).expect("length fits usize");
        assert!(end <= out.len(), "output ends inside a frame");
        let mut payload = out[len..end].to_vec();
        if let Some(key) = header.mask {
            apply_mask(&mut payload, key, 0);
        }
        frames.push(OutFrame { header, payload });
        out = &out[end..];
    }
    frames
}

/// Whether `f` is a Close frame.
pub fn is_close(f: &OutFrame) -> bool {
    f.header.opcode == OpCode::Close
}
