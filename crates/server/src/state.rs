//! State shared by every request handler of one server.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use switchboard_hub::Hub;

use crate::config::ServerConfig;
use crate::metrics::{Metrics, RefusalLabels, TransportLabels};

const WEBSOCKET: TransportLabels = TransportLabels {
    transport: "websocket",
};

/// The peer address of the TCP connection a request came on (a request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Why a new connection was refused at the handshake (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` reached: 503.
    ServerFull,
    /// `max_connections_per_ip` reached for this address: 429.
    TooManyFromAddress,
}

/// Shared server state. Fields are immutable or atomic, except the per-address counts, whose
/// lock is taken only when a connection opens or closes (never per message).
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
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    websockets: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
}

impl AppState {
    /// New state for `config`.
    pub fn new(config: ServerConfig, shutdown: CancellationToken) -> Arc<AppState> {
        let hub = Hub::new(config.hub.clone());
        Arc::new(AppState {
            metrics: Arc::new(Metrics::new(hub.clone())),
            hub,
            config,
            shutdown,
            tracker: TaskTracker::new(),
            started: Instant::now(),
            websockets: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    /// Open WebSocket connections.
    pub fn websocket_count(&self) -> usize {
        self.websockets.load(Ordering::Relaxed)
    }

    /// Admit a new WebSocket connection from `ip` within the connection limits; the returned
    /// guard counts it until dropped.
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<ConnectionGuard, Refusal> {
        let admitted = self.try_admit(ip);
        match admitted {
            Ok(_) => {
                self.metrics.connects.get_or_create(&WEBSOCKET).inc();
                self.metrics.connections.get_or_create(&WEBSOCKET).inc();
            }
            Err(refusal) => {
                let reason = match refusal {
                    Refusal::ServerFull => "server_full",
                    Refusal::TooManyFromAddress => "per_ip",
                };
                self.metrics
                    .refused
                    .get_or_create(&RefusalLabels { reason })
                    .inc();
            }
        }
        admitted
    }

    fn try_admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<ConnectionGuard, Refusal> {
        let total = self.websockets.fetch_add(1, Ordering::AcqRel);
        if self.config.max_connections.is_some_and(|max| total >= max) {
            self.websockets.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::ServerFull);
        }
        if let Some(ip) = ip {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let count = per_ip.entry(ip).or_insert(0);
            if *count as usize >= self.config.max_connections_per_ip {
                drop(per_ip);
                self.websockets.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::TooManyFromAddress);
            }
            *count += 1;
        }
        Ok(ConnectionGuard {
            state: self.clone(),
            ip,
        })
    }
}

/// Counts a connection (in total and per address) until dropped.
#[derive(Debug)]
pub struct ConnectionGuard {
    state: Arc<AppState>,
    ip: Option<IpAddr>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.state.websockets.fetch_sub(1, Ordering::AcqRel);
        self.state
            .metrics
            .connections
            .get_or_create(&WEBSOCKET)
            .dec();
        if let Some(ip) = self.ip {
            let mut per_ip = self.state.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = per_ip.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}
