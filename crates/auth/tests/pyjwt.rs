//! Cross-check: tokens minted by PyJWT (with `cryptography`) for every algorithm verify here.
//!
//! Runs when a Python with `jwt` and `cryptography` is found: `$SWITCHBOARD_PYTHON`, or the
//! workspace's `.tmp/venv/bin/python` (`python3 -m venv .tmp/venv && .tmp/venv/bin/pip install
//! pyjwt cryptography`; `scripts/test.sh` sets it up before the Rust tests). Without one it
//! fails, saying so: a cross-check that silently skips checks nothing.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use serde_json::json;
use support::{key_path, now};
use switchboard_auth::{AuthError, JwtConfig, JwtVerifier};

fn python() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("SWITCHBOARD_PYTHON").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tmp/venv/bin/python")),
    ];
    candidates.into_iter().flatten().find(|p| {
        Command::new(p)
            .args(["-c", "import jwt, cryptography"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[tokio::test]
async fn pyjwt_tokens_verify_for_every_algorithm() {
    let python = python().expect(
        "no Python with PyJWT and cryptography: run scripts/test.sh once (it creates \
         .tmp/venv), or set SWITCHBOARD_PYTHON (see this file's header)",
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/pyjwt.py");
    let keys = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/keys");
    let output = Command::new(python).arg(script).arg(keys).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tokens: HashMap<String, String> = serde_json::from_slice(&output.stdout).unwrap();

    let config: JwtConfig = serde_json::from_value(json!({
        "secrets": ["test-secret"],
        "public_key_files": [key_path("rsa.pub"), key_path("ec256.pub"), key_path("ec384.pub"), key_path("ed25519.pub")],
        "issuer": "py",
        "audience": "switchboard",
    }))
    .unwrap();
    let v = JwtVerifier::new(&config).unwrap();
    for alg in [
        "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
        "ES384", "EdDSA",
    ] {
        let id = v
            .verify(&tokens[alg], now())
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(id.user_id(), "py-user", "{alg}");
        assert_eq!(id.claim("role"), Some(&json!("tester")));
    }
    assert_eq!(
        v.verify(&tokens["expired"], now()).await.unwrap_err(),
        AuthError::Expired
    );
    assert_eq!(
        v.verify(&tokens["wrong_aud"], now()).await.unwrap_err(),
        AuthError::WrongAudience
    );
}
