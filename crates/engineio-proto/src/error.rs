//! Decoding errors: a packet or payload the peer sent does not follow Engine.IO v4.

/// A packet or polling payload that breaks the Engine.IO v4 wire format. Always the peer's
/// fault; the session closes with [`CloseReason::ParseError`](crate::CloseReason::ParseError)
/// (and a POST is answered `400`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A packet with no type character (an empty frame, or two separators in a row).
    #[error("empty packet")]
    Empty,
    /// A first character that is neither a packet type `0`–`6` nor the binary prefix `b`.
    #[error("unknown packet type {0:#04x}")]
    UnknownType(u8),
    /// The data after the `b` prefix is not base64 (standard alphabet, padding optional).
    #[error("invalid base64 in a binary packet")]
    InvalidBase64,
    /// A text packet or polling payload that is not UTF-8.
    #[error("packet is not valid UTF-8")]
    InvalidUtf8,
    /// A polling payload (POST body) or WebSocket message above `maxPayload`.
    #[error("payload larger than the {limit}-byte maxPayload")]
    TooLarge {
        /// The configured `maxPayload`.
        limit: usize,
    },
}
