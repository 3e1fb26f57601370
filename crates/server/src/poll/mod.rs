//! Long polling on `GET /poll?channels=a,b&cursor=…` (SPEC §1.3), on the session core like
//! every transport.
//!
//! A poller is one session across its requests ([`Poller`]): it joins its rooms once, so
//! presence and `user_joined`/`user_left` do not flap at every poll, and what is published
//! between two polls waits in its outbox (under the same budget and overflow policy as a
//! WebSocket's). The cursor names the session and the answer the client has
//! ([`cursor`]); an answer the client did not get is sent again, and a cursor the server
//! does not know (the session expired, or lived on another node) starts a new session that
//! replays from the cursor's positions, or says `reset`, like SSE.
//!
//! A waiting poll costs its request's future and one timer entry, no task of its own: it is
//! woken by its outbox, its deadline, shutdown, or a newer poll of the same session. The
//! sessions of clients that stopped polling are ended by one sweeper task for all of them.

mod cursor;
mod poller;

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use switchboard_session::Session;

use switchboard_auth::Action;

use crate::access;
use crate::api::{bad_request, ApiError, ApiQuery};
use crate::feed::{self, RoomPositions};
use crate::state::{AppState, TransportKind};
use cursor::SessionId;
use poller::{answer_body, Poller};

/// Every poller's session, by id.
#[derive(Debug, Default)]
pub(crate) struct Pollers {
    sessions: Mutex<HashMap<SessionId, Arc<Mutex<Poller>>>>,
}

impl Pollers {
    fn get(&self, id: &SessionId) -> Option<Arc<Mutex<Poller>>> {
        lock(&self.sessions).get(id).cloned()
    }

    fn insert(&self, id: SessionId, poller: Arc<Mutex<Poller>>) {
        lock(&self.sessions).insert(id, poller);
    }

    /// Forget `id` (the caller drops the session outside of this lock).
    fn remove(&self, id: &SessionId) -> Option<Arc<Mutex<Poller>>> {
        lock(&self.sessions).remove(id)
    }

    /// End the sessions whose client stopped polling `expiry` ago (none waiting), and end
    /// at once those the hub asked to end (they leave their rooms now; the client learns
    /// why at its next poll). Returns how many sessions were removed.
    pub(crate) fn sweep(&self, now: Instant, expiry: Duration) -> usize {
        let all: Vec<(SessionId, Arc<Mutex<Poller>>)> = lock(&self.sessions)
            .iter()
            .map(|(id, p)| (*id, p.clone()))
            .collect();
        let mut expired = Vec::new();
        for (id, slot) in all {
            let mut poller = lock(&slot);
            poller.end_if_kicked();
            poller.end_if_expired(now);
            if !poller.waiting && now.saturating_duration_since(poller.last_seen) > expiry {
                expired.push(id);
            }
        }
        let removed: Vec<_> = {
            let mut sessions = lock(&self.sessions);
            expired
                .iter()
                .filter_map(|id| sessions.remove(id))
                .collect()
        };
        // Dropped here, outside every lock: leaving rooms notifies their members.
        removed.len()
    }

    /// Shutdown: end every session (waiting polls answer `disconnect` 1001).
    fn end_all(&self) {
        let all: Vec<_> = lock(&self.sessions).drain().map(|(_, p)| p).collect();
        for slot in all {
            let mut poller = lock(&slot);
            poller.end(1001, "Server shutting down");
            if let Some(waiter) = poller.waiter.take() {
                waiter.wake();
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update leaves the state consistent; a poisoned lock's data is still good.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// End the sessions of pollers that stopped polling, until shutdown; then end them all.
pub(crate) fn spawn_sweeper(state: &Arc<AppState>) {
    let state = state.clone();
    let expiry = state.config.poll_timeout + state.config.poll_grace;
    // Sessions outlive their expiry by at most half the grace (and 100 ms .. 5 s).
    let every =
        (state.config.poll_grace / 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = state.shutdown.cancelled() => break,
                _ = tick.tick() => {
                    let removed = state.pollers.sweep(Instant::now(), expiry);
                    if removed > 0 {
                        tracing::debug!(removed, "ended poll sessions");
                    }
                }
            }
        }
        state.pollers.end_all();
    });
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct PollQuery {
    channels: Option<String>,
    channel: Option<String>,
    cursor: Option<String>,
}

/// `GET /poll?channels=a,b[&cursor=…]`.
pub(crate) async fn poll_endpoint(
    State(state): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<PollQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    let rooms = feed::parse_channels(query.channels.as_deref(), query.channel.as_deref())?;
    let text = query.cursor.as_deref().unwrap_or("");
    let cursor = cursor::parse(text, rooms.len())
        .map_err(|e| bad_request(format!("invalid cursor: {e}")))?;
    feed::refuse_if_shutting_down(&state)?;
    // A session another node made: that node answers (see `crate::forward`). If it is
    // gone, the cursor's positions start a new session here, as for any unknown session.
    let req = match cursor.session {
        Some((id, _)) if state.pollers.get(&id).is_none() => {
            match forward_to_owner(&state, &id, req).await {
                Ok(answered) => return Ok(answered),
                Err(req) => req,
            }
        }
        _ => req,
    };
    // Every poll carries the client's credentials (a cookie, a token): checked each time,
    // and the session is bound to its user.
    let ip = crate::ws::peer_addr(&req).map(|a| a.ip());
    access::check_origin(&state, req.headers())?;
    let identity = access::identify_http(&state, req.headers(), req.uri(), ip, "poll").await?;
    for room in &rooms {
        access::authorize(&state, identity.as_ref(), Action::Subscribe, room.as_str())?;
    }
    let user = identity.as_ref().map(access::user_of);
    let expires = identity.as_ref().and_then(access::expiry);
    // The session this cursor continues, if the server still has it, the cursor is one it
    // gave lately and the caller is its user; else a new one (an unknown cursor's positions
    // are replayed from).
    let mut resumed = None;
    if let Some((id, answer)) = cursor.session {
        if let Some(slot) = state
            .pollers
            .get(&id)
            .filter(|s| lock(s).user() == user.as_ref())
        {
            let continues = {
                let mut poller = lock(&slot);
                let continues = poller.rooms() == rooms.as_slice()
                    && poller.resume(answer, cursor.positions_text);
                if continues {
                    // A newer token of the same user moves the session's expiry.
                    poller.expires = expires;
                }
                continues
            };
            if continues {
                resumed = Some(slot);
            } else if let Some(old) = state.pollers.remove(&id) {
                // Another cursor of this session: the client moved on; end the old one (a
                // poll still held on it is answered now, as superseded).
                let mut old = lock(&old);
                old.generation += 1;
                if let Some(waiter) = old.waiter.take() {
                    waiter.wake();
                }
            }
        }
    }
    let slot = match resumed {
        Some(slot) => slot,
        None => {
            let guard = match state.admit(TransportKind::Poll, ip, user.as_ref()).await {
                Ok(guard) => guard,
                Err(refusal) => return Ok(refusal.into_response()),
            };
            let since = feed::since_of(&state, &rooms, &cursor.positions).await?;
            let now = Instant::now();
            let mut session = match identity {
                Some(identity) => {
                    let info = access::connect_info(req.headers(), ip, "poll");
                    Session::authenticated(state.native.clone(), identity, info, now)
                }
                None => Session::anonymous(state.native.clone(), now),
            };
            let replies = feed::join_all(&mut session, &rooms, since);
            let id = new_session_id(&state)?;
            let feed = RoomPositions::new(rooms, cursor.positions);
            let mut poller = Poller::new(id, session, feed, replies, guard, Instant::now());
            poller.user = user;
            poller.expires = expires;
            let slot = Arc::new(Mutex::new(poller));
            state.pollers.insert(id, slot.clone());
            slot
        }
    };
    let body = wait_and_answer(&state, &slot, text, cursor.positions_text).await;
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Hold the poll until the session has something to answer, `poll_timeout` passes, the
/// server shuts down or a newer poll of the session supersedes this one.
async fn wait_and_answer(
    state: &Arc<AppState>,
    slot: &Arc<Mutex<Poller>>,
    cursor: &str,
    positions_before: &str,
) -> Bytes {
    let generation = {
        let mut poller = lock(slot);
        poller.generation += 1;
        poller.waiting = true;
        poller.last_seen = Instant::now();
        if let Some(older) = poller.waiter.take() {
            older.wake();
        }
        poller.generation
    };
    // However the wait ends (answered, or the client went away and the request was
    // dropped), the session is no longer waited on and its expiry counts from now.
    let _waiting = WaitingPoll { slot, generation };
    let mut deadline = {
        let mut at = Instant::now() + state.config.poll_timeout;
        if let Some(expires) = lock(slot).expires {
            // Woken at the credentials' expiry too: the poll answers with the end.
            at = at.min(expires);
        }
        pin!(tokio::time::sleep_until(at.into()))
    };
    let mut shutdown = pin!(state.shutdown.cancelled());
    let superseded = poll_fn(|cx| {
        let mut poller = lock(slot);
        if poller.generation != generation {
            return Poll::Ready(true);
        }
        poller.collect(cx);
        if poller.has_answer() {
            return Poll::Ready(false);
        }
        if shutdown.as_mut().poll(cx).is_ready() {
            poller.end(1001, "Server shutting down");
            return Poll::Ready(false);
        }
        if poller.end_if_expired(Instant::now()) {
            return Poll::Ready(false);
        }
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        poller.waiter = Some(cx.waker().clone());
        Poll::Pending
    })
    .await;
    if superseded {
        // The newer poll answers for the session; this one says nothing changed (its
        // cursor, if used again, gets the newer poll's answer sent again).
        return answer_body(&[], Some(cursor));
    }
    let mut poller = lock(slot);
    let body = poller.answer(positions_before);
    if poller.ended() {
        let id = poller.id();
        drop(poller);
        state.pollers.remove(&id);
    }
    body
}

/// Marks a session as waited on by the poll of `generation` while it lives.
struct WaitingPoll<'a> {
    slot: &'a Arc<Mutex<Poller>>,
    generation: u64,
}

impl Drop for WaitingPoll<'_> {
    fn drop(&mut self) {
        let mut poller = lock(self.slot);
        if poller.generation == self.generation {
            poller.waiting = false;
            poller.waiter = None;
            poller.last_seen = Instant::now();
        }
    }
}

/// Run a poll of session `id`, which this node does not hold, on the node that made it:
/// its answer, or the request back when the session is not another live node's.
async fn forward_to_owner(
    state: &AppState,
    id: &SessionId,
    req: Request,
) -> Result<Response, Request> {
    let Some(owner) = crate::forward::elsewhere(state, id) else {
        return Err(req);
    };
    // A poll has no body: the request is made again from its head if the owner is gone.
    let (parts, body) = req.into_parts();
    let forwarded = Request::from_parts(parts.clone(), body);
    let hold = state.config.poll_timeout + Duration::from_secs(10);
    crate::forward::forward(state, owner, forwarded, 64 << 10, hold)
        .await
        .map_err(|_gone| Request::from_parts(parts, Body::empty()))
}

/// A fresh session id (naming this node when requests can be forwarded: see
/// `crate::forward`).
fn new_session_id(state: &AppState) -> Result<SessionId, ApiError> {
    crate::forward::owned_sid_bytes::<16>(state).ok_or_else(|| {
        tracing::error!("no randomness for a poll session id");
        ApiError(StatusCode::SERVICE_UNAVAILABLE, "no randomness".into())
    })
}
