//! Who a request is, for every transport (SPEC §4): the `Origin` allowlist, the caller's
//! credentials verified by the [`Authenticator`](switchboard_auth::Authenticator) of
//! `ServerConfig::auth`, and the HTTP answers of a refusal. With no authenticator
//! configured everyone is anonymous and every origin passes (development).
//!
//! Transports differ only in how a refusal reaches the client: plain HTTP (SSE, polling,
//! the API) answers 401/403/503 with a JSON error, while a WebSocket upgrade with bad
//! credentials is accepted and then closed with 4001 and a reason, because a browser sees
//! close codes, never a refused upgrade's status.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, StatusCode, Uri};
use switchboard_auth::{AuthError, ConnectInfo, Identity};

use crate::api::ApiError;
use crate::state::AppState;

/// A refused origin: 403 (cross-site WebSocket hijacking, and pages of other sites reading
/// feeds with the user's cookies).
pub(crate) fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(auth) = &state.config.auth else {
        return Ok(());
    };
    if auth.check_origin(headers).is_allowed() {
        return Ok(());
    }
    state.metrics.auth_failure("origin");
    Err(ApiError(StatusCode::FORBIDDEN, "origin not allowed".into()))
}

/// The caller of a plain HTTP request: `Ok(None)` is anonymous (allowed). Credentials that
/// are given must be valid: a bad token is never downgraded to anonymous. Refusals are their
/// HTTP answers: 401 (503 when the connect proxy is down), 403 for a cookie sent by a page of
/// an origin not explicitly allowed.
pub(crate) async fn identify_http(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
    ip: Option<IpAddr>,
    transport: &'static str,
) -> Result<Option<Identity>, ApiError> {
    let Some(auth) = &state.config.auth else {
        return Ok(None);
    };
    let Some(credential) = auth.extract(headers, uri) else {
        if auth.anonymous_allowed() {
            return Ok(None);
        }
        state.metrics.auth_failure("missing");
        return Err(refusal(&AuthError::Missing));
    };
    if !cookie_origin_allowed(auth, headers, &credential) {
        state.metrics.auth_failure("cookie_origin");
        return Err(cookie_from_other_origin());
    }
    let info = connect_info(headers, ip, transport);
    match auth.authenticate(&credential, &info).await {
        Ok(identity) => Ok(Some(identity)),
        Err(e) => {
            state.metrics.auth_failure(e.metric_label());
            tracing::debug!(
                reason = e.metric_label(),
                source = credential.source().as_str(),
                transport,
                "authentication failed"
            );
            Err(refusal(&e))
        }
    }
}

/// A cookie is attached by the browser whatever page makes the request: from a page of
/// another origin it counts only when that origin is explicitly allowed (`*` does not do),
/// against cross-site WebSocket hijacking and CSRF. Other credentials pass (a page of
/// another site does not have the user's token).
fn cookie_origin_allowed(
    auth: &switchboard_auth::Authenticator,
    headers: &HeaderMap,
    credential: &switchboard_auth::Credential,
) -> bool {
    credential.source() != switchboard_auth::CredentialSource::Cookie
        || auth.check_cookie_origin(headers).is_allowed()
}

fn cookie_from_other_origin() -> ApiError {
    ApiError(
        StatusCode::FORBIDDEN,
        "cookie credentials from this origin are not allowed (list it in auth.allowed_origins)"
            .into(),
    )
}

/// How a WebSocket handshake proceeds (the upgrade is accepted in every case).
pub(crate) enum WsAccess {
    /// The handshake's credentials named the user.
    Authenticated(Identity),
    /// No credentials: the first-message flow (`auth {token}` within `auth_timeout`).
    AwaitAuth,
    /// No credentials, anonymous access allowed (or no authentication configured).
    Anonymous,
    /// Bad credentials, or none where they are required: closed with this error's code.
    Refused(AuthError),
    /// A cookie sent by a page of an origin not explicitly allowed: 403 before the upgrade.
    Forbidden(ApiError),
}

/// The WebSocket handshake's part of authentication (the origin was checked before).
pub(crate) async fn websocket(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
    info: &ConnectInfo,
) -> WsAccess {
    let Some(auth) = &state.config.auth else {
        return WsAccess::Anonymous;
    };
    let Some(credential) = auth.extract(headers, uri) else {
        if auth.sources().first_message && auth.has_verifier() && !auth.anonymous_allowed() {
            return WsAccess::AwaitAuth;
        }
        if auth.anonymous_allowed() {
            // (May still send `auth {token}` before joining a room.)
            return WsAccess::Anonymous;
        }
        state.metrics.auth_failure("missing");
        return WsAccess::Refused(AuthError::Missing);
    };
    if !cookie_origin_allowed(auth, headers, &credential) {
        state.metrics.auth_failure("cookie_origin");
        return WsAccess::Forbidden(cookie_from_other_origin());
    }
    match auth.authenticate(&credential, info).await {
        Ok(identity) => WsAccess::Authenticated(identity),
        Err(e) => {
            state.metrics.auth_failure(e.metric_label());
            tracing::debug!(
                reason = e.metric_label(),
                source = credential.source().as_str(),
                "websocket authentication failed"
            );
            WsAccess::Refused(e)
        }
    }
}

/// The HTTP answer to a failed authentication: 401 (503 when the auth backend is down),
/// with the same reason a WebSocket close would carry.
pub(crate) fn refusal(e: &AuthError) -> ApiError {
    ApiError(e.http_status(), e.close_reason().to_string())
}

/// What the connect proxy is told about the connection.
pub(crate) fn connect_info(
    headers: &HeaderMap,
    ip: Option<IpAddr>,
    transport: &'static str,
) -> ConnectInfo {
    ConnectInfo {
        origin: headers
            .get(http::header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        client_ip: ip,
        transport,
    }
}

/// Whether `who` may do `action` in `room` (always, without an authenticator).
pub(crate) fn authorize(
    state: &AppState,
    who: Option<&Identity>,
    action: switchboard_auth::Action,
    room: &str,
) -> Result<(), ApiError> {
    if action == switchboard_auth::Action::Publish
        && room.starts_with(switchboard_hub::SYSTEM_PREFIX)
    {
        return Err(ApiError(
            http::StatusCode::FORBIDDEN,
            format!("\"{room}\" is one of the server's own rooms: only the server publishes there"),
        ));
    }
    let Some(auth) = &state.config.auth else {
        return Ok(());
    };
    auth.authorize(who, action, room)
        .map_err(|denied| ApiError(denied.http_status(), denied.message().to_string()))
}

/// When a connection of `identity` must end (its `expire_at`, else its token's `exp`), as an
/// instant of this process's clock; `None`: never.
pub(crate) fn expiry(identity: &Identity) -> Option<std::time::Instant> {
    let at = identity.connection_expires_at()?;
    Some(instant_of(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(at),
    ))
}

/// A wall-clock instant (credentials expire in unix time) on this process's monotonic
/// clock, which timers use. Converted against one anchor taken at the first call, so the
/// same wall-clock time always gives the same instant: a deadline compared with a `now`
/// read earlier must not move later at every look (a past time read as "now" would never
/// be due). Wall-clock jumps after the anchor are ignored, as a monotonic timer does.
pub(crate) fn instant_of(at: std::time::SystemTime) -> std::time::Instant {
    static ANCHOR: std::sync::LazyLock<(std::time::Instant, std::time::SystemTime)> =
        std::sync::LazyLock::new(|| (std::time::Instant::now(), std::time::SystemTime::now()));
    let (instant, wall) = *ANCHOR;
    match at.duration_since(wall) {
        Ok(ahead) => instant + ahead,
        Err(behind) => instant.checked_sub(behind.duration()).unwrap_or(instant),
    }
}

/// The hub user of a connection: the identity's `sub`.
pub(crate) fn user_of(identity: &Identity) -> switchboard_hub::UserId {
    switchboard_hub::UserId(Arc::from(identity.user_id()))
}
