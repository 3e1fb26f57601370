//! [`Str`]: UTF-8 text in a shared [`Bytes`] buffer, so decoded packets borrow the request body
//! or WebSocket frame they came from instead of copying it.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

/// A UTF-8 string backed by [`Bytes`] (cheap to clone and to slice).
///
/// Invariant: the bytes are valid UTF-8 (checked by every constructor).
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Str(Bytes);

impl Str {
    /// An empty string.
    pub const fn new() -> Str {
        Str(Bytes::new())
    }

    /// A string from a `'static` literal, without copying.
    pub const fn from_static(s: &'static str) -> Str {
        Str(Bytes::from_static(s.as_bytes()))
    }

    /// Check that `bytes` are UTF-8 and wrap them.
    pub fn from_utf8(bytes: Bytes) -> Result<Str, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Str(bytes))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Invariant of the type: every constructor checked the bytes are UTF-8. A failure here
        // would be a bug of this module; answer an empty string rather than panic.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The UTF-8 bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The text from byte `at` on, sharing the bytes (`None` if `at` is not a character
    /// boundary).
    pub fn slice_from(&self, at: usize) -> Option<Str> {
        self.as_str()
            .is_char_boundary(at)
            .then(|| Str(self.0.slice(at..)))
    }

    /// The UTF-8 bytes, by value.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for Str {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for Str {
    fn from(s: String) -> Str {
        Str(Bytes::from(s))
    }
}

impl From<&str> for Str {
    fn from(s: &str) -> Str {
        Str(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl fmt::Debug for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Str {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Str {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}
