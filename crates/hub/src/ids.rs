//! The identities the hub deals in, as types: a user id is not a room name, an offset is not
//! a count.

use std::fmt;
use std::sync::Arc;

/// A connection's id, unique within the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// A user id (JWT `sub`, or generated for anonymous users).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub Arc<str>);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message's place in its room's history: 1 for the first message of an epoch, one more
/// for each message after it. 0 means "before the first message".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Offset(pub u64);

impl Offset {
    /// The offset after this one.
    pub fn next(self) -> Offset {
        Offset(self.0 + 1)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A room's history epoch: changes whenever the history was lost (a room forgotten and made
/// again, a restart of a memory store), so offsets of another epoch mean nothing here.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Epoch(pub Arc<str>);

impl Epoch {
    /// The epoch's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Epoch {
    fn from(s: &str) -> Epoch {
        Epoch(Arc::from(s))
    }
}

impl From<String> for Epoch {
    fn from(s: String) -> Epoch {
        Epoch(Arc::from(s))
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A node (hub) of a deployment, as its store knows it: presence entries are held per node,
/// so that a node that stops refreshing them (it died) drops out of presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);
