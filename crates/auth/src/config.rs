//! Everything an operator can set about authentication and authorization, with defaults.
//!
//! Filled by the settings layer (TOML `[auth]`, environment, flags) through serde. Durations are
//! written like the rest of the settings: `"30s"`, `"500ms"`, `"2m"`, `"1h"`, or a bare number of
//! seconds.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::permission::PermissionRule;

/// The `[auth]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Whether connections and requests without a credential are accepted (as anonymous).
    /// Default (unset): on while no verifier (JWT key or connect proxy) is configured, off as
    /// soon as one is (issue 11: "off as soon as any auth mode is on").
    pub anonymous: Option<bool>,
    /// Which places a credential is looked for. Default: all of them.
    pub sources: SourcesConfig,
    /// The cookie holding a token or session id. Default `session` (the seeds' name).
    pub cookie_name: String,
    /// JWT verification. Default: no keys, so no token verifies.
    pub jwt: JwtConfig,
    /// One-time connection tickets.
    pub tickets: TicketConfig,
    /// `Origin` allowlist for browser handshakes (WebSocket, SSE, polling): exact origins
    /// (`https://app.example.com`), wildcard subdomains (`https://*.example.com`), a port
    /// wildcard (`http://localhost:*`) or `*` (any). Same-origin requests (Origin host equals
    /// `Host`) are always allowed; so are requests without `Origin` (not from a browser, so not
    /// cross-site hijacking). Default `["*"]`: the check is opt-in, like CORS today. `[]` allows
    /// same-origin only. Bounds cross-site WebSocket hijacking.
    pub allowed_origins: Vec<String>,
    /// Channel permission rules, first match wins; see [`PermissionRule`]. Default: none, so
    /// every room follows the default (authenticated users allowed, anyone when anonymous
    /// access is on).
    pub permissions: Vec<PermissionRule>,
    /// The application endpoint that vouches for opaque credentials. Default: none.
    pub connect_proxy: Option<ConnectProxyConfig>,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            anonymous: None,
            sources: SourcesConfig::default(),
            cookie_name: "session".to_owned(),
            jwt: JwtConfig::default(),
            tickets: TicketConfig::default(),
            allowed_origins: vec!["*".to_owned()],
            permissions: Vec::new(),
            connect_proxy: None,
        }
    }
}

impl AuthConfig {
    /// Whether anything can verify a credential.
    pub fn has_verifier(&self) -> bool {
        self.jwt.has_keys() || self.connect_proxy.is_some()
    }

    /// The effective anonymous setting (see [`anonymous`](Self::anonymous)).
    pub fn anonymous_allowed(&self) -> bool {
        self.anonymous.unwrap_or(!self.has_verifier())
    }
}

/// Where credentials may come from. Each can be turned off: query tokens end up in proxy logs
/// (the seeds' warning), cookies ride along on cross-site requests.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourcesConfig {
    /// `Authorization: Bearer <token>`. Default on.
    pub header: bool,
    /// `?token=<token>` in the URL. Default on (the server redacts it from logs).
    pub query: bool,
    /// `?ticket=<ticket>` in the URL (one-time, so harmless in a log). Default on.
    pub ticket: bool,
    /// The cookie named by `cookie_name`. Default on.
    pub cookie: bool,
    /// `auth {token}` as the first WebSocket message. Default on.
    pub first_message: bool,
}

impl Default for SourcesConfig {
    fn default() -> SourcesConfig {
        SourcesConfig {
            header: true,
            query: true,
            ticket: true,
            cookie: true,
            first_message: true,
        }
    }
}

/// JWT verification keys and checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// HMAC secrets (HS256/384/512), tried in order (list old and new while rotating). A
    /// `base64:` prefix means the rest is standard base64. Default: none.
    pub secrets: Vec<String>,
    /// PEM public keys (`-----BEGIN PUBLIC KEY-----`, or `BEGIN RSA PUBLIC KEY`): RSA (RS*/PS*),
    /// EC P-256/P-384 (ES256/ES384) or Ed25519 (EdDSA); the type is read from the file.
    /// Default: none.
    pub public_key_files: Vec<PathBuf>,
    /// A JWKS document on disk; re-read like a URL when a token names an unknown `kid`.
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL (`http://` or `https://`, verified against the OS trust store).
    pub jwks_url: Option<String>,
    /// The least time between two JWKS fetches caused by unknown `kid`s: bounds how hard a
    /// client with made-up `kid`s can make us hit the key server. Default 30 s.
    #[serde(deserialize_with = "duration")]
    pub jwks_refetch_interval: Duration,
    /// A JWKS older than this is fetched again before use, so removed (revoked) keys go away.
    /// Default 1 h.
    #[serde(deserialize_with = "duration")]
    pub jwks_max_age: Duration,
    /// Deadline for one JWKS fetch. Default 5 s.
    #[serde(deserialize_with = "duration")]
    pub jwks_timeout: Duration,
    /// Accepted `alg` values (`HS256`, `RS256`, `PS256`, `ES256`, `EdDSA`, ...). Default (empty):
    /// every algorithm of the families for which a key is configured. `none` is never accepted.
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`. Default 30 s.
    #[serde(deserialize_with = "duration")]
    pub leeway: Duration,
    /// Accepted `iss` values; empty (default) = not checked.
    #[serde(deserialize_with = "one_or_many")]
    pub issuer: Vec<String>,
    /// Accepted `aud` values; empty (default) = tokens carrying an `aud` are refused (RFC 7519
    /// §4.1.3), tokens without one accepted.
    #[serde(deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// Refuse tokens without `exp` (a token that never expires is a permanent password).
    /// Default true.
    pub require_exp: bool,
}

impl Default for JwtConfig {
    fn default() -> JwtConfig {
        JwtConfig {
            secrets: Vec::new(),
            public_key_files: Vec::new(),
            jwks_file: None,
            jwks_url: None,
            jwks_refetch_interval: Duration::from_secs(30),
            jwks_max_age: Duration::from_secs(3600),
            jwks_timeout: Duration::from_secs(5),
            algorithms: Vec::new(),
            leeway: Duration::from_secs(30),
            issuer: Vec::new(),
            audience: Vec::new(),
            require_exp: true,
        }
    }
}

impl JwtConfig {
    /// Whether any key source is configured.
    pub fn has_keys(&self) -> bool {
        !self.secrets.is_empty()
            || !self.public_key_files.is_empty()
            || self.jwks_file.is_some()
            || self.jwks_url.is_some()
    }
}

/// One-time connection tickets.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TicketConfig {
    /// How long a ticket stays redeemable. Default 30 s: long enough to open a socket, short
    /// enough that a logged one is already dead.
    #[serde(deserialize_with = "duration")]
    pub ttl: Duration,
    /// Outstanding (unredeemed, unexpired) tickets at most; issuing beyond it fails. Bounds the
    /// memory a token holder can make us spend. Default 100 000 (about 30 MB at worst).
    pub max_outstanding: usize,
}

impl Default for TicketConfig {
    fn default() -> TicketConfig {
        TicketConfig {
            ttl: Duration::from_secs(30),
            max_outstanding: 100_000,
        }
    }
}

/// The connect proxy: the application's endpoint that says who an opaque credential belongs to.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectProxyConfig {
    /// Where to `POST` (`http://` or `https://`). Required.
    pub url: String,
    /// Deadline for one answer; past it the connection is refused as "backend unavailable".
    /// Default 3 s.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// How long an accepted answer is reused for the same credential. `0` disables the cache.
    /// Default 30 s.
    #[serde(deserialize_with = "duration")]
    pub cache_ttl: Duration,
    /// Cached answers at most (oldest evicted first). Default 10 000.
    pub cache_size: usize,
    /// Largest answer body read. Default 64 KiB.
    pub max_response_bytes: usize,
}

impl Default for ConnectProxyConfig {
    fn default() -> ConnectProxyConfig {
        ConnectProxyConfig {
            url: String::new(),
            timeout: Duration::from_secs(3),
            cache_ttl: Duration::from_secs(30),
            cache_size: 10_000,
            max_response_bytes: 64 * 1024,
        }
    }
}

/// A duration as `"30s"`/`"500ms"`/`"2m"`/`"1h"`/`"1d"` or a number of seconds.
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(u64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Seconds(s) => Ok(Duration::from_secs(s)),
        Raw::Text(text) => parse_duration(&text).map_err(serde::de::Error::custom),
    }
}

/// Parses `"30s"`, `"500ms"`, `"2m"`, `"1h"`, `"1d"`, `"30"` (seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let err =
        || format!("expected a duration like \"30s\", \"500ms\", \"2m\", \"1h\", got {text:?}");
    let n: u64 = number.parse().map_err(|_| err())?;
    let millis: u64 = match unit.trim() {
        "" | "s" => 1000,
        "ms" => 1,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(err()),
    };
    n.checked_mul(millis)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {text:?} is too large"))
}

fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Raw::deserialize(deserializer)? {
        Raw::One(s) => vec![s],
        Raw::Many(v) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documentation() {
        let c = AuthConfig::default();
        assert_eq!(c.cookie_name, "session");
        assert_eq!(c.tickets.ttl, Duration::from_secs(30));
        assert!(c.anonymous_allowed(), "nothing configured: anonymous");
        assert!(
            c.sources.header
                && c.sources.query
                && c.sources.cookie
                && c.sources.ticket
                && c.sources.first_message
        );
        assert_eq!(c.allowed_origins, ["*"]);
    }

    #[test]
    fn anonymous_turns_off_once_a_verifier_is_configured_unless_forced() {
        let mut c: AuthConfig = serde_json::from_str(r#"{"jwt": {"secrets": ["s"]}}"#).unwrap();
        assert!(!c.anonymous_allowed());
        c.anonymous = Some(true);
        assert!(c.anonymous_allowed());
    }

    #[test]
    fn durations_and_single_values_deserialize() {
        let c: AuthConfig = serde_json::from_str(
            r#"{"jwt": {"leeway": "2m", "jwks_refetch_interval": 5, "issuer": "me", "audience": ["a", "b"]},
                "tickets": {"ttl": "500ms"}}"#,
        )
        .unwrap();
        assert_eq!(c.jwt.leeway, Duration::from_secs(120));
        assert_eq!(c.jwt.jwks_refetch_interval, Duration::from_secs(5));
        assert_eq!(c.jwt.issuer, ["me"]);
        assert_eq!(c.jwt.audience, ["a", "b"]);
        assert_eq!(c.tickets.ttl, Duration::from_millis(500));
        assert!(serde_json::from_str::<AuthConfig>(r#"{"jwt": {"leeway": "soon"}}"#).is_err());
        assert!(serde_json::from_str::<AuthConfig>(r#"{"unknown": 1}"#).is_err());
    }
}
