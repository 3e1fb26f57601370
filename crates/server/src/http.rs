//! The HTTP routes of a Switchboard server, as an axum `Router` an application can embed.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, MethodRouter};
use axum::{Json, Router};
use http::{Request, StatusCode};

use switchboard_native_proto::WireFormat;

use std::time::Instant;

use switchboard_session::Session;

use crate::access::{self, WsAccess};
use crate::api;
use crate::engineio::{self, echo::EngineEcho, Endpoint as EngineEndpoint};
use crate::native::NativeSession;
use crate::socketio::SioConnection;
use crate::state::AppState;
use crate::ws::{self, handler};

/// Every route: `/ws`, `/events`, `/poll`, `/health`, `/ready`, `/metrics`, the HTTP API, and `/echo`
/// when enabled.
pub fn router(state: Arc<AppState>) -> Router {
    build(state, true)
}

/// [`router`] for an application that embeds Switchboard: the same routes but the landing
/// page, since `/` is the application's (`/client.js` stays, when `pages` is on).
pub fn embedded_router(state: Arc<AppState>) -> Router {
    build(state, false)
}

fn build(state: Arc<AppState>, landing: bool) -> Router {
    // Pages of other sites may read feeds and publish when their origin is configured.
    let cors = crate::cors::layer(&state.config.cors_origins);
    let browser = |route: MethodRouter<Arc<AppState>>| match &cors {
        Some(layer) => route.layer(layer.clone()),
        None => route,
    };
    let mut router = Router::new()
        // `any`, not `get`: a non-GET upgrade attempt gets the handshake's own 405 with `Allow`.
        .route("/ws", any(ws_endpoint))
        .route("/events", browser(get(crate::sse::events_endpoint)))
        .route("/poll", browser(get(crate::poll::poll_endpoint)))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(api::routes(browser));
    if state.config.socketio.enabled {
        let shared = crate::socketio::SioShared::new(&state);
        let endpoint = EngineEndpoint::<SioConnection>::start(&state, engine_config(&state));
        let socketio = move |State(state): State<Arc<AppState>>, req: Request<Body>| {
            let (endpoint, shared) = (endpoint.clone(), shared.clone());
            async move {
                engineio::serve(&endpoint, &state, req, |handshake| {
                    let state = state.clone();
                    async move { Ok(SioConnection::open(&shared, &state, handshake).await) }
                })
                .await
            }
        };
        let path = state.config.socketio.path.clone();
        let bare = path.trim_end_matches('/');
        if !bare.is_empty() && bare != path {
            router = router.route(bare, browser(any(socketio.clone())));
        }
        router = router.route(&path, browser(any(socketio)));
    }
    if state.config.pages {
        router = router.merge(crate::pages::routes(landing));
    }
    if state.config.echo {
        let engine_echo = EngineEndpoint::<EngineEcho>::start(&state, engine_config(&state));
        let engine_echo = move |State(state): State<Arc<AppState>>, req: Request<Body>| {
            let endpoint = engine_echo.clone();
            async move { engineio::serve(&endpoint, &state, req, |_| async { Ok(EngineEcho) }).await }
        };
        router = router
            .route("/echo", any(echo_endpoint))
            .route("/engine.io/", browser(any(engine_echo.clone())))
            .route("/engine.io", browser(any(engine_echo)));
    }
    let forwarder = state.forwarder().cloned();
    // What may be forwarded here: the routes of sessions that span requests.
    let mut polling_paths = vec!["/poll".to_owned()];
    if state.config.socketio.enabled {
        polling_paths.push(state.config.socketio.path.clone());
    }
    if state.config.echo {
        polling_paths.push("/engine.io/".to_owned());
    }
    let router = router.with_state(state);
    if let Some(forwarder) = forwarder {
        crate::forward::serve_through(&forwarder, router.clone(), polling_paths);
    }
    router
}

/// The Engine.IO settings of the server's endpoints.
fn engine_config(state: &AppState) -> switchboard_engineio_proto::Config {
    let sio = &state.config.socketio;
    switchboard_engineio_proto::Config {
        ping_interval: sio.ping_interval,
        ping_timeout: sio.ping_timeout,
        max_payload: sio.max_payload,
        ..Default::default()
    }
}

async fn ws_endpoint(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    // Cross-site WebSocket hijacking: a page of an unlisted origin gets 403 (before the
    // upgrade: the page learns nothing).
    if let Err(refused) = access::check_origin(&state, req.headers()) {
        return refused.into_response();
    }
    let ip = ws::peer_addr(&req).map(|a| a.ip());
    let info = access::connect_info(req.headers(), ip, "websocket");
    let access = access::websocket(&state, req.headers(), req.uri(), &info).await;
    let access = match access {
        WsAccess::Forbidden(refused) => return refused.into_response(),
        access => access,
    };
    if let WsAccess::Refused(e) = &access {
        // Accepted, then closed with 4001 and why: the client's reconnect logic fetches a
        // fresh token on 4001 (SPEC §4).
        let refuse = handler::Refuse {
            code: e.close_code(),
            reason: e.close_reason(),
        };
        return ws::upgrade(&state, req, &WireFormat::SUBPROTOCOLS, |_| {
            (refuse, state.hub.unique_id())
        })
        .await;
    }
    // The wire format: a subprotocol (`switchboard.msgpack`) wins over `?format=msgpack`;
    // JSON by default.
    let queried = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("format=")))
        .and_then(WireFormat::from_query_value);
    let user = match &access {
        WsAccess::Authenticated(identity) => Some(access::user_of(identity)),
        _ => None,
    };
    let shared = state.native.clone();
    let auth_configured = state.config.auth.is_some();
    ws::upgrade_as(
        &state,
        req,
        user.as_ref(),
        &WireFormat::SUBPROTOCOLS,
        move |protocol| {
            let format = protocol
                .and_then(WireFormat::from_subprotocol)
                .or(queried)
                .unwrap_or_default();
            let now = Instant::now();
            let session = match access {
                WsAccess::Authenticated(identity) => {
                    Session::authenticated(shared, identity, info, now)
                }
                WsAccess::AwaitAuth => Session::awaiting_auth(shared, info, now),
                // (`Refused` and `Forbidden` were answered above.)
                _ if auth_configured => Session::anonymous(shared, now).with_connect_info(info),
                _ => Session::anonymous(shared, now),
            };
            let session = NativeSession::new(session.with_format(format));
            let conn_id = session.connection_id();
            (session, conn_id)
        },
    )
    .await
}

async fn echo_endpoint(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    ws::upgrade(&state, req, &[], |_| (handler::Echo, state.hub.unique_id())).await
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    Json(serde_json::json!({
        "status": if state.shutdown.is_cancelled() { "draining" } else { "ok" },
        "connections": state.connection_count(),
        "uptime": state.started.elapsed().as_secs(),
    }))
    .into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}
