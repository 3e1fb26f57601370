//! Server-Sent Events on `GET /events` (SPEC §1.2): one stream subscribed to many rooms, on
//! the session core like every transport. The stream's position in each room travels as the
//! event id ([`cursor`]), so a browser's own reconnect (`Last-Event-ID`) replays exactly what
//! it missed in every room, or says `event: reset` for the rooms whose history no longer
//! covers the gap.
//!
//! The stream itself is sans-IO ([`stream`]). Two drivers send it: on a connection whose
//! first request is the stream, the server takes the socket from hyper ([`crate::front`])
//! and runs its own driver, which parks the stream without a task while idle ([`direct`]);
//! everywhere else (TLS, HTTP/2, kept-alive connections, embedding) it is a response body
//! ([`body`]).

mod body;
pub(crate) mod direct;
mod frame;
pub(crate) mod stream;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue};

use switchboard_auth::Action;

use crate::access;
use crate::api::{bad_request, ApiError, ApiQuery};
use crate::feed::cursor;
use crate::feed::{self};
use crate::front::StreamSlot;
use crate::state::{AppState, TransportKind};
use body::SseBody;
use stream::SseStream;

#[derive(Debug, serde::Deserialize)]
pub(crate) struct StreamQuery {
    channels: Option<String>,
    channel: Option<String>,
    #[serde(rename = "lastEventId")]
    last_event_id: Option<String>,
}

/// `GET /events?channels=a,b[&lastEventId=…]`.
pub(crate) async fn events_endpoint(
    State(state): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<StreamQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    let rooms = feed::parse_channels(query.channels.as_deref(), query.channel.as_deref())?;
    // The browser's reconnect header wins over the page's first-request parameter.
    let last_id = match req.headers().get("last-event-id") {
        Some(v) => v
            .to_str()
            .map_err(|_| bad_request("invalid Last-Event-ID"))?
            .trim()
            .to_owned(),
        None => query.last_event_id.unwrap_or_default(),
    };
    let positions = cursor::decode(&last_id, rooms.len())
        .map_err(|e| bad_request(format!("invalid Last-Event-ID: {e}")))?;
    feed::refuse_if_shutting_down(&state)?;
    let ip = crate::ws::peer_addr(&req).map(|a| a.ip());
    access::check_origin(&state, req.headers())?;
    let identity = access::identify_http(&state, req.headers(), req.uri(), ip, "sse").await?;
    for room in &rooms {
        access::authorize(&state, identity.as_ref(), Action::Subscribe, room.as_str())?;
    }
    let user = identity.as_ref().map(access::user_of);
    let guard = match state.admit(TransportKind::Sse, ip, user.as_ref()).await {
        Ok(guard) => guard,
        Err(refusal) => return Ok(refusal.into_response()),
    };
    let since = feed::since_of(&state, &rooms, &positions).await?;
    let info = access::connect_info(req.headers(), ip, "sse");
    let stream = SseStream::open(&state, guard, identity, info, rooms, positions, since);
    let body = match req.extensions().get::<StreamSlot>() {
        // Our own connection: the front writes the head and drives the stream.
        Some(slot) => {
            slot.put(stream);
            Body::empty()
        }
        None => Body::new(SseBody::new(stream)),
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx and other proxies: do not buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}
