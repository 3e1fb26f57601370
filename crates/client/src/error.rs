//! Errors.

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The server refused it: its `error` reply (`code` as in docs/protocol.md, e.g.
    /// `forbidden`, `not_in_room`, `unavailable`).
    #[error("{code}: {message}")]
    Server {
        /// The error code.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The offline queue is full (see [`crate::Config::offline_queue`]): the request was not
    /// taken. Nothing was sent.
    #[error("the offline queue is full ({0} requests)")]
    QueueFull(usize),
    /// The request is invalid before it is sent (a bad room name, data that does not encode,
    /// a message over the size limit).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The client is closed (by [`crate::Client::close`], a close code that ends the session,
    /// or a failure): pending requests end with this.
    #[error("the client is closed: {0}")]
    Closed(String),
    /// No answer within the request timeout (the request may still take effect; a publish
    /// retried with the same id is deduplicated by the server).
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
}

/// Why one connection attempt failed (reported in [`crate::State::Reconnecting`]).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("{0}")]
    Io(std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the server answered the upgrade with HTTP {0}")]
    Status(u16),
    #[error("bad handshake: {0}")]
    Handshake(String),
}
