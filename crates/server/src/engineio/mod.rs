//! Engine.IO v4 endpoints (SPEC §1.4): the sans-IO sessions of `switchboard-engineio-proto`
//! on HTTP long-polling and on our WebSocket driver, with an [`App`] above each session
//! (Socket.IO on `/socket.io/`, the echo of `--echo` on `/engine.io/`).
//!
//! - A session opened by a **WebSocket** handshake lives in its WebSocket's handler
//!   ([`ws::EngineWs`]): no lock, no registry entry, heartbeats as the handler's timer, and
//!   parked like any idle WebSocket (the parking lot writes the ping `2` and takes the pong
//!   `3` in place).
//! - A session opened by a **polling** handshake is a [`slot::Slot`] in the endpoint's
//!   registry, reached by its sid from every GET, POST and the upgrading WebSocket. A held
//!   GET is a future woken by the session or the application's outbox, no task of its own;
//!   every such session's deadlines (pings, ping timeout, stalled upgrades, the close
//!   timeout) are kept by one timer task per endpoint ([`timers`]).

mod app;
pub(crate) mod echo;
mod http;
mod slot;
mod timers;
pub(crate) mod ws;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

pub(crate) use app::{App, Out};
pub(crate) use http::{serve, Handshake};

use slot::Slot;
use switchboard_engineio_proto::{Config, Transports};

/// One Engine.IO endpoint: its settings, the sessions reachable by sid, their timer.
pub(crate) struct Endpoint<A> {
    pub(crate) config: Arc<Config>,
    pub(crate) transports: Transports,
    sessions: Mutex<HashMap<Arc<str>, Arc<Slot<A>>>>,
    timers: timers::Timers,
}

impl<A: App> Endpoint<A> {
    /// An endpoint; its timer task runs on `state`'s tracker until shutdown, then closes
    /// every polling session.
    pub(crate) fn start(state: &Arc<crate::state::AppState>, config: Config) -> Arc<Endpoint<A>> {
        let endpoint = Arc::new(Endpoint {
            config: Arc::new(config),
            transports: Transports::default(),
            sessions: Mutex::new(HashMap::new()),
            timers: timers::Timers::default(),
        });
        timers::spawn(state, &endpoint);
        endpoint
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Slot<A>>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, sid: &str) -> Option<Arc<Slot<A>>> {
        self.sessions().get(sid).cloned()
    }

    fn insert(&self, sid: Arc<str>, slot: Arc<Slot<A>>) {
        self.sessions().insert(sid, slot);
    }

    /// Forget a closed session (dropped outside the registry's lock: dropping the
    /// application may leave rooms, which notifies their members).
    fn remove(&self, sid: &str) {
        let removed = self.sessions().remove(sid);
        drop(removed);
    }

    /// After a call on `slot` (under its lock): route its output, re-arm its timer, and
    /// forget it once closed.
    fn settle(&self, sid: &Arc<str>, shared: &mut slot::Shared<A>) -> bool {
        shared.route();
        if shared.is_closed() {
            shared.armed = None;
            return true;
        }
        if let Some(at) = shared.engine.deadline() {
            if shared.armed.is_none_or(|armed| at < armed) {
                shared.armed = Some(at);
                self.timers.arm(at, sid.clone());
            }
        }
        false
    }
}

/// A fresh random session id (naming this node when requests can be forwarded to it:
/// see `crate::forward`).
pub(crate) fn new_sid(state: &crate::state::AppState) -> Option<switchboard_engineio_proto::Sid> {
    let bytes = crate::forward::owned_sid_bytes::<15>(state)?;
    Some(switchboard_engineio_proto::Sid::from_random(bytes))
}

/// The node that made session `sid`, when it is another one and requests can be forwarded.
pub(crate) fn owner_elsewhere(state: &crate::state::AppState, sid: &str) -> Option<u32> {
    use base64::Engine as _;
    // Our ids are 15 bytes, 20 characters; anything else was not made by a node of ours.
    if sid.len() != 20 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sid)
        .ok()?;
    crate::forward::elsewhere(state, &bytes)
}
