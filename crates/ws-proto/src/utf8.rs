//! Incremental UTF-8 validation across frame and chunk boundaries.
//!
//! A text message may arrive in many frames, and a frame in many reads; a code point can be split
//! anywhere. Validation runs on every piece as it arrives so that an invalid byte fails the
//! connection at once (Autobahn 6.4.* "fail fast"), not when the message is complete.

/// Validates a byte stream piece by piece.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    /// The bytes of a code point cut by the end of the previous piece (at most 3).
    partial: [u8; 4],
    partial_len: u8,
}

/// The stream so far can not be the beginning of valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validate the next piece. Fails as soon as the bytes seen so far can not be a prefix of
    /// valid UTF-8.
    pub fn feed(&mut self, mut piece: &[u8]) -> Result<(), InvalidUtf8> {
        if self.partial_len > 0 {
            let have = self.partial_len as usize;
            let need = sequence_len(self.partial[0]) - have;
            let take = need.min(piece.len());
            self.partial[have..have + take].copy_from_slice(&piece[..take]);
            let filled = have + take;
            match std::str::from_utf8(&self.partial[..filled]) {
                Ok(_) => self.partial_len = 0,
                Err(e) if e.error_len().is_none() => {
                    // Still a valid prefix, and `piece` ran out.
                    self.partial_len = filled as u8;
                    return Ok(());
                }
                Err(_) => return Err(InvalidUtf8),
            }
            piece = &piece[take..];
        }
        match std::str::from_utf8(piece) {
            Ok(_) => Ok(()),
            Err(e) => match e.error_len() {
                Some(_) => Err(InvalidUtf8),
                None => {
                    let tail = &piece[e.valid_up_to()..];
                    self.partial[..tail.len()].copy_from_slice(tail);
                    self.partial_len = tail.len() as u8;
                    Ok(())
                }
            },
        }
    }

    /// The message ended: a code point left incomplete makes it invalid.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.partial_len == 0;
        self.partial_len = 0;
        if complete {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }
}

/// Length of the sequence a lead byte starts. Only called on the first byte of a stored partial
/// sequence, which `from_utf8` already accepted as a lead byte (0xC2..=0xF4).
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_everywhere(bytes: &[u8]) -> Vec<bool> {
        (0..=bytes.len())
            .flat_map(|i| (i..=bytes.len()).map(move |j| (i, j)))
            .map(|(i, j)| {
                let mut v = Utf8Validator::new();
                v.feed(&bytes[..i]).is_ok()
                    && v.feed(&bytes[i..j]).is_ok()
                    && v.feed(&bytes[j..]).is_ok()
                    && v.finish().is_ok()
            })
            .collect()
    }

    #[test]
    fn valid_text_split_at_every_pair_of_points_is_valid() {
        let text = "κόσμε aé€𝄞 hello \u{10FFFF}".as_bytes();
        assert!(split_everywhere(text).into_iter().all(|ok| ok));
    }

    #[test]
    fn invalid_text_is_invalid_however_split() {
        for bad in [
            &b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"[..],
            b"\xf4\x90\x80\x80",
            b"\xc0\xaf",
            b"abc\xff",
            b"\xe2\x82",
        ] {
            assert!(split_everywhere(bad).into_iter().all(|ok| !ok), "{bad:?}");
        }
    }

    #[test]
    fn fails_fast_before_the_message_ends() {
        // Autobahn 6.4.1: the invalid sequence is detected in the piece that contains it.
        let mut v = Utf8Validator::new();
        assert!(v.feed("κόσμε".as_bytes()).is_ok());
        assert_eq!(v.feed(b"\xf4\x90\x80\x80"), Err(InvalidUtf8));
        // A surrogate's second byte is invalid as soon as it is seen, mid code point.
        let mut v = Utf8Validator::new();
        assert!(v.feed(b"\xed").is_ok());
        assert_eq!(v.feed(b"\xa0"), Err(InvalidUtf8));
    }
}
