//! How a [`crate::Client`] connects and behaves.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::pace::SendRate;

/// Where the token goes (SPEC §4; docs/protocol.md, "Authentication").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenVia {
    /// `Authorization: Bearer <token>` on the upgrade request.
    Header,
    /// `?token=<token>` on the upgrade URL (the server redacts it from its logs).
    Query,
    /// The first message, `{"type":"auth","token":…}`, answered by `auth_success`.
    FirstMessage,
    /// `?ticket=<ticket>`: the provider returns a one-time ticket (`POST /api/ticket`), asked
    /// for again on every connect since a ticket is valid once.
    Ticket,
}

type TokenFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// The application's source of tokens: asked at the first connect, again after a close with
/// 4001 (token refused or expired), before a JWT's `exp` (the fresh one is sent as
/// `refresh`), and for every connect when [`TokenVia::Ticket`].
#[derive(Clone)]
pub struct TokenProvider(Arc<dyn Fn() -> TokenFuture + Send + Sync>);

impl TokenProvider {
    /// A provider from an async function.
    pub fn new<F, Fut>(f: F) -> TokenProvider
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        TokenProvider(Arc::new(move || Box::pin(f())))
    }

    /// Always the same token (no refresh possible: a 4001 then ends in [`crate::State::Failed`]
    /// after a few attempts).
    pub fn fixed(token: impl Into<String>) -> TokenProvider {
        let token: String = token.into();
        TokenProvider::new(move || {
            let token = token.clone();
            async move { Ok(token) }
        })
    }

    pub(crate) fn fetch(&self) -> TokenFuture {
        (self.0)()
    }
}

impl fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenProvider")
    }
}

/// The wire format (docs/protocol.md, "Wire formats").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// JSON text frames.
    #[default]
    Json,
    /// MessagePack binary frames (subprotocol `switchboard.msgpack`).
    MsgPack,
}

/// Everything a client needs; [`Config::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// `ws://host:port/ws` or `wss://…`.
    pub url: String,
    /// Credentials: where they go and where they come from. `None`: anonymous.
    pub auth: Option<(TokenVia, TokenProvider)>,
    /// JSON (default) or MessagePack.
    pub format: Format,
    /// Reconnection delays (1 s base, 30 s cap, full jitter).
    pub backoff: Backoff,
    /// The least wait after a close with 4002 (rate limit exceeded): 10 s, the server's
    /// default rate window.
    pub rate_limit_pause: Duration,
    /// Give up ([`crate::State::Failed`]) after this many failed attempts in a row; `None`:
    /// never.
    pub max_attempts: Option<u32>,
    /// Requests (publishes, joins, history and presence reads) waiting for an answer or for
    /// a connection, at most. Beyond it a request fails at once with
    /// [`crate::Error::QueueFull`] and nothing is sent: the application decides what to drop
    /// (the queue never drops what it already took). Default 1000.
    pub offline_queue: usize,
    /// How long a request may wait for its answer, offline time included (default 30 s).
    /// A request that times out while still queued is never sent.
    pub request_timeout: Duration,
    /// A WebSocket Ping after this long without hearing from the server (default 15 s).
    pub ping_interval: Duration,
    /// The connection is dead (and replaced) when nothing arrives this long after that Ping
    /// (default 10 s): found without waiting for TCP's own timeouts.
    pub pong_timeout: Duration,
    /// The TCP + TLS + upgrade + `welcome` of one attempt, at most (default 10 s).
    pub connect_timeout: Duration,
    /// Pacing of what the client sends (default 20 at once, 9.5/s: just under the server's
    /// default rate limit, so a reconnect that rejoins many rooms and resends a full queue is
    /// not cut off with 4002). `None`: no pacing (for servers started with
    /// `--rate-limit off`, or a higher limit).
    pub send_rate: Option<SendRate>,
    /// Events that may wait unread before the client stops reading its socket (default
    /// 4096; see [`crate::Events`]).
    pub event_buffer: usize,
    /// Offer permessage-deflate (default on).
    pub deflate: bool,
    /// Extra trusted roots for `wss://` (PEM), besides the OS trust store.
    pub extra_roots: Vec<Vec<u8>>,
    /// The display name sent with every `join` (`user` in docs/protocol.md).
    pub name: Option<String>,
}

impl Config {
    /// The defaults for `url`.
    pub fn new(url: impl Into<String>) -> Config {
        Config {
            url: url.into(),
            auth: None,
            format: Format::Json,
            backoff: Backoff::default(),
            rate_limit_pause: Duration::from_secs(10),
            max_attempts: None,
            offline_queue: 1000,
            request_timeout: Duration::from_secs(30),
            ping_interval: Duration::from_secs(15),
            pong_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            send_rate: Some(SendRate::default()),
            event_buffer: 4096,
            deflate: true,
            extra_roots: Vec::new(),
            name: None,
        }
    }

    /// Authenticate with tokens from `provider`, sent `via`.
    pub fn token(mut self, via: TokenVia, provider: TokenProvider) -> Config {
        self.auth = Some((via, provider));
        self
    }

    /// Use `format` on the wire.
    pub fn format(mut self, format: Format) -> Config {
        self.format = format;
        self
    }
}
