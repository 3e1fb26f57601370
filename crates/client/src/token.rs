//! When a token expires, read from the JWT without verifying it (the server verifies; the
//! client only needs to know when to ask for a fresh one).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

/// The `exp` claim of `token` as seconds since the epoch, when `token` is a JWT with one.
pub(crate) fn expires_at(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_u64()
}

/// How long from now to refresh a token that expires at `exp`: at 80 % of the time left,
/// and at least 2 s before the end (never negative).
pub(crate) fn refresh_in(exp: u64, now: SystemTime) -> Duration {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let left = Duration::from_secs(exp).saturating_sub(now);
    let early = left.mul_f64(0.8);
    early.min(left.saturating_sub(Duration::from_secs(2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", enc(r#"{"alg":"HS256"}"#), enc(claims))
    }

    #[test]
    fn the_expiry_is_read_from_the_claims() {
        assert_eq!(
            expires_at(&jwt(r#"{"sub":"u","exp":1700000000}"#)),
            Some(1_700_000_000)
        );
        assert_eq!(expires_at(&jwt(r#"{"sub":"u"}"#)), None);
        assert_eq!(expires_at("not a jwt"), None);
        assert_eq!(expires_at("a.!!!.c"), None);
    }

    #[test]
    fn refresh_comes_before_the_end() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(refresh_in(1100, now), Duration::from_secs(80));
        assert_eq!(refresh_in(1003, now), Duration::from_secs(1));
        assert_eq!(refresh_in(900, now), Duration::ZERO);
    }
}
