//! Configuration: defaults, a TOML file, `SWITCHBOARD_*` environment variables and flags, in
//! increasing order of precedence (docs/configuration.md).
//!
//! Each layer yields a `toml::Table` of the keys it sets ([`layers`]); the tables are merged and
//! deserialized once into [`Settings`] (unknown keys are errors, every error names the key's
//! path and the layer that set it), which converts to the server's [`ServerConfig`]. No
//! protocol or server logic here.

mod auth;
mod broker;
mod flags;
pub(crate) mod keys;
mod layers;
mod render;
mod socketio;
mod values;

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use switchboard_auth::Authenticator;
use switchboard_hub::{HistoryLimits, HubConfig, OverflowPolicy, RoomPattern};
use switchboard_server::rate::RateLimit;
use switchboard_server::{ServerConfig, SessionConfig, TlsConfig};

pub(crate) use auth::{redact_url, AuthSettings};
pub(crate) use broker::BrokerSettings;
pub(crate) use flags::Flags;
pub(crate) use layers::Source;
pub(crate) use socketio::SocketIoSettings;
pub(crate) use values::LogFormat;

use layers::Merged;
use values::{HistoryRule, OverflowRule, Policy};

/// Every setting, with its default (SPEC §6 for the limits). Field docs: docs/configuration.md.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Settings {
    #[serde(deserialize_with = "values::socket_addr")]
    pub(crate) listen: SocketAddr,
    #[serde(deserialize_with = "values::boolean")]
    pub(crate) echo: bool,
    #[serde(deserialize_with = "values::boolean")]
    pub(crate) pages: bool,
    /// `None`: one worker per core.
    #[serde(deserialize_with = "values::threads")]
    pub(crate) threads: Option<usize>,
    #[serde(deserialize_with = "log_filter")]
    pub(crate) log_level: String,
    pub(crate) log_format: LogFormat,
    #[serde(deserialize_with = "values::size")]
    pub(crate) max_message_size: usize,
    #[serde(deserialize_with = "values::boolean")]
    pub(crate) deflate: bool,
    #[serde(deserialize_with = "values::positive_duration")]
    pub(crate) heartbeat_interval: Duration,
    #[serde(deserialize_with = "values::positive_duration")]
    pub(crate) heartbeat_timeout: Duration,
    #[serde(deserialize_with = "values::positive_duration")]
    pub(crate) handshake_timeout: Duration,
    #[serde(deserialize_with = "values::positive_duration")]
    pub(crate) close_timeout: Duration,
    #[serde(deserialize_with = "values::duration")]
    pub(crate) shutdown_timeout: Duration,
    #[serde(deserialize_with = "values::positive_duration")]
    pub(crate) auth_timeout: Duration,
    #[serde(deserialize_with = "values::positive_duration")]
    pub(crate) poll_timeout: Duration,
    #[serde(deserialize_with = "values::duration")]
    pub(crate) poll_grace: Duration,
    #[serde(deserialize_with = "values::size")]
    pub(crate) max_pending_output: usize,
    #[serde(deserialize_with = "values::size_or_zero")]
    pub(crate) socket_send_buffer: usize,
    /// Zero: never park.
    #[serde(deserialize_with = "values::duration")]
    pub(crate) park_idle_after: Duration,
    #[serde(deserialize_with = "values::size")]
    pub(crate) outbound_buffer: usize,
    #[serde(deserialize_with = "values::size")]
    pub(crate) history_reply_size: usize,
    /// `None`: unlimited.
    #[serde(deserialize_with = "values::limit")]
    pub(crate) max_connections: Option<usize>,
    #[serde(deserialize_with = "values::positive_count")]
    pub(crate) max_connections_per_ip: usize,
    #[serde(deserialize_with = "values::positive_count")]
    pub(crate) max_connections_per_user: usize,
    /// `None`: off.
    #[serde(deserialize_with = "values::rate_limit")]
    pub(crate) rate_limit: Option<RateLimit>,
    /// Secret.
    #[serde(deserialize_with = "values::string_list")]
    pub(crate) api_keys: Vec<String>,
    /// Room patterns.
    #[serde(deserialize_with = "values::string_list")]
    pub(crate) anonymous_publish: Vec<String>,
    #[serde(deserialize_with = "values::origins")]
    pub(crate) cors_origins: Vec<String>,
    #[serde(deserialize_with = "values::count")]
    pub(crate) join_leave_max_members: usize,
    #[serde(deserialize_with = "values::duration")]
    pub(crate) dedup_window: Duration,
    #[serde(deserialize_with = "values::count")]
    pub(crate) dedup_capacity: usize,
    pub(crate) tls: TlsSettings,
    pub(crate) history: HistorySettings,
    pub(crate) overflow: OverflowSettings,
    pub(crate) socketio: SocketIoSettings,
    /// Not part of [`ServerConfig`]: `main.rs` picks the store from it (issue 13).
    pub(crate) broker: BrokerSettings,
    pub(crate) auth: AuthSettings,
}

/// `[tls]`: both paths or neither.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TlsSettings {
    #[serde(deserialize_with = "values::path")]
    pub(crate) cert: Option<PathBuf>,
    #[serde(deserialize_with = "values::path")]
    pub(crate) key: Option<PathBuf>,
}

/// `[history]`: the default retention and per-pattern rules.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HistorySettings {
    #[serde(deserialize_with = "values::count")]
    pub(crate) max_messages: usize,
    #[serde(deserialize_with = "values::duration")]
    pub(crate) max_age: Duration,
    #[serde(deserialize_with = "values::rules")]
    pub(crate) rooms: Vec<HistoryRule>,
}

/// `[overflow]`: the default policy and per-pattern rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct OverflowSettings {
    pub(crate) default: Policy,
    #[serde(deserialize_with = "values::rules")]
    pub(crate) rooms: Vec<OverflowRule>,
}

impl Default for Settings {
    fn default() -> Self {
        // The defaults are the server's: one source of truth (tested both ways below).
        let server = ServerConfig::default();
        let hub = &server.hub;
        Settings {
            listen: server.listen,
            echo: server.echo,
            pages: server.pages,
            threads: None,
            log_level: "info".to_owned(),
            log_format: LogFormat::Text,
            max_message_size: server.max_message_size,
            deflate: server.deflate.is_some(),
            heartbeat_interval: server.heartbeat_interval,
            heartbeat_timeout: server.heartbeat_timeout,
            handshake_timeout: server.handshake_timeout,
            close_timeout: server.close_timeout,
            shutdown_timeout: server.shutdown_timeout,
            auth_timeout: server.auth_timeout,
            poll_timeout: server.poll_timeout,
            poll_grace: server.poll_grace,
            max_pending_output: server.max_pending_output,
            socket_send_buffer: server.socket_send_buffer.unwrap_or(0),
            park_idle_after: server.park_idle_after.unwrap_or(Duration::ZERO),
            outbound_buffer: hub.outbox_budget,
            history_reply_size: server.session.max_history_reply,
            max_connections: server.max_connections,
            max_connections_per_ip: server.max_connections_per_ip,
            max_connections_per_user: server.max_connections_per_user,
            rate_limit: server.session.rate_limit,
            api_keys: server.api_keys.clone(),
            anonymous_publish: Vec::new(),
            cors_origins: server.cors_origins.clone(),
            join_leave_max_members: hub.join_leave_max_members,
            dedup_window: hub.dedup_window,
            dedup_capacity: hub.dedup_capacity,
            tls: TlsSettings::default(),
            history: HistorySettings::default(),
            overflow: OverflowSettings::default(),
            socketio: SocketIoSettings::default(),
            broker: BrokerSettings::default(),
            auth: AuthSettings::default(),
        }
    }
}

impl Default for HistorySettings {
    fn default() -> Self {
        let limits = HistoryLimits::default();
        HistorySettings {
            max_messages: limits.max_messages,
            max_age: limits.max_age,
            rooms: Vec::new(),
        }
    }
}

impl Settings {
    /// The server's configuration, without the authenticator ([`Loaded::server_config`] has
    /// it: building it reads key files).
    pub(crate) fn server_config(&self) -> ServerConfig {
        let defaults = ServerConfig::default();
        let default_history = HistoryLimits {
            max_messages: self.history.max_messages,
            max_age: self.history.max_age,
        };
        let policy = |p: Policy| match p {
            Policy::Drop => OverflowPolicy::Drop,
            Policy::Close => OverflowPolicy::Close,
        };
        ServerConfig {
            listen: self.listen,
            echo: self.echo,
            pages: self.pages,
            max_message_size: self.max_message_size,
            deflate: if self.deflate { defaults.deflate } else { None },
            heartbeat_interval: self.heartbeat_interval,
            heartbeat_timeout: self.heartbeat_timeout,
            handshake_timeout: self.handshake_timeout,
            close_timeout: self.close_timeout,
            shutdown_timeout: self.shutdown_timeout,
            max_pending_output: self.max_pending_output,
            socket_send_buffer: (self.socket_send_buffer > 0).then_some(self.socket_send_buffer),
            park_idle_after: (!self.park_idle_after.is_zero()).then_some(self.park_idle_after),
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_connections_per_user: self.max_connections_per_user,
            auth_timeout: self.auth_timeout,
            poll_timeout: self.poll_timeout,
            poll_grace: self.poll_grace,
            tls: match (&self.tls.cert, &self.tls.key) {
                (Some(cert), Some(key)) => Some(TlsConfig {
                    cert_path: cert.clone(),
                    key_path: key.clone(),
                }),
                // `load` rejects a half-set pair.
                _ => None,
            },
            session: SessionConfig {
                rate_limit: self.rate_limit,
                max_history_reply: self.history_reply_size,
            },
            api_keys: self.api_keys.clone(),
            anonymous_publish: self
                .anonymous_publish
                .iter()
                .map(|p| RoomPattern::new(p))
                .collect(),
            cors_origins: self.cors_origins.clone(),
            // Built once, at load time (`Loaded::server_config`).
            auth: None,
            hub: HubConfig {
                history: self
                    .history
                    .rooms
                    .iter()
                    .map(|rule| {
                        (
                            RoomPattern::new(&rule.pattern),
                            HistoryLimits {
                                max_messages: rule
                                    .max_messages
                                    .unwrap_or(default_history.max_messages),
                                max_age: rule.max_age.unwrap_or(default_history.max_age),
                            },
                        )
                    })
                    .collect(),
                default_history,
                join_leave_max_members: self.join_leave_max_members,
                dedup_window: self.dedup_window,
                dedup_capacity: self.dedup_capacity,
                outbox_budget: self.outbound_buffer,
                overflow: self
                    .overflow
                    .rooms
                    .iter()
                    .map(|rule| (RoomPattern::new(&rule.pattern), policy(rule.policy)))
                    .collect(),
                default_overflow: policy(self.overflow.default),
                // One node per process until a shared store (Redis) exists: its presence
                // never expires while it runs. A setting then.
                presence_expiry: HubConfig::default().presence_expiry,
            },
            socketio: self.socketio.config(),
            // Connected by `main.rs` from `[broker]` (it needs the runtime).
            backends: None,
        }
    }

    /// Checks that involve more than one key.
    fn validate(&self) -> Result<(), (String, String)> {
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => {
                return Err((
                    "tls.key".to_owned(),
                    "missing: tls.cert is set, set both or neither".to_owned(),
                ))
            }
            (None, Some(_)) => {
                return Err((
                    "tls.cert".to_owned(),
                    "missing: tls.key is set, set both or neither".to_owned(),
                ))
            }
            _ => {}
        }
        self.socketio.validate()
    }
}

/// A log filter: a level, or `tracing` directives. A lone word must be a level, so a typo
/// like `verbose` is not taken for a target name.
fn log_filter<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let filter = values::string(d)?;
    const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];
    let lone_word = !filter.contains(['=', ',', '[', ':']);
    if lone_word && !LEVELS.contains(&filter.trim().to_ascii_lowercase().as_str()) {
        return Err(serde::de::Error::custom(format!(
            "expected a level (off, error, warn, info, debug, trace) or tracing directives \
             like \"info,switchboard_server=debug\", got {filter:?}"
        )));
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(&filter)
        .map_err(|e| serde::de::Error::custom(format!("bad log filter {filter:?}: {e}")))?;
    Ok(filter)
}

/// An invalid configuration: which key, what is wrong, which layer set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigError {
    /// Dotted path of the key (`history.rooms[0].max_age`); `None` for a file that does not
    /// read or parse.
    pub(crate) key: Option<String>,
    pub(crate) message: String,
    pub(crate) source: Option<Source>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid configuration: ")?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, " (from {source})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The effective configuration and where each value came from.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) settings: Settings,
    /// Built from `[auth]`; `None` when every auth setting is at its default.
    pub(crate) authenticator: Option<Arc<Authenticator>>,
    merged: Merged,
    file: Option<PathBuf>,
}

impl Loaded {
    /// The server's configuration, authenticator included.
    pub(crate) fn server_config(&self) -> ServerConfig {
        ServerConfig {
            auth: self.authenticator.clone(),
            ..self.settings.server_config()
        }
    }

    /// The effective configuration as TOML, every key, secrets redacted.
    pub(crate) fn render(&self) -> String {
        render::render(&self.settings, &self.merged, self.file.as_deref())
    }
}

/// Read the layers: the file (`config_file`, else `SWITCHBOARD_CONFIG`), the environment
/// (`env`, e.g. `std::env::vars_os()`), the flags.
pub(crate) fn load<I, K, V>(
    config_file: Option<&Path>,
    env: I,
    flags: &Flags,
) -> Result<Loaded, ConfigError>
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<OsString>,
    V: Into<OsString>,
{
    let env = layers::env_layer(env)?;
    let file = config_file.map(Path::to_owned).or(env.config_file);
    let mut merged = Merged::default();
    if let Some(path) = &file {
        merged.apply(layers::file_layer(path)?);
    }
    merged.apply(env.layer);
    merged.apply(flags.layer());
    let error = |key: String, message: String| ConfigError {
        source: merged.origin(&key).cloned(),
        key: Some(key),
        message,
    };
    let settings = deserialize(merged.table.clone()).map_err(|(k, m)| error(k, m))?;
    settings.validate().map_err(|(k, m)| error(k, m))?;
    let authenticator = settings
        .auth
        .authenticator()
        .map_err(|(k, m)| error(k, m))?;
    Ok(Loaded {
        settings,
        authenticator,
        merged,
        file,
    })
}

/// Deserialize the merged table; an error is (key path, message).
fn deserialize(table: toml::Table) -> Result<Settings, (String, String)> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().message().trim_end().to_owned();
        explain(path, message)
    })
}

/// Shorten serde's messages: an unknown field's "expected one of" list is the whole table.
fn explain(path: String, message: String) -> (String, String) {
    if message.starts_with("unknown field") {
        let near = suggestion(&path)
            .map(|k| format!(" (did you mean {k}?)"))
            .unwrap_or_default();
        return (path, format!("unknown key{near}"));
    }
    (path, message)
}

/// A known key close to the unknown one at `path`.
fn suggestion(path: &str) -> Option<&'static str> {
    let normalize = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let wanted = normalize(path);
    keys::KEYS
        .iter()
        .map(|k| k.path)
        .chain([
            "tls",
            "history",
            "overflow",
            "socketio",
            "broker",
            "auth",
            "auth.sources",
            "auth.jwt",
            "auth.tickets",
            "auth.connect_proxy",
        ])
        .filter(|k| distance(&wanted, k) <= 2.min(k.len() / 3))
        .min_by_key(|k| distance(&wanted, k))
}

/// Levenshtein distance, for suggestions.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            previous = current;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests;
