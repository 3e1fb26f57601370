//! What the decoder hands to the application, and what it sends.

use bytes::Bytes;

use crate::close::CloseFrame;
use crate::opcode::OpCode;

/// The two data message kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// UTF-8 text.
    Text,
    /// Arbitrary bytes.
    Binary,
}

impl From<MessageKind> for OpCode {
    fn from(kind: MessageKind) -> OpCode {
        match kind {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        }
    }
}

/// One thing received from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete text message. The bytes are valid UTF-8 (checked by the decoder).
    Text(Bytes),
    /// A complete binary message.
    Binary(Bytes),
    /// A Ping; the Pong reply is already queued.
    Ping(Bytes),
    /// A Pong.
    Pong(Bytes),
    /// The peer started or completed the close handshake. If it started it, our echo is queued.
    Close(Option<CloseFrame>),
}
