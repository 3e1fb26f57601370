//! Room (channel) names.

use std::fmt;
use std::sync::Arc;

/// A room name: 1 to 255 bytes of UTF-8, no control characters. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(Arc<str>);

/// Why a room name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RoomNameError {
    /// Empty string.
    #[error("room name is empty")]
    Empty,
    /// More than 255 bytes.
    #[error("room name longer than 255 bytes")]
    TooLong,
    /// Contains a control character.
    #[error("room name contains a control character")]
    ControlCharacter,
}

impl RoomName {
    /// Validate a name.
    pub fn new(name: &str) -> Result<RoomName, RoomNameError> {
        if name.is_empty() {
            Err(RoomNameError::Empty)
        } else if name.len() > 255 {
            Err(RoomNameError::TooLong)
        } else if name.chars().any(char::is_control) {
            Err(RoomNameError::ControlCharacter)
        } else {
            Ok(RoomName(Arc::from(name)))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is one of the server's own rooms ([`SYSTEM_PREFIX`]): clients may read
    /// them; only the server and backends (with the API key) publish there.
    pub fn is_system(&self) -> bool {
        self.0.starts_with(SYSTEM_PREFIX)
    }
}

/// The prefix of the server's own rooms (`switchboard:stats`, the dashboard's feed).
pub const SYSTEM_PREFIX: &str = "switchboard:";

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for RoomName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}
