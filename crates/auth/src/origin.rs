//! The `Origin` check at the handshake (SPEC §4), against cross-site WebSocket hijacking: a page
//! on another site can open a WebSocket to us with the user's cookies; only the `Origin` header,
//! which browsers set and scripts cannot, tells us it happened.

use crate::error::ConfigError;

/// The outcome of [`OriginPolicy::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginDecision {
    /// No `Origin` header: not a browser, so no cross-site risk.
    NoOrigin,
    /// `Origin` names the host the request was sent to.
    SameOrigin,
    /// `Origin` matches an allowlist entry.
    Listed,
    /// Refuse: 403 at the handshake (SPEC §4).
    Refused,
}

impl OriginDecision {
    /// Whether the request may go on.
    pub fn is_allowed(self) -> bool {
        self != OriginDecision::Refused
    }
}

/// The compiled allowlist.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    any: bool,
    patterns: Vec<OriginPattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct OriginPattern {
    scheme: String,
    /// Exact host, or the suffix after `*.` (which then needs at least one more label).
    host: HostPattern,
    /// `None`: the scheme's default port (no port in the origin); `Some(None)`: any port.
    port: Option<Option<u16>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    Subdomain(String),
    /// The literal `null` origin (sandboxed iframes, `file:`), only when listed as `null`.
    Null,
}

impl OriginPolicy {
    /// Compiles patterns: `*`, `null`, `scheme://host[:port]` with `*.` before the host and
    /// `:*` as the port allowed. Case-insensitive; trailing slashes tolerated.
    pub fn new(patterns: &[String]) -> Result<OriginPolicy, ConfigError> {
        let mut policy = OriginPolicy {
            any: false,
            patterns: Vec::new(),
        };
        for pattern in patterns {
            let p = pattern.trim().trim_end_matches('/').to_ascii_lowercase();
            if p == "*" {
                policy.any = true;
                continue;
            }
            if p == "null" {
                policy.patterns.push(OriginPattern {
                    scheme: String::new(),
                    host: HostPattern::Null,
                    port: None,
                });
                continue;
            }
            let parsed = parse(&p).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "origin pattern {pattern:?}: expected scheme://host[:port], *.host, :* or *"
                ))
            })?;
            let host = match parsed.host.strip_prefix("*.") {
                Some(suffix) if !suffix.is_empty() && !suffix.contains('*') => {
                    HostPattern::Subdomain(suffix.to_owned())
                }
                Some(_) => {
                    return Err(ConfigError::Invalid(format!(
                        "origin pattern {pattern:?}: bad wildcard"
                    )))
                }
                None if parsed.host.contains('*') => {
                    return Err(ConfigError::Invalid(format!(
                        "origin pattern {pattern:?}: `*` only as `*.` before the host"
                    )));
                }
                None => HostPattern::Exact(parsed.host.to_owned()),
            };
            let port = match parsed.port {
                None => None,
                Some("*") => Some(None),
                Some(n) => Some(Some(n.parse().map_err(|_| {
                    ConfigError::Invalid(format!("origin pattern {pattern:?}: bad port"))
                })?)),
            };
            policy.patterns.push(OriginPattern {
                scheme: parsed.scheme.to_owned(),
                host,
                port,
            });
        }
        Ok(policy)
    }

    /// Decides on a request's `Origin` and `Host` header values (`Host`, or `:authority` for
    /// HTTP/2). Scheme is not compared for same-origin: behind a TLS-terminating proxy we cannot
    /// know ours.
    pub fn check(&self, origin: Option<&str>, host: Option<&str>) -> OriginDecision {
        self.check_with(origin, host, self.any)
    }

    /// [`OriginPolicy::check`] for a request whose credential the browser adds by itself (a
    /// cookie): `*` does not count, only same-origin and explicitly listed origins pass. A page
    /// of any site can make the browser send the user's cookie (a WebSocket, a `no-cors` POST),
    /// so "any origin" would let every site act as the user (cross-site WebSocket hijacking,
    /// CSRF). Token credentials need no such rule: a page of another site does not have them.
    pub fn check_ambient(&self, origin: Option<&str>, host: Option<&str>) -> OriginDecision {
        self.check_with(origin, host, false)
    }

    fn check_with(&self, origin: Option<&str>, host: Option<&str>, any: bool) -> OriginDecision {
        let Some(origin) = origin.map(str::trim) else {
            return OriginDecision::NoOrigin;
        };
        let lower = origin.to_ascii_lowercase();
        let parsed = parse(&lower);
        if let (Some(o), Some(host)) = (&parsed, host) {
            if same_host(o, &host.trim().to_ascii_lowercase()) {
                return OriginDecision::SameOrigin;
            }
        }
        if any {
            return OriginDecision::Listed;
        }
        let listed = match &parsed {
            None => lower == "null" && self.patterns.iter().any(|p| p.host == HostPattern::Null),
            Some(o) => self.patterns.iter().any(|p| p.matches(o)),
        };
        if listed {
            OriginDecision::Listed
        } else {
            OriginDecision::Refused
        }
    }
}

impl OriginPattern {
    fn matches(&self, o: &Parsed<'_>) -> bool {
        if self.scheme != o.scheme {
            return false;
        }
        let host_ok = match &self.host {
            HostPattern::Exact(h) => h == o.host,
            // `*.example.com` covers `a.example.com` and `a.b.example.com`, not `example.com`
            // and not `badexample.com`.
            HostPattern::Subdomain(suffix) => o
                .host
                .strip_suffix(suffix.as_str())
                .and_then(|head| head.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty()),
            HostPattern::Null => false,
        };
        let port_ok = match self.port {
            Some(None) => true,
            Some(Some(port)) => o.port_number() == Some(port),
            None => o.port.is_none() || o.port_number() == default_port(o.scheme),
        };
        host_ok && port_ok
    }
}

struct Parsed<'a> {
    scheme: &'a str,
    host: &'a str,
    port: Option<&'a str>,
}

impl Parsed<'_> {
    fn port_number(&self) -> Option<u16> {
        match self.port {
            Some(p) => p.parse().ok(),
            None => default_port(self.scheme),
        }
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// `scheme://host[:port]`, IPv6 hosts in brackets. Anything with a path, user info or query is
/// not an origin.
fn parse(text: &str) -> Option<Parsed<'_>> {
    let (scheme, rest) = text.split_once("://")?;
    if scheme.is_empty() || rest.is_empty() || rest.contains(['/', '@', '?', '#']) {
        return None;
    }
    let (host, port) = split_host_port(rest)?;
    Some(Parsed { scheme, host, port })
}

fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(port) => Some((host, Some(port))),
            None if rest.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => Some((host, Some(port))),
        Some(_) => None,
        None => Some((authority, None)),
    }
}

/// Whether the origin's host and port equal the `Host` header's (default ports filled in).
fn same_host(o: &Parsed<'_>, host_header: &str) -> bool {
    let Some((host, port)) = split_host_port(host_header) else {
        return false;
    };
    let port = match port {
        Some(p) => p.parse().ok(),
        None => default_port(o.scheme),
    };
    host == o.host && port.is_some() && port == o.port_number()
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_wildcard_does_not_admit_ambient_credentials_from_other_origins() {
        let any =
            OriginPolicy::new(&["*".to_owned(), "https://app.example.com".to_owned()]).unwrap();
        let host = Some("sb.example.com");
        assert!(any.check(Some("https://evil.example"), host).is_allowed());
        assert_eq!(
            any.check_ambient(Some("https://evil.example"), host),
            OriginDecision::Refused
        );
        assert_eq!(
            any.check_ambient(Some("https://app.example.com"), host),
            OriginDecision::Listed
        );
        assert_eq!(
            any.check_ambient(Some("https://sb.example.com"), host),
            OriginDecision::SameOrigin
        );
        assert_eq!(any.check_ambient(None, host), OriginDecision::NoOrigin);
    }

    use super::*;

    fn policy(patterns: &[&str]) -> OriginPolicy {
        OriginPolicy::new(&patterns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn same_origin_is_always_allowed() {
        let p = policy(&[]);
        assert_eq!(
            p.check(Some("https://chat.example.com"), Some("chat.example.com")),
            OriginDecision::SameOrigin
        );
        assert_eq!(
            p.check(Some("http://localhost:8080"), Some("localhost:8080")),
            OriginDecision::SameOrigin
        );
        assert_eq!(
            p.check(
                Some("https://Chat.Example.com"),
                Some("chat.example.com:443")
            ),
            OriginDecision::SameOrigin
        );
        assert_eq!(
            p.check(Some("http://[::1]:8080"), Some("[::1]:8080")),
            OriginDecision::SameOrigin
        );
        assert_eq!(
            p.check(Some("http://localhost:3000"), Some("localhost:8080")),
            OriginDecision::Refused
        );
        assert_eq!(
            p.check(Some("https://evil.com"), Some("chat.example.com")),
            OriginDecision::Refused
        );
    }

    #[test]
    fn requests_without_origin_are_not_browsers_and_pass() {
        assert_eq!(policy(&[]).check(None, Some("x")), OriginDecision::NoOrigin);
        assert!(OriginDecision::NoOrigin.is_allowed());
        assert!(!OriginDecision::Refused.is_allowed());
    }

    #[test]
    fn wildcard_subdomains_need_a_label_and_a_dot() {
        let p = policy(&["https://*.example.com"]);
        assert_eq!(
            p.check(Some("https://app.example.com"), None),
            OriginDecision::Listed
        );
        assert_eq!(
            p.check(Some("https://a.b.example.com"), None),
            OriginDecision::Listed
        );
        assert_eq!(
            p.check(Some("https://example.com"), None),
            OriginDecision::Refused
        );
        assert_eq!(
            p.check(Some("https://badexample.com"), None),
            OriginDecision::Refused
        );
        assert_eq!(
            p.check(Some("http://app.example.com"), None),
            OriginDecision::Refused,
            "scheme differs"
        );
        assert_eq!(
            p.check(Some("https://app.example.com:8443"), None),
            OriginDecision::Refused,
            "port differs"
        );
        assert_eq!(
            p.check(Some("https://app.example.com.evil.com"), None),
            OriginDecision::Refused
        );
    }

    #[test]
    fn exact_origins_ports_and_star() {
        let p = policy(&[
            "https://app.example.com/",
            "http://localhost:*",
            "http://127.0.0.1:3000",
        ]);
        assert_eq!(
            p.check(Some("https://app.example.com"), None),
            OriginDecision::Listed
        );
        assert_eq!(
            p.check(Some("https://app.example.com:443"), None),
            OriginDecision::Listed
        );
        assert_eq!(
            p.check(Some("http://localhost:5173"), None),
            OriginDecision::Listed
        );
        assert_eq!(
            p.check(Some("http://127.0.0.1:3000"), None),
            OriginDecision::Listed
        );
        assert_eq!(
            p.check(Some("http://127.0.0.1:3001"), None),
            OriginDecision::Refused
        );
        assert_eq!(p.check(Some("null"), None), OriginDecision::Refused);
        assert_eq!(p.check(Some("garbage"), None), OriginDecision::Refused);
        assert_eq!(
            policy(&["*"]).check(Some("https://anything.test"), None),
            OriginDecision::Listed
        );
        assert_eq!(
            policy(&["null"]).check(Some("null"), None),
            OriginDecision::Listed
        );
    }

    #[test]
    fn bad_patterns_are_configuration_errors() {
        for bad in [
            "example.com",
            "https://ex*ample.com",
            "https://*.",
            "https://a.com:port",
            "https://a.com/path",
        ] {
            assert!(OriginPolicy::new(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}
