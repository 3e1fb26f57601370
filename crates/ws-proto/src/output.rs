//! The bytes a connection has queued for the socket, as a list of segments.
//!
//! Small frames are copied into a contiguous tail (one syscall writes many of them); large
//! payloads that already live in a `Bytes` (an echoed message, a broadcast framed once for
//! every recipient) are queued by reference and written with vectored I/O: no copy per
//! recipient. Below [`COPY_BELOW`] bytes copying is the cheaper way to share: an iovec entry
//! and a shared reference-count update (contended across cores in a broadcast) cost more than
//! copying a few hundred bytes into the buffer the syscall writes anyway.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

/// Below this size a `Bytes` is copied into the tail rather than queued as its own segment:
/// a segment costs an iovec entry, a copy this small costs less.
pub const COPY_BELOW: usize = 512;

/// The first allocation of an empty tail. Transient: the tail is released once written.
const TAIL_START: usize = 2048;

/// A released tail up to this size is kept for the thread's next connection (see
/// [`SPARE_TAIL`]); a bigger one goes back to the allocator.
const SPARE_MAX: usize = 4 * TAIL_START;

thread_local! {
    /// The last released small tail of this thread, handed to the next connection that needs
    /// one. Connections release their tail after every write (an idle one holds none), so a
    /// busy thread would otherwise allocate and free one per wake-up of every connection:
    /// under fan-out, the allocator's page bookkeeping for that was ~1 % of the server. One
    /// buffer per thread, and always the same one, which also stays in cache.
    static SPARE_TAIL: Cell<Option<BytesMut>> = const { Cell::new(None) };
}

/// Keep `tail` (written out, nothing queued) as this thread's spare if it is small.
fn recycle(mut tail: BytesMut) {
    tail.clear();
    let capacity = tail.capacity();
    if (TAIL_START..=SPARE_MAX).contains(&capacity) {
        SPARE_TAIL.set(Some(tail));
    }
}

/// This thread's spare tail, if it has one of at least `min` bytes.
fn spare_tail(min: usize) -> Option<BytesMut> {
    let spare = SPARE_TAIL.take()?;
    if spare.capacity() >= min {
        Some(spare)
    } else {
        SPARE_TAIL.set(Some(spare));
        None
    }
}

/// Queued output. See the module docs.
#[derive(Debug, Default)]
pub struct Output {
    /// Segments before `tail`, in order.
    chunks: VecDeque<Bytes>,
    tail: BytesMut,
    len: usize,
}

impl Output {
    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append a copy of `bytes`.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.tail_with_room(bytes.len()).extend_from_slice(bytes);
        self.len += bytes.len();
    }

    /// The tail, for writing a frame in place (e.g. to mask it). Callers must report what
    /// they add with [`Output::grew`].
    pub(crate) fn tail_mut(&mut self) -> &mut BytesMut {
        self.tail_with_room(0)
    }

    /// The tail, allocated if it was released: at a size that takes a batch of small frames
    /// (growing from the first frame's size doubled it up to four times per batch, a
    /// reallocation and a copy each, in the fan-out profile), or `additional` if larger.
    fn tail_with_room(&mut self, additional: usize) -> &mut BytesMut {
        if self.tail.capacity() == 0 {
            let wanted = additional.max(TAIL_START);
            match spare_tail(wanted) {
                Some(spare) => self.tail = spare,
                None => self.tail.reserve(wanted),
            }
        }
        &mut self.tail
    }

    /// `n` bytes were appended through [`Output::tail_mut`].
    pub(crate) fn grew(&mut self, n: usize) {
        self.len += n;
    }

    /// Append `bytes` without copying it (unless it is small).
    pub fn push_bytes(&mut self, bytes: Bytes) {
        if bytes.len() < COPY_BELOW {
            return self.extend_from_slice(&bytes);
        }
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
        self.len += bytes.len();
        self.chunks.push_back(bytes);
    }

    /// Like [`Output::push_bytes`] for a buffer shared with other connections: cloned (a
    /// reference count increment) only when it is large enough to be queued by reference.
    pub fn push_shared(&mut self, bytes: &Bytes) {
        if bytes.len() < COPY_BELOW {
            self.extend_from_slice(bytes);
        } else {
            self.push_bytes(bytes.clone());
        }
    }

    /// Fill `dst` with the queued segments in order; returns how many were filled.
    pub fn io_slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        let segments = self
            .chunks
            .iter()
            .map(|c| &c[..])
            .chain(std::iter::once(&self.tail[..]));
        for segment in segments.filter(|s| !s.is_empty()) {
            if n == dst.len() {
                break;
            }
            dst[n] = IoSlice::new(segment);
            n += 1;
        }
        n
    }

    /// Forget the first `n` bytes (they were written).
    pub fn advance(&mut self, mut n: usize) {
        self.len -= n.min(self.len);
        while n > 0 {
            match self.chunks.front_mut() {
                Some(c) if c.len() <= n => {
                    n -= c.len();
                    self.chunks.pop_front();
                }
                Some(c) => {
                    c.advance(n);
                    return;
                }
                None => {
                    if n >= self.tail.len() {
                        // Written whole: back to the start of its buffer (`advance` would
                        // leave its capacity behind the cursor, out of reach of the next
                        // frames and of `recycle`).
                        self.tail.clear();
                    } else {
                        self.tail.advance(n);
                    }
                    return;
                }
            }
        }
    }

    /// Take everything queued as one buffer (tests, simple clients).
    pub fn split(&mut self) -> Bytes {
        let all = self.to_vec();
        self.chunks.clear();
        self.tail.clear();
        self.len = 0;
        Bytes::from(all)
    }

    /// A copy of everything queued.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        for c in &self.chunks {
            v.extend_from_slice(c);
        }
        v.extend_from_slice(&self.tail);
        v
    }

    /// Free the buffers if nothing is queued (before the connection idles).
    pub fn release_if_empty(&mut self) {
        if self.len == 0 {
            // Unconditionally, whatever its capacity says: the connection keeps no buffer
            // (measured before: ~38 B per parked Socket.IO connection); a small one becomes
            // the thread's spare, the rest goes back to the allocator.
            recycle(std::mem::take(&mut self.tail));
            if self.chunks.capacity() > 0 {
                self.chunks = VecDeque::new();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_released_small_tail_is_reused_by_the_next_output_of_the_thread_and_a_big_one_is_not() {
        let mut first = Output::default();
        first.extend_from_slice(b"hello");
        let buffer = first.tail.as_ptr();
        first.advance(5);
        first.release_if_empty();
        assert_eq!(first.tail.capacity(), 0, "released");

        let mut second = Output::default();
        second.extend_from_slice(b"world");
        assert_eq!(second.tail.as_ptr(), buffer, "the spare was taken");
        assert_eq!(&second.tail[..], b"world");
        // Partly written, then the rest: what is left is still the queued bytes.
        second.advance(2);
        assert_eq!(second.to_vec(), b"rld");
        second.advance(3);
        assert!(second.is_empty());

        let mut big = Output::default();
        big.extend_from_slice(&vec![b'x'; 4 * SPARE_MAX]);
        big.advance(4 * SPARE_MAX);
        big.release_if_empty();
        assert!(SPARE_TAIL.take().is_none(), "a big tail is not kept");
    }

    #[test]
    fn segments_keep_order_and_advance_across_them() {
        let mut o = Output::default();
        o.extend_from_slice(b"ab");
        o.push_bytes(Bytes::from(vec![b'x'; 600]));
        o.extend_from_slice(b"cd");
        o.push_bytes(Bytes::from_static(b"ef"));
        assert_eq!(o.len(), 606);
        let mut expect = b"ab".to_vec();
        expect.extend(vec![b'x'; 600]);
        expect.extend(b"cdef");
        assert_eq!(o.to_vec(), expect);
        let mut slices = [IoSlice::new(&[]); 8];
        assert_eq!(o.io_slices(&mut slices), 3);
        o.advance(1);
        o.advance(300);
        assert_eq!(o.to_vec(), expect[301..]);
        o.advance(303);
        assert_eq!(o.to_vec(), b"ef");
        o.advance(2);
        assert!(o.is_empty());
        o.release_if_empty();
    }
}
