//! State shared by every request handler of one server.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use switchboard_hub::{Hub, UserId};

use crate::config::ServerConfig;
use crate::keepalive::Heartbeat;
use crate::metrics::{DisconnectLabels, Metrics, RefusalLabels, TransportLabels};
use crate::native::NativeShared;
use crate::ws::driver::DriverLimits;
use crate::ws::park::ParkingLots;

/// The transport a connection came on: the key of every connection gauge and counter, so
/// that every transport is admitted, counted and ended in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// `GET /ws` and `/echo`.
    WebSocket,
    /// Server-Sent Events.
    Sse,
    /// Long polling.
    Poll,
    /// Socket.IO (either of its transports).
    SocketIo,
}

impl TransportKind {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            TransportKind::WebSocket => "websocket",
            TransportKind::Sse => "sse",
            TransportKind::Poll => "poll",
            TransportKind::SocketIo => "socketio",
        }
    }

    fn labels(self) -> TransportLabels {
        TransportLabels {
            transport: self.label(),
        }
    }
}

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

impl Refusal {
    /// The metrics label.
    fn label(self) -> &'static str {
        match self {
            Refusal::ServerFull => "server_full",
            Refusal::TooManyFromAddress => "per_ip",
            Refusal::TooManyForUser => "per_user",
        }
    }
}

impl axum::response::IntoResponse for Refusal {
    /// The HTTP answer, the same for every transport's handshake (SPEC §6).
    fn into_response(self) -> axum::response::Response {
        use http::StatusCode;
        let (status, text) = match self {
            Refusal::ServerFull => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Server at connection capacity\n",
            ),
            Refusal::TooManyForUser => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many connections for this user\n",
            ),
            Refusal::TooManyFromAddress => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many connections from this address\n",
            ),
        };
        (status, text).into_response()
    }
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
    /// Long pollers' sessions.
    pub(crate) pollers: crate::poll::Pollers,
    /// Where clients without credentials may publish over HTTP, and their rates.
    pub(crate) anonymous: crate::browser::AnonymousPublish,
    connections: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    per_user: Mutex<HashMap<UserId, u32>>,
}

impl AppState {
    /// New state for `config`.
    pub fn new(config: ServerConfig, shutdown: CancellationToken) -> Arc<AppState> {
        let hub = match &config.backends {
            Some(b) => Hub::with_backends(config.hub.clone(), b.store.clone(), b.broker.clone()),
            None => Hub::new(config.hub.clone()),
        };
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
            hub: hub.clone(),
            config: config.session,
            auth: config.auth.clone(),
            transport: metrics.clone(),
        });
        let anonymous = crate::browser::AnonymousPublish::new(
            config.anonymous_publish.clone(),
            config.session.rate_limit,
        );
        Arc::new(AppState {
            native,
            metrics,
            parking,
            driver_limits,
            hub,
            config,
            shutdown,
            tracker: TaskTracker::new(),
            pollers: crate::poll::Pollers::default(),
            anonymous,
            started: Instant::now(),
            connections: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            per_user: Mutex::new(HashMap::new()),
        })
    }

    /// What carries requests to the node that holds their session (scale-out).
    pub(crate) fn forwarder(&self) -> Option<&Arc<dyn crate::forward::Forwarder>> {
        self.config.backends.as_ref()?.forwarder.as_ref()
    }

    /// The deployment's shared connection counts, when there are (scale-out).
    fn shared_limits(&self) -> Option<&Arc<dyn SharedLimits>> {
        self.config.backends.as_ref()?.limits.as_ref()
    }

    /// Open connections, every transport.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Admit a new connection on `transport` from `ip` (of `user`, when the handshake
    /// authenticated one) within the connection limits, which count every transport; the
    /// returned guard counts it until dropped. Anonymous connections have no user: each is a
    /// user of its own. Call this before creating anything for the connection (a session, a
    /// hub registration): a refused request must leave nothing behind.
    pub async fn admit(
        self: &Arc<Self>,
        transport: TransportKind,
        ip: Option<IpAddr>,
        user: Option<&UserId>,
    ) -> Result<ConnectionGuard, Refusal> {
        let mut admitted = self.try_admit(transport, ip, user);
        if let (Ok(guard), Some(limits)) = (&mut admitted, self.shared_limits()) {
            let (max_ip, max_user) = (
                self.config.max_connections_per_ip,
                self.config.max_connections_per_user,
            );
            match limits.acquire(ip, user, max_ip, max_user).await {
                // Counted for the guard's `ip` and `user`, which try_admit set from these.
                Ok(true) => guard.shared = true,
                Ok(false) => {}
                Err(SharedRefusal::Address) => admitted = Err(Refusal::TooManyFromAddress),
                Err(SharedRefusal::User) => admitted = Err(Refusal::TooManyForUser),
            }
        }
        match &mut admitted {
            Ok(guard) => {
                let labels = transport.labels();
                self.metrics.connects.get_or_create(&labels).inc();
                self.metrics.connections.get_or_create(&labels).inc();
                guard.in_gauge = true;
            }
            Err(refusal) => {
                self.metrics
                    .refused
                    .get_or_create(&RefusalLabels {
                        reason: refusal.label(),
                    })
                    .inc();
            }
        }
        admitted
    }

    fn try_admit(
        self: &Arc<Self>,
        transport: TransportKind,
        ip: Option<IpAddr>,
        user: Option<&UserId>,
    ) -> Result<ConnectionGuard, Refusal> {
        let total = self.connections.fetch_add(1, Ordering::AcqRel);
        // From here on the guard undoes whatever was counted, on refusal too.
        let mut guard = ConnectionGuard {
            state: self.clone(),
            transport,
            ip: None,
            user: None,
            in_gauge: false,
            shared: false,
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

/// Which shared limit refused a connection ([`SharedLimits::acquire`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedRefusal {
    /// `max_connections_per_ip`, counted over every node.
    Address,
    /// `max_connections_per_user`, counted over every node.
    User,
}

/// A future of a [`SharedLimits`] answer: `Ok(true)` counted (to be released),
/// `Ok(false)` admitted without counting (the backend could not answer).
pub type LimitsFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<bool, SharedRefusal>> + Send + 'static>,
>;

/// Connection counts per address and per user shared by the nodes of a deployment (scale-out:
/// `switchboard_broker_redis::RedisLimits`), so the per-address and per-user limits hold
/// across nodes, not per node. Consulted after this node's own counts admitted a connection.
pub trait SharedLimits: Send + Sync + fmt::Debug + 'static {
    /// Count one more connection of `ip` and `user` (each optional) if neither reaches its
    /// limit over the deployment; nothing is counted when it is refused. A backend that
    /// cannot answer admits without counting (`Ok(false)`; the node's own limits still
    /// hold): availability first.
    fn acquire(
        &self,
        ip: Option<IpAddr>,
        user: Option<&UserId>,
        max_per_ip: usize,
        max_per_user: usize,
    ) -> LimitsFuture;

    /// One connection counted by [`SharedLimits::acquire`] ended.
    fn release(&self, ip: Option<IpAddr>, user: Option<&UserId>);
}

/// Counts a connection (in total, per address, per user) until dropped.
#[derive(Debug)]
pub struct ConnectionGuard {
    state: Arc<AppState>,
    transport: TransportKind,
    ip: Option<IpAddr>,
    user: Option<UserId>,
    /// Counted in the `connections` gauge (admitted, not refused).
    in_gauge: bool,
    /// Counted by the shared limits too (its `ip` and `user`), released on drop. (A flag,
    /// not a copy of them: the guard lives in every parked connection, whose size is
    /// budgeted to its allocation class.)
    shared: bool,
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

    /// Count the connection's end in `disconnects_total`: its close code (1006 when the
    /// connection was lost without one) and why.
    pub fn count_disconnect(&self, code: u16, reason: &'static str) {
        self.state
            .metrics
            .disconnects
            .get_or_create(&DisconnectLabels {
                transport: self.transport.label(),
                code,
                reason,
            })
            .inc();
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.state.connections.fetch_sub(1, Ordering::AcqRel);
        if self.in_gauge {
            self.state
                .metrics
                .connections
                .get_or_create(&self.transport.labels())
                .dec();
        }
        if let Some(ip) = &self.ip {
            release(&self.state.per_ip, ip);
        }
        if let Some(user) = &self.user {
            release(&self.state.per_user, user);
        }
        if let (true, Some(limits)) = (self.shared, self.state.shared_limits()) {
            limits.release(self.ip, self.user.as_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limits_per_user_per_address_and_in_total_are_counted_and_released() {
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
        let a1 = state
            .admit(TransportKind::WebSocket, Some(ip), Some(&alice))
            .await
            .expect("first");
        let _a2 = state
            .admit(TransportKind::WebSocket, Some(ip), Some(&alice))
            .await
            .expect("second");
        assert_eq!(
            state
                .admit(TransportKind::WebSocket, Some(ip), Some(&alice))
                .await
                .err(),
            Some(Refusal::TooManyForUser)
        );
        let _anon = state
            .admit(TransportKind::WebSocket, Some(ip), None)
            .await
            .expect("anonymous");
        assert_eq!(
            state
                .admit(TransportKind::WebSocket, Some(ip), None)
                .await
                .err(),
            Some(Refusal::TooManyFromAddress)
        );
        let _other = state
            .admit(TransportKind::WebSocket, Some([10, 0, 0, 2].into()), None)
            .await
            .expect("4th");
        assert_eq!(
            state
                .admit(TransportKind::WebSocket, Some([10, 0, 0, 3].into()), None)
                .await
                .err(),
            Some(Refusal::ServerFull)
        );
        assert_eq!(state.connection_count(), 4, "refusals hold no slot");
        drop(a1);
        let _a3 = state
            .admit(
                TransportKind::WebSocket,
                Some([10, 0, 0, 4].into()),
                Some(&alice),
            )
            .await
            .expect("released");
        assert_eq!(lock(&state.per_user).get(&alice), Some(&2));
        assert_eq!(lock(&state.per_ip).get(&ip), Some(&2));
    }

    /// Shared limits that admit up to one connection per user over "the deployment", and
    /// record what was released.
    #[derive(Debug, Default)]
    struct OnePerUser {
        users: Mutex<HashMap<UserId, u32>>,
        released: Mutex<Vec<Option<UserId>>>,
    }

    impl SharedLimits for OnePerUser {
        fn acquire(
            &self,
            _ip: Option<IpAddr>,
            user: Option<&UserId>,
            _max_per_ip: usize,
            _max_per_user: usize,
        ) -> LimitsFuture {
            let answer = match user {
                Some(user) => {
                    let mut users = lock(&self.users);
                    let count = users.entry(user.clone()).or_insert(0);
                    if *count >= 1 {
                        Err(SharedRefusal::User)
                    } else {
                        *count += 1;
                        Ok(true)
                    }
                }
                None => Ok(true),
            };
            Box::pin(async move { answer })
        }

        fn release(&self, _ip: Option<IpAddr>, user: Option<&UserId>) {
            if let Some(user) = user {
                release(&self.users, user);
            }
            lock(&self.released).push(user.cloned());
        }
    }

    #[tokio::test]
    async fn shared_limits_refuse_over_the_deployment_and_are_released_with_the_connection() {
        let shared = Arc::new(OnePerUser::default());
        let state = AppState::new(
            ServerConfig {
                max_connections_per_user: 5,
                backends: Some(crate::config::Backends {
                    store: switchboard_hub::MemoryStore::new(
                        switchboard_hub::HubConfig::default().memory_store(),
                        1,
                    ),
                    broker: switchboard_hub::MemoryBroker::new(),
                    limits: Some(shared.clone()),
                    records: None,
                    forwarder: None,
                }),
                ..ServerConfig::default()
            },
            CancellationToken::new(),
        );
        let bob = UserId(Arc::from("bob"));
        let ip: IpAddr = [10, 0, 0, 1].into();
        let first = state
            .admit(TransportKind::Sse, Some(ip), Some(&bob))
            .await
            .expect("first");
        // This node would admit a second (limit 5), the deployment does not.
        assert_eq!(
            state
                .admit(TransportKind::Sse, Some(ip), Some(&bob))
                .await
                .err(),
            Some(Refusal::TooManyForUser)
        );
        // The refusal left no local count behind, nor a shared one to release.
        assert_eq!(lock(&state.per_user).get(&bob), Some(&1));
        assert!(lock(&shared.released).is_empty());
        drop(first);
        assert_eq!(*lock(&shared.released), [Some(bob.clone())]);
        state
            .admit(TransportKind::Sse, Some(ip), Some(&bob))
            .await
            .expect("released over the deployment");
    }
}
