//! Verification keys and which algorithms each may verify.
//!
//! Every key carries its own algorithm list, fixed by its type (an RSA key verifies RS*/PS*,
//! never HS*): that, not the token's header, decides how a signature is checked, which is what
//! defeats algorithm confusion (an HS256 token "signed" with our RSA public key as the secret).

use std::path::Path;

use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::error::ConfigError;

pub(crate) const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
pub(crate) const RSA: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
// An EC key of the other curve simply fails to verify, so both are listed for a PEM key; JWKs
// say their curve and get exactly one.
pub(crate) const EC: &[Algorithm] = &[Algorithm::ES256, Algorithm::ES384];
pub(crate) const ED: &[Algorithm] = &[Algorithm::EdDSA];

/// A key and the algorithms it may verify.
#[derive(Clone)]
pub(crate) struct VerifyKey {
    pub(crate) kid: Option<String>,
    pub(crate) key: DecodingKey,
    pub(crate) algorithms: &'static [Algorithm],
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

impl VerifyKey {
    pub(crate) fn fits(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }
}

/// An HMAC secret; `base64:` prefix for binary secrets.
pub(crate) fn secret_key(secret: &str) -> Result<VerifyKey, ConfigError> {
    let bytes = secret_bytes(secret)?;
    if bytes.is_empty() {
        return Err(ConfigError::Invalid("jwt secret is empty".into()));
    }
    Ok(VerifyKey {
        kid: None,
        key: DecodingKey::from_secret(&bytes),
        algorithms: HMAC,
    })
}

/// The bytes of a configured secret (`base64:` prefix decoded).
pub fn secret_bytes(secret: &str) -> Result<Vec<u8>, ConfigError> {
    match secret.strip_prefix("base64:") {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| ConfigError::Invalid(format!("jwt secret: bad base64: {e}"))),
        None => Ok(secret.as_bytes().to_vec()),
    }
}

/// A PEM public key file: RSA, EC or Ed25519, told apart by trying each parser.
pub(crate) fn pem_file_key(path: &Path) -> Result<VerifyKey, ConfigError> {
    let pem = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    pem_key(&pem).map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))
}

pub(crate) fn pem_key(pem: &[u8]) -> Result<VerifyKey, String> {
    if pem.windows(11).any(|w| w == b"PRIVATE KEY") {
        return Err(
            "this is a private key; configure the public one (openssl pkey -pubout)".into(),
        );
    }
    let (key, algorithms) = if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        (k, RSA)
    } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        (k, EC)
    } else if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        (k, ED)
    } else {
        return Err("not a PEM RSA, EC (P-256/P-384) or Ed25519 public key".into());
    };
    Ok(VerifyKey {
        kid: None,
        key,
        algorithms,
    })
}

/// Parses a JWKS document, keeping the signature keys we can use. Keys we cannot use (`oct`,
/// P-521, encryption keys, unknown types) are skipped, not fatal: a provider adding a new key
/// type must not lock every user out. Symmetric (`oct`) keys are skipped on purpose: a JWKS is
/// public, and must never turn on HMAC.
pub(crate) fn jwks_keys(document: &[u8]) -> Result<Vec<VerifyKey>, String> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let doc: Document =
        serde_json::from_slice(document).map_err(|e| format!("not a JWKS document: {e}"))?;
    let keys = doc
        .keys
        .into_iter()
        .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
        .filter_map(|jwk| jwk_key(&jwk))
        .collect();
    Ok(keys)
}

fn jwk_key(jwk: &Jwk) -> Option<VerifyKey> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let by_type: &'static [Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => ED,
        _ => return None,
    };
    // A JWK's `alg`, when present, narrows the key to that one algorithm.
    let algorithms = match jwk.common.key_algorithm {
        None => by_type,
        Some(alg) => {
            let alg = signing_algorithm(alg)?;
            let position = by_type.iter().position(|a| *a == alg)?;
            &by_type[position..=position]
        }
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyKey {
        kid: jwk.common.key_id.clone(),
        key,
        algorithms,
    })
}

fn signing_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_skips_symmetric_encryption_and_unknown_keys() {
        let doc = br#"{"keys": [
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "e", "crv": "P-256", "use": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "kid": "s", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "XYZ", "kid": "u"}
        ]}"#;
        let keys = jwks_keys(doc).unwrap();
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert_eq!(keys[0].kid.as_deref(), Some("s"));
        assert_eq!(keys[0].algorithms, &[Algorithm::ES256]);
        assert!(jwks_keys(b"[]").is_err());
    }

    #[test]
    fn private_keys_and_garbage_are_refused() {
        assert!(
            pem_key(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").is_err()
        );
        assert!(pem_key(b"hello").is_err());
    }

    #[test]
    fn base64_secrets_are_decoded() {
        assert_eq!(secret_bytes("base64:c2VjcmV0").unwrap(), b"secret");
        assert_eq!(secret_bytes("plain").unwrap(), b"plain");
        assert!(secret_bytes("base64:!!").is_err());
        assert!(secret_key("").is_err());
    }
}
