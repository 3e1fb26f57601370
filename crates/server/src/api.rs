//! The HTTP API for backends (SPEC §5): publish, broadcast, history, presence, channels,
//! disconnect. Authenticated with an API key (`Authorization: Bearer <key>`); every error is
//! JSON `{"error": message}` with an HTTP status.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use switchboard_hub::{RoomName, UserId};
use switchboard_native_proto::stamp_relay;

use crate::state::AppState;

/// The user id that API publications carry.
const API_USER: &str = "api";

/// The `/api/*` routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/publish", post(publish))
        .route("/api/broadcast", post(broadcast))
        .route("/api/history", get(history))
        .route("/api/presence", get(presence))
        .route("/api/channels", get(channels))
        .route("/api/disconnect", post(disconnect))
}

/// An API error: status and message, answered as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

/// Check the API key. Without a configured key the API is closed (401 with a hint), so an
/// unconfigured server never accepts anonymous publications.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let keys = &state.config.api_keys;
    if keys.is_empty() {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "the HTTP API is disabled: start the server with an API key (--api-key)".into(),
        ));
    }
    let presented = headers
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
            Ok(())
        }
        Some(_) => Err(ApiError(StatusCode::UNAUTHORIZED, "invalid API key".into())),
        None => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "missing Authorization: Bearer <API key>".into(),
        )),
    }
}

/// Compare without an early exit on the first differing byte (no timing oracle on the key).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parse a JSON body into an object, with a clear error.
fn object(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(bad_request("the body must be a JSON object")),
        Err(e) => Err(bad_request(format!("invalid JSON: {e}"))),
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

/// Publish one message to `room` as the API user; deduplicated by `id` when given.
fn publish_one(
    state: &AppState,
    room: &RoomName,
    body: &Map<String, Value>,
) -> Result<Value, ApiError> {
    let hub = &state.hub;
    let api_user = UserId(Arc::from(API_USER));
    let id = match body.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => return Err(bad_request("\"id\" must be a string or a number")),
    };
    if let Some(id) = &id {
        if let Some(offset) = hub.seen_message(&api_user, id) {
            let (_, _, epoch) = hub.history(room, Some(u64::MAX), Some(0));
            return Ok(
                json!({"channel": room.as_str(), "offset": offset, "epoch": &*epoch, "duplicate": true}),
            );
        }
    }
    let kind = match body.get("type") {
        None | Some(Value::Null) => "publish".to_owned(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(bad_request("\"type\" must be a non-empty string")),
    };
    let mut message = Map::new();
    message.insert("type".into(), Value::from(kind));
    message.insert(
        "data".into(),
        body.get("data").cloned().unwrap_or(Value::Null),
    );
    if let Some(id) = &id {
        message.insert("id".into(), Value::from(id.as_str()));
    }
    let generated = format!("api-{}", hub.unique_id());
    let room_str = room.as_str().to_owned();
    let published = hub.publish(room, move |offset, ts| {
        stamp_relay(message, API_USER, &room_str, ts, offset, &generated)
    });
    if let Some(id) = &id {
        hub.record_message(&api_user, id, published.offset);
    }
    if published.dropped > 0 {
        state.metrics.dropped.add(published.dropped as u64);
    }
    Ok(json!({
        "channel": room.as_str(),
        "offset": published.offset,
        "epoch": &*published.epoch,
        "delivered": published.delivered,
    }))
}

async fn publish(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let body = object(&body)?;
    let room = room_name(body.get("channel").or_else(|| body.get("room")), "channel")?;
    publish_one(&state, &room, &body).map(Json)
}

async fn broadcast(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let body = object(&body)?;
    let Some(Value::Array(channels)) = body.get("channels") else {
        return Err(bad_request("missing array field \"channels\""));
    };
    if channels.len() > 1000 {
        return Err(bad_request("at most 1000 channels per broadcast"));
    }
    // Validate every name before publishing anything: all or nothing.
    let rooms = channels
        .iter()
        .map(|c| room_name(Some(c), "channels[]"))
        .collect::<Result<Vec<_>, _>>()?;
    // One id per channel: the dedup key is the id, so suffix it with the channel.
    let mut results = Vec::with_capacity(rooms.len());
    for room in &rooms {
        let mut one = body.clone();
        if let Some(id) = body.get("id").and_then(|v| v.as_str().map(str::to_owned)) {
            one.insert("id".into(), Value::from(format!("{id}:{}", room.as_str())));
        }
        results.push(publish_one(&state, room, &one)?);
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
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<ChannelQuery>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let room = room_name(q.channel.map(Value::from).as_ref(), "channel")?;
    let (messages, offset, epoch) = state.hub.history(&room, q.since, q.limit);
    let head = json!({"channel": room.as_str(), "offset": offset, "epoch": &*epoch});
    let out = crate::native::with_messages(&head, &messages);
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        out,
    )
        .into_response())
}

async fn presence(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<ChannelQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let room = room_name(q.channel.map(Value::from).as_ref(), "channel")?;
    let members: Vec<Value> = state
        .hub
        .presence(&room)
        .into_iter()
        .map(|p| json!({"userId": &*p.user.0, "connections": p.connections}))
        .collect();
    Ok(Json(json!({"channel": room.as_str(), "members": members})))
}

async fn channels(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let list: Vec<Value> = state
        .hub
        .channels()
        .into_iter()
        .map(|(name, members)| json!({"channel": name.as_str(), "members": members}))
        .collect();
    Ok(Json(json!({ "channels": list })))
}

async fn disconnect(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let body = object(&body)?;
    let Some(Value::String(user)) = body.get("userId") else {
        return Err(bad_request("missing string field \"userId\""));
    };
    let n = state.hub.disconnect_user(&UserId(Arc::from(user.as_str())));
    Ok(Json(json!({"userId": user, "disconnected": n})))
}
