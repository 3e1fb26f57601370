//! Namespaces (`/`, `/chat`, …) and acknowledgement ids.

use std::fmt;
use std::sync::{Arc, LazyLock};

/// A Socket.IO namespace: `/` (the main namespace) or a path such as `/chat`.
///
/// Invariant: starts with `/` and contains no `,` (a comma ends the namespace on the wire, so
/// one inside it could not be decoded back).
///
/// Shared text (16 bytes, a clone is a reference count): every connection holds its
/// namespaces, and the main one, `/`, is one allocation for the whole process.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(Arc<str>);

static ROOT: LazyLock<Namespace> = LazyLock::new(|| Namespace(Arc::from("/")));

/// Why a string is not a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NamespaceError {
    /// It does not start with `/` (this includes the empty string).
    #[error("namespace must start with '/'")]
    NoLeadingSlash,
    /// It contains a `,`.
    #[error("namespace must not contain a comma")]
    Comma,
}

impl Namespace {
    /// The main namespace, `/`.
    pub fn root() -> Namespace {
        ROOT.clone()
    }

    /// A namespace from its name.
    pub fn new(name: impl Into<String>) -> Result<Namespace, NamespaceError> {
        let name = name.into();
        if !name.starts_with('/') {
            return Err(NamespaceError::NoLeadingSlash);
        }
        if name.contains(',') {
            return Err(NamespaceError::Comma);
        }
        Ok(Namespace::shared(&name))
    }

    fn shared(name: &str) -> Namespace {
        if name == "/" {
            Namespace::root()
        } else {
            Namespace(Arc::from(name))
        }
    }

    /// Caller guarantees the invariant (the text parser only cuts namespaces that start with
    /// `/` and stop before a `,`).
    pub(crate) fn new_unchecked(name: &str) -> Namespace {
        debug_assert!(name.starts_with('/') && !name.contains(','));
        Namespace::shared(name)
    }

    /// The name, e.g. `/chat`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the main namespace `/` (omitted on the wire).
    pub fn is_root(&self) -> bool {
        &*self.0 == "/"
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Namespace::root()
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Namespace {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Namespace {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

/// An acknowledgement id: the digits between the namespace and the JSON data of an `EVENT`
/// (the sender wants an answer) and of the `ACK` that answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AckId(pub u64);

impl fmt::Display for AckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_start_with_a_slash_and_hold_no_comma() {
        assert!(Namespace::root().is_root());
        assert_eq!(Namespace::new("/chat").unwrap().as_str(), "/chat");
        assert_eq!(Namespace::new(""), Err(NamespaceError::NoLeadingSlash));
        assert_eq!(Namespace::new("chat"), Err(NamespaceError::NoLeadingSlash));
        assert_eq!(Namespace::new("/a,b"), Err(NamespaceError::Comma));
        assert_eq!(Namespace::default(), "/");
        assert_eq!(AckId(12).to_string(), "12");
    }
}
