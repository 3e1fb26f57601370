//! Client-to-server masking (RFC 6455 §5.3).
//!
//! Unmasking touches every payload byte a server receives, so it works a word (8 bytes) at a
//! time; the compiler turns the loop into SIMD on targets that have it. No `unsafe` needed.

/// XOR `data` with `key`, as if `data` started `offset` bytes into the masked payload.
///
/// `offset` lets a payload be unmasked in pieces as it arrives (the decoder validates UTF-8 of a
/// partly received frame, see `Connection`).
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate(key, offset);
    // Bytes before the first 8-aligned chunk are not special: the key repeats every 4 bytes, so
    // an 8-byte word of the key works at any position that is a multiple of 4 from the start.
    let word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i & 3];
    }
}

/// Masking keys for a client connection, from the operating system's CSPRNG: RFC 6455 §5.3
/// asks for keys "derived from a strong source of entropy" that a script in the page can not
/// predict (the point of masking: a hostile page must not choose the bytes an intermediary
/// sees). Fetched 64 keys per system call, so masking costs no syscall per frame.
#[derive(Debug)]
pub struct MaskKeys {
    pool: [u8; 256],
    next: usize,
}

impl MaskKeys {
    /// An empty pool: the first key fetches the first batch.
    pub fn new() -> MaskKeys {
        MaskKeys {
            pool: [0; 256],
            next: 256,
        }
    }

    /// The next key.
    pub fn next_key(&mut self) -> [u8; 4] {
        if self.next == self.pool.len() {
            self.refill();
        }
        let at = self.next;
        self.next += 4;
        [
            self.pool[at],
            self.pool[at + 1],
            self.pool[at + 2],
            self.pool[at + 3],
        ]
    }

    fn refill(&mut self) {
        if getrandom::getrandom(&mut self.pool).is_err() {
            // Only where the OS has no random source at all (Linux before 3.17 without
            // /dev/urandom): stir what the pool holds rather than stop sending. Masking is
            // then unpredictable only to the degree the previous batch was.
            self.pool.rotate_left(7);
            for (i, b) in self.pool.iter_mut().enumerate() {
                *b = b.wrapping_mul(31).wrapping_add(i as u8) ^ 0x5a;
            }
        }
        self.next = 0;
    }
}

impl Default for MaskKeys {
    fn default() -> MaskKeys {
        MaskKeys::new()
    }
}

fn rotate(key: [u8; 4], offset: usize) -> [u8; 4] {
    let s = offset & 3;
    [key[s], key[(s + 1) & 3], key[(s + 2) & 3], key[(s + 3) & 3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys come from the OS, not from a sequence seeded once: two pools disagree, and a
    /// pool does not repeat itself across refills.
    #[test]
    fn masking_keys_are_fresh_randomness() {
        let (mut a, mut b) = (MaskKeys::new(), MaskKeys::new());
        let from_a: Vec<[u8; 4]> = (0..1000).map(|_| a.next_key()).collect();
        let from_b: Vec<[u8; 4]> = (0..1000).map(|_| b.next_key()).collect();
        assert_ne!(from_a, from_b);
        let distinct: std::collections::HashSet<_> = from_a.iter().collect();
        assert!(
            distinct.len() > 990,
            "{} distinct keys of 1000",
            distinct.len()
        );
    }

    fn naive(data: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in data.iter_mut().enumerate() {
            *b ^= key[(i + offset) & 3];
        }
    }

    #[test]
    fn word_at_a_time_matches_bytewise_for_every_length_and_offset() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..70 {
            for offset in 0..8 {
                let orig: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                let (mut a, mut b) = (orig.clone(), orig.clone());
                apply_mask(&mut a, key, offset);
                naive(&mut b, key, offset);
                assert_eq!(a, b, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn rfc6455_example_masked_hello() {
        // RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
        let mut data = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&data, b"Hello");
    }

    #[test]
    fn unmasking_in_pieces_equals_unmasking_at_once() {
        let key = [1, 2, 3, 4];
        let orig: Vec<u8> = (0..100u8).collect();
        let mut whole = orig.clone();
        apply_mask(&mut whole, key, 0);
        let mut pieces = orig.clone();
        let (a, rest) = pieces.split_at_mut(13);
        apply_mask(a, key, 0);
        let (b, c) = rest.split_at_mut(30);
        apply_mask(b, key, 13);
        apply_mask(c, key, 43);
        assert_eq!(whole, pieces);
    }
}
