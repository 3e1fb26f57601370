//! Server settings of an Engine.IO endpoint.

use std::time::Duration;

/// Settings shared by every session of an endpoint. The first four are announced to the client
/// in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How long after the handshake (and after each pong) the server sends a ping. Default
    /// 25 s (`pingInterval`, the reference server's default). Bounds how long a dead peer
    /// holds a session together with `ping_timeout`.
    pub ping_interval: Duration,
    /// How long the client has to answer a ping before the session closes with
    /// [`CloseReason::PingTimeout`](crate::CloseReason::PingTimeout). Default 20 s
    /// (`pingTimeout`).
    pub ping_timeout: Duration,
    /// Largest POST body and largest WebSocket message, in bytes (`maxPayload`, the reference
    /// server's `maxHttpBufferSize`). Larger input closes the session (a POST is answered
    /// `413`). Bounds memory per request. Default 1 000 000.
    pub max_payload: usize,
    /// Whether a polling session may upgrade to WebSocket (`upgrades: ["websocket"]` in the
    /// handshake). Default true.
    pub allow_upgrades: bool,
    /// How long a WebSocket opened for an upgrade has to complete it (`2probe` … `5`) before it
    /// is closed; the session stays on polling. Default 10 s (the reference's
    /// `upgradeTimeout`). Bounds half-finished upgrades.
    pub upgrade_timeout: Duration,
    /// After a server-side [`Session::close`](crate::Session::close) on polling with no GET
    /// waiting, how long the session waits for the GET that carries the close. Default 30 s
    /// (the reference's polling `closeTimeout`).
    pub close_timeout: Duration,
    /// Most bytes of packets queued for the next GET (as encoded in the payload). A send
    /// beyond it fails and hands the message back. Bounds memory held for a client that stops
    /// polling. Default 4 MiB.
    pub max_queued_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            max_payload: 1_000_000,
            allow_upgrades: true,
            upgrade_timeout: Duration::from_millis(10_000),
            close_timeout: Duration::from_millis(30_000),
            max_queued_bytes: 4 * 1024 * 1024,
        }
    }
}
