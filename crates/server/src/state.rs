//! State shared by every request handler of one server.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use switchboard_hub::{Hub, UserId};

use crate::config::ServerConfig;
use crate::keepalive::Heartbeat;
use crate::metrics::{Metrics, RefusalLabels, TransportLabels};
use crate::native::NativeShared;
use crate::ws::driver::DriverLimits;
use crate::ws::park::ParkingLots;

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
    /// `max_connections_per_user` reached for this (authenticated) user: 429.
    TooManyForUser,
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
    /// What every native-protocol session shares.
    pub native: Arc<NativeShared>,
    /// Where idle WebSocket connections wait without a task.
    pub parking: ParkingLots,
    /// The limits every WebSocket driver applies (from `config`).
    pub driver_limits: DriverLimits,
    websockets: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    per_user: Mutex<HashMap<UserId, u32>>,
}

impl AppState {
    /// New state for `config`.
    pub fn new(config: ServerConfig, shutdown: CancellationToken) -> Arc<AppState> {
        let hub = Hub::new(config.hub.clone());
        let metrics = Arc::new(Metrics::new(hub.clone()));
        // One lot per worker thread.
        let workers = tokio::runtime::Handle::try_current()
            .map(|h| h.metrics().num_workers())
            .unwrap_or(1);
        let mut park_idle_after = config.park_idle_after;
        let parking = match ParkingLots::new(workers, &metrics.parked) {
            Ok(lots) => lots,
            Err(e) => {
                tracing::warn!(error = %e, "parking idle connections disabled");
                park_idle_after = None;
                ParkingLots::none()
            }
        };
        let driver_limits = DriverLimits {
            heartbeat: Heartbeat {
                interval: config.heartbeat_interval,
                timeout: config.heartbeat_timeout,
            },
            close_timeout: config.close_timeout,
            max_pending_output: config.max_pending_output,
            auth_timeout: config.auth_timeout,
            park_idle_after,
        };
        let native = Arc::new(NativeShared {
            core: Arc::new(switchboard_session::Shared {
                hub: hub.clone(),
                config: config.session,
            }),
            metrics: metrics.clone(),
        });
        Arc::new(AppState {
            native,
            metrics,
            parking,
            driver_limits,
            hub,
            config,
            shutdown,
            tracker: TaskTracker::new(),
            started: Instant::now(),
            websockets: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            per_user: Mutex::new(HashMap::new()),
        })
    }

    /// Open WebSocket connections.
    pub fn websocket_count(&self) -> usize {
        self.websockets.load(Ordering::Relaxed)
    }

    /// Admit a new WebSocket connection from `ip` (of `user`, when the handshake
    /// authenticated one) within the connection limits; the returned guard counts it until
    /// dropped. Anonymous connections have no user: each is a user of its own.
    pub fn admit(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
        user: Option<&UserId>,
    ) -> Result<ConnectionGuard, Refusal> {
        let mut admitted = self.try_admit(ip, user);
        match &mut admitted {
            Ok(guard) => {
                self.metrics.connects.get_or_create(&WEBSOCKET).inc();
                self.metrics.connections.get_or_create(&WEBSOCKET).inc();
                guard.in_gauge = true;
            }
            Err(refusal) => {
                let reason = match refusal {
                    Refusal::ServerFull => "server_full",
                    Refusal::TooManyFromAddress => "per_ip",
                    Refusal::TooManyForUser => "per_user",
                };
                self.metrics
                    .refused
                    .get_or_create(&RefusalLabels { reason })
                    .inc();
            }
        }
        admitted
    }

    fn try_admit(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
        user: Option<&UserId>,
    ) -> Result<ConnectionGuard, Refusal> {
        let total = self.websockets.fetch_add(1, Ordering::AcqRel);
        // From here on the guard undoes whatever was counted, on refusal too.
        let mut guard = ConnectionGuard {
            state: self.clone(),
            ip: None,
            user: None,
            in_gauge: false,
        };
        if self.config.max_connections.is_some_and(|max| total >= max) {
            return Err(Refusal::ServerFull);
        }
        if let Some(ip) = ip {
            let mut per_ip = lock(&self.per_ip);
            let count = per_ip.entry(ip).or_insert(0);
            if *count as usize >= self.config.max_connections_per_ip {
                if *count == 0 {
                    per_ip.remove(&ip);
                }
                return Err(Refusal::TooManyFromAddress);
            }
            *count += 1;
            guard.ip = Some(ip);
        }
        if let Some(user) = user {
            let mut per_user = lock(&self.per_user);
            let count = per_user.entry(user.clone()).or_insert(0);
            if *count as usize >= self.config.max_connections_per_user {
                if *count == 0 {
                    per_user.remove(user);
                }
                return Err(Refusal::TooManyForUser);
            }
            *count += 1;
            guard.user = Some(user.clone());
        }
        Ok(guard)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Counts are updated in one step each; a poisoned lock's map is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Decrement `key`'s count, forgetting it at zero.
fn release<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, u32>>, key: &K) {
    let mut map = lock(map);
    if let Some(count) = map.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            map.remove(key);
        }
    }
}

/// Counts a connection (in total, per address, per user) until dropped.
#[derive(Debug)]
pub struct ConnectionGuard {
    state: Arc<AppState>,
    ip: Option<IpAddr>,
    user: Option<UserId>,
    /// Counted in the `connections` gauge (admitted, not refused).
    in_gauge: bool,
}

impl ConnectionGuard {
    /// The server state the connection was admitted to.
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// The peer's address, if known.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.state.websockets.fetch_sub(1, Ordering::AcqRel);
        if self.in_gauge {
            self.state
                .metrics
                .connections
                .get_or_create(&WEBSOCKET)
                .dec();
        }
        if let Some(ip) = &self.ip {
            release(&self.state.per_ip, ip);
        }
        if let Some(user) = &self.user {
            release(&self.state.per_user, user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_user_per_address_and_in_total_are_counted_and_released() {
        let state = AppState::new(
            ServerConfig {
                max_connections: Some(4),
                max_connections_per_ip: 3,
                max_connections_per_user: 2,
                ..ServerConfig::default()
            },
            CancellationToken::new(),
        );
        let ip: IpAddr = [10, 0, 0, 1].into();
        let alice = UserId(Arc::from("alice"));
        let a1 = state.admit(Some(ip), Some(&alice)).expect("first");
        let _a2 = state.admit(Some(ip), Some(&alice)).expect("second");
        assert_eq!(
            state.admit(Some(ip), Some(&alice)).err(),
            Some(Refusal::TooManyForUser)
        );
        let _anon = state.admit(Some(ip), None).expect("anonymous");
        assert_eq!(
            state.admit(Some(ip), None).err(),
            Some(Refusal::TooManyFromAddress)
        );
        let _other = state.admit(Some([10, 0, 0, 2].into()), None).expect("4th");
        assert_eq!(
            state.admit(Some([10, 0, 0, 3].into()), None).err(),
            Some(Refusal::ServerFull)
        );
        assert_eq!(state.websocket_count(), 4, "refusals hold no slot");
        drop(a1);
        let _a3 = state
            .admit(Some([10, 0, 0, 4].into()), Some(&alice))
            .expect("released");
        assert_eq!(lock(&state.per_user).get(&alice), Some(&2));
        assert_eq!(lock(&state.per_ip).get(&ip), Some(&2));
    }
}
