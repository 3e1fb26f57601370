//! The connect proxy against a real loopback HTTP server: allow, refuse, timeout, down, cache.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{now, Loopback, Reply};
use switchboard_auth::{
    AuthError, ConnectInfo, ConnectProxy, ConnectProxyConfig, Credential, CredentialSource,
};

fn proxy(url: &str, extra: Value) -> ConnectProxy {
    let mut config = json!({ "url": url, "timeout": "300ms" });
    config
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    ConnectProxy::new(&serde_json::from_value::<ConnectProxyConfig>(config).unwrap()).unwrap()
}

fn info() -> ConnectInfo {
    ConnectInfo {
        origin: Some("https://app.example".into()),
        client_ip: Some("192.0.2.7".parse().unwrap()),
        transport: "websocket",
    }
}

#[tokio::test]
async fn an_accepted_cookie_becomes_an_identity_and_is_cached() {
    let answer = json!({
        "user_id": "alice",
        "claims": {"role": "admin"},
        "channels": ["chat:*"],
        "expire_at": now() + 600,
    });
    let server = Loopback::start("/auth/connect", Reply::ok(answer.to_string())).await;
    let p = proxy(&server.url, json!({}));
    let cookie = Credential::new("s:opaque-session", CredentialSource::Cookie);
    let id = p.authenticate(&cookie, &info(), now()).await.unwrap();
    assert_eq!(id.user_id(), "alice");
    assert_eq!(id.claim("role"), Some(&json!("admin")));
    assert_eq!(id.claim("sub"), Some(&json!("alice")));
    assert_eq!(id.channels(), Some(&["chat:*".to_owned()][..]));
    assert_eq!(
        id.connection_expires_at(),
        Some(answer["expire_at"].as_u64().unwrap())
    );

    let sent: Value = serde_json::from_str(&server.bodies()[0]).unwrap();
    assert_eq!(
        sent,
        json!({"transport": "websocket", "origin": "https://app.example", "client_ip": "192.0.2.7", "cookie": "s:opaque-session"})
    );

    // Cached: a second connection with the same cookie does not ask again.
    p.authenticate(&cookie, &info(), now()).await.unwrap();
    assert_eq!(server.hits(), 1);
    // A token (not a cookie) is sent as `token` and is a different cache entry.
    let token = Credential::new("s:opaque-session", CredentialSource::Header);
    p.authenticate(&token, &info(), now()).await.unwrap();
    assert_eq!(server.hits(), 2);
    let sent: Value = serde_json::from_str(&server.bodies()[1]).unwrap();
    assert_eq!(sent["token"], "s:opaque-session");
    assert!(sent.get("cookie").is_none());
}

#[tokio::test]
async fn camel_case_user_id_is_accepted_and_cache_can_be_off() {
    let server = Loopback::start("/", Reply::ok(r#"{"userId": "bob"}"#)).await;
    let p = proxy(&server.url, json!({ "cache_ttl": 0 }));
    let c = Credential::new("tok", CredentialSource::Query);
    assert_eq!(
        p.authenticate(&c, &info(), now()).await.unwrap().user_id(),
        "bob"
    );
    p.authenticate(&c, &info(), now()).await.unwrap();
    assert_eq!(server.hits(), 2, "no cache");
}

#[tokio::test]
async fn a_non_2xx_answer_refuses_and_is_not_cached() {
    let server = Loopback::start("/", Reply::status(403)).await;
    let p = proxy(&server.url, json!({}));
    let c = Credential::new("bad", CredentialSource::Cookie);
    let err = p.authenticate(&c, &info(), now()).await.unwrap_err();
    assert_eq!(err, AuthError::Refused(403));
    assert_eq!(
        (
            err.close_code(),
            err.close_reason(),
            err.http_status().as_u16()
        ),
        (4001, "Invalid token", 401)
    );
    server.set(Reply::ok(r#"{"user_id": "carol"}"#));
    assert_eq!(
        p.authenticate(&c, &info(), now()).await.unwrap().user_id(),
        "carol"
    );
}

#[tokio::test]
async fn a_slow_backend_times_out_as_unavailable() {
    let server = Loopback::start(
        "/",
        Reply {
            delay: Duration::from_secs(2),
            ..Reply::ok(r#"{"user_id": "x"}"#)
        },
    )
    .await;
    let p = proxy(&server.url, json!({}));
    let started = std::time::Instant::now();
    let err = p
        .authenticate(
            &Credential::new("t", CredentialSource::Cookie),
            &info(),
            now(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::BackendUnavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "gave up at the 300 ms timeout"
    );
    assert_eq!(
        (
            err.close_code(),
            err.close_reason(),
            err.http_status().as_u16()
        ),
        (1013, "Auth backend unavailable", 503)
    );
}

#[tokio::test]
async fn an_unreachable_or_confused_backend_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    drop(listener);
    let err = proxy(&url, json!({}))
        .authenticate(
            &Credential::new("t", CredentialSource::Cookie),
            &info(),
            now(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::BackendUnavailable(_)), "{err:?}");

    let server = Loopback::start("/", Reply::ok("not json")).await;
    let err = proxy(&server.url, json!({}))
        .authenticate(
            &Credential::new("t", CredentialSource::Cookie),
            &info(),
            now(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::BackendUnavailable(_)), "{err:?}");

    server.set(Reply::ok(r#"{"user_id": ""}"#));
    let err = proxy(&server.url, json!({}))
        .authenticate(
            &Credential::new("t", CredentialSource::Cookie),
            &info(),
            now(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::BackendUnavailable(_)), "{err:?}");
}

#[tokio::test]
async fn an_answer_already_past_its_expire_at_is_expired() {
    let server = Loopback::start(
        "/",
        Reply::ok(json!({"user_id": "x", "expire_at": now() - 1}).to_string()),
    )
    .await;
    let err = proxy(&server.url, json!({}))
        .authenticate(
            &Credential::new("t", CredentialSource::Cookie),
            &info(),
            now(),
        )
        .await
        .unwrap_err();
    assert_eq!(err, AuthError::Expired);
}
