//! `[socketio]`: the settings of [`SocketIoConfig`] (Engine.IO v4 / Socket.IO v5, SPEC §1.4),
//! with the settings layer's value forms.
//!
//! The defaults are the server's (`SocketIoConfig::default()`, tested both ways), and the
//! conversions list every field, so a field added there fails to compile here until it has a
//! key.

use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use switchboard_server::SocketIoConfig;
use switchboard_socketio_proto::Namespace;

use super::values;

/// `[socketio]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SocketIoSettings {
    #[serde(deserialize_with = "values::boolean")]
    pub(crate) enabled: bool,
    #[serde(deserialize_with = "path")]
    pub(crate) path: String,
    #[serde(deserialize_with = "values::positive_duration")]
    pub(crate) ping_interval: Duration,
    #[serde(deserialize_with = "values::positive_duration")]
    pub(crate) ping_timeout: Duration,
    #[serde(deserialize_with = "values::size")]
    pub(crate) max_payload: usize,
    #[serde(deserialize_with = "values::positive_duration")]
    pub(crate) connect_timeout: Duration,
    #[serde(deserialize_with = "namespaces")]
    pub(crate) namespaces: Vec<String>,
    /// `None`: every namespace of `namespaces`.
    #[serde(deserialize_with = "recovery")]
    pub(crate) recovery: Option<Vec<String>>,
    #[serde(deserialize_with = "values::positive_duration")]
    pub(crate) recovery_window: Duration,
}

impl Default for SocketIoSettings {
    fn default() -> Self {
        // The server's defaults: one source of truth.
        let SocketIoConfig {
            enabled,
            path,
            ping_interval,
            ping_timeout,
            max_payload,
            connect_timeout,
            namespaces,
            recovery,
            recovery_window,
            // Code, not settings: the binary has no application handlers.
            handlers: _,
        } = SocketIoConfig::default();
        SocketIoSettings {
            enabled,
            path,
            ping_interval,
            ping_timeout,
            max_payload,
            connect_timeout,
            // "Every namespace" stays that when `namespaces` is set.
            recovery: (recovery != namespaces).then_some(recovery),
            namespaces,
            recovery_window,
        }
    }
}

impl SocketIoSettings {
    /// The namespaces with connection state recovery.
    pub(crate) fn recovery(&self) -> &[String] {
        self.recovery.as_deref().unwrap_or(&self.namespaces)
    }

    /// The server's configuration.
    pub(crate) fn config(&self) -> SocketIoConfig {
        SocketIoConfig {
            enabled: self.enabled,
            path: self.path.clone(),
            ping_interval: self.ping_interval,
            ping_timeout: self.ping_timeout,
            max_payload: self.max_payload,
            connect_timeout: self.connect_timeout,
            namespaces: self.namespaces.clone(),
            recovery: self.recovery().to_vec(),
            recovery_window: self.recovery_window,
            handlers: Default::default(),
        }
    }

    /// Checks that involve more than one key: every recovery namespace is served. An error is
    /// (key, message).
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        for (i, namespace) in self.recovery().iter().enumerate() {
            if !self.namespaces.contains(namespace) {
                return Err((
                    format!("socketio.recovery[{i}]"),
                    format!(
                        "{namespace:?} is not one of socketio.namespaces ({})",
                        quoted(&self.namespaces)
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn quoted(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    items.join(", ")
}

/// The routes of the server itself (crates/server/src/http.rs, crates/server/src/api.rs): the
/// Socket.IO path may be none of them, under none of them, and above none of them. `/api`
/// stands for every route of the HTTP API, present and future.
const SERVER_ROUTES: &[&str] = &[
    "/ws",
    "/events",
    "/poll",
    "/api",
    "/health",
    "/ready",
    "/metrics",
    "/echo",
    "/engine.io",
];

/// The Socket.IO path: `/` + segments + `/` (`/socket.io/`, `/rt/socket.io/`), in URL-safe
/// characters (letters, digits, `-`, `.`, `_`, `~`), clear of the server's own routes.
pub(crate) fn check_path(text: &str) -> Result<String, String> {
    if text == "/" {
        return Err(
            "\"/\" would take every route of the server; use a path like \"/socket.io/\""
                .to_owned(),
        );
    }
    let Some(inner) = text.strip_prefix('/').and_then(|t| t.strip_suffix('/')) else {
        return Err(format!(
            "must start and end with '/', like \"/socket.io/\", got {text:?}"
        ));
    };
    for segment in inner.split('/') {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~".contains(c);
        if segment.is_empty() || segment == "." || segment == ".." || !segment.chars().all(allowed)
        {
            return Err(format!(
                "{text:?} is not a plain path: segments of letters, digits, '-', '.', '_' and \
                 '~' separated by single '/', like \"/socket.io/\""
            ));
        }
    }
    let trimmed = &text[..text.len() - 1];
    let under =
        |a: &str, b: &str| a.len() > b.len() && a.starts_with(b) && a[b.len()..].starts_with('/');
    if let Some(route) = SERVER_ROUTES
        .iter()
        .find(|&&route| trimmed == route || under(trimmed, route) || under(route, trimmed))
    {
        let route = if *route == "/api" { "/api/" } else { route };
        return Err(format!(
            "{text:?} collides with the server's route {route}; use another path, like \
             \"/socket.io/\""
        ));
    }
    Ok(text.to_owned())
}

fn path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    check_path(&values::string(d)?).map_err(de::Error::custom)
}

/// Each a namespace (starts with `/`, no `,`: the protocol crate's rule), none twice.
fn check_namespaces(list: &[String]) -> Result<(), String> {
    for (i, name) in list.iter().enumerate() {
        Namespace::new(name.as_str())
            .map_err(|e| format!("{name:?} is not a namespace: {e}, like \"/chat\""))?;
        if list[..i].contains(name) {
            return Err(format!("{name:?} is listed twice"));
        }
    }
    Ok(())
}

/// The namespaces served: at least one.
fn namespaces<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = values::string_list(d)?;
    if list.is_empty() {
        return Err(de::Error::custom(
            "empty: list at least one namespace, like [\"/\"] (socketio.enabled = false \
             turns Socket.IO off)",
        ));
    }
    check_namespaces(&list).map_err(de::Error::custom)?;
    Ok(list)
}

/// The namespaces with recovery, when set (`[]`: none).
fn recovery<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let list = values::string_list(d)?;
    check_namespaces(&list).map_err(de::Error::custom)?;
    Ok(Some(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_servers() {
        assert_eq!(
            format!("{:?}", SocketIoSettings::default().config()),
            format!("{:?}", SocketIoConfig::default())
        );
        assert_eq!(SocketIoSettings::default().recovery, None);
    }

    #[test]
    fn paths_are_plain_and_clear_of_the_servers_routes() {
        for good in [
            "/socket.io/",
            "/rt/socket.io/",
            "/sio/",
            "/v2~x_y-z/",
            "/wss/",
            "/apis/",
        ] {
            assert_eq!(check_path(good).as_deref(), Ok(good));
        }
        for (bad, expected) in [
            ("/socket.io", "must start and end with '/'"),
            ("socket.io/", "must start and end with '/'"),
            ("", "must start and end with '/'"),
            ("/", "would take every route"),
            ("//", "not a plain path"),
            ("/a//b/", "not a plain path"),
            ("/{nsp}/", "not a plain path"),
            ("/a b/", "not a plain path"),
            ("/../", "not a plain path"),
            ("/ws/", "collides with the server's route /ws"),
            ("/events/", "route /events"),
            ("/poll/", "route /poll"),
            ("/api/", "route /api/"),
            ("/api/sio/", "route /api/"),
            ("/health/", "route /health"),
            ("/ready/", "route /ready"),
            ("/metrics/", "route /metrics"),
            ("/echo/", "route /echo"),
            ("/engine.io/", "route /engine.io"),
            ("/engine.io/x/", "route /engine.io"),
        ] {
            let e = check_path(bad).expect_err(bad);
            assert!(e.contains(expected), "{bad}: {e}");
        }
    }

    #[test]
    fn namespaces_follow_the_protocols_rule() {
        assert!(check_namespaces(&["/".into(), "/chat".into()]).is_ok());
        let e = check_namespaces(&["chat".into()]).unwrap_err();
        assert!(
            e.contains("\"chat\" is not a namespace: namespace must start with '/'"),
            "{e}"
        );
        let e = check_namespaces(&["/a,b".into()]).unwrap_err();
        assert!(e.contains("comma"), "{e}");
        let e = check_namespaces(&["/a".into(), "/a".into()]).unwrap_err();
        assert!(e.contains("\"/a\" is listed twice"), "{e}");
    }
}
