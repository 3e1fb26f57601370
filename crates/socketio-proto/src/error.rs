//! Why a packet was refused.

/// A Socket.IO packet (or a sequence of them) that breaks the protocol. Every variant is the
/// peer's fault, and the connection must be closed (as the reference server does: an invalid
/// packet closes the Engine.IO connection).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// An empty message (the reference parser reads it as `CONNECT` to `/`; we refuse it).
    #[error("empty packet")]
    Empty,
    /// The first character is not a packet type `0`–`6`.
    #[error("unknown packet type {0:?}")]
    UnknownType(char),
    /// `BINARY_EVENT`/`BINARY_ACK` without a valid `<n>-` attachment count (`n` ≥ 1).
    #[error("Illegal attachments")]
    IllegalAttachments,
    /// More attachments announced than the configured maximum.
    #[error("too many attachments ({count} > {limit})")]
    TooManyAttachments {
        /// Announced.
        count: usize,
        /// Configured maximum.
        limit: usize,
    },
    /// The attachments of one packet add up to more bytes than the configured maximum.
    #[error("attachments larger than the {limit}-byte limit")]
    AttachmentsTooLarge {
        /// Configured maximum.
        limit: usize,
    },
    /// A placeholder `{"_placeholder":true,"num":…}` whose `num` is not an attachment index.
    #[error("illegal attachment placeholder")]
    IllegalPlaceholder,
    /// An ack id too large for 64 bits.
    #[error("ack id out of range")]
    AckIdOutOfRange,
    /// An `ACK` without an ack id (the reference server ignores it; it can only be a bug).
    #[error("ACK without an ack id")]
    MissingAckId,
    /// The data is not JSON.
    #[error("invalid payload: not JSON")]
    InvalidJson,
    /// `CONNECT` data that is not an object.
    #[error("invalid payload: CONNECT data must be an object")]
    InvalidConnectPayload,
    /// `DISCONNECT` with data.
    #[error("invalid payload: DISCONNECT carries no data")]
    DisconnectWithPayload,
    /// `EVENT` data that is not a non-empty array.
    #[error("invalid payload: EVENT data must be a non-empty array")]
    InvalidEventPayload,
    /// An event name that is neither a string nor a number.
    #[error("invalid payload: event name must be a string or a number")]
    InvalidEventName,
    /// A reserved event name (`connect`, `disconnect`, …).
    #[error("invalid payload: reserved event name {0:?}")]
    ReservedEventName(String),
    /// `ACK` data that is not an array.
    #[error("invalid payload: ACK data must be an array")]
    InvalidAckPayload,
    /// `CONNECT_ERROR` data that is missing or neither a string nor an object.
    #[error("invalid payload: CONNECT_ERROR data must be a string or an object")]
    InvalidConnectErrorPayload,
    /// A text packet while the attachments of a binary packet are still expected.
    #[error("got plaintext data when reconstructing a packet")]
    UnexpectedText,
    /// A binary message when no binary packet is waiting for attachments.
    #[error("got binary data when not reconstructing a packet")]
    UnexpectedBinary,
    /// Not MessagePack, or MessagePack without a JSON form (extension types, non-string keys,
    /// too deep).
    #[error("invalid MessagePack")]
    InvalidMessagePack,
    /// A MessagePack packet whose `nsp` is not a string naming a namespace.
    #[error("invalid namespace")]
    InvalidNamespace,
    /// A MessagePack packet whose `id` is not a non-negative integer.
    #[error("invalid packet id")]
    InvalidAckId,
}
