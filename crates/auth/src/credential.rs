//! Finding the credential in a request: header, query, ticket, cookie (SPEC §4), and the
//! first-message flow's token, which the session hands over itself.

use std::fmt;

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, Uri};

use crate::config::SourcesConfig;

/// Where a credential was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialSource {
    /// `Authorization: Bearer`.
    Header,
    /// `?token=`.
    Query,
    /// `?ticket=`.
    Ticket,
    /// The configured cookie.
    Cookie,
    /// `auth {token}` as the first WebSocket message (built by the session, not extracted here).
    FirstMessage,
    /// `refresh {token}` on an open connection.
    Refresh,
}

impl CredentialSource {
    /// A label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialSource::Header => "header",
            CredentialSource::Query => "query",
            CredentialSource::Ticket => "ticket",
            CredentialSource::Cookie => "cookie",
            CredentialSource::FirstMessage => "first_message",
            CredentialSource::Refresh => "refresh",
        }
    }
}

/// A credential and where it came from. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    secret: String,
    source: CredentialSource,
}

impl Credential {
    /// A credential from `source`: a token, a ticket (`Ticket`) or a cookie value (`Cookie`).
    pub fn new(secret: impl Into<String>, source: CredentialSource) -> Credential {
        Credential {
            secret: secret.into(),
            source,
        }
    }

    /// The token, ticket or cookie value.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Where it was found.
    pub fn source(&self) -> CredentialSource {
        self.source
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("source", &self.source)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Looks for a credential in a request's headers and URI, in a fixed order: header, ticket,
/// query token, cookie; the first enabled source that has one wins. An `Authorization` header of
/// another scheme (`Basic`) is not ours and is skipped. Empty values count as absent.
///
/// The order puts explicit credentials before the ambient cookie, so a page that deliberately
/// sends a token is not overridden by a stale session cookie.
pub fn extract(
    headers: &HeaderMap,
    uri: &Uri,
    sources: &SourcesConfig,
    cookie_name: &str,
) -> Option<Credential> {
    if sources.header {
        if let Some(token) = bearer(headers) {
            return Some(Credential::new(token, CredentialSource::Header));
        }
    }
    if sources.ticket || sources.query {
        let (ticket, token) = query_credentials(uri);
        if sources.ticket {
            if let Some(ticket) = ticket {
                return Some(Credential::new(ticket, CredentialSource::Ticket));
            }
        }
        if sources.query {
            if let Some(token) = token {
                return Some(Credential::new(token, CredentialSource::Query));
            }
        }
    }
    if sources.cookie {
        if let Some(value) = cookie(headers, cookie_name) {
            return Some(Credential::new(value, CredentialSource::Cookie));
        }
    }
    None
}

/// The token of the first `Authorization: Bearer` header (scheme case-insensitive, RFC 9110 §11.1).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get_all(AUTHORIZATION).iter().find_map(|value| {
        let value = value.to_str().ok()?.trim();
        let (scheme, token) = value.split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    })
}

/// `ticket` and `token` from the query string, percent-decoded.
fn query_credentials(uri: &Uri) -> (Option<String>, Option<String>) {
    let (mut ticket, mut token) = (None, None);
    for (key, value) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        if value.is_empty() {
            continue;
        }
        match key.as_ref() {
            "ticket" if ticket.is_none() => ticket = Some(value.into_owned()),
            "token" if token.is_none() => token = Some(value.into_owned()),
            _ => {}
        }
    }
    (ticket, token)
}

/// The value of cookie `name` from every `Cookie` header, surrounding quotes removed and
/// percent-decoded as the npm `cookie` package the seeds use does (`s%3Aabc` → `s:abc`).
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    fn all() -> SourcesConfig {
        SourcesConfig::default()
    }

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn bearer_header_wins_and_reports_its_source() {
        let h = headers(&[
            ("authorization", "Bearer abc.def.ghi"),
            ("cookie", "session=zzz"),
        ]);
        let c = extract(&h, &uri("/ws?token=qqq"), &all(), "session").unwrap();
        assert_eq!(
            (c.secret(), c.source()),
            ("abc.def.ghi", CredentialSource::Header)
        );
        let lower = headers(&[("authorization", "bearer  tok ")]);
        assert_eq!(bearer(&lower), Some("tok"));
        assert_eq!(
            bearer(&headers(&[("authorization", "Basic dXNlcjpwdw==")])),
            None
        );
        assert_eq!(bearer(&headers(&[("authorization", "Bearer ")])), None);
    }

    #[test]
    fn query_token_and_ticket_are_percent_decoded_ticket_first() {
        let c = extract(
            &HeaderMap::new(),
            &uri("/ws?room=a&token=a%2Eb%2Bc"),
            &all(),
            "session",
        )
        .unwrap();
        assert_eq!((c.secret(), c.source()), ("a.b+c", CredentialSource::Query));
        let c = extract(
            &HeaderMap::new(),
            &uri("/ws?token=t&ticket=k"),
            &all(),
            "session",
        )
        .unwrap();
        assert_eq!((c.secret(), c.source()), ("k", CredentialSource::Ticket));
        assert!(extract(&HeaderMap::new(), &uri("/ws?token="), &all(), "session").is_none());
    }

    #[test]
    fn cookie_is_found_by_its_configured_name() {
        let h = headers(&[
            ("cookie", "theme=dark; session=\"s%3Aabc\""),
            ("cookie", "sid=other"),
        ]);
        let c = extract(&h, &uri("/ws"), &all(), "session").unwrap();
        assert_eq!(
            (c.secret(), c.source()),
            ("s:abc", CredentialSource::Cookie)
        );
        let c = extract(&h, &uri("/ws"), &all(), "sid").unwrap();
        assert_eq!(c.secret(), "other");
        assert!(extract(&h, &uri("/ws"), &all(), "missing").is_none());
        assert!(cookie(&headers(&[("cookie", "xsession=1")]), "session").is_none());
    }

    #[test]
    fn disabled_sources_are_ignored() {
        let h = headers(&[("authorization", "Bearer h"), ("cookie", "session=c")]);
        let u = uri("/ws?token=q&ticket=t");
        let only = |f: fn(&mut SourcesConfig)| {
            let mut s = SourcesConfig {
                header: false,
                query: false,
                ticket: false,
                cookie: false,
                first_message: false,
            };
            f(&mut s);
            extract(&h, &u, &s, "session").map(|c| c.source())
        };
        assert_eq!(only(|_| {}), None);
        assert_eq!(only(|s| s.query = true), Some(CredentialSource::Query));
        assert_eq!(only(|s| s.ticket = true), Some(CredentialSource::Ticket));
        assert_eq!(only(|s| s.cookie = true), Some(CredentialSource::Cookie));
        assert_eq!(only(|s| s.header = true), Some(CredentialSource::Header));
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let shown = format!(
            "{:?}",
            Credential::new("supersecret", CredentialSource::Query)
        );
        assert!(!shown.contains("supersecret"), "{shown}");
    }
}
