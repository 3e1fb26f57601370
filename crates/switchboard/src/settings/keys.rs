//! The list of settings keys: one row per key gives its flag, its environment variable (derived
//! from the path), whether it is a secret, and its help text. Flags, the rendering of the
//! effective configuration and the documentation test are driven by this table.

/// One settings key.
#[derive(Debug)]
pub(crate) struct Key {
    /// Dotted path in the file (`listen`, `tls.cert`, `history.rooms`).
    pub(crate) path: &'static str,
    /// Long flag name, without `--`.
    pub(crate) flag: &'static str,
    /// Placeholder in `--help`.
    pub(crate) value_name: &'static str,
    /// How the flag takes values.
    pub(crate) arity: Arity,
    /// What `switchboard config` hides of the value.
    pub(crate) redact: Redact,
    /// `--help` text (default included).
    pub(crate) help: &'static str,
}

/// What `switchboard config` prints of a key's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Redact {
    /// The value as it is.
    Nothing,
    /// `"[redacted]"` (each item of a list): a secret.
    Whole,
    /// A URL with its user info and query replaced by `[redacted]`: they may hold
    /// credentials, the rest says where requests go.
    UrlCredentials,
}

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arity {
    /// `--flag VALUE`.
    One,
    /// `--flag VALUE`, repeatable; the values form a list.
    Many,
    /// `--flag` alone means `true`; `--flag=false` is accepted too.
    Switch,
}

impl Key {
    /// `SWITCHBOARD_` + the path in upper case, `.` (a section) spelled `__`.
    pub(crate) fn env(&self) -> String {
        format!(
            "SWITCHBOARD_{}",
            self.path.replace('.', "__").to_uppercase()
        )
    }

    /// The section of a nested key (`tls` for `tls.cert`, `auth.jwt` for `auth.jwt.leeway`).
    pub(crate) fn section(&self) -> Option<&'static str> {
        self.path.rsplit_once('.').map(|(section, _)| section)
    }

    /// The key's name inside its section.
    pub(crate) fn name(&self) -> &'static str {
        self.path
            .rsplit_once('.')
            .map_or(self.path, |(_, name)| name)
    }
}

const fn key(
    path: &'static str,
    flag: &'static str,
    value_name: &'static str,
    help: &'static str,
) -> Key {
    Key {
        path,
        flag,
        value_name,
        arity: Arity::One,
        redact: Redact::Nothing,
        help,
    }
}

/// Every key, top-level keys first, then the sections (the order of `switchboard config`).
pub(crate) const KEYS: &[Key] = &[
    key(
        "listen",
        "listen",
        "ADDR",
        "Address to listen on [default: 127.0.0.1:8080]",
    ),
    Key {
        arity: Arity::Switch,
        ..key(
            "echo",
            "echo",
            "BOOL",
            "Enable the /echo WebSocket endpoint (conformance runs and benchmarks only) \
             [default: false]",
        )
    },
    Key {
        arity: Arity::Switch,
        ..key(
            "pages",
            "pages",
            "BOOL",
            "Serve the browser pages (/, /chat, /dashboard, /admin, /client.js) and the \
             dashboard's feed; off for an API-only production server [default: true]",
        )
    },
    key(
        "threads",
        "threads",
        "N|auto",
        "Runtime worker threads; 1 runs a single-threaded runtime [default: auto, one per core]",
    ),
    key(
        "log_level",
        "log-level",
        "FILTER",
        "Log filter: a level or tracing directives like \"info,switchboard_server=debug\" \
         (RUST_LOG is read when SWITCHBOARD_LOG_LEVEL is unset) [default: info]",
    ),
    key(
        "log_format",
        "log-format",
        "text|json",
        "Log output format [default: text]",
    ),
    key(
        "max_message_size",
        "max-message-size",
        "SIZE",
        "Largest accepted message, after decompression (close 1009 above it) [default: 1MiB]",
    ),
    Key {
        arity: Arity::Switch,
        ..key(
            "deflate",
            "deflate",
            "BOOL",
            "Offer permessage-deflate (--no-deflate: off) [default: true]",
        )
    },
    key(
        "heartbeat_interval",
        "heartbeat-interval",
        "DURATION",
        "Ping a connection after this long without hearing from it [default: 25s]",
    ),
    key(
        "heartbeat_timeout",
        "heartbeat-timeout",
        "DURATION",
        "Drop a connection silent this long after a Ping [default: 20s]",
    ),
    key(
        "handshake_timeout",
        "handshake-timeout",
        "DURATION",
        "Time allowed for the HTTP request head (slowloris) [default: 10s]",
    ),
    key(
        "close_timeout",
        "close-timeout",
        "DURATION",
        "After sending Close, wait this long for the peer's Close [default: 5s]",
    ),
    key(
        "shutdown_timeout",
        "shutdown-timeout",
        "DURATION",
        "On SIGTERM/SIGINT, time connections get to close cleanly [default: 10s]",
    ),
    key(
        "poll_timeout",
        "poll-timeout",
        "DURATION",
        "Hold a long poll (GET /poll) this long when there is nothing to send [default: 25s]",
    ),
    key(
        "poll_grace",
        "poll-grace",
        "DURATION",
        "End a poller's session when it has not polled for poll_timeout + this [default: 10s]",
    ),
    key(
        "auth_timeout",
        "auth-timeout",
        "DURATION",
        "Time a connection gets to authenticate (close 4000) [default: 5s]",
    ),
    key(
        "max_pending_output",
        "max-pending-output",
        "SIZE",
        "Stop reading from a connection while this much of its output is unsent \
         [default: 256KiB]",
    ),
    key(
        "socket_send_buffer",
        "socket-send-buffer",
        "SIZE",
        "Kernel send buffer of each WebSocket (SO_SNDBUF); 0 leaves the kernel's autotuning \
         [default: 64KiB]",
    ),
    key(
        "park_idle_after",
        "park-idle-after",
        "DURATION",
        "Park a WebSocket idle this long: no task, a fraction of the memory; 0 never parks \
         [default: 5s]",
    ),
    key(
        "outbound_buffer",
        "outbound-buffer",
        "SIZE",
        "Outbound buffer per connection; beyond it the room's overflow policy applies \
         [default: 1MiB]",
    ),
    key(
        "max_connections",
        "max-connections",
        "N|unlimited",
        "Most WebSocket connections at once (503 above it) [default: unlimited]",
    ),
    key(
        "history_reply_size",
        "history-reply-size",
        "SIZE",
        "Most bytes of stored messages in one history reply; clients page through the rest \
         [default: 512KiB]",
    ),
    key(
        "max_connections_per_ip",
        "max-connections-per-ip",
        "N",
        "Most WebSocket connections from one IP address (429 above it) [default: 1000]",
    ),
    key(
        "max_connections_per_user",
        "max-connections-per-user",
        "N",
        "Most connections of one authenticated user (429 above it) [default: 10]",
    ),
    key(
        "rate_limit",
        "rate-limit",
        "M/S[/B]|off",
        "Per-connection message rate limit on /ws and per Socket.IO socket: MESSAGES/SECONDS[/BURST] or off \
         (error \"Rate limit exceeded\", then close 4002) [default: 100/10/20]",
    ),
    Key {
        arity: Arity::Many,
        redact: Redact::Whole,
        ..key(
            "api_keys",
            "api-key",
            "KEY",
            "API key for the HTTP API (Authorization: Bearer KEY); repeatable. \
             Also SWITCHBOARD_API_KEY (one key). Without one the API answers 401",
        )
    },
    Key {
        arity: Arity::Many,
        ..key(
            "anonymous_publish",
            "anonymous-publish",
            "PATTERN",
            "Rooms where clients without credentials may publish over POST /api/publish, \
             e.g. chat:* (repeatable; rate-limited per address) [default: none]",
        )
    },
    Key {
        arity: Arity::Many,
        ..key(
            "cors_origins",
            "cors-origin",
            "ORIGIN",
            "Origin allowed to use /events, /poll and /api/publish across sites, e.g. \
             https://app.example.com, or * for any (repeatable) [default: none]",
        )
    },
    key(
        "join_leave_max_members",
        "join-leave-max-members",
        "N",
        "Send user_joined/user_left only in rooms of at most this many members (0: never) \
         [default: 100]",
    ),
    key(
        "dedup_window",
        "dedup-window",
        "DURATION",
        "How long a client message id is remembered for deduplication [default: 5m]",
    ),
    key(
        "dedup_capacity",
        "dedup-capacity",
        "N",
        "Most message ids remembered for deduplication [default: 100000]",
    ),
    key(
        "tls.cert",
        "tls-cert",
        "FILE",
        "TLS certificate chain (PEM); set with --tls-key [default: none, plain TCP]",
    ),
    key(
        "tls.key",
        "tls-key",
        "FILE",
        "TLS private key (PEM); set with --tls-cert [default: none]",
    ),
    key(
        "history.max_messages",
        "history-max-messages",
        "N",
        "History kept per room, in messages, for rooms no --history rule matches \
         (0: none) [default: 100]",
    ),
    key(
        "history.max_age",
        "history-max-age",
        "DURATION",
        "History kept per room, in age, for rooms no --history rule matches [default: 10m]",
    ),
    Key {
        arity: Arity::Many,
        ..key(
            "history.rooms",
            "history",
            "PATTERN=COUNT[/AGE]",
            "History retention for rooms matching a pattern, e.g. chat:*=500/3600 \
             (repeatable; first match wins)",
        )
    },
    key(
        "overflow.default",
        "overflow-default",
        "drop|close",
        "What a full outbound buffer does for rooms no --overflow rule matches: drop \
         (count, tell the client it lagged) or close (4003) [default: drop]",
    ),
    Key {
        arity: Arity::Many,
        ..key(
            "overflow.rooms",
            "overflow",
            "PATTERN=drop|close",
            "Overflow policy for rooms matching a pattern, e.g. orders:*=close \
             (repeatable; first match wins)",
        )
    },
    // `[socketio]` (switchboard_server::SocketIoConfig; docs/configuration.md). Flags are the
    // paths with a `socketio-` prefix; `--no-socketio` is `--socketio=false`.
    Key {
        arity: Arity::Switch,
        ..key(
            "socketio.enabled",
            "socketio",
            "BOOL",
            "Serve Socket.IO (Engine.IO v4, Socket.IO v5) at --socketio-path \
             (--no-socketio: off) [default: true]",
        )
    },
    key(
        "socketio.path",
        "socketio-path",
        "PATH",
        "Socket.IO path (the client's path option); starts and ends with '/', clear of the \
         server's routes [default: /socket.io/]",
    ),
    key(
        "socketio.ping_interval",
        "socketio-ping-interval",
        "DURATION",
        "Engine.IO pingInterval: ping a Socket.IO client this long after the handshake and \
         each pong [default: 25s]",
    ),
    key(
        "socketio.ping_timeout",
        "socketio-ping-timeout",
        "DURATION",
        "Engine.IO pingTimeout: disconnect a client that does not answer a ping within this \
         [default: 20s]",
    ),
    key(
        "socketio.max_payload",
        "socketio-max-payload",
        "SIZE",
        "Engine.IO maxPayload: largest WebSocket message or polling POST body; larger input \
         closes the session [default: 1000000]",
    ),
    key(
        "socketio.connect_timeout",
        "socketio-connect-timeout",
        "DURATION",
        "Disconnect a client that has not connected to a namespace this long after the \
         handshake [default: 45s]",
    ),
    Key {
        arity: Arity::Many,
        ..key(
            "socketio.namespaces",
            "socketio-namespace",
            "NSP",
            "Namespace clients may connect to, e.g. /chat (repeatable; others are refused) \
             [default: / and /chat]",
        )
    },
    Key {
        arity: Arity::Many,
        ..key(
            "socketio.recovery",
            "socketio-recovery",
            "NSP",
            "Namespace with connection state recovery, one of the namespaces (repeatable) \
             [default: every namespace]",
        )
    },
    key(
        "socketio.recovery_window",
        "socketio-recovery-window",
        "DURATION",
        "How long a disconnected socket's id, rooms and missed packets are kept for \
         recovery [default: 2m]",
    ),
    // `[broker]` (issue 13, docs/scale-out.md): `--broker` sets `broker.url`; the URL may
    // hold a password.
    Key {
        redact: Redact::UrlCredentials,
        ..key(
            "broker.url",
            "broker",
            "URL",
            "Redis URL for scale-out (redis://[user:password@]host:port[/db], or a Redis \
             Cluster: redis+cluster://host:port[,host:port...]): rooms, history, presence and \
             fan-out shared by every node using it [default: none, one process]",
        )
    },
    key(
        "broker.timeout",
        "broker-timeout",
        "DURATION",
        "How long a Redis operation may take before the request is answered 'unavailable' \
         [default: 2s]",
    ),
    key(
        "broker.presence_ttl",
        "broker-presence-ttl",
        "DURATION",
        "A node that has not refreshed its heartbeat in Redis for this long is taken for dead: \
         its connections leave presence [default: 90s]",
    ),
    // `[auth]` (switchboard_auth::AuthConfig; docs/configuration.md). Flags are short
    // (`--jwt-secret` for `auth.jwt.secrets`), variables follow the paths
    // (`SWITCHBOARD_AUTH__JWT__SECRETS`).
    Key {
        arity: Arity::Switch,
        ..key(
            "auth.anonymous",
            "auth-anonymous",
            "BOOL|auto",
            "Accept connections and requests without a credential, as anonymous; auto: yes \
             until a JWT key or connect proxy is configured [default: auto]",
        )
    },
    key(
        "auth.cookie_name",
        "auth-cookie-name",
        "NAME",
        "Cookie holding a token or session id [default: session]",
    ),
    Key {
        arity: Arity::Many,
        ..key(
            "auth.allowed_origins",
            "allowed-origin",
            "PATTERN",
            "Origin allowed to open WebSocket, SSE and poll connections, e.g. \
             https://*.example.com (repeatable; same-origin always allowed; 403 for others) \
             [default: *]",
        )
    },
    Key {
        arity: Arity::Many,
        ..key(
            "auth.permissions",
            "auth-permission",
            "PATTERN=ALLOW[/ACTIONS]",
            "Channel permission rule, e.g. 'user:*=match:user:{sub}' or \
             'news:*=anyone/subscribe+history'; ALLOW: anyone, authenticated, nobody, channels, \
             match:TEMPLATE (repeatable; first match wins)",
        )
    },
    Key {
        arity: Arity::Switch,
        ..key(
            "auth.sources.header",
            "auth-from-header",
            "BOOL",
            "Read credentials from Authorization: Bearer [default: true]",
        )
    },
    Key {
        arity: Arity::Switch,
        ..key(
            "auth.sources.query",
            "auth-from-query",
            "BOOL",
            "Read credentials from ?token= (redacted from logs) [default: true]",
        )
    },
    Key {
        arity: Arity::Switch,
        ..key(
            "auth.sources.ticket",
            "auth-from-ticket",
            "BOOL",
            "Accept one-time ?ticket= from POST /api/ticket [default: true]",
        )
    },
    Key {
        arity: Arity::Switch,
        ..key(
            "auth.sources.cookie",
            "auth-from-cookie",
            "BOOL",
            "Read credentials from the cookie named by --auth-cookie-name [default: true]",
        )
    },
    Key {
        arity: Arity::Switch,
        ..key(
            "auth.sources.first_message",
            "auth-from-first-message",
            "BOOL",
            "Accept auth {token} as the first WebSocket message [default: true]",
        )
    },
    Key {
        arity: Arity::Many,
        redact: Redact::Whole,
        ..key(
            "auth.jwt.secrets",
            "jwt-secret",
            "SECRET",
            "HMAC secret for HS256/384/512 tokens (\"base64:...\" for binary); repeatable, \
             tried in order. Also SWITCHBOARD_JWT_SECRET (one secret) [default: none]",
        )
    },
    Key {
        arity: Arity::Many,
        ..key(
            "auth.jwt.public_key_files",
            "jwt-public-key",
            "FILE",
            "PEM public key (RSA, EC P-256/P-384, Ed25519) for RS/PS/ES/EdDSA tokens; \
             repeatable [default: none]",
        )
    },
    key(
        "auth.jwt.jwks_file",
        "jwks-file",
        "FILE",
        "JWKS document on disk, re-read when a token names an unknown kid [default: none]",
    ),
    Key {
        redact: Redact::UrlCredentials,
        ..key(
            "auth.jwt.jwks_url",
            "jwks-url",
            "URL",
            "JWKS URL (http or https), fetched on first use and cached [default: none]",
        )
    },
    key(
        "auth.jwt.jwks_refetch_interval",
        "jwks-refetch-interval",
        "DURATION",
        "Least time between two JWKS fetches caused by unknown kids [default: 30s]",
    ),
    key(
        "auth.jwt.jwks_max_age",
        "jwks-max-age",
        "DURATION",
        "Fetch the JWKS again before use when it is older than this [default: 1h]",
    ),
    key(
        "auth.jwt.jwks_timeout",
        "jwks-timeout",
        "DURATION",
        "Deadline for one JWKS fetch [default: 5s]",
    ),
    Key {
        arity: Arity::Many,
        ..key(
            "auth.jwt.algorithms",
            "jwt-algorithm",
            "ALG",
            "Accepted alg (HS256, RS256, ES256, EdDSA, ...); repeatable [default: every \
             algorithm of the configured keys' families]",
        )
    },
    key(
        "auth.jwt.leeway",
        "jwt-leeway",
        "DURATION",
        "Clock skew allowed on exp and nbf [default: 30s]",
    ),
    Key {
        arity: Arity::Many,
        ..key(
            "auth.jwt.issuer",
            "jwt-issuer",
            "ISS",
            "Accepted iss; repeatable [default: not checked]",
        )
    },
    Key {
        arity: Arity::Many,
        ..key(
            "auth.jwt.audience",
            "jwt-audience",
            "AUD",
            "Accepted aud; repeatable [default: none, tokens with an aud are refused]",
        )
    },
    Key {
        arity: Arity::Switch,
        ..key(
            "auth.jwt.require_exp",
            "jwt-require-exp",
            "BOOL",
            "Refuse tokens without exp [default: true]",
        )
    },
    key(
        "auth.tickets.ttl",
        "ticket-ttl",
        "DURATION",
        "How long a one-time ticket (POST /api/ticket) stays redeemable [default: 30s]",
    ),
    key(
        "auth.tickets.max_outstanding",
        "ticket-max-outstanding",
        "N",
        "Most unredeemed tickets at once (503 above it) [default: 100000]",
    ),
    Key {
        redact: Redact::UrlCredentials,
        ..key(
            "auth.connect_proxy.url",
            "connect-proxy",
            "URL",
            "Application endpoint asked who an opaque cookie or token belongs to (POST, JSON) \
             [default: none]",
        )
    },
    key(
        "auth.connect_proxy.timeout",
        "connect-proxy-timeout",
        "DURATION",
        "Deadline for one connect proxy answer (then 1013 / 503) [default: 3s]",
    ),
    key(
        "auth.connect_proxy.cache_ttl",
        "connect-proxy-cache-ttl",
        "DURATION",
        "How long an accepted answer is reused for the same credential; 0: no cache \
         [default: 30s]",
    ),
    key(
        "auth.connect_proxy.cache_size",
        "connect-proxy-cache-size",
        "N",
        "Most cached connect proxy answers [default: 10000]",
    ),
    key(
        "auth.connect_proxy.max_response_bytes",
        "connect-proxy-max-response",
        "SIZE",
        "Largest connect proxy answer read [default: 64KiB]",
    ),
];

/// Environment variables that name no key but are accepted: `SWITCHBOARD_API_KEY` (one API
/// key, alias of `api_keys`), `SWITCHBOARD_JWT_SECRET` (one JWT secret, alias of
/// `auth.jwt.secrets`), `SWITCHBOARD_CONFIG` (the file, like `--config`), and the
/// variables the test tooling passes to its clients (`SWITCHBOARD_BIN`, `SWITCHBOARD_URL`,
/// `SWITCHBOARD_HTTP`), which the server ignores.
pub(crate) const ENV_API_KEY: &str = "SWITCHBOARD_API_KEY";
/// One JWT secret, taken whole (a secret may contain a comma): alias of `auth.jwt.secrets`.
pub(crate) const ENV_JWT_SECRET: &str = "SWITCHBOARD_JWT_SECRET";
/// The configuration file, when `--config` is not given.
pub(crate) const ENV_CONFIG: &str = "SWITCHBOARD_CONFIG";
/// Read by clients and test tooling, not by the server.
pub(crate) const ENV_IGNORED: &[&str] = &["SWITCHBOARD_BIN", "SWITCHBOARD_URL", "SWITCHBOARD_HTTP"];
/// The conventional log filter variable: the env-layer value of `log_level` when
/// `SWITCHBOARD_LOG_LEVEL` is unset.
pub(crate) const ENV_RUST_LOG: &str = "RUST_LOG";

/// The key at `path`.
pub(crate) fn find(path: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.path == path)
}
