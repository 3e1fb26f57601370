//! `[auth]`: the settings of [`switchboard_auth::AuthConfig`], with the settings layer's value
//! forms (environment variables and flags are strings: `"true"`, `"30s"`, `"a,b"`), and the
//! [`Authenticator`] built from them at startup, every failure naming its key.
//!
//! The defaults are the auth crate's (`AuthConfig::default()`, tested both ways), and the
//! conversion to `AuthConfig` lists every field, so a field added there fails to compile here
//! until it has a key.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use switchboard_auth::{
    Action, Allow, AuthConfig, Authenticator, ConnectProxy, ConnectProxyConfig, JwtConfig,
    JwtVerifier, OriginPolicy, PermissionRule, SourcesConfig, TicketConfig,
};

use super::values::{self, Rule};

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AuthSettings {
    /// `None`: auto (on until a verifier is configured).
    #[serde(deserialize_with = "anonymous")]
    pub(crate) anonymous: Option<bool>,
    #[serde(deserialize_with = "non_empty_string")]
    pub(crate) cookie_name: String,
    #[serde(deserialize_with = "values::string_list")]
    pub(crate) allowed_origins: Vec<String>,
    #[serde(deserialize_with = "values::rules")]
    pub(crate) permissions: Vec<PermissionSetting>,
    pub(crate) sources: SourcesSettings,
    pub(crate) jwt: JwtSettings,
    pub(crate) tickets: TicketSettings,
    pub(crate) connect_proxy: ConnectProxySettings,
}

/// `[auth.sources]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SourcesSettings {
    #[serde(deserialize_with = "values::boolean")]
    pub(crate) header: bool,
    #[serde(deserialize_with = "values::boolean")]
    pub(crate) query: bool,
    #[serde(deserialize_with = "values::boolean")]
    pub(crate) ticket: bool,
    #[serde(deserialize_with = "values::boolean")]
    pub(crate) cookie: bool,
    #[serde(deserialize_with = "values::boolean")]
    pub(crate) first_message: bool,
}

/// `[auth.jwt]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct JwtSettings {
    /// Secret.
    #[serde(deserialize_with = "values::string_list")]
    pub(crate) secrets: Vec<String>,
    #[serde(deserialize_with = "path_list")]
    pub(crate) public_key_files: Vec<PathBuf>,
    #[serde(deserialize_with = "values::path")]
    pub(crate) jwks_file: Option<PathBuf>,
    /// May carry credentials (redacted when printed).
    #[serde(deserialize_with = "optional_string")]
    pub(crate) jwks_url: Option<String>,
    #[serde(deserialize_with = "values::positive_duration")]
    pub(crate) jwks_refetch_interval: Duration,
    #[serde(deserialize_with = "values::positive_duration")]
    pub(crate) jwks_max_age: Duration,
    #[serde(deserialize_with = "values::positive_duration")]
    pub(crate) jwks_timeout: Duration,
    #[serde(deserialize_with = "values::string_list")]
    pub(crate) algorithms: Vec<String>,
    #[serde(deserialize_with = "values::duration")]
    pub(crate) leeway: Duration,
    #[serde(deserialize_with = "values::string_list")]
    pub(crate) issuer: Vec<String>,
    #[serde(deserialize_with = "values::string_list")]
    pub(crate) audience: Vec<String>,
    #[serde(deserialize_with = "values::boolean")]
    pub(crate) require_exp: bool,
}

/// `[auth.tickets]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TicketSettings {
    #[serde(deserialize_with = "values::positive_duration")]
    pub(crate) ttl: Duration,
    #[serde(deserialize_with = "values::positive_count")]
    pub(crate) max_outstanding: usize,
}

/// `[auth.connect_proxy]`: on when `url` is set; the other keys apply then.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ConnectProxySettings {
    /// May carry credentials (redacted when printed).
    #[serde(deserialize_with = "optional_string")]
    pub(crate) url: Option<String>,
    #[serde(deserialize_with = "values::positive_duration")]
    pub(crate) timeout: Duration,
    #[serde(deserialize_with = "values::duration")]
    pub(crate) cache_ttl: Duration,
    #[serde(deserialize_with = "values::count")]
    pub(crate) cache_size: usize,
    #[serde(deserialize_with = "values::size")]
    pub(crate) max_response_bytes: usize,
}

/// One `[[auth.permissions]]` rule: the auth crate's [`PermissionRule`] (its table form, parsed
/// by the auth crate) or the text form `PATTERN=ALLOW[/ACTION+ACTION...]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "PermissionRule")]
pub(crate) struct PermissionSetting {
    pub(crate) rooms: String,
    pub(crate) actions: Vec<Action>,
    pub(crate) allow: Allow,
}

impl From<PermissionRule> for PermissionSetting {
    fn from(rule: PermissionRule) -> Self {
        PermissionSetting {
            rooms: rule.rooms,
            actions: rule.actions,
            allow: rule.allow,
        }
    }
}

const ALL_ACTIONS: [Action; 4] = [
    Action::Subscribe,
    Action::Publish,
    Action::History,
    Action::Presence,
];

impl Rule for PermissionSetting {
    const FORM: &'static str = "PATTERN=ALLOW[/ACTION+ACTION...]";

    /// `user:*=match:user:{sub}`, `news:*=anyone/subscribe+history`, `admin:*=nobody`.
    fn parse(text: &str) -> Result<Self, String> {
        let err = || format!("expected {}, got {text:?}", Self::FORM);
        let (rooms, rest) = text.trim().rsplit_once('=').ok_or_else(err)?;
        if rooms.is_empty() {
            return Err(format!("empty PATTERN in {text:?}"));
        }
        // A `/` after the ALLOW word starts the actions (a match template with a `/` needs the
        // table form).
        let (allow, actions) = match rest.rsplit_once('/') {
            Some((allow, actions)) => (allow, Some(actions)),
            None => (rest, None),
        };
        let allow = parse_allow(allow).map_err(|e| format!("{e} in {text:?}"))?;
        let actions = match actions {
            None => ALL_ACTIONS.to_vec(),
            Some(list) => list
                .split('+')
                .map(|a| parse_action(a).map_err(|e| format!("{e} in {text:?}")))
                .collect::<Result<_, _>>()?,
        };
        Ok(PermissionSetting {
            rooms: rooms.to_owned(),
            actions,
            allow,
        })
    }
}

fn parse_allow(text: &str) -> Result<Allow, String> {
    let text = text.trim();
    if let Some(template) = text.strip_prefix("match:") {
        if template.is_empty() {
            return Err("empty match template".to_owned());
        }
        return Ok(Allow::Match(template.to_owned()));
    }
    Allow::deserialize(de::value::StrDeserializer::<de::value::Error>::new(text)).map_err(|_| {
        format!(
            "expected ALLOW to be anyone, authenticated, nobody, channels or match:TEMPLATE, \
             got {text:?}"
        )
    })
}

fn parse_action(text: &str) -> Result<Action, String> {
    let text = text.trim();
    Action::deserialize(de::value::StrDeserializer::<de::value::Error>::new(text)).map_err(|_| {
        format!("expected an action (subscribe, publish, history, presence), got {text:?}")
    })
}

/// The name of an action, as written in a rule.
pub(crate) fn action_name(action: Action) -> &'static str {
    match action {
        Action::Subscribe => "subscribe",
        Action::Publish => "publish",
        Action::History => "history",
        Action::Presence => "presence",
    }
}

/// A rule's `allow` as TOML: `"anyone"`, or `{ match = "user:{sub}" }`.
pub(crate) fn allow_value(allow: &Allow) -> toml::Value {
    let word = |w: &str| toml::Value::String(w.to_owned());
    match allow {
        Allow::Anyone => word("anyone"),
        Allow::Authenticated => word("authenticated"),
        Allow::Nobody => word("nobody"),
        Allow::Channels => word("channels"),
        Allow::Match(template) => {
            let mut t = toml::Table::new();
            t.insert("match".into(), word(template));
            toml::Value::Table(t)
        }
    }
}

impl PermissionSetting {
    /// Whether the rule covers every action (its `actions` can be left out).
    pub(crate) fn all_actions(&self) -> bool {
        ALL_ACTIONS.iter().all(|a| self.actions.contains(a))
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        // The auth crate's defaults: one source of truth.
        let c = AuthConfig::default();
        let proxy = ConnectProxyConfig::default();
        AuthSettings {
            anonymous: c.anonymous,
            cookie_name: c.cookie_name,
            allowed_origins: c.allowed_origins,
            permissions: Vec::new(),
            sources: SourcesSettings {
                header: c.sources.header,
                query: c.sources.query,
                ticket: c.sources.ticket,
                cookie: c.sources.cookie,
                first_message: c.sources.first_message,
            },
            jwt: JwtSettings {
                secrets: c.jwt.secrets,
                public_key_files: c.jwt.public_key_files,
                jwks_file: c.jwt.jwks_file,
                jwks_url: c.jwt.jwks_url,
                jwks_refetch_interval: c.jwt.jwks_refetch_interval,
                jwks_max_age: c.jwt.jwks_max_age,
                jwks_timeout: c.jwt.jwks_timeout,
                algorithms: c.jwt.algorithms,
                leeway: c.jwt.leeway,
                issuer: c.jwt.issuer,
                audience: c.jwt.audience,
                require_exp: c.jwt.require_exp,
            },
            tickets: TicketSettings {
                ttl: c.tickets.ttl,
                max_outstanding: c.tickets.max_outstanding,
            },
            connect_proxy: ConnectProxySettings {
                url: None,
                timeout: proxy.timeout,
                cache_ttl: proxy.cache_ttl,
                cache_size: proxy.cache_size,
                max_response_bytes: proxy.max_response_bytes,
            },
        }
    }
}

impl Default for SourcesSettings {
    fn default() -> Self {
        AuthSettings::default().sources
    }
}

impl Default for JwtSettings {
    fn default() -> Self {
        AuthSettings::default().jwt
    }
}

impl Default for TicketSettings {
    fn default() -> Self {
        AuthSettings::default().tickets
    }
}

impl Default for ConnectProxySettings {
    fn default() -> Self {
        AuthSettings::default().connect_proxy
    }
}

impl AuthSettings {
    /// Whether any auth setting differs from its default (else the server runs without an
    /// authenticator, as before issue 11).
    pub(crate) fn is_configured(&self) -> bool {
        *self != AuthSettings::default()
    }

    /// The auth crate's configuration.
    pub(crate) fn config(&self) -> AuthConfig {
        let j = &self.jwt;
        let p = &self.connect_proxy;
        AuthConfig {
            anonymous: self.anonymous,
            sources: SourcesConfig {
                header: self.sources.header,
                query: self.sources.query,
                ticket: self.sources.ticket,
                cookie: self.sources.cookie,
                first_message: self.sources.first_message,
            },
            cookie_name: self.cookie_name.clone(),
            jwt: JwtConfig {
                secrets: j.secrets.clone(),
                public_key_files: j.public_key_files.clone(),
                jwks_file: j.jwks_file.clone(),
                jwks_url: j.jwks_url.clone(),
                jwks_refetch_interval: j.jwks_refetch_interval,
                jwks_max_age: j.jwks_max_age,
                jwks_timeout: j.jwks_timeout,
                algorithms: j.algorithms.clone(),
                leeway: j.leeway,
                issuer: j.issuer.clone(),
                audience: j.audience.clone(),
                require_exp: j.require_exp,
            },
            tickets: TicketConfig {
                ttl: self.tickets.ttl,
                max_outstanding: self.tickets.max_outstanding,
            },
            allowed_origins: self.allowed_origins.clone(),
            permissions: self
                .permissions
                .iter()
                .map(|r| PermissionRule {
                    rooms: r.rooms.clone(),
                    actions: r.actions.clone(),
                    allow: r.allow.clone(),
                })
                .collect(),
            connect_proxy: p.url.as_ref().map(|url| ConnectProxyConfig {
                url: url.clone(),
                timeout: p.timeout,
                cache_ttl: p.cache_ttl,
                cache_size: p.cache_size,
                max_response_bytes: p.max_response_bytes,
            }),
        }
    }

    /// The authenticator, `None` when nothing is configured. An error is (key, message): each
    /// fallible key is tried alone first, so the message names the one at fault.
    pub(crate) fn authenticator(&self) -> Result<Option<Arc<Authenticator>>, (String, String)> {
        if !self.is_configured() {
            return Ok(None);
        }
        self.check_each_key()?;
        let config = self.config();
        Authenticator::new(&config)
            .map(|a| Some(Arc::new(a)))
            .map_err(|e| ("auth".to_owned(), self.scrub(e.to_string())))
    }

    fn check_each_key(&self) -> Result<(), (String, String)> {
        let jwt = |key: String, config: JwtConfig| {
            JwtVerifier::new(&config)
                .map(drop)
                .map_err(|e| (key, self.scrub(e.to_string())))
        };
        for (i, secret) in self.jwt.secrets.iter().enumerate() {
            jwt(
                format!("auth.jwt.secrets[{i}]"),
                JwtConfig {
                    secrets: vec![secret.clone()],
                    ..JwtConfig::default()
                },
            )?;
        }
        for (i, path) in self.jwt.public_key_files.iter().enumerate() {
            jwt(
                format!("auth.jwt.public_key_files[{i}]"),
                JwtConfig {
                    public_key_files: vec![path.clone()],
                    ..JwtConfig::default()
                },
            )?;
        }
        if let Some(path) = &self.jwt.jwks_file {
            // Read on first use by the verifier; a missing file is better found now.
            std::fs::metadata(path)
                .and_then(|m| {
                    if m.is_file() {
                        Ok(())
                    } else {
                        Err(std::io::Error::other("not a file"))
                    }
                })
                .map_err(|e| {
                    (
                        "auth.jwt.jwks_file".to_owned(),
                        format!("{}: {e}", path.display()),
                    )
                })?;
        }
        if self.jwt.jwks_url.is_some() {
            if self.jwt.jwks_file.is_some() {
                return Err((
                    "auth.jwt.jwks_url".to_owned(),
                    "set auth.jwt.jwks_file or auth.jwt.jwks_url, not both".to_owned(),
                ));
            }
            jwt(
                "auth.jwt.jwks_url".to_owned(),
                JwtConfig {
                    jwks_url: self.jwt.jwks_url.clone(),
                    ..JwtConfig::default()
                },
            )?;
        }
        if !self.jwt.algorithms.is_empty() {
            jwt(
                "auth.jwt.algorithms".to_owned(),
                JwtConfig {
                    algorithms: self.jwt.algorithms.clone(),
                    ..JwtConfig::default()
                },
            )?;
        }
        for (i, rule) in self.permissions.iter().enumerate() {
            if rule.rooms.trim().is_empty() {
                return Err((
                    format!("auth.permissions[{i}].rooms"),
                    "empty pattern".to_owned(),
                ));
            }
            if rule.actions.is_empty() {
                return Err((
                    format!("auth.permissions[{i}].actions"),
                    "empty: leave it out for every action".to_owned(),
                ));
            }
        }
        OriginPolicy::new(&self.allowed_origins)
            .map_err(|e| ("auth.allowed_origins".to_owned(), e.to_string()))?;
        if let Some(config) = self.config().connect_proxy {
            ConnectProxy::new(&config).map_err(|e| {
                (
                    "auth.connect_proxy.url".to_owned(),
                    self.scrub(e.to_string()),
                )
            })?;
        }
        Ok(())
    }

    /// An error message with the URLs' credentials redacted (the auth crate quotes them).
    fn scrub(&self, mut message: String) -> String {
        for url in [&self.jwt.jwks_url, &self.connect_proxy.url]
            .into_iter()
            .flatten()
        {
            if !url.is_empty() {
                message = message.replace(url.as_str(), &redact_url(url));
            }
        }
        message
    }
}

/// `url` with its user info and query replaced by `[redacted]` (credentials hide there).
pub(crate) fn redact_url(url: &str) -> String {
    const REDACTED: &str = "[redacted]";
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("{REDACTED}@{host}"),
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, _)) => format!("{path}?{REDACTED}"),
        None => tail.to_owned(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

/// `true`, `false`, or `"auto"` (`None`).
fn anonymous<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    values::scalar(
        d,
        values::Scalar {
            expecting: "true, false or \"auto\"",
            int: None,
            boolean: Some(|b| Ok(Some(b))),
            text: |s| match s.trim() {
                "true" => Ok(Some(true)),
                "false" => Ok(Some(false)),
                "auto" => Ok(None),
                _ => Err(format!("expected true, false or \"auto\", got {s:?}")),
            },
        },
    )
}

fn non_empty_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = values::string(d)?;
    if s.trim().is_empty() {
        Err(de::Error::custom("must not be empty"))
    } else {
        Ok(s)
    }
}

/// A string; empty means unset.
fn optional_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = values::string(d)?;
    Ok((!s.trim().is_empty()).then_some(s))
}

/// A list of paths (array or comma-separated string).
fn path_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    Ok(values::string_list(d)?
        .into_iter()
        .map(PathBuf::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_auth_crates() {
        assert_eq!(
            format!("{:?}", AuthSettings::default().config()),
            format!("{:?}", AuthConfig::default())
        );
        assert!(!AuthSettings::default().is_configured());
        assert!(AuthSettings::default().authenticator().unwrap().is_none());
    }

    #[test]
    fn permission_rules_parse_from_their_text_form() {
        let rule = PermissionSetting::parse("user:*=match:user:{sub}").unwrap();
        assert_eq!(rule.rooms, "user:*");
        assert_eq!(rule.allow, Allow::Match("user:{sub}".into()));
        assert!(rule.all_actions());
        let rule = PermissionSetting::parse("news:*=anyone/subscribe+history").unwrap();
        assert_eq!(rule.allow, Allow::Anyone);
        assert_eq!(rule.actions, [Action::Subscribe, Action::History]);
        let rule = PermissionSetting::parse("a=channels/join").unwrap();
        assert_eq!(rule.actions, [Action::Subscribe]);
        for bad in [
            "chat:*",
            "=anyone",
            "x=everyone",
            "x=anyone/shout",
            "x=match:",
        ] {
            assert!(PermissionSetting::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("https://user:pw@idp.example.com/jwks?key=s3cret"),
            "https://[redacted]@idp.example.com/jwks?[redacted]"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:3000/connect"),
            "http://127.0.0.1:3000/connect"
        );
        assert_eq!(redact_url("http://a@b"), "http://[redacted]@b");
    }
}
