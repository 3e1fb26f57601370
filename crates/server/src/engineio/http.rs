//! The HTTP side of an Engine.IO endpoint: handshakes, polling GETs and POSTs, and the
//! WebSocket requests (new sessions and upgrades), validated by the sans-IO `classify`.

use std::future::{poll_fn, Future};
use std::net::IpAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method as HttpMethod, Request, StatusCode, Uri};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use switchboard_engineio_proto::{
    classify, EngineRequest, GetOutcome, Method, PollId, PostId, RequestError, Session, Transport,
    POLL_CONTENT_TYPE, POST_OK,
};

use super::app::{App, Engine};
use super::slot::Slot;
use super::ws::EngineWs;
use super::{new_sid, owner_elsewhere, Endpoint};
use crate::state::{AppState, TransportKind};
use crate::ws::{self, UpgradeOptions};

/// What the application of a new session is made from.
pub(crate) struct Handshake {
    /// The handshake request's headers (credentials, origin).
    pub(crate) headers: HeaderMap,
    /// Its URI (a token in the query).
    pub(crate) uri: Uri,
    /// The client's address.
    pub(crate) ip: Option<IpAddr>,
}

/// Serve one request to `endpoint`. `make_app` makes the application of a new session (it
/// may refuse with its own answer).
pub(crate) async fn serve<A, F, Fut>(
    endpoint: &Arc<Endpoint<A>>,
    state: &Arc<AppState>,
    req: Request<Body>,
    make_app: F,
) -> Response
where
    A: App,
    F: FnOnce(Handshake) -> Fut,
    Fut: Future<Output = Result<A, Response>>,
{
    let method = match *req.method() {
        HttpMethod::GET => Method::Get,
        HttpMethod::POST => Method::Post,
        _ => Method::Other,
    };
    let upgrade = is_websocket_upgrade(req.headers());
    let query = req.uri().query().unwrap_or("").to_owned();
    let request = match classify(method, &query, upgrade, endpoint.transports) {
        Ok(request) => request,
        Err(e) => return refuse(e),
    };
    if crate::access::check_origin(state, req.headers()).is_err() {
        return refuse(RequestError::Forbidden);
    }
    let ip = ws::peer_addr(&req).map(|a| a.ip());
    match request {
        EngineRequest::Handshake { transport } => {
            let handshake = Handshake {
                headers: req.headers().clone(),
                uri: req.uri().clone(),
                ip,
            };
            let app = match make_app(handshake).await {
                Ok(app) => app,
                Err(response) => return response,
            };
            let Some(sid) = new_sid(state) else {
                return (StatusCode::SERVICE_UNAVAILABLE, "no randomness\n").into_response();
            };
            match transport {
                Transport::Polling => {
                    let guard = match state.admit(TransportKind::SocketIo, ip, None).await {
                        Ok(guard) => guard,
                        Err(refusal) => return refusal.into_response(),
                    };
                    let now = Instant::now();
                    let (session, body) = Session::polling(sid, endpoint.config.clone(), now);
                    let key: Arc<str> = Arc::from(session.sid().as_str());
                    let slot = Arc::new(Slot::new(Engine { session, app }, guard));
                    {
                        let mut shared = slot.lock();
                        endpoint.settle(&key, &mut shared);
                    }
                    endpoint.insert(key, slot);
                    ok(body)
                }
                Transport::WebSocket => {
                    let config = endpoint.config.clone();
                    let id = state.hub.unique_id();
                    ws::upgrade_with(state, req, None, &[], options(endpoint), move |_| {
                        let (session, ws) = Session::websocket(sid, config, Instant::now());
                        (EngineWs::owned(Engine { session, app }, ws), id)
                    })
                    .await
                }
            }
        }
        EngineRequest::Poll { sid } => match endpoint.get(sid) {
            Some(slot) => poll(endpoint, slot, Arc::from(sid)).await,
            None => forward_or_refuse(endpoint, state, sid, req).await,
        },
        EngineRequest::Post { sid } => match endpoint.get(sid) {
            Some(slot) => post(endpoint, slot, Arc::from(sid), req).await,
            None => forward_or_refuse(endpoint, state, sid, req).await,
        },
        EngineRequest::Upgrade { sid } => {
            let Some(slot) = endpoint.get(sid) else {
                return refuse(RequestError::UnknownSid);
            };
            let key: Arc<str> = Arc::from(sid);
            let opened = {
                let mut shared = slot.lock();
                let opened = shared.engine.session.handle_ws_open(Instant::now());
                endpoint.settle(&key, &mut shared);
                opened
            };
            let ws_id = match opened {
                Ok(ws_id) => ws_id,
                Err(e) => return refuse(e),
            };
            let id = state.hub.unique_id();
            let endpoint = endpoint.clone();
            ws::upgrade_with(state, req, None, &[], options(&endpoint), move |_| {
                (EngineWs::shared(endpoint, slot, key, ws_id), id)
            })
            .await
        }
    }
}

/// A poll or post for a session this node does not hold: run by the node that made it
/// (see `crate::forward`), else refused as for an unknown sid.
async fn forward_or_refuse<A>(
    endpoint: &Endpoint<A>,
    state: &AppState,
    sid: &str,
    req: Request<Body>,
) -> Response {
    let Some(owner) = owner_elsewhere(state, sid) else {
        return refuse(RequestError::UnknownSid);
    };
    let config = &endpoint.config;
    // A held GET is answered within a ping interval (the ping); the rest is slack.
    let timeout = config.ping_interval + config.ping_timeout + Duration::from_secs(5);
    crate::forward::forward(state, owner, req, config.max_payload, timeout)
        .await
        .unwrap_or_else(|_| refuse(RequestError::UnknownSid))
}

/// The WebSocket connections of an Engine.IO endpoint: `maxPayload` bounds messages, and no
/// compression (the reference server's default; it also keeps the pong `3` recognisable by
/// a parked connection).
fn options<A>(endpoint: &Endpoint<A>) -> UpgradeOptions {
    UpgradeOptions {
        kind: TransportKind::SocketIo,
        max_message_size: endpoint.config.max_payload,
        deflate: false,
    }
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The answer to a refused request, as the reference server gives it.
fn refuse(e: RequestError) -> Response {
    let mut response = Response::new(Body::from(e.body()));
    *response.status_mut() = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    if let Some(content_type) = e.content_type() {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    response
}

/// A polling answer.
fn ok(body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(POLL_CONTENT_TYPE),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A GET: answered now, or held until the session has something to send.
async fn poll<A: App>(endpoint: &Arc<Endpoint<A>>, slot: Arc<Slot<A>>, sid: Arc<str>) -> Response {
    let now = Instant::now();
    let (outcome, closed) = {
        let mut shared = slot.lock();
        // What the application has waiting goes into this answer.
        shared
            .engine
            .with_app(now, |app, out| app.write_outbound(out));
        let outcome = shared.engine.session.handle_get(now);
        shared.engine.pump(now);
        let closed = endpoint.settle(&sid, &mut shared);
        (outcome, closed)
    };
    if closed {
        endpoint.remove(&sid);
    }
    let id = match outcome {
        Err(e) => return refuse(e),
        Ok(GetOutcome::Respond(body)) => return ok(body),
        Ok(GetOutcome::Wait(id)) => id,
    };
    let mut held = HeldGet {
        endpoint,
        slot: &slot,
        sid: &sid,
        id,
        answered: false,
    };
    let body = poll_fn(|cx| {
        let mut shared = slot.lock();
        loop {
            if let Some((answered, _)) = &shared.answer {
                if *answered == id {
                    let (_, body) = shared.answer.take().expect("checked");
                    return Poll::Ready(body);
                }
                // An answer for an earlier GET nobody took any more.
                shared.answer = None;
            }
            if shared.engine.session.held_get() != Some(id) {
                // Not expected (the session answers every GET it lets go of): say "closed".
                return Poll::Ready(Bytes::from_static(b"1"));
            }
            if shared.engine.app.poll_outbound(cx).is_ready() {
                let now = Instant::now();
                shared
                    .engine
                    .with_app(now, |app, out| app.write_outbound(out));
                endpoint.settle(&sid, &mut shared);
                continue;
            }
            shared.get_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
    })
    .await;
    held.answered = true;
    drop(held);
    let closed = slot.lock().is_closed();
    if closed {
        endpoint.remove(&sid);
    }
    ok(body)
}

/// A held GET; dropped before its answer (the client went away), it closes the session, as
/// the reference server does.
struct HeldGet<'a, A: App> {
    endpoint: &'a Arc<Endpoint<A>>,
    slot: &'a Arc<Slot<A>>,
    sid: &'a Arc<str>,
    id: PollId,
    answered: bool,
}

impl<A: App> Drop for HeldGet<'_, A> {
    fn drop(&mut self) {
        let closed = {
            let mut shared = self.slot.lock();
            shared.get_waker = None;
            if self.answered {
                return;
            }
            if matches!(&shared.answer, Some((id, _)) if *id == self.id) {
                shared.answer = None;
            }
            shared
                .engine
                .session
                .handle_poll_gone(self.id, Instant::now());
            shared.engine.pump(Instant::now());
            self.endpoint.settle(self.sid, &mut shared)
        };
        if closed {
            self.endpoint.remove(self.sid);
        }
    }
}

/// A POST: its body read within `maxPayload` and handed to the session.
async fn post<A: App>(
    endpoint: &Arc<Endpoint<A>>,
    slot: Arc<Slot<A>>,
    sid: Arc<str>,
    req: Request<Body>,
) -> Response {
    let binary = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/octet-stream"));
    let started = {
        let mut shared = slot.lock();
        let started = shared.engine.session.handle_post_start(Instant::now());
        if endpoint.settle(&sid, &mut shared) {
            drop(shared);
            endpoint.remove(&sid);
        }
        started
    };
    let id = match started {
        Ok(id) => id,
        Err(e) => return refuse(e),
    };
    let mut reading = ReadingPost {
        endpoint,
        slot: &slot,
        sid: &sid,
        id,
        done: false,
    };
    let limit = endpoint.config.max_payload;
    let body = Limited::new(req.into_body(), limit).collect().await;
    reading.done = true;
    drop(reading);
    let now = Instant::now();
    let (result, closed) = {
        let mut shared = slot.lock();
        let result = match body {
            Ok(body) => {
                let result = shared
                    .engine
                    .session
                    .handle_post(id, body.to_bytes(), binary, now);
                shared.engine.pump(now);
                result
            }
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                Err(shared.engine.session.handle_post_too_large(id, now))
            }
            Err(_) => {
                shared.engine.session.handle_post_aborted(id, now);
                Err(RequestError::BadRequest)
            }
        };
        shared.engine.pump(now);
        (result, endpoint.settle(&sid, &mut shared))
    };
    if closed {
        endpoint.remove(&sid);
    }
    match result {
        Ok(()) => {
            let mut response = Response::new(Body::from(Bytes::from_static(POST_OK)));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            response
        }
        Err(e) => refuse(e),
    }
}

/// A POST whose body is being read; dropped before (the client went away), it closes the
/// session.
struct ReadingPost<'a, A: App> {
    endpoint: &'a Arc<Endpoint<A>>,
    slot: &'a Arc<Slot<A>>,
    sid: &'a Arc<str>,
    id: PostId,
    done: bool,
}

impl<A: App> Drop for ReadingPost<'_, A> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let closed = {
            let mut shared = self.slot.lock();
            let now = Instant::now();
            shared.engine.session.handle_post_aborted(self.id, now);
            shared.engine.pump(now);
            self.endpoint.settle(self.sid, &mut shared)
        };
        if closed {
            self.endpoint.remove(self.sid);
        }
    }
}
