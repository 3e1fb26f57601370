//! The HTTP API for backends (SPEC §5): publish, broadcast, history, presence, channels,
//! disconnect. Authenticated with an API key (`Authorization: Bearer <key>`); every error is
//! JSON `{"error": message}` with an HTTP status.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use switchboard_hub::{Offset, RoomName, UserId};
use switchboard_native_proto::{message_id, splice_messages};
use switchboard_session::{publish, PublishRequest};

use switchboard_auth::{Action, Identity};

use crate::access;
use crate::state::AppState;

/// The user id that API publications carry.
const API_USER: &str = "api";

/// Fields of a publish body that address the message rather than being part of it.
const ADDRESSING: [&str; 3] = ["channel", "channels", "room"];

/// The `/api/*` routes; `browser` adds what the routes browsers use need (CORS).
pub(crate) fn routes(
    browser: impl Fn(MethodRouter<Arc<AppState>>) -> MethodRouter<Arc<AppState>>,
) -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/publish", browser(post(publish_endpoint)))
        .route("/api/broadcast", post(broadcast))
        .route("/api/history", get(history))
        .route("/api/presence", get(presence))
        .route("/api/channels", get(channels))
        .route("/api/disconnect", post(disconnect))
        .route("/api/ticket", browser(post(ticket)))
}

/// An API error: status and message, answered as `{"error": message}`.
#[derive(Debug)]
pub(crate) struct ApiError(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

/// Wait for the store's answer to the request `start` makes (at once with the memory store).
/// 503 if the store dropped the request without answering (a networked store that lost it).
pub(crate) async fn answer<T: Send + 'static>(
    start: impl FnOnce(Box<dyn FnOnce(T) + Send>),
) -> Result<T, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    start(Box::new(move |value| {
        let _ = tx.send(value);
    }));
    rx.await.map_err(|_| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the history store did not answer".into(),
        )
    })
}

/// 503: the store could not answer (a networked one that is down); the caller may retry.
pub(crate) fn unavailable(e: switchboard_hub::Unavailable) -> ApiError {
    ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

/// Proof that the request carried a valid API key: an extractor, so every handler that
/// takes it is authorized before it runs. Without a configured key the API is closed (401
/// with a hint), so an unconfigured server never accepts anonymous publications.
#[derive(Debug)]
pub(crate) struct ApiKey;

impl FromRequestParts<Arc<AppState>> for ApiKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let keys = &state.config.api_keys;
        if keys.is_empty() {
            return Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "the HTTP API is disabled: start the server with an API key (--api-key)".into(),
            ));
        }
        let presented = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match presented {
            Some(key)
                if keys
                    .iter()
                    .any(|k| constant_time_eq(k.as_bytes(), key.as_bytes())) =>
            {
                Ok(ApiKey)
            }
            Some(_) => Err(ApiError(StatusCode::UNAUTHORIZED, "invalid API key".into())),
            None => Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "missing Authorization: Bearer <API key>".into(),
            )),
        }
    }
}

/// Who calls the API: a backend (a valid API key: every right), a user (credentials the
/// configured authenticator accepts: that user's rights, SPEC §4), or, with no credentials,
/// an anonymous client (a browser) from this address; see [`crate::browser`].
#[derive(Debug)]
pub(crate) enum Caller {
    Backend,
    User(Identity),
    Anonymous(Option<std::net::IpAddr>),
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let ip = crate::ws::peer_addr_in(&parts.extensions).map(|a| a.ip());
        let bearer = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if let Some(presented) = bearer {
            if is_api_key(state, presented) {
                return Ok(Caller::Backend);
            }
        }
        if state.config.auth.is_some() {
            access::check_origin(state, &parts.headers)?;
            // Credentials given must be valid: a bad token is never downgraded to anonymous.
            return match access::identify_http(state, &parts.headers, &parts.uri, ip, "http")
                .await?
            {
                Some(identity) => Ok(Caller::User(identity)),
                None => Ok(Caller::Anonymous(ip)),
            };
        }
        if parts
            .headers
            .contains_key(axum::http::header::AUTHORIZATION)
        {
            // Not a key, and no user tokens without an authenticator: the key's own 401.
            return ApiKey::from_request_parts(parts, state)
                .await
                .map(|ApiKey| Caller::Backend);
        }
        Ok(Caller::Anonymous(ip))
    }
}

impl Caller {
    /// A backend, or a user allowed to do `action` in `room`; anonymous callers are refused
    /// unless the permission rules of a configured authenticator let them.
    fn may(&self, state: &AppState, action: Action, room: &RoomName) -> Result<(), ApiError> {
        match self {
            Caller::Backend => Ok(()),
            Caller::User(identity) => {
                access::authorize(state, Some(identity), action, room.as_str())
            }
            Caller::Anonymous(_) if state.config.auth.is_some() => {
                access::authorize(state, None, action, room.as_str())
            }
            Caller::Anonymous(_) => Err(missing_key(state)),
        }
    }
}

fn is_api_key(state: &AppState, presented: &str) -> bool {
    state
        .config
        .api_keys
        .iter()
        .any(|k| constant_time_eq(k.as_bytes(), presented.as_bytes()))
}

/// The 401 of a request without credentials where the API key is needed.
fn missing_key(state: &AppState) -> ApiError {
    if state.config.api_keys.is_empty() {
        ApiError(
            StatusCode::UNAUTHORIZED,
            "the HTTP API is disabled: start the server with an API key (--api-key)".into(),
        )
    } else {
        ApiError(
            StatusCode::UNAUTHORIZED,
            "missing Authorization: Bearer <API key>".into(),
        )
    }
}

/// Compare without an early exit on the first differing byte (no timing oracle on the key).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A request body that is a JSON object, with a clear 400 otherwise.
#[derive(Debug)]
pub(crate) struct JsonObject(Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError(e.status(), e.body_text()))?;
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(o)) => Ok(JsonObject(o)),
            Ok(_) => Err(bad_request("the body must be a JSON object")),
            Err(e) => Err(bad_request(format!("invalid JSON: {e}"))),
        }
    }
}

/// Query parameters, with a JSON 400 (not axum's plain-text rejection) when they do not
/// parse: `since=abc`, `limit=-1`.
#[derive(Debug)]
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| ApiError(e.status(), e.body_text()))
    }
}

fn room_name(value: Option<&Value>, field: &str) -> Result<RoomName, ApiError> {
    match value {
        Some(Value::String(s)) => {
            RoomName::new(s).map_err(|e| bad_request(format!("invalid {field}: {e}")))
        }
        _ => Err(bad_request(format!("missing string field \"{field}\""))),
    }
}

/// The message a publish body asks to deliver: every field the caller sent except the
/// addressing ones, with `type` defaulting to `publish`. Refuses a body with nothing to
/// deliver rather than storing an empty message.
fn message_of(body: &Map<String, Value>) -> Result<(Map<String, Value>, Option<String>), ApiError> {
    let id = message_id(body).map_err(|_| bad_request("\"id\" must be a string or a number"))?;
    let mut message: Map<String, Value> = body
        .iter()
        .filter(|(k, _)| !ADDRESSING.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    match message.get("type") {
        None | Some(Value::Null) => {
            if message.keys().all(|k| k == "id" || k == "type") {
                return Err(bad_request(
                    "nothing to deliver: give \"data\", \"payload\" or other fields, or a \"type\"",
                ));
            }
            message.insert("type".into(), Value::from("publish"));
        }
        Some(Value::String(s)) if !s.is_empty() => {}
        Some(_) => return Err(bad_request("\"type\" must be a non-empty string")),
    }
    Ok((message, id))
}

/// Publish `message` to `room` as `sender`; deduplicated by `id` when given.
async fn publish_one(
    state: &AppState,
    sender: &str,
    room: &RoomName,
    message: Map<String, Value>,
    id: Option<&str>,
) -> Result<Value, ApiError> {
    let sender = UserId(Arc::from(sender));
    let published = answer(|done| {
        publish(
            &state.hub,
            PublishRequest {
                room,
                sender: &sender,
                sender_name: None,
                body: message,
                id,
            },
            done,
        )
    })
    .await?
    // Not confirmed by the store: 503, and the caller may retry (with the same `id`, a
    // message that did get through is not published twice).
    .map_err(unavailable)?;
    if published.dropped > 0 {
        state.metrics.dropped.add(published.dropped as u64);
    }
    let mut reply = json!({
        "channel": room.as_str(),
        "offset": published.offset.0,
        "epoch": published.epoch.as_str(),
        "delivered": published.delivered,
    });
    if published.duplicate {
        reply["duplicate"] = Value::Bool(true);
    }
    Ok(reply)
}

async fn publish_endpoint(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let room = room_name(body.get("channel").or_else(|| body.get("room")), "channel")?;
    let (message, id) = message_of(&body)?;
    let sender = match &caller {
        Caller::Backend => API_USER,
        Caller::User(identity) => {
            caller.may(&state, Action::Publish, &room)?;
            identity.user_id()
        }
        Caller::Anonymous(ip) => {
            let ip = *ip;
            if state.config.auth.is_some() {
                caller.may(&state, Action::Publish, &room)?;
            }
            state
                .anonymous
                .admit(&room, ip, std::time::Instant::now())?;
            if id.is_some() {
                // Deduplication is per sender: every anonymous client is the same sender,
                // so one client's id could silently swallow another's message.
                return Err(bad_request(
                    "\"id\" (deduplication) needs an identified sender: publish with credentials",
                ));
            }
            crate::browser::ANONYMOUS_USER
        }
    };
    Ok(Json(
        publish_one(&state, sender, &room, message, id.as_deref()).await?,
    ))
}

async fn broadcast(
    _: ApiKey,
    State(state): State<Arc<AppState>>,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let Some(Value::Array(channels)) = body.get("channels") else {
        return Err(bad_request("missing array field \"channels\""));
    };
    if channels.len() > 1000 {
        return Err(bad_request("at most 1000 channels per broadcast"));
    }
    // Validate everything before publishing anything: all or nothing.
    let rooms = channels
        .iter()
        .map(|c| room_name(Some(c), "channels[]"))
        .collect::<Result<Vec<_>, _>>()?;
    let (message, id) = message_of(&body)?;
    // Deduplication is per channel: one id makes one message in each of them.
    let mut results = Vec::with_capacity(rooms.len());
    for room in &rooms {
        results.push(publish_one(&state, API_USER, room, message.clone(), id.as_deref()).await?);
    }
    Ok(Json(json!({ "results": results })))
}

#[derive(Debug, serde::Deserialize)]
struct ChannelQuery {
    channel: Option<String>,
    since: Option<u64>,
    limit: Option<usize>,
}

async fn history(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<ChannelQuery>,
) -> Result<Response, ApiError> {
    let room = room_name(q.channel.map(Value::from).as_ref(), "channel")?;
    caller.may(&state, Action::History, &room)?;
    let max = state.config.session.max_history_reply;
    let page = answer(|done| {
        state
            .hub
            .history(&room, q.since.map(Offset), q.limit, max, done)
    })
    .await?
    .map_err(unavailable)?;
    let head = json!({
        "channel": room.as_str(), "offset": page.last_offset.0, "epoch": page.epoch.as_str(),
        "more": page.more,
    });
    let messages: Vec<Bytes> = page
        .messages
        .iter()
        .filter_map(|d| d.json())
        .cloned()
        .collect();
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        splice_messages(&head, &messages),
    )
        .into_response())
}

async fn presence(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<ChannelQuery>,
) -> Result<Json<Value>, ApiError> {
    let room = room_name(q.channel.map(Value::from).as_ref(), "channel")?;
    caller.may(&state, Action::Presence, &room)?;
    let members: Vec<Value> = answer(|done| state.hub.presence(&room, done))
        .await?
        .map_err(unavailable)?
        .into_iter()
        .map(|p| {
            let mut m = json!({"userId": &*p.user.0, "connections": p.connections});
            if let Some(name) = p.name {
                m["user"] = Value::from(&*name);
            }
            m
        })
        .collect();
    Ok(Json(json!({"channel": room.as_str(), "members": members})))
}

async fn channels(_: ApiKey, State(state): State<Arc<AppState>>) -> Json<Value> {
    let list: Vec<Value> = state
        .hub
        .channels()
        .into_iter()
        .map(|(name, members)| json!({"channel": name.as_str(), "members": members}))
        .collect();
    Json(json!({ "channels": list }))
}

async fn disconnect(
    _: ApiKey,
    State(state): State<Arc<AppState>>,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let Some(Value::String(user)) = body.get("userId") else {
        return Err(bad_request("missing string field \"userId\""));
    };
    let n = state.hub.disconnect_user(&UserId(Arc::from(user.as_str())));
    Ok(Json(json!({"userId": user, "disconnected": n})))
}

/// `POST /api/ticket`: a one-time connection ticket (`?ticket=` on `/ws`, `/events`,
/// `/poll`), valid once and for seconds, so that no long-lived token has to travel in a URL.
/// A user gets one for itself; a backend (API key) names the user: `{"sub": "alice",
/// "claims": {...}}`.
async fn ticket(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let Some(auth) = &state.config.auth else {
        return Err(bad_request(
            "tickets need authentication to be configured ([auth])",
        ));
    };
    let identity = match caller {
        Caller::User(identity) => identity,
        Caller::Backend => {
            let body: Map<String, Value> = match serde_json::from_slice(&body) {
                Ok(Value::Object(o)) => o,
                _ => return Err(bad_request("the body must be a JSON object with \"sub\"")),
            };
            // Nothing a caller sent is ignored: a field we do not know (a `ttl`, say) is an
            // error, not silently dropped.
            if let Some(unknown) = body
                .keys()
                .find(|k| !matches!(k.as_str(), "sub" | "claims"))
            {
                return Err(bad_request(format!(
                    "unknown field {unknown:?}: a ticket body has \"sub\" and \"claims\""
                )));
            }
            let Some(Value::String(sub)) = body.get("sub") else {
                return Err(bad_request("missing string field \"sub\""));
            };
            if sub.is_empty() || sub.len() > 256 {
                return Err(bad_request("\"sub\" must be 1 to 256 bytes"));
            }
            let mut claims = match body.get("claims") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(claims)) => claims.clone(),
                Some(_) => return Err(bad_request("\"claims\" must be an object")),
            };
            claims.insert("sub".into(), Value::from(sub.as_str()));
            Identity::from_claims(sub.clone(), claims, switchboard_auth::AuthMethod::Jwt)
        }
        Caller::Anonymous(_) => {
            return Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "a ticket needs credentials: a user token or the API key".into(),
            ))
        }
    };
    let ticket = auth.issue_ticket(identity).await.map_err(|e| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no ticket issued: {e}"),
        )
    })?;
    Ok(Json(json!({ "ticket": ticket })))
}
