//! `switchboard token`: a development JWT, signed with the configured HMAC secret (or
//! `--secret`), so the whole authentication flow can be tried without an identity provider.

use std::str::FromStr;
use std::time::Duration;

use serde_json::{Map, Value};
use switchboard_auth::{parse_duration, secret_bytes, Algorithm};

use crate::settings::Settings;
use crate::SettingsArgs;

const HMAC: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// `switchboard token` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct TokenArgs {
    /// The user id (the `sub` claim).
    #[arg(long, value_name = "USER")]
    pub(crate) sub: String,
    /// How long the token is valid (sets `exp`), e.g. 30s, 15m, 1h, 7d.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub(crate) ttl: String,
    /// An extra claim; VALUE is JSON when it parses as JSON (5, true, ["chat:*"]), else a
    /// string (repeatable). `iss` and `aud` default to the first configured issuer and
    /// audience.
    #[arg(long = "claim", value_name = "NAME=VALUE")]
    pub(crate) claims: Vec<String>,
    /// Sign with this HMAC secret ("base64:..." for binary) instead of the configured one
    /// (auth.jwt.secrets[0]).
    #[arg(long, value_name = "SECRET")]
    pub(crate) secret: Option<String>,
    /// HS256, HS384 or HS512 [default: the first HS* in auth.jwt.algorithms, else HS256].
    #[arg(long, value_name = "ALG")]
    pub(crate) alg: Option<String>,
    #[command(flatten)]
    pub(crate) settings: SettingsArgs,
}

/// The signed token, or a message for an exit with status 2.
pub(crate) fn mint(args: &TokenArgs, settings: &Settings) -> Result<String, String> {
    let jwt = &settings.auth.jwt;
    let secret = match (&args.secret, jwt.secrets.first()) {
        (Some(secret), _) => secret,
        (None, Some(secret)) => secret,
        (None, None) => {
            return Err(
                "no JWT secret to sign with: configure auth.jwt.secrets (--jwt-secret, \
                 SWITCHBOARD_JWT_SECRET, or [auth.jwt] secrets in the file) or pass --secret"
                    .to_owned(),
            )
        }
    };
    let secret = secret_bytes(secret).map_err(|e| format!("--secret: {e}"))?;
    let alg = match &args.alg {
        Some(name) => Algorithm::from_str(name.trim())
            .ok()
            .filter(|a| HMAC.contains(a))
            .ok_or_else(|| format!("--alg: expected HS256, HS384 or HS512, got {name:?}"))?,
        None => jwt
            .algorithms
            .iter()
            .filter_map(|name| Algorithm::from_str(name).ok())
            .find(|a| HMAC.contains(a))
            .unwrap_or(Algorithm::HS256),
    };
    let ttl = parse_ttl(&args.ttl)?;
    let mut claims = Map::new();
    if let Some(issuer) = jwt.issuer.first() {
        claims.insert("iss".into(), Value::String(issuer.clone()));
    }
    if let Some(audience) = jwt.audience.first() {
        claims.insert("aud".into(), Value::String(audience.clone()));
    }
    for claim in &args.claims {
        let (name, value) = parse_claim(claim)?;
        claims.insert(name, value);
    }
    switchboard_auth::mint(&secret, alg, &args.sub, ttl, claims).map_err(|e| e.to_string())
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = parse_duration(text).map_err(|e| format!("--ttl: {e}"))?;
    if ttl.as_secs() == 0 {
        return Err(format!("--ttl: must be at least 1s, got {text:?}"));
    }
    Ok(ttl)
}

/// `NAME=VALUE`, VALUE as JSON if it is JSON, else as a string.
fn parse_claim(text: &str) -> Result<(String, Value), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("--claim: expected NAME=VALUE, got {text:?}"))?;
    let name = name.trim();
    match name {
        "" => return Err(format!("--claim: empty NAME in {text:?}")),
        "sub" => return Err("--claim sub: set the user id with --sub".to_owned()),
        "exp" | "iat" => return Err(format!("--claim {name}: set the lifetime with --ttl")),
        _ => {}
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((name.to_owned(), value))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn claims_are_json_when_they_parse_else_strings() {
        let claim = |t| parse_claim(t).unwrap();
        assert_eq!(claim("n=5"), ("n".into(), Value::from(5)));
        assert_eq!(claim("admin=true"), ("admin".into(), Value::Bool(true)));
        assert_eq!(
            claim(r#"channels=["chat:*"]"#),
            ("channels".into(), serde_json::json!(["chat:*"]))
        );
        assert_eq!(claim("name=alice"), ("name".into(), Value::from("alice")));
        assert_eq!(claim("id=007"), ("id".into(), Value::from("007")));
        assert_eq!(claim("eq=a=b"), ("eq".into(), Value::from("a=b")));
        assert_eq!(claim("empty="), ("empty".into(), Value::from("")));
        for bad in ["novalue", "=x", "sub=bob", "exp=1", "iat=1"] {
            assert!(parse_claim(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ttls_are_positive_durations() {
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("soon").is_err());
    }
}
