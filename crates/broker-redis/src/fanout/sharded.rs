//! The subscriber of a node on a Redis Cluster: sharded pub/sub (`SSUBSCRIBE`), so a room's
//! messages travel only to the shard that owns its slot, not over the whole cluster bus.
//! Same contract as the single-server subscriber ([`super::run_subscriber`]): keep the
//! subscriptions equal to the rooms with local members, hand what arrives to the rooms, and
//! after any interruption subscribe again and fill the gap from history.
//!
//! What differs, and why (docs/redis-cluster.md has the details):
//! - One `SSUBSCRIBE` per room: a call naming channels of several slots is refused, even
//!   when one node owns them all.
//! - Messages arrive as RESP3 pushes on the client's push channel, from every shard's
//!   connection; a shard connection that drops says so with a `Disconnection` push (which
//!   names no shard). The client reconnects by itself, but its own resubscription is not
//!   relied on (redis 1.8 resubscribes one call per shard, which Redis refuses as soon as
//!   two slots share a shard): every room is subscribed again here, and its gap filled.
//! - A shard that gives a slot away drops that slot's subscriptions with an unrequested
//!   `sunsubscribe` push: that room is subscribed again (at its new shard) and filled.
//! - The client may replace a shard's connection once more after our resubscription (a
//!   `Disconnection` push queues a reconnect of its own, which can land after a repair
//!   that our `SSUBSCRIBE`s already used), and nothing tells us. So what each shard holds
//!   for this connection is checked (`CLIENT INFO`: `ssub`/`sub`, on every master) shortly
//!   after any `Disconnection` and every [`CHECK_EVERY`]; a count that differs from ours
//!   means subscriptions were lost: everything is subscribed again and filled from history.
//! - `sb:control` stays a classic channel (cluster-wide, rare); a node's forwarding inbox
//!   is a shard channel, so `SPUBLISH`'s count ("0: nobody listens, the node is gone")
//!   counts the shard its subscriber is on.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::{PushInfo, PushKind, Value};
use switchboard_hub::RoomName;
use tokio::sync::mpsc;

use super::{lock, room_of, Subscriptions, CONTROL};
use crate::channel;
use crate::conn::Target;
use crate::stats::Stats;

/// At most this many subscription requests are in flight at once.
const CONCURRENT_REQUESTS: usize = 256;

/// How long after the last `Disconnection` push the shards' counts are checked (the client
/// has repaired its connections by then).
const SETTLE: Duration = Duration::from_millis(500);

/// How often the shards' counts are checked otherwise (three `CLIENT INFO`s).
const CHECK_EVERY: Duration = Duration::from_secs(15);

/// Keep this node's sharded subscriptions on the cluster reached through `seeds` (see the
/// module docs).
pub(crate) async fn run(
    subs: Weak<Subscriptions>,
    seeds: Vec<String>,
    timeout: Duration,
    stats: Arc<Stats>,
) {
    let (push_sender, mut pushes) = mpsc::unbounded_channel();
    let client = match Target::cluster_client(&seeds, timeout, Some(push_sender)) {
        Ok(client) => client,
        Err(e) => return tracing::error!(error = %e, "redis: no pub/sub client for the cluster"),
    };
    let mut backoff = Duration::from_millis(50);
    let mut conn = loop {
        let connected = tokio::time::timeout(timeout, client.get_async_connection()).await;
        let Some(s) = subs.upgrade() else { return };
        match connected {
            Ok(Ok(conn)) => break conn,
            failed => {
                stats.error();
                if let Ok(Err(e)) = failed {
                    tracing::warn!(error = %e, "redis: cannot connect to the cluster for pub/sub");
                }
                s.release_waiters();
                drop(s);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    };
    let mut state = State {
        subscribed: HashSet::new(),
        fixed: false,
        retry_after: None,
        backoff: Duration::from_millis(50),
        check_at: tokio::time::Instant::now() + CHECK_EVERY,
    };
    // Everything wanted is to be subscribed.
    if let Some(s) = subs.upgrade() {
        let rooms = s.rooms.read().unwrap_or_else(|e| e.into_inner());
        lock(&s.changed).extend(rooms.keys().cloned());
    }
    loop {
        let Some(s) = subs.upgrade() else { return };
        let due = state
            .retry_after
            .is_none_or(|at| tokio::time::Instant::now() >= at);
        if due {
            state.retry_after = None;
            if !state.apply(&s, &mut conn, timeout).await {
                stats.error();
                state.retry_after = Some(tokio::time::Instant::now() + state.backoff);
                state.backoff = (state.backoff * 2).min(Duration::from_secs(2));
            } else {
                state.backoff = Duration::from_millis(50);
            }
        }
        if tokio::time::Instant::now() >= state.check_at {
            if state.retry_after.is_none() && lock(&s.changed).is_empty() {
                state.check(&s, &mut conn, timeout).await;
            } else {
                // Requests still to make (a shard refuses them meanwhile): check after
                // them, not in a loop around a deadline already past.
                state.check_at = tokio::time::Instant::now() + SETTLE;
            }
        }
        let wake = s.wake.clone();
        drop(s);
        let retry = async {
            match state.retry_after {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = wake.notified() => {}
            () = retry => {}
            () = tokio::time::sleep_until(state.check_at) => {}
            push = pushes.recv() => {
                let Some(push) = push else { return };
                let Some(s) = subs.upgrade() else { return };
                state.pushed(&s, push, &stats);
            }
        }
    }
}

/// What the subscriber knows of its subscriptions.
struct State {
    /// Rooms whose `SSUBSCRIBE` was confirmed and not dropped since.
    subscribed: HashSet<RoomName>,
    /// `sb:control` and the forwarding inbox are subscribed.
    fixed: bool,
    /// A request failed: the next attempt waits until then.
    retry_after: Option<tokio::time::Instant>,
    backoff: Duration,
    /// When the shards' counts are checked next.
    check_at: tokio::time::Instant,
}

impl State {
    /// Bring the subscriptions to what is wanted; `false` when some request failed (what
    /// failed stays to do).
    async fn apply(
        &mut self,
        s: &Arc<Subscriptions>,
        conn: &mut ClusterConnection,
        timeout: Duration,
    ) -> bool {
        let mut ok = true;
        if !self.fixed {
            let control = tokio::time::timeout(timeout, conn.subscribe(CONTROL)).await;
            let inbox = tokio::time::timeout(timeout, conn.ssubscribe(&s.forward_channel)).await;
            self.fixed = matches!((control, inbox), (Ok(Ok(())), Ok(Ok(()))));
            if !self.fixed {
                refresh_slots(conn, &s.forward_channel, timeout).await;
                ok = false;
            }
        }
        let (add, remove) = s.take_changes(&self.subscribed);
        for chunk in add.chunks(CONCURRENT_REQUESTS) {
            let answers = futures_util::future::join_all(chunk.iter().map(|room| {
                let mut conn = conn.clone();
                async move {
                    let answer =
                        tokio::time::timeout(timeout, conn.ssubscribe(channel(room.as_str())))
                            .await;
                    matches!(answer, Ok(Ok(())))
                }
            }))
            .await;
            let mut confirmed = Vec::new();
            for (room, took) in chunk.iter().zip(answers) {
                if took {
                    self.subscribed.insert(room.clone());
                    confirmed.push(room.clone());
                } else {
                    // Perhaps a stale slot map (the slot moved): learn the new one, try
                    // again after a pause.
                    refresh_slots(conn, &channel(room.as_str()), timeout).await;
                    lock(&s.changed).insert(room.clone());
                    ok = false;
                }
            }
            s.activated(&confirmed);
        }
        for room in remove {
            let answer =
                tokio::time::timeout(timeout, conn.sunsubscribe(channel(room.as_str()))).await;
            if matches!(answer, Ok(Ok(()))) {
                self.subscribed.remove(&room);
            } else {
                lock(&s.changed).insert(room);
                ok = false;
            }
        }
        ok
    }

    /// Compare what the shards hold for this connection with what we hold (see the module
    /// docs); subscribe everything again when they differ.
    async fn check(
        &mut self,
        s: &Arc<Subscriptions>,
        conn: &mut ClusterConnection,
        timeout: Duration,
    ) {
        let now = tokio::time::Instant::now();
        let held = match tokio::time::timeout(timeout, shard_counts(conn)).await {
            Ok(Some(counts)) => counts,
            _ => {
                // No answer: the next turn asks again.
                self.check_at = now + SETTLE;
                return;
            }
        };
        // Shard channels exactly; the classic `sb:control` at least once (the client's own
        // resubscription may hold it on a second shard, which only repeats idempotent
        // requests and which subscribing again would not undo).
        let expected = (
            self.subscribed.len() + usize::from(self.fixed),
            usize::from(self.fixed),
        );
        if held.0 == expected.0 && held.1 >= expected.1 {
            self.check_at = now + CHECK_EVERY;
            return;
        }
        tracing::warn!(
            ?held,
            ?expected,
            "redis: the shards lost subscriptions of this node; subscribing again"
        );
        self.resubscribe_all(s);
        self.check_at = now + SETTLE;
    }

    /// Every subscription is to be made again, and every room's gap filled.
    fn resubscribe_all(&mut self, s: &Arc<Subscriptions>) {
        self.subscribed.clear();
        self.fixed = false;
        s.interrupted();
        s.wake.notify_one();
    }

    /// A push from one of the cluster's connections.
    fn pushed(&mut self, s: &Arc<Subscriptions>, push: PushInfo, stats: &Stats) {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                let mut data = push.data.into_iter();
                let (Some(Value::BulkString(name)), Some(Value::BulkString(payload))) =
                    (data.next(), data.next())
                else {
                    return tracing::debug!("redis: a message push of an unexpected shape");
                };
                s.receive(&String::from_utf8_lossy(&name), bytes::Bytes::from(payload));
            }
            PushKind::Disconnection => {
                // Some shard's connection broke (which one is not said): everything is
                // subscribed again and every room's gap filled.
                tracing::warn!("redis: a cluster connection was lost; subscribing again");
                stats.reconnect();
                self.resubscribe_all(s);
                self.check_at = tokio::time::Instant::now() + SETTLE;
            }
            PushKind::SUnsubscribe => {
                let Some(Value::BulkString(name)) = push.data.first() else {
                    return;
                };
                let name = String::from_utf8_lossy(name);
                if name == s.forward_channel {
                    self.fixed = false;
                    return s.wake.notify_one();
                }
                let Some(room) = room_of(&name) else { return };
                // Ours (an unsubscription we asked for) is already out of `subscribed`.
                if self.subscribed.remove(&room) {
                    tracing::info!(
                        room = room.as_str(),
                        "redis: a shard dropped a room's subscription (slot moved); subscribing again"
                    );
                    s.interrupted_room(&room);
                }
            }
            _ => {}
        }
    }
}

/// A keyed read in `name`'s slot: answered `MOVED` when the slot moved, which makes the
/// client learn the cluster's slot map again (a refused `SSUBSCRIBE` does not).
async fn refresh_slots(conn: &mut ClusterConnection, name: &str, timeout: Duration) {
    // (The channel's name as a key: the same slot.)
    let mut probe = redis::cmd("EXISTS");
    probe.arg(name);
    let _ = tokio::time::timeout(timeout, probe.query_async::<Value>(conn)).await;
}

/// What every master holds for this client's connection to it: shard channels and classic
/// channels (`ssub`, `sub` of `CLIENT INFO`), summed; `None` when a master did not answer.
async fn shard_counts(conn: &mut ClusterConnection) -> Option<(usize, usize)> {
    let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
    let answer = conn
        .route_command(redis::cmd("CLIENT").arg("INFO").clone(), routing)
        .await
        .ok()?;
    let Value::Map(masters) = answer else {
        return None;
    };
    let (mut ssub, mut sub) = (0, 0);
    for (_, info) in masters {
        let text = match info {
            Value::BulkString(bytes) => String::from_utf8(bytes).ok()?,
            Value::VerbatimString { text, .. } => text,
            _ => return None,
        };
        let field = |name: &str| -> Option<usize> {
            text.split_whitespace()
                .find_map(|f| f.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        };
        ssub += field("ssub")?;
        sub += field("sub")?;
    }
    Some((ssub, sub))
}
