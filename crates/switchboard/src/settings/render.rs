//! `switchboard config`: the effective configuration as TOML, every key in the order of
//! [`KEYS`], secrets redacted, each value set by a layer followed by a comment naming it.

use std::fmt::Write as _;
use std::path::Path;

use toml::{Table, Value};

use super::auth::{action_name, allow_value, redact_url};
use super::keys::{Redact, KEYS};
use super::layers::Merged;
use super::values::{format_duration, format_rate_limit, format_size};
use super::Settings;

/// What a secret prints as.
pub(crate) const REDACTED: &str = "[redacted]";

/// The effective configuration (a valid configuration file, secrets aside).
pub(crate) fn render(settings: &Settings, merged: &Merged, file: Option<&Path>) -> String {
    let mut out = String::new();
    out.push_str("# Effective Switchboard configuration: flag > environment > file > default.\n");
    match file {
        Some(path) => {
            let _ = writeln!(out, "# File: {}", path.display());
        }
        None => out.push_str("# File: none\n"),
    }
    out.push_str("# A value not from its default names its source in a comment.\n\n");
    let mut section = None;
    for key in KEYS {
        if key.section() != section {
            section = key.section();
            if let Some(name) = section {
                let _ = write!(out, "\n[{name}]\n");
            }
        }
        let origin = merged
            .origin(key.path)
            .map(|source| format!("  # from {source}"))
            .unwrap_or_default();
        match value(settings, key.path) {
            Some(value) => {
                let value = match key.redact {
                    Redact::Nothing => value,
                    Redact::Whole => redact(value),
                    Redact::UrlCredentials => match value {
                        Value::String(url) => Value::String(redact_url(&url)),
                        other => redact(other),
                    },
                };
                let _ = writeln!(out, "{} = {}{origin}", key.name(), inline(&value));
            }
            None => {
                let _ = writeln!(out, "# {} = (unset){origin}", key.name());
            }
        }
    }
    out
}

/// A value on one line; a rule's fields in their documented order.
fn inline(value: &Value) -> String {
    const ORDER: &[&str] = &[
        "pattern",
        "max_messages",
        "max_age",
        "policy",
        "rooms",
        "actions",
        "allow",
    ];
    match value {
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(inline).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Table(table) => {
            let mut fields: Vec<(&String, &Value)> = table.iter().collect();
            fields.sort_by_key(|(k, _)| ORDER.iter().position(|o| o == k).unwrap_or(ORDER.len()));
            let fields: Vec<String> = fields
                .into_iter()
                .map(|(k, v)| format!("{k} = {}", inline(v)))
                .collect();
            format!("{{ {} }}", fields.join(", "))
        }
        _ => value.to_string(),
    }
}

fn redact(value: Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.into_iter().map(redact).collect()),
        _ => Value::String(REDACTED.to_owned()),
    }
}

fn string(s: impl Into<String>) -> Option<Value> {
    Some(Value::String(s.into()))
}

fn int(n: usize) -> Option<Value> {
    // Settings values come from i64 or smaller; saturate rather than wrap if not.
    Some(Value::Integer(i64::try_from(n).unwrap_or(i64::MAX)))
}

/// The value of one key, in its canonical form (durations `"25s"`, sizes `"1MiB"`).
pub(crate) fn value(s: &Settings, path: &str) -> Option<Value> {
    let duration = |d| string(format_duration(d));
    let size = |n| string(format_size(n));
    match path {
        "listen" => string(s.listen.to_string()),
        "echo" => Some(Value::Boolean(s.echo)),
        "pages" => Some(Value::Boolean(s.pages)),
        "threads" => s.threads.map_or_else(|| string("auto"), int),
        "log_level" => string(s.log_level.clone()),
        "log_format" => string(s.log_format.as_str()),
        "max_message_size" => size(s.max_message_size),
        "deflate" => Some(Value::Boolean(s.deflate)),
        "heartbeat_interval" => duration(s.heartbeat_interval),
        "heartbeat_timeout" => duration(s.heartbeat_timeout),
        "handshake_timeout" => duration(s.handshake_timeout),
        "close_timeout" => duration(s.close_timeout),
        "shutdown_timeout" => duration(s.shutdown_timeout),
        "auth_timeout" => duration(s.auth_timeout),
        "poll_timeout" => duration(s.poll_timeout),
        "poll_grace" => duration(s.poll_grace),
        "max_pending_output" => size(s.max_pending_output),
        "history_reply_size" => size(s.history_reply_size),
        "socket_send_buffer" => size(s.socket_send_buffer),
        "park_idle_after" => duration(s.park_idle_after),
        "outbound_buffer" => size(s.outbound_buffer),
        "max_connections" => s.max_connections.map_or_else(|| string("unlimited"), int),
        "max_connections_per_ip" => int(s.max_connections_per_ip),
        "max_connections_per_user" => int(s.max_connections_per_user),
        "rate_limit" => string(format_rate_limit(&s.rate_limit)),
        "api_keys" => Some(Value::Array(
            s.api_keys.iter().cloned().map(Value::String).collect(),
        )),
        "anonymous_publish" => Some(Value::Array(
            s.anonymous_publish
                .iter()
                .cloned()
                .map(Value::String)
                .collect(),
        )),
        "cors_origins" => Some(Value::Array(
            s.cors_origins.iter().cloned().map(Value::String).collect(),
        )),
        "join_leave_max_members" => int(s.join_leave_max_members),
        "dedup_window" => duration(s.dedup_window),
        "dedup_capacity" => int(s.dedup_capacity),
        "tls.cert" => s
            .tls
            .cert
            .as_ref()
            .and_then(|p| string(p.to_string_lossy())),
        "tls.key" => s.tls.key.as_ref().and_then(|p| string(p.to_string_lossy())),
        "history.max_messages" => int(s.history.max_messages),
        "history.max_age" => duration(s.history.max_age),
        "history.rooms" => Some(Value::Array(
            s.history
                .rooms
                .iter()
                .map(|rule| {
                    // Effective values: a rule's unset limit is the default retention.
                    let mut t = Table::new();
                    t.insert("pattern".into(), Value::String(rule.pattern.clone()));
                    let count = rule.max_messages.unwrap_or(s.history.max_messages);
                    t.insert("max_messages".into(), int(count)?);
                    let age = rule.max_age.unwrap_or(s.history.max_age);
                    t.insert("max_age".into(), Value::String(format_duration(age)));
                    Some(Value::Table(t))
                })
                .collect::<Option<Vec<_>>>()?,
        )),
        "overflow.default" => string(s.overflow.default.as_str()),
        "overflow.rooms" => Some(Value::Array(
            s.overflow
                .rooms
                .iter()
                .map(|rule| {
                    let mut t = Table::new();
                    t.insert("pattern".into(), Value::String(rule.pattern.clone()));
                    t.insert("policy".into(), Value::String(rule.policy.as_str().into()));
                    Value::Table(t)
                })
                .collect(),
        )),
        "socketio.enabled" => Some(Value::Boolean(s.socketio.enabled)),
        "socketio.path" => string(s.socketio.path.clone()),
        "socketio.ping_interval" => duration(s.socketio.ping_interval),
        "socketio.ping_timeout" => duration(s.socketio.ping_timeout),
        "socketio.max_payload" => size(s.socketio.max_payload),
        "socketio.connect_timeout" => duration(s.socketio.connect_timeout),
        "socketio.namespaces" => strings(&s.socketio.namespaces),
        // Effective: unset is every namespace.
        "socketio.recovery" => strings(s.socketio.recovery()),
        "socketio.recovery_window" => duration(s.socketio.recovery_window),
        "broker.url" => s.broker.url.clone().and_then(string),
        "broker.timeout" => duration(s.broker.timeout),
        "broker.presence_ttl" => duration(s.broker.presence_ttl),
        _ => auth_value(s, path),
    }
}

fn strings<'a>(items: impl IntoIterator<Item = &'a String>) -> Option<Value> {
    Some(Value::Array(
        items.into_iter().cloned().map(Value::String).collect(),
    ))
}

/// The value of one `auth.*` key.
fn auth_value(s: &Settings, path: &str) -> Option<Value> {
    let a = &s.auth;
    let duration = |d| string(format_duration(d));
    let boolean = |b| Some(Value::Boolean(b));
    match path {
        "auth.anonymous" => a.anonymous.map_or_else(|| string("auto"), boolean),
        "auth.cookie_name" => string(a.cookie_name.clone()),
        "auth.allowed_origins" => strings(&a.allowed_origins),
        "auth.permissions" => Some(Value::Array(
            a.permissions
                .iter()
                .map(|rule| {
                    let mut t = Table::new();
                    t.insert("rooms".into(), Value::String(rule.rooms.clone()));
                    if !rule.all_actions() {
                        t.insert(
                            "actions".into(),
                            Value::Array(
                                rule.actions
                                    .iter()
                                    .map(|a| Value::String(action_name(*a).into()))
                                    .collect(),
                            ),
                        );
                    }
                    t.insert("allow".into(), allow_value(&rule.allow));
                    Value::Table(t)
                })
                .collect(),
        )),
        "auth.sources.header" => boolean(a.sources.header),
        "auth.sources.query" => boolean(a.sources.query),
        "auth.sources.ticket" => boolean(a.sources.ticket),
        "auth.sources.cookie" => boolean(a.sources.cookie),
        "auth.sources.first_message" => boolean(a.sources.first_message),
        "auth.jwt.secrets" => strings(&a.jwt.secrets),
        "auth.jwt.public_key_files" => Some(Value::Array(
            a.jwt
                .public_key_files
                .iter()
                .map(|p| Value::String(p.to_string_lossy().into_owned()))
                .collect(),
        )),
        "auth.jwt.jwks_file" => a
            .jwt
            .jwks_file
            .as_ref()
            .and_then(|p| string(p.to_string_lossy())),
        "auth.jwt.jwks_url" => a.jwt.jwks_url.clone().and_then(string),
        "auth.jwt.jwks_refetch_interval" => duration(a.jwt.jwks_refetch_interval),
        "auth.jwt.jwks_max_age" => duration(a.jwt.jwks_max_age),
        "auth.jwt.jwks_timeout" => duration(a.jwt.jwks_timeout),
        "auth.jwt.algorithms" => strings(&a.jwt.algorithms),
        "auth.jwt.leeway" => duration(a.jwt.leeway),
        "auth.jwt.issuer" => strings(&a.jwt.issuer),
        "auth.jwt.audience" => strings(&a.jwt.audience),
        "auth.jwt.require_exp" => boolean(a.jwt.require_exp),
        "auth.tickets.ttl" => duration(a.tickets.ttl),
        "auth.tickets.max_outstanding" => int(a.tickets.max_outstanding),
        "auth.connect_proxy.url" => a.connect_proxy.url.clone().and_then(string),
        "auth.connect_proxy.timeout" => duration(a.connect_proxy.timeout),
        "auth.connect_proxy.cache_ttl" => duration(a.connect_proxy.cache_ttl),
        "auth.connect_proxy.cache_size" => int(a.connect_proxy.cache_size),
        "auth.connect_proxy.max_response_bytes" => {
            string(format_size(a.connect_proxy.max_response_bytes))
        }
        _ => None,
    }
}
