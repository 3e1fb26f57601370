//! The accept loop: one task per TCP connection serving HTTP/1.1 (hyper) until it upgrades,
//! or HTTP/2 when a TLS client negotiated `h2` ([`crate::http2`]), and graceful shutdown of
//! everything it started.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower_service::Service as _;

use crate::config::ServerConfig;
use crate::front::{self, Sniffed};
use crate::http::router;
use crate::http2::{self, serve_h2};
use crate::metrics::Metrics;
use crate::redact::redact_path_and_query;
use crate::state::{AppState, PeerAddr};
use crate::tls::ALPN_H2;

/// The background work of a server: history sweeps, the pollers' sweeper, the dashboard's
/// feed (with the pages).
fn spawn_background(state: &Arc<AppState>) {
    spawn_hub_sweeper(state);
    crate::poll::spawn_sweeper(state);
    if state.config.pages {
        crate::stats_feed::spawn(state, Duration::from_secs(1));
    }
}

/// Expire history and forget empty rooms every 30 s until shutdown.
fn spawn_hub_sweeper(state: &Arc<AppState>) {
    let hub = state.hub.clone();
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    let removed = hub.sweep();
                    if removed > 0 {
                        tracing::debug!(removed, "forgot empty rooms");
                    }
                }
            }
        }
    });
}

/// Switchboard inside another application's HTTP server: its routes as an axum `Router` to
/// merge or nest into the application's, with the background work (history sweeps, parking
/// lots) started. The application serves the router (`axum::serve` with
/// `into_make_service_with_connect_info::<SocketAddr>()`, so the per-IP limit knows peers),
/// and cancels `shutdown` to stop: WebSockets then get 1001 "Server shutting down".
///
/// What the embedding application's server does not do for us: the header read timeout
/// (`handshake_timeout`) and TLS are its own settings.
#[derive(Debug, Clone)]
pub struct Embedded {
    state: Arc<AppState>,
}

impl Embedded {
    /// Start Switchboard's shared state and background tasks (in the current tokio runtime).
    pub fn start(config: ServerConfig, shutdown: CancellationToken) -> Embedded {
        let state = AppState::new(config, shutdown);
        spawn_background(&state);
        state.parking.start(&state.tracker, &state.shutdown);
        Embedded { state }
    }

    /// Every Switchboard route (`/ws`, `/health`, `/ready`, `/metrics`, `/api/*`, `/client.js`)
    /// but the landing page.
    pub fn router(&self) -> axum::Router {
        // Without the landing page: `/` is the application's.
        crate::http::embedded_router(self.state.clone())
    }

    /// The shared state (hub, metrics, connection counts).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// The application's Socket.IO side: broadcasts into rooms ([`crate::socketio`]).
    pub fn socketio(&self) -> crate::socketio::Io {
        crate::socketio::Io::new(self.state.hub.clone(), self.state.metrics.clone())
    }

    /// After `shutdown` was cancelled: wait for every connection to close, at most
    /// `shutdown_timeout`. Returns whether all finished in time.
    pub async fn drain(&self) -> bool {
        self.state.tracker.close();
        tokio::time::timeout(
            self.state.config.shutdown_timeout,
            self.state.tracker.wait(),
        )
        .await
        .is_ok()
    }
}

/// A bound server, ready to run.
pub struct Server {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<AppState>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Server {
    /// Bind the configured address (and load the TLS certificate, if configured).
    /// `shutdown` starts a graceful shutdown when cancelled.
    pub async fn bind(config: ServerConfig, shutdown: CancellationToken) -> io::Result<Server> {
        let tls = match &config.tls {
            Some(tls) => Some(
                crate::tls::acceptor(tls)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
            ),
            None => None,
        };
        let listener = TcpListener::bind(config.listen).await?;
        Ok(Server {
            listener,
            tls,
            state: AppState::new(config, shutdown),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The shared state (connection counts, shutdown token).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// The application's Socket.IO side: broadcasts into rooms ([`crate::socketio`]).
    pub fn socketio(&self) -> crate::socketio::Io {
        crate::socketio::Io::new(self.state.hub.clone(), self.state.metrics.clone())
    }

    /// Accept connections until shutdown, then close every connection (WebSockets get 1001)
    /// and wait for them up to `shutdown_timeout`. Returns whether all finished in time.
    pub async fn run(self) -> bool {
        let Server {
            listener,
            tls,
            state,
        } = self;
        let router = router(state.clone());
        let shutdown = state.shutdown.clone();
        spawn_background(&state);
        state.parking.start(&state.tracker, &shutdown);
        let h2_timeouts = http2::Timeouts {
            idle: state.config.handshake_timeout,
            ping_interval: state.config.heartbeat_interval,
            ping_timeout: state.config.heartbeat_timeout,
            close: state.config.close_timeout,
        };
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on the error.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            // Every request carries the peer address (connection limits, logs).
            let service_router = router.clone();
            let service = service_fn(move |mut req: http::Request<Incoming>| {
                // Every URL that reaches a log line is redacted (`?token=` credentials).
                tracing::debug!(
                    %peer,
                    method = %req.method(),
                    target = %redact_path_and_query(
                        req.uri().path_and_query().map_or("/", |p| p.as_str())
                    ),
                    "http request"
                );
                req.extensions_mut().insert(PeerAddr(peer));
                let mut router = service_router.clone();
                async move { router.call(req).await }
            });
            let header_timeout = state.config.handshake_timeout;
            let shutdown = shutdown.clone();
            let metrics = state.metrics.clone();
            // Two spawn sites, two task types: a task is as large as its largest state, and
            // the TLS states (a whole rustls connection) must not size the task of every
            // plain connection (measured: several KiB per connection, which the allocator
            // keeps after the HTTP task ends at the upgrade).
            match &tls {
                None => {
                    let router = router.clone();
                    let tracker = state.tracker.clone();
                    let conn_state = state.clone();
                    state.tracker.spawn(async move {
                        let state = conn_state;
                        let mut stream = stream;
                        let mut deadline = tokio::time::Instant::now() + header_timeout;
                        match front::sniff(&stream, deadline, &shutdown).await {
                            Sniffed::Other => {}
                            Sniffed::Stream => {
                                // Boxed: this state must not size every plain connection's task.
                                let serve = front::serve_stream_request(
                                    stream, peer, router, state, deadline,
                                );
                                match Box::pin(serve).await {
                                    // An error answer on a kept-alive connection: hyper
                                    // serves the next requests.
                                    Some(kept) => {
                                        stream = kept;
                                        deadline = tokio::time::Instant::now() + header_timeout;
                                    }
                                    None => return,
                                }
                            }
                            Sniffed::TimedOut => {
                                metrics.handshake_timeouts.inc();
                                return;
                            }
                            Sniffed::Gone => return,
                        }
                        // The first head's time is counted from the accept, as on the stream path.
                        let left = deadline
                            .saturating_duration_since(tokio::time::Instant::now())
                            .max(Duration::from_millis(1));
                        // A task of its own, the same as before the sniff: the allocator keeps
                        // part of an HTTP task's memory after the task ends at a WebSocket
                        // upgrade, and a larger task (this one's states added) measured +400 B
                        // per idle connection.
                        tracker.spawn(serve_http(stream, service, left, shutdown, metrics));
                    });
                }
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    let tracker = state.tracker.clone();
                    state.tracker.spawn(async move {
                        // The TLS handshake shares the header timeout: a client that stalls
                        // in it is a slowloris too.
                        let handshake =
                            tokio::time::timeout(header_timeout, acceptor.accept(stream));
                        match handshake.await {
                            Ok(Ok(tls_stream))
                                if tls_stream.get_ref().1.alpn_protocol() == Some(ALPN_H2) =>
                            {
                                // Boxed: the HTTP/2 connection state must not size the task
                                // of every HTTP/1.1 TLS connection either.
                                Box::pin(serve_h2(
                                    tls_stream,
                                    service,
                                    h2_timeouts,
                                    tracker,
                                    shutdown,
                                    metrics,
                                ))
                                .await
                            }
                            Ok(Ok(tls_stream)) => {
                                serve_http(tls_stream, service, header_timeout, shutdown, metrics)
                                    .await
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed")
                            }
                            Err(_) => {
                                metrics.handshake_timeouts.inc();
                                tracing::debug!(%peer, "TLS handshake timed out")
                            }
                        }
                    });
                }
            }
        }
        drop(listener);
        state.tracker.close();
        let deadline = state.config.shutdown_timeout;
        tokio::time::timeout(deadline, state.tracker.wait())
            .await
            .is_ok()
    }
}

/// Serve HTTP/1.1 (with upgrades) on one connection until it ends or shutdown begins.
async fn serve_http<I, S>(
    io: I,
    service: S,
    header_timeout: Duration,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming> + Send,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if result.as_ref().is_err_and(hyper::Error::is_timeout) {
                // The request head did not arrive in time (slowloris).
                metrics.handshake_timeouts.inc();
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
