//! The `Authenticator` as a transport uses it: extract, authenticate, tickets, refresh, origin,
//! authorize.

#![allow(clippy::unwrap_used)]

mod support;

use http::{HeaderMap, HeaderValue, Uri};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use support::{claims, now, sign, Loopback, Reply};
use switchboard_auth::{
    Action, AuthConfig, AuthError, Authenticator, ConnectInfo, Credential, CredentialSource,
    OriginDecision,
};

fn auth(config: Value) -> Authenticator {
    Authenticator::new(&serde_json::from_value::<AuthConfig>(config).unwrap()).unwrap()
}

fn hs() -> Authenticator {
    auth(json!({ "jwt": { "secrets": ["test-secret"] } }))
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(*k, HeaderValue::from_str(v).unwrap());
    }
    map
}

fn info() -> ConnectInfo {
    ConnectInfo {
        transport: "websocket",
        ..ConnectInfo::default()
    }
}

fn token(sub: &str) -> String {
    sign(Algorithm::HS256, None, &claims(sub, json!({})))
}

#[tokio::test]
async fn the_seeds_three_patterns_authenticate() {
    let a = hs();
    let t = token("alice");
    // Query token: `new WebSocket(`wss://…/ws?token=${token}`)`.
    let uri: Uri = format!("/ws?token={t}").parse().unwrap();
    let id = a
        .authenticate_request(&HeaderMap::new(), &uri, &info())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id.user_id(), "alice");
    // Cookie: the browser sends `session=<jwt>`.
    let h = headers(&[("cookie", &format!("session={t}"))]);
    assert!(a
        .authenticate_request(&h, &"/ws".parse().unwrap(), &info())
        .await
        .unwrap()
        .is_some());
    // First message: the session builds the credential from `auth {token}`.
    let first = Credential::new(t.clone(), CredentialSource::FirstMessage);
    assert_eq!(
        a.authenticate(&first, &info()).await.unwrap().user_id(),
        "alice"
    );
}

#[tokio::test]
async fn no_credential_is_anonymous_only_when_allowed() {
    let uri: Uri = "/ws".parse().unwrap();
    let open = auth(json!({}));
    assert!(open.anonymous_allowed());
    assert_eq!(
        open.authenticate_request(&HeaderMap::new(), &uri, &info())
            .await,
        Ok(None)
    );

    let closed = hs();
    assert!(!closed.anonymous_allowed());
    let err = closed
        .authenticate_request(&HeaderMap::new(), &uri, &info())
        .await
        .unwrap_err();
    assert_eq!(err, AuthError::Missing);
    assert_eq!(err.close_code(), 4001);

    // A bad credential is an error even where anonymous access is on.
    let both = auth(json!({ "anonymous": true, "jwt": { "secrets": ["test-secret"] } }));
    let h = headers(&[("authorization", "Bearer not.a.token")]);
    assert!(both.authenticate_request(&h, &uri, &info()).await.is_err());
}

#[tokio::test]
async fn disabled_sources_are_not_accepted() {
    let a = auth(
        json!({ "jwt": { "secrets": ["test-secret"] }, "sources": { "query": false, "first_message": false } }),
    );
    let uri: Uri = format!("/ws?token={}", token("a")).parse().unwrap();
    assert_eq!(
        a.authenticate_request(&HeaderMap::new(), &uri, &info())
            .await,
        Err(AuthError::Missing)
    );
    let first = Credential::new(token("a"), CredentialSource::FirstMessage);
    assert_eq!(
        a.authenticate(&first, &info()).await,
        Err(AuthError::NotAccepted("first_message"))
    );
}

#[tokio::test]
async fn tickets_are_single_use_and_carry_the_identity() {
    let a = hs();
    let id = a
        .authenticate(
            &Credential::new(token("alice"), CredentialSource::Header),
            &info(),
        )
        .await
        .unwrap();
    let ticket = a.issue_ticket(id).await.unwrap();
    let uri: Uri = format!("/ws?ticket={ticket}").parse().unwrap();
    let got = a
        .authenticate_request(&HeaderMap::new(), &uri, &info())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.user_id(), "alice");
    assert_eq!(
        a.authenticate_request(&HeaderMap::new(), &uri, &info())
            .await,
        Err(AuthError::BadTicket),
        "reused"
    );
    let forged: Uri = "/ws?ticket=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        .parse()
        .unwrap();
    assert_eq!(
        a.authenticate_request(&HeaderMap::new(), &forged, &info())
            .await,
        Err(AuthError::BadTicket)
    );
}

#[tokio::test]
async fn tickets_expire_with_the_configured_ttl() {
    let a = auth(json!({ "jwt": { "secrets": ["test-secret"] }, "tickets": { "ttl": "100ms" } }));
    let id = a
        .authenticate(
            &Credential::new(token("alice"), CredentialSource::Header),
            &info(),
        )
        .await
        .unwrap();
    let ticket = a.issue_ticket(id).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let err = a
        .authenticate(&Credential::new(ticket, CredentialSource::Ticket), &info())
        .await
        .unwrap_err();
    assert_eq!(err, AuthError::BadTicket);
}

#[tokio::test]
async fn refresh_needs_a_valid_token_for_the_same_user() {
    let a = hs();
    let current = a
        .authenticate(
            &Credential::new(token("alice"), CredentialSource::Header),
            &info(),
        )
        .await
        .unwrap();
    let mut longer = claims("alice", json!({}));
    longer.insert("exp".into(), (now() + 7200).into());
    let fresh = a
        .refresh(&current, &sign(Algorithm::HS256, None, &longer), &info())
        .await
        .unwrap();
    assert_eq!(fresh.token_expires_at(), longer["exp"].as_u64());
    assert_eq!(
        a.refresh(&current, &token("bob"), &info())
            .await
            .unwrap_err(),
        AuthError::SubjectChanged
    );
    assert!(a.refresh(&current, "garbage", &info()).await.is_err());
}

#[tokio::test]
async fn jwts_go_to_the_verifier_and_opaque_credentials_to_the_proxy() {
    let server = Loopback::start("/connect", Reply::ok(r#"{"user_id": "from-proxy"}"#)).await;
    let a = auth(
        json!({ "jwt": { "secrets": ["test-secret"] }, "connect_proxy": { "url": server.url } }),
    );
    let jwt = a
        .authenticate(
            &Credential::new(token("from-jwt"), CredentialSource::Cookie),
            &info(),
        )
        .await
        .unwrap();
    assert_eq!(jwt.user_id(), "from-jwt");
    let opaque = a
        .authenticate(&Credential::new("s:abc", CredentialSource::Cookie), &info())
        .await
        .unwrap();
    assert_eq!(opaque.user_id(), "from-proxy");
    // A JWT that fails is not retried at the proxy.
    let bad = a
        .authenticate(&Credential::new("x.y.z", CredentialSource::Cookie), &info())
        .await;
    assert!(bad.is_err());
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn origin_check_uses_the_request_headers() {
    let a = auth(json!({ "allowed_origins": ["https://*.example.com"] }));
    let check =
        |origin: &str, host: &str| a.check_origin(&headers(&[("origin", origin), ("host", host)]));
    assert_eq!(
        check("https://app.example.com", "ws.example.net"),
        OriginDecision::Listed
    );
    assert_eq!(
        check("https://ws.example.net", "ws.example.net"),
        OriginDecision::SameOrigin
    );
    assert_eq!(
        check("https://evil.test", "ws.example.net"),
        OriginDecision::Refused
    );
    assert_eq!(
        a.check_origin(&headers(&[("host", "ws.example.net")])),
        OriginDecision::NoOrigin
    );
    // Default: every origin.
    assert!(auth(json!({}))
        .check_origin(&headers(&[("origin", "https://evil.test")]))
        .is_allowed());
    assert!(Authenticator::new(
        &serde_json::from_value(json!({ "allowed_origins": ["nope"] })).unwrap()
    )
    .is_err());
}

#[tokio::test]
async fn authorize_applies_the_configured_rules() {
    let a = auth(json!({
        "jwt": { "secrets": ["test-secret"] },
        "permissions": [
            { "rooms": "user:*", "allow": { "match": "user:{sub}" } },
            { "rooms": "public:*", "actions": ["subscribe", "history"], "allow": "anyone" },
            { "rooms": "vip:*", "allow": "channels" },
        ],
    }));
    let alice = a
        .authenticate(
            &Credential::new(
                sign(
                    Algorithm::HS256,
                    None,
                    &claims("alice", json!({"channels": ["vip:gold"]})),
                ),
                CredentialSource::Header,
            ),
            &info(),
        )
        .await
        .unwrap();
    assert!(a
        .authorize(Some(&alice), Action::Subscribe, "user:alice")
        .is_ok());
    assert_eq!(
        a.authorize(Some(&alice), Action::Publish, "user:bob")
            .unwrap_err()
            .http_status()
            .as_u16(),
        403
    );
    assert!(a.authorize(None, Action::Subscribe, "public:news").is_ok());
    assert_eq!(
        a.authorize(None, Action::Publish, "public:news")
            .unwrap_err()
            .http_status()
            .as_u16(),
        401
    );
    assert!(a
        .authorize(Some(&alice), Action::Publish, "vip:gold")
        .is_ok());
    assert!(a
        .authorize(Some(&alice), Action::Publish, "vip:silver")
        .is_err());
    assert!(
        a.authorize(Some(&alice), Action::Presence, "lobby").is_ok(),
        "default: authenticated"
    );
    assert!(
        a.authorize(None, Action::Presence, "lobby").is_err(),
        "default: no anonymous once auth is on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn now_or_later_answers_static_keys_at_once_and_the_proxy_later() {
    let server = Loopback::start("/connect", Reply::ok(r#"{"user_id": "from-proxy"}"#)).await;
    let a = std::sync::Arc::new(auth(
        json!({ "jwt": { "secrets": ["test-secret"] }, "connect_proxy": { "url": server.url } }),
    ));
    let never = |_: Result<switchboard_auth::Identity, AuthError>| panic!("answered at once");
    let jwt = Credential::new(token("alice"), CredentialSource::FirstMessage);
    let now = a.authenticate_now_or_later(jwt, info(), never);
    assert_eq!(now.unwrap().unwrap().user_id(), "alice");
    let bad = Credential::new(
        format!("{}x", token("alice")),
        CredentialSource::FirstMessage,
    );
    let now = a.authenticate_now_or_later(bad, info(), never);
    assert_eq!(now, Some(Err(AuthError::BadSignature)));

    let (tx, rx) = tokio::sync::oneshot::channel();
    let opaque = Credential::new("opaque-session", CredentialSource::FirstMessage);
    let now = a.authenticate_now_or_later(opaque, info(), move |r| {
        let _ = tx.send(r);
    });
    assert!(now.is_none(), "the proxy is asked on a task: {now:?}");
    assert_eq!(rx.await.unwrap().unwrap().user_id(), "from-proxy");
    assert_eq!(server.hits(), 1);

    // Refresh: same user at once; another user refused.
    let current = std::sync::Arc::new(
        a.authenticate(
            &Credential::new(token("alice"), CredentialSource::Header),
            &info(),
        )
        .await
        .unwrap(),
    );
    let same = a.refresh_now_or_later(current.clone(), token("alice"), info(), never);
    assert_eq!(same.unwrap().unwrap().user_id(), "alice");
    let other = a.refresh_now_or_later(current, token("bob"), info(), never);
    assert_eq!(other, Some(Err(AuthError::SubjectChanged)));
}

#[test]
fn now_or_later_without_a_runtime_never_waits() {
    let a = std::sync::Arc::new(hs());
    let jwt = Credential::new(token("alice"), CredentialSource::FirstMessage);
    let now = a.authenticate_now_or_later(jwt, info(), |_| panic!("answered at once"));
    assert_eq!(now.unwrap().unwrap().user_id(), "alice");
}
