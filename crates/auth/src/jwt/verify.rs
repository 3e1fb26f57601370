//! Verifying a JWT: header, key choice, signature, then claims.
//!
//! The order matters: nothing about the claims (not even "expired") is reported before the
//! signature has verified, so an attacker learns nothing from forged tokens.

use std::str::FromStr;
use std::sync::Arc;

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::jwks::{Jwks, JwksSource};
use super::keys::{self, VerifyKey, EC, ED, HMAC, RSA};
use crate::config::JwtConfig;
use crate::error::{AuthError, ConfigError};
use crate::http_client::HttpClient;
use crate::identity::{AuthMethod, Identity};

/// Verifies tokens against the configured secrets, PEM keys and JWKS.
#[derive(Debug)]
pub struct JwtVerifier {
    static_keys: Vec<VerifyKey>,
    jwks: Option<Jwks>,
    allowed: Vec<Algorithm>,
    leeway: u64,
    issuer: Vec<String>,
    audience: Vec<String>,
    require_exp: bool,
}

impl JwtVerifier {
    /// Loads keys (PEM files are read now, so a bad path fails at startup; a JWKS is fetched on
    /// first use). Fails on unusable keys, unknown algorithm names, or `none`.
    pub fn new(config: &JwtConfig) -> Result<JwtVerifier, ConfigError> {
        JwtVerifier::with_client(config, HttpClient::new())
    }

    pub(crate) fn with_client(
        config: &JwtConfig,
        client: HttpClient,
    ) -> Result<JwtVerifier, ConfigError> {
        let mut static_keys = Vec::new();
        for secret in &config.secrets {
            static_keys.push(keys::secret_key(secret)?);
        }
        for path in &config.public_key_files {
            static_keys.push(keys::pem_file_key(path)?);
        }
        let source = match (&config.jwks_file, &config.jwks_url) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "set jwks_file or jwks_url, not both".into(),
                ))
            }
            (Some(path), None) => Some(JwksSource::File(path.clone())),
            (None, Some(url)) => {
                let uri: http::Uri = url
                    .parse()
                    .map_err(|e| ConfigError::Invalid(format!("jwks_url {url:?}: {e}")))?;
                if !matches!(uri.scheme_str(), Some("http" | "https")) {
                    return Err(ConfigError::Invalid(format!(
                        "jwks_url {url:?}: must be http:// or https://"
                    )));
                }
                Some(JwksSource::Url(uri))
            }
            (None, None) => None,
        };
        let jwks = source.map(|s| {
            Jwks::new(
                s,
                client,
                config.jwks_refetch_interval,
                config.jwks_max_age,
                config.jwks_timeout,
            )
        });

        let allowed = if config.algorithms.is_empty() {
            // Every algorithm some configured key could verify; a JWKS never brings in HMAC.
            let mut families: Vec<&[Algorithm]> =
                static_keys.iter().map(|k| k.algorithms).collect();
            if jwks.is_some() {
                families.extend([RSA, EC, ED]);
            }
            let mut all: Vec<Algorithm> = Vec::new();
            for alg in families.concat() {
                if !all.contains(&alg) {
                    all.push(alg);
                }
            }
            all
        } else {
            config
                .algorithms
                .iter()
                .map(|name| match Algorithm::from_str(name) {
                    Ok(alg) => Ok(alg),
                    Err(_) if name.eq_ignore_ascii_case("none") => Err(ConfigError::Invalid(
                        "jwt algorithm `none` is never accepted".into(),
                    )),
                    Err(_) => Err(ConfigError::Invalid(format!(
                        "unknown jwt algorithm {name:?}"
                    ))),
                })
                .collect::<Result<_, _>>()?
        };
        if allowed.iter().any(|a| HMAC.contains(a)) && config.secrets.is_empty() {
            // Allowed but unverifiable; harmless, but almost certainly a mistake worth a line.
            tracing::warn!("jwt algorithms include HS* but no secret is configured");
        }
        Ok(JwtVerifier {
            static_keys,
            jwks,
            allowed,
            leeway: config.leeway.as_secs(),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            require_exp: config.require_exp,
        })
    }

    /// The accepted algorithms.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.allowed
    }

    /// How many JWKS fetches were attempted so far (0 without a JWKS).
    pub fn jwks_fetch_count(&self) -> u64 {
        self.jwks.as_ref().map_or(0, Jwks::fetch_count)
    }

    /// Verifies `token` at `now` (unix seconds) and returns who it names.
    ///
    /// Async only because a JWKS may need fetching; without one it never waits. Cancel safe.
    pub async fn verify(&self, token: &str, now: u64) -> Result<Identity, AuthError> {
        let alg = self.header_algorithm(token)?;
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        let kid = header.kid.as_deref();

        // Static keys: a key without `kid` is tried for any token; with one, only for its own.
        let fits = |k: &&VerifyKey| k.fits(alg) && (k.kid.is_none() || k.kid.as_deref() == kid);
        let mut candidates: Vec<&VerifyKey> = self.static_keys.iter().filter(fits).collect();
        let jwks_keys: Arc<Vec<VerifyKey>>;
        let mut unknown_kid = false;
        if let Some(jwks) = &self.jwks {
            if !alg_in(alg, HMAC) {
                jwks_keys = jwks.keys(kid).await;
                let before = candidates.len();
                candidates.extend(
                    jwks_keys
                        .iter()
                        .filter(|k| k.fits(alg) && (kid.is_none() || k.kid.as_deref() == kid)),
                );
                unknown_kid = kid.is_some() && candidates.len() == before;
            }
        }
        if candidates.is_empty() {
            return Err(if unknown_kid || kid.is_some() {
                AuthError::UnknownKey(kid.map(str::to_owned))
            } else {
                // The header's algorithm has no key of its family: algorithm confusion lands here.
                AuthError::AlgorithmNotAllowed(format!("{alg:?}"))
            });
        }

        let validation = self.validation(alg);
        let mut last = AuthError::BadSignature;
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => return self.identity(data.claims, now),
                Err(e) => match e.kind() {
                    // Try the next key (rotation: several secrets, several keys without kid).
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidEcdsaKey
                    | ErrorKind::InvalidRsaKey(_)
                    | ErrorKind::Crypto(_) => {
                        last = if unknown_kid {
                            AuthError::UnknownKey(kid.map(str::to_owned))
                        } else {
                            AuthError::BadSignature
                        };
                    }
                    // The signature verified; the claims are wrong: final.
                    ErrorKind::InvalidIssuer => return Err(AuthError::WrongIssuer),
                    ErrorKind::InvalidAudience => return Err(AuthError::WrongAudience),
                    ErrorKind::InvalidAlgorithm => {
                        return Err(AuthError::AlgorithmNotAllowed(format!("{alg:?}")))
                    }
                    _ => return Err(AuthError::Malformed(e.to_string())),
                },
            }
        }
        Err(last)
    }

    /// Reads `alg` from the raw header, so `none` (which the JWT library cannot even represent)
    /// and algorithms outside the allowed set are named in the error.
    fn header_algorithm(&self, token: &str) -> Result<Algorithm, AuthError> {
        let encoded = token.split('.').next().unwrap_or_default();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded.trim_end_matches('='))
            .map_err(|_| AuthError::Malformed("header is not base64url".into()))?;
        let header: Map<String, Value> = serde_json::from_slice(&bytes)
            .map_err(|_| AuthError::Malformed("header is not a JSON object".into()))?;
        let name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| AuthError::Malformed("header has no alg".into()))?;
        match Algorithm::from_str(name) {
            Ok(alg) if self.allowed.contains(&alg) => Ok(alg),
            _ => Err(AuthError::AlgorithmNotAllowed(
                name.chars().take(32).collect(),
            )),
        }
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        // exp/nbf are checked by `identity` against the caller's clock (testable, and with our
        // own leeway arithmetic); the library would read the system clock.
        v.validate_exp = false;
        v.validate_nbf = false;
        v.required_spec_claims.clear();
        v.leeway = 0;
        // The library compares iss/aud when present (and refuses an `aud` when none is
        // configured); their absence is checked by `identity`.
        if !self.issuer.is_empty() {
            v.set_issuer(&self.issuer);
        }
        if !self.audience.is_empty() {
            v.set_audience(&self.audience);
        }
        v
    }

    fn identity(&self, claims: Map<String, Value>, now: u64) -> Result<Identity, AuthError> {
        if let Some(missing) = ["iss", "aud"]
            .into_iter()
            .find(|c| !claims.contains_key(*c) && self.requires(c))
        {
            return Err(if missing == "iss" {
                AuthError::WrongIssuer
            } else {
                AuthError::WrongAudience
            });
        }
        match numeric(&claims, "exp")? {
            Some(exp) if now >= exp.saturating_add(self.leeway) => return Err(AuthError::Expired),
            Some(_) => {}
            None if self.require_exp => return Err(AuthError::MissingClaim("exp")),
            None => {}
        }
        if let Some(nbf) = numeric(&claims, "nbf")? {
            if nbf > now.saturating_add(self.leeway) {
                return Err(AuthError::NotYetValid);
            }
        }
        let sub = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => return Err(AuthError::Malformed("sub is not a non-empty string".into())),
            None => return Err(AuthError::MissingClaim("sub")),
        };
        Ok(Identity::from_claims(sub, claims, AuthMethod::Jwt))
    }

    fn requires(&self, claim: &str) -> bool {
        match claim {
            "iss" => !self.issuer.is_empty(),
            _ => !self.audience.is_empty(),
        }
    }
}

fn alg_in(alg: Algorithm, family: &[Algorithm]) -> bool {
    family.contains(&alg)
}

/// A NumericDate claim (RFC 7519 §2): a non-negative number, fractions allowed.
fn numeric(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or_else(|| AuthError::Malformed(format!("{name} is not a NumericDate"))),
    }
}
