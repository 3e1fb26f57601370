//! Why the server ends a session, and how each transport says it.

/// Why the session core asks the transport to end the connection. The WebSocket close code
/// and reason text live here, in one place (SPEC §10); other transports end their stream or
/// send their own disconnect packet with the same text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Still flooding after the rate-limit warning: 4002.
    RateLimited,
    /// The outbound budget overflowed in a room with the `close` policy: 4003.
    BufferOverflow,
    /// A backend disconnected the user (`POST /api/disconnect`): 1008.
    DisconnectedByServer,
}

impl CloseReason {
    /// The WebSocket close code.
    pub fn code(self) -> u16 {
        match self {
            CloseReason::RateLimited => 4002,
            CloseReason::BufferOverflow => 4003,
            CloseReason::DisconnectedByServer => 1008,
        }
    }

    /// The close reason text.
    pub fn text(self) -> &'static str {
        match self {
            CloseReason::RateLimited => "Rate limit exceeded",
            CloseReason::BufferOverflow => "Buffer overflow",
            CloseReason::DisconnectedByServer => "Disconnected by the server",
        }
    }
}
