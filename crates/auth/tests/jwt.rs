//! JWT verification: every algorithm round-trips, every rejection path is the right error.

#![allow(clippy::unwrap_used)]

mod support;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use support::{claims, key_path, now, read_key, sign, sign_with};
use switchboard_auth::{AuthError, JwtConfig, JwtVerifier};

fn verifier(config: Value) -> JwtVerifier {
    JwtVerifier::new(&serde_json::from_value::<JwtConfig>(config).unwrap()).unwrap()
}

fn all_keys() -> JwtVerifier {
    verifier(json!({
        "secrets": ["test-secret"],
        "public_key_files": [key_path("rsa.pub"), key_path("ec256.pub"), key_path("ec384.pub"), key_path("ed25519.pub")],
    }))
}

fn rsa_only() -> JwtVerifier {
    verifier(json!({ "public_key_files": [key_path("rsa.pub")] }))
}

async fn verify(v: &JwtVerifier, token: &str) -> Result<String, AuthError> {
    v.verify(token, now())
        .await
        .map(|id| id.user_id().to_owned())
}

#[tokio::test]
async fn every_algorithm_round_trips() {
    let v = all_keys();
    for alg in [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ] {
        let token = sign(alg, None, &claims("alice", json!({"role": "admin"})));
        let id = v
            .verify(&token, now())
            .await
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(id.user_id(), "alice", "{alg:?}");
        assert_eq!(id.claim("role"), Some(&json!("admin")));
    }
}

#[tokio::test]
async fn pkcs1_rsa_public_keys_load_too() {
    let v = verifier(json!({ "public_key_files": [key_path("rsa.pkcs1.pub")] }));
    let token = sign(Algorithm::RS256, None, &claims("alice", json!({})));
    assert_eq!(verify(&v, &token).await, Ok("alice".into()));
}

#[tokio::test]
async fn bad_signature_is_invalid() {
    let v = rsa_only();
    let other = EncodingKey::from_rsa_pem(&read_key("rsa2.key")).unwrap();
    let token = sign_with(Algorithm::RS256, None, &claims("alice", json!({})), &other);
    let err = verify(&v, &token).await.unwrap_err();
    assert_eq!(err, AuthError::BadSignature);
    assert_eq!(
        (
            err.close_code(),
            err.close_reason(),
            err.http_status().as_u16()
        ),
        (4001, "Invalid token", 401)
    );

    // A tampered payload with the original signature.
    let good = sign(Algorithm::RS256, None, &claims("alice", json!({})));
    let parts: Vec<&str> = good.split('.').collect();
    let forged_payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(claims("mallory", json!({})).len().to_string());
    let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_eq!(verify(&v, &forged).await, Err(AuthError::BadSignature));
}

#[tokio::test]
async fn expired_tokens_say_token_expired_after_the_leeway() {
    let v = verifier(json!({ "secrets": ["test-secret"], "leeway": "30s" }));
    let mut c = claims("alice", json!({}));
    c.insert("exp".into(), (now() - 10).into());
    let within_leeway = sign(Algorithm::HS256, None, &c);
    assert_eq!(verify(&v, &within_leeway).await, Ok("alice".into()));

    c.insert("exp".into(), (now() - 31).into());
    let expired = sign(Algorithm::HS256, None, &c);
    let err = verify(&v, &expired).await.unwrap_err();
    assert_eq!(err, AuthError::Expired);
    assert_eq!(
        (err.close_code(), err.close_reason()),
        (4001, "Token expired")
    );

    // An expired token with a bad signature is "invalid", not "expired": claims are only read
    // after the signature verified.
    let forged = sign_with(
        Algorithm::HS256,
        None,
        &c,
        &EncodingKey::from_secret(b"other"),
    );
    assert_eq!(verify(&v, &forged).await, Err(AuthError::BadSignature));
}

#[tokio::test]
async fn explicit_clock_decides_expiry() {
    let v = verifier(json!({ "secrets": ["test-secret"], "leeway": 0 }));
    let mut c = claims("alice", json!({}));
    c.insert("exp".into(), 1_000.into());
    let token = sign(Algorithm::HS256, None, &c);
    assert!(v.verify(&token, 999).await.is_ok());
    assert_eq!(
        v.verify(&token, 1_000).await.unwrap_err(),
        AuthError::Expired
    );
}

#[tokio::test]
async fn not_yet_valid_tokens_are_refused() {
    let v = verifier(json!({ "secrets": ["test-secret"], "leeway": "5s" }));
    let token = sign(
        Algorithm::HS256,
        None,
        &claims("alice", json!({"nbf": now() + 60})),
    );
    assert_eq!(verify(&v, &token).await, Err(AuthError::NotYetValid));
    let soon = sign(
        Algorithm::HS256,
        None,
        &claims("alice", json!({"nbf": now() + 3})),
    );
    assert_eq!(verify(&v, &soon).await, Ok("alice".into()), "within leeway");
}

#[tokio::test]
async fn issuer_is_checked_when_configured() {
    let v = verifier(json!({ "secrets": ["test-secret"], "issuer": ["https://idp.example"] }));
    let good = sign(
        Algorithm::HS256,
        None,
        &claims("a", json!({"iss": "https://idp.example"})),
    );
    assert_eq!(verify(&v, &good).await, Ok("a".into()));
    let wrong = sign(
        Algorithm::HS256,
        None,
        &claims("a", json!({"iss": "https://evil.example"})),
    );
    assert_eq!(verify(&v, &wrong).await, Err(AuthError::WrongIssuer));
    let missing = sign(Algorithm::HS256, None, &claims("a", json!({})));
    assert_eq!(verify(&v, &missing).await, Err(AuthError::WrongIssuer));
}

#[tokio::test]
async fn audience_is_checked_and_unexpected_audiences_refused() {
    let v = verifier(json!({ "secrets": ["test-secret"], "audience": "switchboard" }));
    let good = sign(
        Algorithm::HS256,
        None,
        &claims("a", json!({"aud": ["other", "switchboard"]})),
    );
    assert_eq!(verify(&v, &good).await, Ok("a".into()));
    let wrong = sign(
        Algorithm::HS256,
        None,
        &claims("a", json!({"aud": "other"})),
    );
    assert_eq!(verify(&v, &wrong).await, Err(AuthError::WrongAudience));
    let missing = sign(Algorithm::HS256, None, &claims("a", json!({})));
    assert_eq!(verify(&v, &missing).await, Err(AuthError::WrongAudience));

    // No audience configured: a token addressed to someone is not for us (RFC 7519 §4.1.3).
    let plain = verifier(json!({ "secrets": ["test-secret"] }));
    assert_eq!(verify(&plain, &wrong).await, Err(AuthError::WrongAudience));
}

#[tokio::test]
async fn alg_none_is_refused() {
    let v = all_keys();
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let body = b64(&Value::Object(claims("alice", json!({}))));
    for header in [
        json!({"alg": "none", "typ": "JWT"}),
        json!({"alg": "None"}),
        json!({"alg": "NONE"}),
    ] {
        for sig in ["", "xyz"] {
            let token = format!("{}.{}.{}", b64(&header), body, sig);
            let err = verify(&v, &token).await.unwrap_err();
            assert!(
                matches!(err, AuthError::AlgorithmNotAllowed(_)),
                "{header} {sig:?}: {err:?}"
            );
            assert_eq!(err.close_reason(), "Invalid token");
        }
    }
}

#[tokio::test]
async fn hs_token_signed_with_the_rsa_public_key_is_refused() {
    // Algorithm confusion: the attacker knows our public key and uses its PEM as an HMAC secret.
    let v = rsa_only();
    let public_pem = read_key("rsa.pub");
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let token = sign_with(
            alg,
            None,
            &claims("mallory", json!({})),
            &EncodingKey::from_secret(&public_pem),
        );
        let err = verify(&v, &token).await.unwrap_err();
        assert!(
            matches!(err, AuthError::AlgorithmNotAllowed(_)),
            "{alg:?}: {err:?}"
        );
    }
    // Even when HS256 is explicitly listed, no RSA key ever verifies an HMAC.
    let listed = verifier(
        json!({ "public_key_files": [key_path("rsa.pub")], "algorithms": ["RS256", "HS256"] }),
    );
    let token = sign_with(
        Algorithm::HS256,
        None,
        &claims("mallory", json!({})),
        &EncodingKey::from_secret(&public_pem),
    );
    assert!(matches!(
        verify(&listed, &token).await,
        Err(AuthError::AlgorithmNotAllowed(_))
    ));
}

#[tokio::test]
async fn algorithms_outside_the_configured_set_are_refused() {
    let v = verifier(json!({ "public_key_files": [key_path("rsa.pub")], "algorithms": ["RS256"] }));
    assert_eq!(v.algorithms(), &[Algorithm::RS256]);
    let rs256 = sign(Algorithm::RS256, None, &claims("a", json!({})));
    assert_eq!(verify(&v, &rs256).await, Ok("a".into()));
    for alg in [Algorithm::RS512, Algorithm::PS256] {
        let token = sign(alg, None, &claims("a", json!({})));
        assert_eq!(
            verify(&v, &token).await,
            Err(AuthError::AlgorithmNotAllowed(format!("{alg:?}")))
        );
    }
    // ES256 token against RSA-only keys: not in the derived set either.
    let es = sign(Algorithm::ES256, None, &claims("a", json!({})));
    assert!(matches!(
        verify(&rsa_only(), &es).await,
        Err(AuthError::AlgorithmNotAllowed(_))
    ));
}

#[tokio::test]
async fn unknown_kid_against_a_jwks_file() {
    let dir = std::env::temp_dir().join(format!("sb-auth-jwt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jwks.json");
    std::fs::write(&file, support::jwks(&["rsa"])).unwrap();
    let v = verifier(json!({ "jwks_file": file }));
    let known = sign(Algorithm::RS256, Some("rsa-1"), &claims("a", json!({})));
    assert_eq!(verify(&v, &known).await, Ok("a".into()));
    let unknown = sign(Algorithm::RS256, Some("nope"), &claims("a", json!({})));
    assert_eq!(
        verify(&v, &unknown).await,
        Err(AuthError::UnknownKey(Some("nope".into())))
    );
    // A known kid with a signature from another key is a bad signature, not an unknown key.
    let wrong_key = sign_with(
        Algorithm::RS256,
        Some("rsa-1"),
        &claims("a", json!({})),
        &EncodingKey::from_rsa_pem(&read_key("rsa2.key")).unwrap(),
    );
    assert_eq!(verify(&v, &wrong_key).await, Err(AuthError::BadSignature));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sub_and_exp_are_required() {
    let v = verifier(json!({ "secrets": ["test-secret"] }));
    let mut no_sub = claims("a", json!({}));
    no_sub.remove("sub");
    assert_eq!(
        verify(&v, &sign(Algorithm::HS256, None, &no_sub)).await,
        Err(AuthError::MissingClaim("sub"))
    );
    let numeric_sub = sign(Algorithm::HS256, None, &claims("a", json!({"sub": 42})));
    assert!(matches!(
        verify(&v, &numeric_sub).await,
        Err(AuthError::Malformed(_))
    ));
    let mut no_exp = claims("a", json!({}));
    no_exp.remove("exp");
    let token = sign(Algorithm::HS256, None, &no_exp);
    assert_eq!(
        verify(&v, &token).await,
        Err(AuthError::MissingClaim("exp"))
    );
    let lenient = verifier(json!({ "secrets": ["test-secret"], "require_exp": false }));
    assert_eq!(verify(&lenient, &token).await, Ok("a".into()));
}

#[tokio::test]
async fn garbage_is_malformed_not_a_panic() {
    let v = all_keys();
    for token in [
        "",
        "abc",
        "a.b",
        "a.b.c",
        "....",
        "eyJhbGciOiJIUzI1NiJ9.!!!.x",
        "eyJhbGciOiJIUzI1NiJ9.e30.x",
    ] {
        let err = verify(&v, token).await.unwrap_err();
        assert_eq!(err.close_code(), 4001, "{token:?}: {err:?}");
    }
}

#[tokio::test]
async fn rotated_secrets_are_all_tried() {
    let v = verifier(json!({ "secrets": ["new-secret", "base64:dGVzdC1zZWNyZXQ="] }));
    let token = sign(Algorithm::HS256, None, &claims("a", json!({})));
    assert_eq!(
        verify(&v, &token).await,
        Ok("a".into()),
        "old secret (base64 of test-secret) still accepted"
    );
}

#[tokio::test]
async fn minted_tokens_verify_and_carry_extra_claims() {
    let v = verifier(json!({ "secrets": ["test-secret"] }));
    let mut extra = serde_json::Map::new();
    extra.insert("channels".into(), json!(["chat:*"]));
    extra.insert("sub".into(), json!("ignored"));
    let token = switchboard_auth::mint(
        b"test-secret",
        Algorithm::HS384,
        "bob",
        std::time::Duration::from_secs(60),
        extra,
    )
    .unwrap();
    let id = v.verify(&token, now()).await.unwrap();
    assert_eq!(id.user_id(), "bob");
    assert_eq!(id.channels(), Some(&["chat:*".to_owned()][..]));
    assert!(id
        .token_expires_at()
        .is_some_and(|exp| exp >= now() + 59 && exp <= now() + 61));
    assert!(switchboard_auth::mint(
        b"s",
        Algorithm::RS256,
        "bob",
        std::time::Duration::from_secs(1),
        Default::default()
    )
    .is_err());
}

#[test]
fn bad_configurations_fail_at_startup() {
    let bad =
        |c: Value| JwtVerifier::new(&serde_json::from_value::<JwtConfig>(c).unwrap()).is_err();
    assert!(bad(json!({ "secrets": ["s"], "algorithms": ["none"] })));
    assert!(bad(json!({ "secrets": ["s"], "algorithms": ["HS999"] })));
    assert!(
        bad(json!({ "public_key_files": [key_path("rsa.key")] })),
        "private key"
    );
    assert!(bad(
        json!({ "public_key_files": [key_path("missing.pub")] })
    ));
    assert!(bad(json!({ "jwks_url": "ftp://x/jwks" })));
}
