//! WebSocket endpoints: the HTTP upgrade (validated by the sans-IO handshake) and the hand-off
//! of the raw TCP stream to a [`driver`] task.

pub mod driver;
pub mod handler;
pub mod park;
pub mod stream;
pub mod transport;

use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, Request, StatusCode, Version};
use hyper_util::rt::TokioIo;
use switchboard_ws_proto::handshake::server::validate_request;
use switchboard_ws_proto::{Config, Connection};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::state::{AppState, ConnectionGuard, PeerAddr, TransportKind};
use driver::{Ended, Idle, Outcome, Session};
use handler::Handler;
use park::{Parked, Verdict};
use stream::StreamTransport;
use transport::{TlsTransport, Transport};

/// Answer an upgrade request: `101` and a driver task running the handler `open` makes, or
/// the HTTP error the handshake rules name (400, 405, 426), the connection limits (429,
/// 503), or 505 for a request over HTTP/2 (WebSocket over HTTP/2 is not served).
///
/// `open` runs only once the handshake is valid and the connection admitted: a refused
/// request creates no session and registers nothing. It returns the handler and the id that
/// names the connection in logs (for `/ws`, the `connectionId` of `welcome`). It is told the
/// subprotocol chosen: the first the client offered that `protocols` contains.
pub async fn upgrade<H: Handler>(
    state: &Arc<AppState>,
    req: Request<Body>,
    protocols: &[&str],
    open: impl FnOnce(Option<&str>) -> (H, u64),
) -> Response {
    upgrade_as(state, req, None, protocols, open).await
}

/// [`upgrade`] for a connection of an authenticated `user` (the per-user connection limit
/// counts it).
pub async fn upgrade_as<H: Handler>(
    state: &Arc<AppState>,
    req: Request<Body>,
    user: Option<&switchboard_hub::UserId>,
    protocols: &[&str],
    open: impl FnOnce(Option<&str>) -> (H, u64),
) -> Response {
    let options = UpgradeOptions {
        kind: TransportKind::WebSocket,
        max_message_size: state.config.max_message_size,
        deflate: true,
    };
    upgrade_with(state, req, user, protocols, options, open).await
}

/// How an endpoint's WebSocket connections differ from `/ws`'s.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpgradeOptions {
    /// What the connection counts as (limits, metrics).
    pub kind: TransportKind,
    /// The largest message accepted (larger ones close the connection with 1009).
    pub max_message_size: usize,
    /// Whether permessage-deflate may be negotiated (when the server enables it).
    pub deflate: bool,
}

/// [`upgrade_as`] with the endpoint's own [`UpgradeOptions`].
pub(crate) async fn upgrade_with<H: Handler>(
    state: &Arc<AppState>,
    mut req: Request<Body>,
    user: Option<&switchboard_hub::UserId>,
    protocols: &[&str],
    options: UpgradeOptions,
    open: impl FnOnce(Option<&str>) -> (H, u64),
) -> Response {
    if req.version() > Version::HTTP_11 {
        // HTTP/2 (ALPN `h2` over TLS) has no Upgrade, and WebSocket over HTTP/2 (RFC 8441
        // extended CONNECT) is not served: say so, rather than a handshake error that blames
        // a missing `Connection` header the client may not even be allowed to send.
        return (
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            "WebSocket needs HTTP/1.1: WebSocket over HTTP/2 is not supported\n",
        )
            .into_response();
    }
    let headers = req
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()));
    let upgrade = match validate_request(
        req.method().as_str(),
        req.version() >= Version::HTTP_11,
        headers,
    ) {
        Ok(u) => u,
        Err(e) => {
            let mut resp = (
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
                format!("{e}\n"),
            )
                .into_response();
            for (name, value) in e.response_headers() {
                resp.headers_mut()
                    .insert(*name, HeaderValue::from_static(value));
            }
            return resp;
        }
    };
    // Limits are checked after validation (a malformed request gets its 400 first) and the
    // slot is taken now, so that concurrent handshakes can not overshoot.
    let peer = peer_addr(&req);
    // Anonymous connections (no `user`) are each a user of their own for the per-user limit.
    let guard = match state.admit(options.kind, peer.map(|p| p.ip()), user).await {
        Ok(guard) => guard,
        Err(refusal) => return refusal.into_response(),
    };
    let deflate_policy = state.config.deflate.as_ref().filter(|_| options.deflate);
    let accepted = upgrade.accept(protocols, deflate_policy);
    let (handler, conn_id) = open(accepted.protocol.as_deref());
    let deflate = accepted.deflate;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let task_state = state.clone();
    // The task captures as little as possible: its captures stay in the state of every
    // connection for as long as the task lives (memory per idle connection is a product goal).
    // The connection's log lines carry its id and peer, in a debug span entered only to log
    // (not wrapped around the task: entering a span on every poll of every connection costs
    // measurably in a fan-out), and disabled at the default `info` level.
    let ctx = ConnCtx { guard, id: conn_id };
    ctx.span().in_scope(|| {
        tracing::debug!(
            path = %crate::redact::redact_path_and_query(
                req.uri().path_and_query().map_or("/", |p| p.as_str())
            ),
            "websocket upgrade"
        );
    });
    let task = async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                ctx.span()
                    .in_scope(|| tracing::debug!(error = %e, "upgrade failed"));
                // Counted as connected at admission: keep connects and disconnects balanced.
                ctx.count_disconnect(1006, "upgrade_failed");
                return;
            }
        };
        let stream = take_stream(upgraded, task_state.config.socket_send_buffer);
        let config = &task_state.config;
        let mut conn = Connection::server(&Config {
            max_message_size: options.max_message_size,
        });
        if let (Some(params), Some(policy)) = (deflate, config.deflate.as_ref()) {
            conn = conn.with_deflate(params, policy);
        }
        let limits = &task_state.driver_limits;
        match stream {
            Stream::Plain(tcp, leftover) => {
                drive(Session::open(tcp, leftover, conn, handler, limits), ctx).await
            }
            Stream::Tls(tls, leftover) => {
                drive(Session::open(tls, leftover, conn, handler, limits), ctx).await
            }
            // Boxed: the task of every connection is as large as its largest state, and this
            // path (an embedding application's server) must not size the others.
            Stream::Other(io) => {
                let session = Session::open(io, Bytes::new(), conn, handler, limits);
                Box::pin(drive(session, ctx)).await
            }
        }
    };
    state.tracker.spawn(task);

    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    for (name, value) in accepted.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    resp
}

/// What a connection holds for its whole life besides its [`Session`]: its admission (the
/// connection limits and gauges, released when dropped) and its id for logs.
struct ConnCtx {
    guard: ConnectionGuard,
    id: u64,
}

impl ConnCtx {
    fn state(&self) -> &Arc<AppState> {
        self.guard.state()
    }

    /// The span of the connection's log lines (created when something is logged: a span
    /// held by every connection would cost memory, and is disabled at `info` anyway).
    fn span(&self) -> tracing::Span {
        tracing::debug_span!("ws", conn = self.id, peer = ?self.guard.ip())
    }

    /// Count the connection's end in `disconnects_total`.
    fn count_disconnect(&self, code: u16, reason: &'static str) {
        self.guard.count_disconnect(code, reason);
    }

    /// The connection is over: count and log it (and release its admission).
    fn finish(self, ended: Ended) {
        // 1006: no closing handshake (RFC 6455 §7.1.5).
        self.count_disconnect(ended.close_code.unwrap_or(1006), ended.reason.label());
        self.span().in_scope(|| {
            tracing::debug!(
                reason = ?ended.reason,
                code = ?ended.close_code,
                "websocket connection ended"
            )
        });
    }
}

/// A connection's task: run its driver until the connection ends or parks.
async fn drive<T: Transport, H: Handler>(session: Session<T, H>, ctx: ConnCtx) {
    let state = ctx.state();
    let outcome = driver::run(
        session,
        &state.driver_limits,
        state.parking.is_running(),
        &state.shutdown,
        &state.metrics,
    )
    .await;
    match outcome {
        Outcome::Ended(ended) => ctx.finish(ended),
        Outcome::Parked(idle) => {
            let state = ctx.state().clone();
            state
                .parking
                .park(ctx.id, Box::new(ParkedConnection { idle, ctx }));
        }
    }
}

/// An idle connection in a parking lot: its codec and handler state, and its [`ConnCtx`].
struct ParkedConnection<H> {
    idle: Idle<H>,
    ctx: ConnCtx,
}

impl<H: Handler> Parked for ParkedConnection<H> {
    fn socket(&self) -> &std::net::TcpStream {
        self.idle.socket()
    }

    fn deadline(&self) -> std::time::Instant {
        let heartbeat = self.idle.deadline(&self.ctx.state().driver_limits);
        match self.idle.handler().expires_at() {
            Some(expiry) => expiry.min(heartbeat),
            None => heartbeat,
        }
    }

    fn on_deadline(&mut self, now: std::time::Instant) -> Verdict {
        if self.idle.handler().expires_at().is_some_and(|at| now >= at) {
            // The resumed driver closes it (4001 "Token expired").
            return Verdict::Resume;
        }
        let state = self.ctx.state();
        self.idle
            .on_deadline(now, &state.driver_limits, &state.metrics)
    }

    fn on_readable(&mut self) -> Verdict {
        self.idle.on_readable(&self.ctx.state().metrics)
    }

    fn poll_outbound(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.idle.poll_outbound(cx)
    }

    fn resume(self: Box<Self>) {
        let ParkedConnection { idle, ctx } = *self;
        match idle.resume() {
            Ok(session) => {
                let tracker = ctx.state().tracker.clone();
                tracker.spawn(drive(session, ctx));
            }
            Err((e, ended)) => {
                tracing::warn!(error = %e, "could not resume a parked connection");
                ctx.finish(ended);
            }
        }
    }
}

/// The byte stream an upgraded connection continues on, with the bytes already read past the
/// request head.
enum Stream {
    Plain(TcpStream, Bytes),
    Tls(TlsTransport, Bytes),
    /// Served by someone else's hyper setup (an embedding application): the IO can not be
    /// taken apart, so it is used as an async stream (it replays its own leftover bytes).
    Other(StreamTransport<TokioIo<hyper::upgrade::Upgraded>>),
}

/// The peer's address: from our listener ([`PeerAddr`]) or, in an embedding application,
/// from axum's `ConnectInfo` (`into_make_service_with_connect_info::<SocketAddr>()`).
/// Without either the per-IP limit can not apply: said once in the log, not silently.
pub(crate) fn peer_addr(req: &Request<Body>) -> Option<std::net::SocketAddr> {
    peer_addr_in(req.extensions())
}

/// [`peer_addr`] from a request's extensions.
pub(crate) fn peer_addr_in(extensions: &http::Extensions) -> Option<std::net::SocketAddr> {
    if let Some(p) = extensions.get::<PeerAddr>() {
        return Some(p.0);
    }
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>() {
        return Some(info.0);
    }
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            "peer addresses are unknown, so max_connections_per_ip does not apply: serve the \
             router with into_make_service_with_connect_info::<SocketAddr>()"
        )
    });
    None
}

/// Take the socket back from hyper (readiness-based I/O, no buffers while idle). Our listener
/// serves TCP, plain or TLS, through hyper-util's `TokioIo`, so one of the downcasts succeeds
/// there; anything else is used as it is.
fn take_stream(upgraded: hyper::upgrade::Upgraded, send_buffer: Option<usize>) -> Stream {
    let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let tcp = parts.io.into_inner();
            tune_socket(&tcp, send_buffer);
            return Stream::Plain(tcp, parts.read_buf);
        }
        Err(upgraded) => upgraded,
    };
    let parts = match upgraded.downcast::<TokioIo<TlsStream<TcpStream>>>() {
        Ok(parts) => parts,
        Err(upgraded) => return Stream::Other(StreamTransport::new(TokioIo::new(upgraded))),
    };
    let (tcp, tls) = parts.io.into_inner().into_inner();
    tune_socket(&tcp, send_buffer);
    let (transport, pending) = TlsTransport::new(tcp, tls);
    // Hyper's leftover came out of rustls first, then what rustls still holds.
    let leftover = if pending.is_empty() {
        parts.read_buf
    } else {
        let mut all = BytesMut::from(&parts.read_buf[..]);
        all.extend_from_slice(&pending);
        all.freeze()
    };
    Stream::Tls(transport, leftover)
}

/// Socket options of a WebSocket: no Nagle delay (messages are latency-bound and we batch
/// writes ourselves), and a bounded kernel send buffer (`ServerConfig::socket_send_buffer`).
pub(crate) fn tune_socket(stream: &TcpStream, send_buffer: Option<usize>) {
    let _ = stream.set_nodelay(true);
    if let Some(size) = send_buffer {
        let _ = socket2::SockRef::from(stream).set_send_buffer_size(size);
    }
}

#[cfg(test)]
mod tests {
    /// Every idle room member on `/ws` is one parked box of this type: 256 B is a mimalloc
    /// size class, and more than 24 B more cost the next class (320 B) per member (measured
    /// with `bench --only switchboard,idle-members`). Make room before adding a field.
    #[test]
    fn a_parked_native_connection_fits_its_allocation_class() {
        let size = std::mem::size_of::<super::ParkedConnection<crate::native::NativeSession>>();
        assert!(size <= 256, "a parked /ws connection is {size} B");
    }
}
#[cfg(test)]
mod socketio_size {
    /// Every idle Socket.IO room member is one parked box of this type (plus its socket and
    /// core session): 512 B is a mimalloc size class, and 8 B more cost the next one (640 B)
    /// per member (`bench --only switchboard,idle-sio`). Make room before adding a field.
    #[test]
    fn a_parked_socketio_connection_fits_its_allocation_class() {
        use crate::engineio::ws::EngineWs;
        use crate::socketio::SioConnection;
        let size = std::mem::size_of::<super::ParkedConnection<EngineWs<SioConnection>>>();
        assert!(size <= 512, "a parked Socket.IO connection is {size} B");
    }
}
