//! State shared by every request handler of one server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use switchboard_hub::Hub;

use crate::config::ServerConfig;

/// Shared server state. Fields are either immutable or atomic: nothing here needs a lock.
#[derive(Debug)]
pub struct AppState {
    /// The configuration the server started with.
    pub config: ServerConfig,
    /// Cancelled when shutdown begins (SIGTERM/SIGINT or an embedding application).
    pub shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// When the server started (for `/health`).
    pub started: Instant,
    /// Rooms, presence, history.
    pub hub: Arc<Hub>,
    websockets: AtomicUsize,
}

impl AppState {
    /// New state for `config`.
    pub fn new(config: ServerConfig, shutdown: CancellationToken) -> Arc<AppState> {
        Arc::new(AppState {
            hub: Hub::new(config.hub.clone()),
            config,
            shutdown,
            tracker: TaskTracker::new(),
            started: Instant::now(),
            websockets: AtomicUsize::new(0),
        })
    }

    /// Open WebSocket connections.
    pub fn websocket_count(&self) -> usize {
        self.websockets.load(Ordering::Relaxed)
    }

    /// Count a connection until the returned guard is dropped.
    pub fn connection_opened(self: &Arc<Self>) -> ConnectionGuard {
        self.websockets.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self.clone())
    }
}

/// Decrements the connection count when dropped.
#[derive(Debug)]
pub struct ConnectionGuard(Arc<AppState>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.websockets.fetch_sub(1, Ordering::Relaxed);
    }
}
