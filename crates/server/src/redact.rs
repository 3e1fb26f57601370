//! Secrets out of logs: credentials in URLs (`?token=…`, SPEC §4) are replaced before a URL
//! is logged anywhere.

use std::borrow::Cow;

/// Query parameters whose values are credentials (compared case-insensitively).
const SECRET_PARAMS: &[&str] = &[
    "token",
    "access_token",
    "auth_token",
    "id_token",
    "refresh_token",
    "accesstoken",
    "jwt",
    "auth",
    "authorization",
    "api_key",
    "apikey",
    "key",
    "password",
    "secret",
    "session",
    "ticket",
    "sid",
];

/// What a redacted value is replaced with.
pub(crate) const REDACTED: &str = "[redacted]";

/// `path_and_query` with the value of every credential parameter replaced by
/// [`REDACTED`]. Borrowed when there is nothing to redact.
pub(crate) fn redact_path_and_query(path_and_query: &str) -> Cow<'_, str> {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return Cow::Borrowed(path_and_query);
    };
    let is_secret = |pair: &str| {
        let name = percent_decoded(pair.split_once('=').map_or(pair, |(n, _)| n));
        SECRET_PARAMS.iter().any(|s| s.eq_ignore_ascii_case(&name))
    };
    if !query
        .split('&')
        .any(|pair| pair.contains('=') && is_secret(pair))
    {
        return Cow::Borrowed(path_and_query);
    }
    let mut out = String::with_capacity(path_and_query.len());
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, _)) if is_secret(pair) => {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(pair),
        }
    }
    Cow::Owned(out)
}

/// `name` with `%XX` escapes decoded (`%74oken` is `token` to any query parser).
fn percent_decoded(name: &str) -> Cow<'_, str> {
    if !name.contains('%') {
        return Cow::Borrowed(name);
    }
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted_and_everything_else_kept() {
        assert_eq!(redact_path_and_query("/ws"), "/ws");
        assert_eq!(redact_path_and_query("/ws?room=a&x"), "/ws?room=a&x");
        assert_eq!(
            redact_path_and_query("/ws?token=eyJhbGciOi.abc.def&room=a"),
            "/ws?token=[redacted]&room=a"
        );
        assert_eq!(
            redact_path_and_query("/sse?room=a&Access_Token=s3cret&API_KEY=k"),
            "/sse?room=a&Access_Token=[redacted]&API_KEY=[redacted]"
        );
        assert_eq!(
            redact_path_and_query("/ws?%74oken=abc&refresh_token=r"),
            "/ws?%74oken=[redacted]&refresh_token=[redacted]"
        );
        // A parameter that merely contains a secret name is not a secret.
        assert_eq!(
            redact_path_and_query("/events?ticket=abc&channels=a"),
            "/events?ticket=[redacted]&channels=a"
        );
        assert_eq!(
            redact_path_and_query("/ws?tokenizer=x&monkey=y"),
            "/ws?tokenizer=x&monkey=y"
        );
    }
}
