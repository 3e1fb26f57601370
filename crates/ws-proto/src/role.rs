//! Which end of the connection we are: it decides the masking rules (RFC 6455 §5.1).

/// The role of the local endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We accepted the connection: incoming frames must be masked, outgoing ones must not.
    Server,
    /// We opened the connection: outgoing frames are masked, incoming ones must not be.
    Client,
}

impl Role {
    /// Whether frames we *receive* must carry a mask.
    pub fn expects_masked_input(self) -> bool {
        matches!(self, Role::Server)
    }
}
