//! Why the server ends a session, and how each transport says it.

use switchboard_auth::AuthError;

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
    /// No `auth {token}` within `auth_timeout`: 4000 "Authentication timeout". The session
    /// core never asks for it (it has no timers); it is here so every transport says it alike.
    AuthTimeout,
    /// The credential was refused: the [`AuthError`]'s close code and reason (4001 "Invalid
    /// token", 4001 "Token expired", 4001 "Authentication required", or 1013 "Auth backend
    /// unavailable"). See [`CloseReason::auth_failed`].
    AuthFailed {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: &'static str,
    },
    /// The connection's identity expired without a `refresh`: 4001 "Token expired".
    TokenExpired,
}

impl CloseReason {
    /// How to end a connection whose credential was refused with `error`.
    pub fn auth_failed(error: &AuthError) -> CloseReason {
        CloseReason::AuthFailed {
            code: error.close_code(),
            reason: error.close_reason(),
        }
    }

    /// The WebSocket close code.
    pub fn code(self) -> u16 {
        match self {
            CloseReason::RateLimited => 4002,
            CloseReason::BufferOverflow => 4003,
            CloseReason::DisconnectedByServer => 1008,
            CloseReason::AuthTimeout => 4000,
            CloseReason::AuthFailed { code, .. } => code,
            CloseReason::TokenExpired => switchboard_auth::CLOSE_AUTH_FAILED,
        }
    }

    /// The close reason text.
    pub fn text(self) -> &'static str {
        match self {
            CloseReason::RateLimited => "Rate limit exceeded",
            CloseReason::BufferOverflow => "Buffer overflow",
            CloseReason::DisconnectedByServer => "Disconnected by the server",
            CloseReason::AuthTimeout => "Authentication timeout",
            CloseReason::AuthFailed { reason, .. } => reason,
            CloseReason::TokenExpired => "Token expired",
        }
    }
}
