//! Server settings. Every field documents its default, unit and the threat it bounds.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use switchboard_hub::{HubConfig, RoomPattern};
use switchboard_ws_proto::DeflateConfig;

/// Settings of one server instance.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Serve `GET /echo`, a WebSocket endpoint that echoes every message (conformance runs and
    /// benchmarks). Default off: an open echo endpoint is a free relay.
    pub echo: bool,
    /// Serve the browser pages: `/` (a landing page) and `/client.js` (the browser client).
    /// Default on; off for an API-only production server.
    pub pages: bool,
    /// Largest message accepted, after decompression (bytes). Default 1 MiB. Breach: close 1009.
    pub max_message_size: usize,
    /// permessage-deflate policy; `None` disables compression. Default on, see
    /// [`DeflateConfig`].
    pub deflate: Option<DeflateConfig>,
    /// Send a protocol Ping after this long without hearing from the client (WebSocket, and
    /// HTTP/2 connections over TLS). Default 25 s.
    pub heartbeat_interval: Duration,
    /// Drop the connection when nothing (Pong or any frame) arrives this long after a Ping.
    /// Default 20 s. Bounds the life of dead and half-open connections.
    pub heartbeat_timeout: Duration,
    /// Time allowed for the TLS handshake and the HTTP request head to arrive. Default 10 s
    /// (slowloris). HTTP/2 connections get GOAWAY after this long without an open stream.
    pub handshake_timeout: Duration,
    /// After a Close frame is sent: how long to wait for the peer's Close and for it to
    /// close the TCP connection. Default 5 s.
    pub close_timeout: Duration,
    /// On SIGTERM/SIGINT, how long connections get to close cleanly. Default 10 s.
    pub shutdown_timeout: Duration,
    /// Stop reading from a connection while this many bytes of its output are unsent
    /// (a client that sends but never reads can not grow our memory). Default 256 KiB.
    pub max_pending_output: usize,
    /// Kernel send buffer (SO_SNDBUF) of each WebSocket (`None`: the kernel's autotuning).
    /// Default 64 KiB. Autotuning grows the buffer of a client that does not read to
    /// megabytes of kernel memory that no budget of ours counts, and copying into those
    /// buffers at full speed steals time from healthy clients (measured with 1 000 stalled
    /// readers: ~1.5 GB of TCP buffers, healthy clients lagging). Bounded here, a stalled
    /// client's backlog stays in its outbox, where the overflow policy applies.
    pub socket_send_buffer: Option<usize>,
    /// Park a WebSocket connection after it has been idle (nothing read or written) this
    /// long: it gives up its task and its registration in tokio's reactor, keeping only its
    /// state, and resumes in a new task at its next message, delivery or heartbeat (see
    /// `ws::park`). `None`: never park. Default 5 s. Idle memory per connection: about
    /// 3.3 KiB running, a fraction of that parked (docs/perf-notes.md).
    pub park_idle_after: Option<Duration>,
    /// Most WebSocket connections at once (`None`: unlimited, the default). Breach: 503.
    pub max_connections: Option<usize>,
    /// Most WebSocket connections from one IP address. Default 1000. Breach: 429.
    pub max_connections_per_ip: usize,
    /// Most connections of one authenticated user. Default 10. Breach: 429. Anonymous users
    /// get a fresh id per connection, so this binds once authentication names the user.
    pub max_connections_per_user: usize,
    /// Time a connection that must authenticate (first-message `auth`) gets to do so.
    /// Default 5 s. Breach: close 4000 "Authentication timeout".
    pub auth_timeout: Duration,
    /// How long a long poll (`GET /poll`) is held when there is nothing to send: it is
    /// answered at the first message, or empty after this. Default 25 s (below the 30 s
    /// after which common proxies give up on an idle response).
    pub poll_timeout: Duration,
    /// A poller's session (its rooms, its queued messages, its presence) ends when it has not
    /// polled for `poll_timeout` + this. Default 10 s: time for a client to send its next
    /// poll over a slow network, short enough that presence shows who left soon after.
    pub poll_grace: Duration,
    /// Serve `https://` and `wss://` with this certificate and key (`None`: plain TCP).
    pub tls: Option<TlsConfig>,
    /// The session core's settings: the per-connection message rate limit (default
    /// 100 / 10 s, burst 20; breach: `error "Rate limit exceeded"`, then close 4002 if the
    /// flood goes on) and the byte bound of one `history` reply (default 512 KiB).
    pub session: switchboard_session::SessionConfig,
    /// API keys accepted by `/api/*` (`Authorization: Bearer <key>`). Empty: the API is closed.
    pub api_keys: Vec<String>,
    /// Rooms where a client without credentials may publish over `POST /api/publish` (a
    /// browser beside its SSE stream or long poll), as user `anonymous`, rate-limited per
    /// address like a connection (`session.rate_limit`). Default none: the API then needs
    /// the API key (401). Channel permissions for authenticated users come with auth.
    pub anonymous_publish: Vec<RoomPattern>,
    /// Origins whose pages may use `/events`, `/poll` and `/api/publish` across sites
    /// (CORS), e.g. `https://app.example.com`; `*` allows every origin (without
    /// credentials: no cookies). Default none: same-origin pages only.
    pub cors_origins: Vec<String>,
    /// Authentication and channel permissions (SPEC §4), built from the `[auth]` settings.
    /// `None` (the default): no credentials are read, everyone is anonymous and may join
    /// any room, as in development.
    pub auth: Option<std::sync::Arc<switchboard_auth::Authenticator>>,
    /// Rooms, history, presence and outbox settings.
    pub hub: HubConfig,
    /// Socket.IO (SPEC §1.4).
    pub socketio: SocketIoConfig,
    /// Where rooms' histories, offsets, presence and fan-out live when several servers
    /// share them (scale-out: `switchboard_broker_redis`). Default `None`: this process's
    /// memory ([`switchboard_hub::MemoryStore`], [`switchboard_hub::MemoryBroker`]).
    pub backends: Option<Backends>,
}

/// A store and a broker shared with other servers ([`ServerConfig::backends`]).
#[derive(Clone)]
pub struct Backends {
    /// Histories, offsets, dedup, presence.
    pub store: std::sync::Arc<dyn switchboard_hub::Store>,
    /// Carries messages to every node with members in their room.
    pub broker: std::sync::Arc<dyn switchboard_hub::Broker>,
    /// Connections per address and per user counted over every node (else per node).
    pub limits: Option<std::sync::Arc<dyn crate::state::SharedLimits>>,
    /// Socket.IO recovery records shared by every node (else this node's only).
    pub records: Option<std::sync::Arc<dyn crate::socketio::SharedRecords>>,
    /// Carries polling requests to the node that holds their session (else a request for
    /// a session held elsewhere is answered as for an unknown one).
    pub forwarder: Option<std::sync::Arc<dyn crate::forward::Forwarder>>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("store", &self.store)
            .field("broker", &self.broker)
            .field("limits", &self.limits)
            .field("records", &self.records)
            .field("forwarder", &self.forwarder)
            .finish()
    }
}

/// Socket.IO settings (Engine.IO v4, Socket.IO v5; SPEC §1.4). The Engine.IO ones are
/// announced to clients in the handshake.
#[derive(Debug, Clone)]
pub struct SocketIoConfig {
    /// Serve Socket.IO at [`SocketIoConfig::path`]. Default on.
    pub enabled: bool,
    /// The Socket.IO path (`path` of the client options). Default `/socket.io/`.
    pub path: String,
    /// `pingInterval`: the server pings this long after the handshake and after each pong.
    /// Default 25 s.
    pub ping_interval: Duration,
    /// `pingTimeout`: a client that does not answer a ping within this is disconnected
    /// ("ping timeout"). Default 20 s. Bounds the life of dead and half-open sessions.
    pub ping_timeout: Duration,
    /// `maxPayload` (`maxHttpBufferSize`): the largest WebSocket message or polling POST
    /// body, in bytes; larger input closes the session. Default 1 000 000.
    pub max_payload: usize,
    /// `connectTimeout`: a client that has not connected to a namespace this long after the
    /// handshake is disconnected. Default 45 s.
    pub connect_timeout: Duration,
    /// The namespaces clients may connect to; others are refused (`Invalid namespace`).
    /// Default `/` and `/chat`.
    pub namespaces: Vec<String>,
    /// Namespaces with connection state recovery (Socket.IO >= 4.6): their `CONNECT` reply
    /// carries a `pid`, broadcasts carry an offset, and a client that reconnects within
    /// [`SocketIoConfig::recovery_window`] gets its id, rooms and missed packets back.
    /// Default: every namespace in `namespaces`.
    pub recovery: Vec<String>,
    /// How long a disconnected socket's state is kept for recovery. Default 2 min (the
    /// reference's `maxDisconnectionDuration`).
    pub recovery_window: Duration,
    /// The application's handlers (the library surface, [`crate::socketio`]). Default none:
    /// the built-in room semantics only. Their namespaces are served too.
    pub handlers: crate::socketio::Handlers,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        SocketIoConfig {
            enabled: true,
            path: "/socket.io/".to_owned(),
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            max_payload: 1_000_000,
            connect_timeout: Duration::from_millis(45_000),
            namespaces: vec!["/".to_owned(), "/chat".to_owned()],
            recovery: vec!["/".to_owned(), "/chat".to_owned()],
            recovery_window: Duration::from_secs(120),
            handlers: crate::socketio::Handlers::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            echo: false,
            pages: true,
            max_message_size: 1024 * 1024,
            deflate: Some(DeflateConfig::default()),
            heartbeat_interval: Duration::from_secs(25),
            heartbeat_timeout: Duration::from_secs(20),
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
            max_pending_output: 256 * 1024,
            socket_send_buffer: Some(64 * 1024),
            park_idle_after: Some(Duration::from_secs(5)),
            max_connections: None,
            max_connections_per_ip: 1000,
            max_connections_per_user: 10,
            auth_timeout: Duration::from_secs(5),
            poll_timeout: Duration::from_secs(25),
            poll_grace: Duration::from_secs(10),
            tls: None,
            session: switchboard_session::SessionConfig::default(),
            api_keys: Vec::new(),
            anonymous_publish: Vec::new(),
            cors_origins: Vec::new(),
            auth: None,
            hub: HubConfig::default(),
            socketio: SocketIoConfig::default(),
            backends: None,
        }
    }
}

/// TLS certificate and key (PEM files), loaded at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Certificate chain, PEM, leaf first.
    pub cert_path: PathBuf,
    /// Private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
}
