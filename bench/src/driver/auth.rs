//! Credentials of the `/ws` session rows with authentication: the tokens loadgen sends
//! and the flags the server is started with. Tokens are minted once per `bench` run
//! (exp in 1 h) and reused by every connection, so the rows measure verification,
//! not minting.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::scenarios::Auth;

/// The HMAC secret of the HS256 rows (a benchmark secret, 48 bytes).
const HS256_SECRET: &str = "switchboard-bench-hs256-secret-not-for-production";
/// The checked-in P-256 key pair of the auth crate's tests (PKCS#8 private key, SPKI
/// public key), relative to the repository root.
const ES256_PRIVATE_KEY: &str = "crates/auth/tests/keys/ec256.key";
const ES256_PUBLIC_KEY: &str = "crates/auth/tests/keys/ec256.pub";
/// Every connection is the same user: the per-user connection limit (10 by default)
/// would refuse most of the 50 handshakes in flight, so the servers get this one.
const MAX_CONNECTIONS_PER_USER: &str = "1000000";
/// The tokens' lifetime: longer than any run.
const TOKEN_LIFETIME_SECS: u64 = 3600;

/// The claims of the benchmark tokens.
#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
}

/// Minted tokens and the server's key file.
#[derive(Debug, Clone)]
pub struct Credentials {
    hs256: String,
    es256: String,
    es256_public_key: PathBuf,
}

impl Credentials {
    /// Mints one HS256 and one ES256 token (the ES256 one with the private key under
    /// `root`).
    pub fn mint(root: &Path) -> anyhow::Result<Credentials> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = Claims {
            sub: "bench-user",
            iat: now,
            exp: now + TOKEN_LIFETIME_SECS,
        };
        let hs256 = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(HS256_SECRET.as_bytes()),
        )?;
        let private = root.join(ES256_PRIVATE_KEY);
        let pem = std::fs::read(&private).with_context(|| format!("{}", private.display()))?;
        let key = EncodingKey::from_ec_pem(&pem)
            .with_context(|| format!("{}: not an EC private key", private.display()))?;
        let es256 = encode(&Header::new(Algorithm::ES256), &claims, &key)?;
        let es256_public_key = root.join(ES256_PUBLIC_KEY);
        anyhow::ensure!(
            es256_public_key.is_file(),
            "no public key at {}",
            es256_public_key.display()
        );
        Ok(Credentials {
            hs256,
            es256,
            es256_public_key,
        })
    }

    /// Extra `switchboard serve` arguments for `auth`.
    pub fn server_args(&self, auth: Auth) -> Vec<String> {
        let mut args: Vec<String> = match auth {
            Auth::None => return Vec::new(),
            Auth::QueryHs256 | Auth::FirstMessageHs256 => {
                vec!["--jwt-secret".into(), HS256_SECRET.into()]
            }
            Auth::QueryEs256 => vec![
                "--jwt-public-key".into(),
                self.es256_public_key.display().to_string(),
            ],
        };
        args.extend([
            "--max-connections-per-user".into(),
            MAX_CONNECTIONS_PER_USER.into(),
        ]);
        args
    }

    /// loadgen's upgrade path (`ws_path` plus the `?token=` of the query rows) and extra
    /// `handshakes` arguments (`--auth-token` of the first-message row).
    pub fn loadgen(&self, auth: Auth, ws_path: &str) -> (String, Vec<String>) {
        match auth {
            Auth::None => (ws_path.to_string(), Vec::new()),
            Auth::QueryHs256 => (format!("{ws_path}?token={}", self.hs256), Vec::new()),
            Auth::QueryEs256 => (format!("{ws_path}?token={}", self.es256), Vec::new()),
            Auth::FirstMessageHs256 => (
                ws_path.to_string(),
                vec!["--auth-token".into(), self.hs256.clone()],
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mints_with_the_checked_in_key() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let creds = Credentials::mint(&root).unwrap();
        assert_eq!(creds.hs256.split('.').count(), 3);
        assert_eq!(creds.es256.split('.').count(), 3);
        let (path, extra) = creds.loadgen(Auth::QueryEs256, "/ws");
        assert!(path.starts_with("/ws?token=ey"), "{path}");
        assert!(extra.is_empty());
        let (path, extra) = creds.loadgen(Auth::FirstMessageHs256, "/ws");
        assert_eq!(path, "/ws");
        assert_eq!(extra[0], "--auth-token");
        assert!(creds.server_args(Auth::None).is_empty());
        // The ES256 token verifies with the public key the server is given.
        let public = std::fs::read(root.join(ES256_PUBLIC_KEY)).unwrap();
        let key = jsonwebtoken::DecodingKey::from_ec_pem(&public).unwrap();
        let validation = jsonwebtoken::Validation::new(Algorithm::ES256);
        jsonwebtoken::decode::<serde_json::Value>(&creds.es256, &key, &validation).unwrap();
        assert!(creds
            .server_args(Auth::QueryEs256)
            .iter()
            .any(|a| a.ends_with("ec256.pub")));
    }
}
