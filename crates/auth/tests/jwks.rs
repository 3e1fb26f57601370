//! JWKS over real loopback HTTP: rotation, the refetch rate limit, single flight, outages.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use support::{claims, jwks, now, sign, Loopback, Reply};
use switchboard_auth::{AuthError, JwtConfig, JwtVerifier};

fn verifier(url: &str, extra: Value) -> JwtVerifier {
    let mut config = json!({ "jwks_url": url, "jwks_timeout": "2s" });
    config
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    JwtVerifier::new(&serde_json::from_value::<JwtConfig>(config).unwrap()).unwrap()
}

fn token(alg: Algorithm, kid: &str) -> String {
    sign(alg, Some(kid), &claims("alice", json!({})))
}

#[tokio::test]
async fn key_rotation_is_picked_up_through_an_unknown_kid() {
    let server = Loopback::start("/.well-known/jwks.json", Reply::ok(jwks(&["rsa"]))).await;
    let v = verifier(&server.url, json!({ "jwks_refetch_interval": 0 }));
    assert!(v
        .verify(&token(Algorithm::RS256, "rsa-1"), now())
        .await
        .is_ok());
    assert_eq!(server.hits(), 1);

    // The provider rotates: rsa-2 in, rsa-1 out. A token with the new kid triggers a refetch.
    server.set(Reply::ok(jwks(&["rsa2"])));
    let new = support::sign_with(
        Algorithm::RS256,
        Some("rsa-2"),
        &claims("alice", json!({})),
        &jsonwebtoken::EncodingKey::from_rsa_pem(&support::read_key("rsa2.key")).unwrap(),
    );
    assert_eq!(
        v.verify(&new, now()).await.map(|i| i.user_id().to_owned()),
        Ok("alice".into())
    );
    assert_eq!(server.hits(), 2);

    // The retired key no longer verifies.
    assert_eq!(
        v.verify(&token(Algorithm::RS256, "rsa-1"), now())
            .await
            .unwrap_err(),
        AuthError::UnknownKey(Some("rsa-1".into()))
    );
}

#[tokio::test]
async fn every_jwk_type_verifies() {
    let server = Loopback::start(
        "/jwks",
        Reply::ok(jwks(&["rsa", "ec256", "ec384", "ed25519"])),
    )
    .await;
    let v = verifier(&server.url, json!({}));
    for (alg, kid) in [
        (Algorithm::RS256, "rsa-1"),
        (Algorithm::PS512, "rsa-1"),
        (Algorithm::ES256, "ec-256"),
        (Algorithm::ES384, "ec-384"),
        (Algorithm::EdDSA, "ed-1"),
    ] {
        assert!(v.verify(&token(alg, kid), now()).await.is_ok(), "{alg:?}");
    }
    // A kid-less token is tried against every key of its family.
    assert!(v
        .verify(
            &sign(Algorithm::ES256, None, &claims("a", json!({}))),
            now()
        )
        .await
        .is_ok());
    // ES384 signed by the P-384 key but naming the P-256 kid: that key cannot verify it.
    assert!(v
        .verify(&token(Algorithm::ES384, "ec-256"), now())
        .await
        .is_err());
    assert_eq!(server.hits(), 1, "one fetch served all");
}

#[tokio::test]
async fn unknown_kids_refetch_at_most_once_per_interval() {
    let server = Loopback::start("/jwks", Reply::ok(jwks(&["rsa"]))).await;
    let v = verifier(&server.url, json!({ "jwks_refetch_interval": "1s" }));
    assert!(v
        .verify(&token(Algorithm::RS256, "rsa-1"), now())
        .await
        .is_ok());
    assert_eq!(server.hits(), 1);

    // Within the interval since the first fetch: no refetch, however many made-up kids.
    for i in 0..5 {
        let err = v
            .verify(&token(Algorithm::RS256, &format!("bogus-{i}")), now())
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::UnknownKey(_)));
    }
    assert_eq!(server.hits(), 1);

    // After it: one refetch for the next unknown kid, then quiet again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    server.set(Reply::ok(jwks(&["rsa", "ec256"])));
    for i in 0..5 {
        assert!(v
            .verify(&token(Algorithm::RS256, &format!("again-{i}")), now())
            .await
            .is_err());
    }
    assert_eq!(server.hits(), 2);
    assert_eq!(v.jwks_fetch_count(), 2);
    // That refetch brought in ec-256.
    assert!(v
        .verify(&token(Algorithm::ES256, "ec-256"), now())
        .await
        .is_ok());
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn concurrent_misses_share_one_fetch() {
    let server = Loopback::start(
        "/jwks",
        Reply {
            delay: Duration::from_millis(100),
            ..Reply::ok(jwks(&["rsa"]))
        },
    )
    .await;
    let v = Arc::new(verifier(&server.url, json!({})));
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let v = Arc::clone(&v);
            tokio::spawn(async move {
                v.verify(&token(Algorithm::RS256, "rsa-1"), now())
                    .await
                    .is_ok()
            })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap());
    }
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn an_outage_keeps_the_old_keys_and_a_dead_server_refuses_cleanly() {
    let server = Loopback::start("/jwks", Reply::ok(jwks(&["rsa"]))).await;
    let v = verifier(
        &server.url,
        json!({ "jwks_refetch_interval": 0, "jwks_max_age": 0 }),
    );
    assert!(v
        .verify(&token(Algorithm::RS256, "rsa-1"), now())
        .await
        .is_ok());
    server.set(Reply::status(500));
    // max_age 0: every use refetches; the failed fetch keeps the previous keys.
    assert!(v
        .verify(&token(Algorithm::RS256, "rsa-1"), now())
        .await
        .is_ok());
    assert_eq!(server.hits(), 2);

    // Nothing listening at all.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/jwks", listener.local_addr().unwrap());
    drop(listener);
    let v = verifier(&dead, json!({}));
    assert_eq!(
        v.verify(&token(Algorithm::RS256, "rsa-1"), now())
            .await
            .unwrap_err(),
        AuthError::UnknownKey(Some("rsa-1".into()))
    );
}

#[tokio::test]
async fn a_jwks_never_enables_hmac() {
    let server = Loopback::start(
        "/jwks",
        Reply::ok(r#"{"keys": [{"kty": "oct", "kid": "h", "k": "dGVzdC1zZWNyZXQ"}]}"#),
    )
    .await;
    let v = verifier(&server.url, json!({}));
    let hs = sign(Algorithm::HS256, Some("h"), &claims("a", json!({})));
    assert!(matches!(
        v.verify(&hs, now()).await,
        Err(AuthError::AlgorithmNotAllowed(_))
    ));
}
