//! Protocol errors, each mapped to the close code the connection fails with.

use crate::close::CloseCode;

/// A rule of RFC 6455 / RFC 7692 (or a configured limit) broken by the peer.
///
/// Every variant is the peer's fault; [`ProtocolError::close_code`] is the one place that maps
/// them to close codes (SPEC §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// RSV2/RSV3 set, or RSV1 without permessage-deflate (or on a control/continuation frame).
    #[error("reserved bits set")]
    ReservedBits,
    /// Opcode 0x3–0x7 or 0xB–0xF.
    #[error("reserved opcode {0:#x}")]
    UnknownOpcode(u8),
    /// A client frame without a mask (§5.1).
    #[error("unmasked frame from client")]
    UnmaskedFrame,
    /// A server frame with a mask (§5.1).
    #[error("masked frame from server")]
    MaskedFrame,
    /// A control frame with FIN clear.
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A control frame payload over 125 bytes.
    #[error("control frame longer than 125 bytes")]
    ControlFrameTooLong,
    /// An extended length that fits a shorter form.
    #[error("payload length not in its minimal form")]
    NonMinimalLength,
    /// The most significant bit of a 64-bit length is set.
    #[error("64-bit payload length with the top bit set")]
    LengthTopBitSet,
    /// A continuation frame with no message in progress.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new text/binary frame while a fragmented message is in progress.
    #[error("new data frame while a fragmented message is in progress")]
    ExpectedContinuation,
    /// A text message (or close reason) that is not valid UTF-8.
    #[error("invalid UTF-8 in text payload")]
    InvalidUtf8,
    /// A close frame with a one-byte payload.
    #[error("close frame payload of one byte")]
    TruncatedClosePayload,
    /// A close code that must not be sent on the wire.
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A message (after inflation) above the configured limit.
    #[error("message larger than the {limit}-byte limit")]
    MessageTooBig {
        /// The configured limit.
        limit: usize,
    },
    /// The compressed data of a message is corrupt.
    #[error("invalid permessage-deflate data")]
    InvalidCompressedData,
}

impl ProtocolError {
    /// The close code this error closes the connection with.
    pub fn close_code(self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 => CloseCode::InvalidPayload,
            ProtocolError::MessageTooBig { .. } => CloseCode::TooBig,
            ProtocolError::InvalidCompressedData => CloseCode::InvalidPayload,
            _ => CloseCode::Protocol,
        }
    }
}
