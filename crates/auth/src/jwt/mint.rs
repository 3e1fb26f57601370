//! Minting development tokens (`switchboard token --sub alice --ttl 1h --claim k=v`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

/// Why a token could not be minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    /// Only HMAC tokens are minted from a secret.
    #[error("{0:?} is not an HMAC algorithm (HS256, HS384, HS512)")]
    NotHmac(Algorithm),
    /// An empty secret.
    #[error("the secret is empty")]
    EmptySecret,
    /// An empty user id.
    #[error("sub is empty")]
    EmptySubject,
    /// The JWT library refused.
    #[error("signing failed: {0}")]
    Signing(String),
}

/// A token for `sub`, valid for `ttl` from now, signed with `secret` (raw bytes; see
/// [`secret_bytes`](crate::secret_bytes) for the configured form). `extra` claims are added
/// first, so `sub`, `iat` and `exp` always come from the arguments.
pub fn mint(
    secret: &[u8],
    alg: Algorithm,
    sub: &str,
    ttl: Duration,
    extra: Map<String, Value>,
) -> Result<String, MintError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    mint_at(secret, alg, sub, ttl, extra, now)
}

/// [`mint`] with an explicit clock (unix seconds).
pub fn mint_at(
    secret: &[u8],
    alg: Algorithm,
    sub: &str,
    ttl: Duration,
    extra: Map<String, Value>,
    now: u64,
) -> Result<String, MintError> {
    if !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        return Err(MintError::NotHmac(alg));
    }
    if secret.is_empty() {
        return Err(MintError::EmptySecret);
    }
    if sub.is_empty() {
        return Err(MintError::EmptySubject);
    }
    let mut claims = extra;
    claims.insert("sub".into(), sub.into());
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), now.saturating_add(ttl.as_secs()).into());
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| MintError::Signing(e.to_string()))
}
