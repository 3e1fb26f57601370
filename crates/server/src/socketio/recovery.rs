//! Connection state recovery (Socket.IO >= 4.6 semantics, SPEC §1.4) on the hub's history.
//!
//! A socket of a namespace with recovery on gets a private id (`pid`, in its `CONNECT`
//! reply) and every room message it is sent carries an offset as its last argument, which
//! the client keeps (`_lastOffset`) and presents with the `pid` when it reconnects. The
//! offset is the socket's position in each of its rooms after that message (the feed cursor
//! form, `<offset b36>-<epoch tag>` per room, `.`-separated, in join order): since a
//! transport delivers in order, it says exactly what the client got, in every room.
//!
//! When a socket's connection is lost (not when the client disconnects on purpose), the
//! server keeps a [`Record`] of it for the recovery window: its id, user, rooms with their
//! epochs, and the offset each room stood at when joined. A reconnect that presents the
//! `pid` in time joins every room again from the client's offset (or, for rooms its offset
//! does not cover, from where it joined), which replays exactly what it missed from the
//! history; it keeps its socket id and the client sees `socket.recovered`. When the window
//! passed, the record is unknown, or a room's history no longer covers the gap, the socket is
//! a new one (new id and `pid`, `recovered: false`): never a silent gap.
//!
//! Records live in this node's memory and, with a shared store ([`SharedRecords`]: Redis
//! when the server scales out), in the store too — written while the socket lives (at its
//! `CONNECT` and whenever its rooms change), given the recovery window as expiry when its
//! connection is lost (or, for a node that died, by the other nodes' sweep), deleted when the
//! client disconnects on purpose. A `CONNECT` whose `pid` this node does not know waits for
//! the store's answer ([`Records::start_remote`]) before it is answered, so a socket
//! recovers on any node, also after the one that held it died.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use switchboard_hub::{Delivery, Epoch, Offset, RoomName, UserId};
use switchboard_native_proto::Since;

use crate::feed::cursor::{self, epoch_tag, Position};

/// Lost sockets shared by the nodes of a deployment (see the module docs). Implemented over
/// Redis by `switchboard_broker_redis::RedisRecords`. Records are opaque text here.
pub trait SharedRecords: Send + Sync + std::fmt::Debug + 'static {
    /// The live socket `pid`'s record is now `record` (kept until [`SharedRecords::expire`]
    /// or [`SharedRecords::delete`]; a dead node's are expired by the others).
    fn put(&self, pid: &str, record: String);
    /// The socket's connection was lost: keep its record for the recovery window only.
    fn expire(&self, pid: &str);
    /// The client disconnected on purpose: nothing to recover.
    fn delete(&self, pid: &str);
    /// Take `pid`'s record (once: a pid recovers once); `None` if there is none.
    fn take(&self, pid: &str) -> Pin<Box<dyn Future<Output = Option<String>> + Send>>;
}

/// A record as the shared store keeps it.
#[derive(Debug, Serialize, Deserialize)]
struct SharedRecord {
    nsp: String,
    sid: String,
    user: Option<String>,
    /// `(room, epoch, offset at join, left)`.
    rooms: Vec<(String, String, u64, bool)>,
}

/// At most this many `CONNECT`s wait for the shared store at once (more recover locally
/// only: a flood of made-up pids cannot pile up waiting requests).
const MAX_PENDING: usize = 10_000;

/// Most records kept at once; beyond it the oldest go first. Bounds memory when many
/// clients drop at once (each record is a few hundred bytes).
const MAX_RECORDS: usize = 100_000;

/// One room of a tracked socket.
#[derive(Debug, Clone)]
pub(crate) struct TrackedRoom {
    pub(crate) room: RoomName,
    epoch: Epoch,
    /// The offset the room stood at when the socket joined it.
    base: Offset,
    /// The last offset sent to the socket.
    sent: Offset,
    /// Whether the socket left it (its slot stays: offsets given out name it by position).
    left: bool,
}

/// `epoch` as an [`Epoch`] shared with the other sockets that joined a room of that epoch
/// lately (one allocation per epoch, not one per socket: this is paid by every idle
/// recoverable socket). A few recent epochs are remembered; joins are rare, so a scan is
/// fine.
fn shared_epoch(epoch: &str) -> Epoch {
    static RECENT: std::sync::Mutex<Vec<Epoch>> = std::sync::Mutex::new(Vec::new());
    const REMEMBERED: usize = 64;
    let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(known) = recent.iter().find(|e| e.as_str() == epoch) {
        return known.clone();
    }
    let epoch = Epoch::from(epoch);
    if recent.len() >= REMEMBERED {
        recent.remove(0);
    }
    recent.push(epoch.clone());
    epoch
}

/// Where a socket stands in its rooms (kept only on namespaces with recovery on).
#[derive(Debug, Default)]
pub(crate) struct Track {
    /// A boxed slice, not a `Vec`: 16 bytes, not 24, in every idle recoverable socket
    /// (joins are rare; each rebuilds it).
    rooms: Box<[TrackedRoom]>,
}

impl Track {
    /// A `joined` reply.
    pub(crate) fn joined(&mut self, room: &RoomName, offset: u64, epoch: &str) {
        let epoch = shared_epoch(epoch);
        match self.rooms.iter_mut().find(|r| &r.room == room) {
            Some(r) => {
                if r.left || r.epoch != epoch {
                    r.base = Offset(offset);
                }
                r.epoch = epoch;
                r.sent = r.sent.max(Offset(offset));
                r.left = false;
            }
            None => {
                let mut rooms = std::mem::take(&mut self.rooms).into_vec();
                rooms.push(TrackedRoom {
                    room: room.clone(),
                    epoch,
                    base: Offset(offset),
                    sent: Offset(offset),
                    left: false,
                });
                self.rooms = rooms.into_boxed_slice();
            }
        }
    }

    /// A `left` reply.
    pub(crate) fn left(&mut self, room: &RoomName) {
        if let Some(r) = self.rooms.iter_mut().find(|r| &r.room == room) {
            r.left = true;
        }
    }

    /// A room message is about to be sent: move its room's position. Returns the offset
    /// argument to send with it, `None` when the message is not a room message of ours.
    /// `shared` is the delivery's own position (what a one-room socket sends, encoded once
    /// per delivery).
    pub(crate) fn advance(&mut self, delivery: &Delivery) -> Option<Offset> {
        let (offset, epoch) = (delivery.offset()?, delivery.epoch()?);
        let r = self
            .rooms
            .iter_mut()
            .find(|r| &r.room == delivery.room() && !r.left)?;
        if &r.epoch != epoch {
            r.epoch = epoch.clone();
            r.base = Offset(offset.0.saturating_sub(1));
        } else if !Arc::ptr_eq(&r.epoch.0, &epoch.0) {
            // The same epoch in another allocation: hold the store's, so that the next
            // deliveries compare pointers, not text.
            r.epoch = epoch.clone();
        }
        r.sent = offset;
        Some(offset)
    }

    /// Leave every room (a recovery that failed): the socket starts afresh.
    pub(crate) fn rooms_joined(&self) -> Vec<RoomName> {
        self.rooms
            .iter()
            .filter(|r| !r.left)
            .map(|r| r.room.clone())
            .collect()
    }

    /// Whether the offset argument of this socket's messages is the delivery's own position
    /// (one room: shareable by every recipient).
    pub(crate) fn is_single_room(&self) -> bool {
        self.rooms.len() == 1
    }

    /// The offset argument: every room's position, in join order.
    pub(crate) fn cursor(&self) -> String {
        let positions: Vec<Option<Position>> = self
            .rooms
            .iter()
            .map(|r| {
                (!r.left).then(|| Position {
                    offset: r.sent,
                    tag: epoch_tag(&r.epoch),
                })
            })
            .collect();
        cursor::encode(&positions)
    }
}

/// The one-room offset argument of `delivery` (its own position).
pub(crate) fn single_room_cursor(delivery: &Delivery) -> Option<String> {
    let (offset, epoch) = (delivery.offset()?, delivery.epoch()?);
    Some(cursor::encode(&[Some(Position {
        offset,
        tag: epoch_tag(epoch),
    })]))
}

/// A lost socket, kept for the recovery window.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) nsp: String,
    pub(crate) sid: String,
    /// The authenticated user (`None`: anonymous; the `pid` alone proves who it is).
    pub(crate) user: Option<UserId>,
    rooms: Vec<TrackedRoom>,
    expires: Instant,
}

impl Record {
    /// The rooms to join again and where from: the client's `offset` (what it received) for
    /// the rooms it covers with a matching epoch, else where the socket joined the room.
    pub(crate) fn joins(&self, offset: Option<&str>) -> Vec<(RoomName, Since)> {
        let covered = offset
            .filter(|o| !o.is_empty())
            .map(|o| o.split('.').count())
            .filter(|k| *k <= self.rooms.len())
            .and_then(|k| cursor::decode(offset.unwrap_or(""), k).ok())
            .unwrap_or_default();
        self.rooms
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.left)
            .map(|(i, r)| {
                let from = match covered.get(i) {
                    Some(Some(p)) if p.tag == epoch_tag(&r.epoch) && p.offset >= r.base => p.offset,
                    _ => r.base,
                };
                let since = Since {
                    offset: from.0,
                    epoch: r.epoch.as_str().to_owned(),
                };
                (r.room.clone(), since)
            })
            .collect()
    }
}

impl Record {
    fn from_shared(text: &str, window: Duration, now: Instant) -> Option<Record> {
        let shared: SharedRecord = serde_json::from_str(text).ok()?;
        let rooms = shared
            .rooms
            .into_iter()
            .map(|(room, epoch, base, left)| {
                Some(TrackedRoom {
                    room: RoomName::new(&room).ok()?,
                    epoch: shared_epoch(&epoch),
                    base: Offset(base),
                    sent: Offset(base),
                    left,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Record {
            nsp: shared.nsp,
            sid: shared.sid,
            user: shared.user.map(|u| UserId(u.into())),
            rooms,
            expires: now + window,
        })
    }
}

/// The shared store's text of a live socket's record.
pub(crate) fn shared_text(nsp: &str, sid: &str, user: Option<&UserId>, track: &Track) -> String {
    let record = SharedRecord {
        nsp: nsp.to_owned(),
        sid: sid.to_owned(),
        user: user.map(|u| u.0.to_string()),
        rooms: track
            .rooms
            .iter()
            .map(|r| {
                (
                    r.room.as_str().to_owned(),
                    r.epoch.as_str().to_owned(),
                    r.base.0,
                    r.left,
                )
            })
            .collect(),
    };
    serde_json::to_string(&record).unwrap_or_default()
}

/// A `CONNECT` waiting for the shared store: `None` until it answered.
type Waiting = Arc<Mutex<Option<Option<Record>>>>;

/// What a waiting `CONNECT` claimed: its `pid` and `offset`.
#[derive(Debug, Clone)]
pub(crate) struct Claim {
    pub(crate) pid: String,
    pub(crate) offset: Option<String>,
}

/// The records of one server's lost sockets.
#[derive(Debug, Default)]
pub(crate) struct Records {
    records: Mutex<HashMap<String, Record>>,
    /// The deployment's records (scale-out), if any.
    shared: Option<Arc<dyn SharedRecords>>,
    /// `CONNECT`s waiting for the shared store, by connection id and namespace.
    pending: Mutex<HashMap<(u64, String), Pending>>,
}

/// A `CONNECT` that is not answered yet because its recovery waits.
#[derive(Debug)]
enum Pending {
    /// For the shared store's record.
    Record(Waiting, Claim),
    /// For the store's answers to the rejoins (a networked store answers them later).
    Joins {
        expected: usize,
        answers: Vec<bool>,
        sid: String,
        pid: String,
    },
}

/// Where a waiting `CONNECT` stands ([`Records::progress`]).
#[derive(Debug)]
pub(crate) enum Progress {
    /// Nothing waits for this socket.
    None,
    /// Still waiting.
    Waiting,
    /// The shared store answered: the record (if any) and what was claimed.
    Record(Option<Record>, Claim),
    /// Every rejoin was answered: whether all recovered, and the lost socket's id and pid.
    Rejoined {
        recovered: bool,
        sid: String,
        pid: String,
    },
}

impl Records {
    /// Records of this node, and of the deployment in `shared` when there is one.
    pub(crate) fn new(shared: Option<Arc<dyn SharedRecords>>) -> Records {
        Records {
            shared,
            ..Records::default()
        }
    }

    /// Keep `track` of socket `sid` (`pid`) for `window`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn keep(
        &self,
        pid: &str,
        nsp: &str,
        sid: &str,
        user: Option<UserId>,
        track: Track,
        now: Instant,
        window: Duration,
    ) {
        if let Some(shared) = &self.shared {
            // The deployment's copy is the one: a local one could go stale once another
            // node recovered the socket (and the client came back here later).
            shared.expire(pid);
            return;
        }
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        // Now and then (amortized), forget the expired ones.
        if records.len() % 1024 == 1023 {
            records.retain(|_, r| r.expires > now);
        }
        if records.len() >= MAX_RECORDS {
            records.retain(|_, r| r.expires > now);
            if records.len() >= MAX_RECORDS {
                // Still full of live records: the one closest to expiry goes.
                if let Some(oldest) = records
                    .iter()
                    .min_by_key(|(_, r)| r.expires)
                    .map(|(k, _)| k.clone())
                {
                    records.remove(&oldest);
                }
            }
        }
        records.insert(
            pid.to_owned(),
            Record {
                nsp: nsp.to_owned(),
                sid: sid.to_owned(),
                user,
                rooms: track.rooms.into_vec(),
                expires: now + window,
            },
        );
    }

    /// The record of `pid`, if it is still within its window (taken: a pid recovers once).
    /// With a shared store there is none here: [`Records::start_remote`] asks the store.
    pub(crate) fn take(&self, pid: &str, now: Instant) -> Option<Record> {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let record = records.remove(pid)?;
        (record.expires > now).then_some(record)
    }

    /// Ask the shared store for `pid` (a `CONNECT` of namespace `nsp` on connection `conn`
    /// that this node has no record for); `wake` is called once it answered. `false`: there
    /// is no shared store, or too many wait already (recover locally only).
    pub(crate) fn start_remote(
        &self,
        conn: u64,
        nsp: &str,
        claim: Claim,
        window: Duration,
        wake: impl FnOnce() + Send + 'static,
    ) -> bool {
        let Some(shared) = &self.shared else {
            return false;
        };
        let waiting: Waiting = Arc::new(Mutex::new(None));
        let answer = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if pending.len() >= MAX_PENDING {
                return false;
            }
            let answer = shared.take(&claim.pid);
            pending.insert(
                (conn, nsp.to_owned()),
                Pending::Record(waiting.clone(), claim),
            );
            answer
        };
        tokio::spawn(async move {
            let record = answer
                .await
                .and_then(|text| Record::from_shared(&text, window, Instant::now()));
            *waiting.lock().unwrap_or_else(|e| e.into_inner()) = Some(record);
            wake();
        });
        true
    }

    /// The rejoins of a recovery (`expected` of them, `answers` so far) are answered later:
    /// the `CONNECT` of `nsp` on `conn` waits for them ([`Records::progress`]).
    pub(crate) fn await_rejoins(
        &self,
        conn: u64,
        nsp: &str,
        expected: usize,
        answers: Vec<bool>,
        sid: String,
        pid: String,
    ) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.insert(
            (conn, nsp.to_owned()),
            Pending::Joins {
                expected,
                answers,
                sid,
                pid,
            },
        );
    }

    /// Where the waiting `CONNECT` of `nsp` on `conn` stands, given the rejoin answers
    /// (`joined` replies' `recovered`) that arrived since the last call. A final answer
    /// ends the wait.
    pub(crate) fn progress(&self, conn: u64, nsp: &str, rejoined: &[bool]) -> Progress {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.is_empty() {
            return Progress::None;
        }
        let key = (conn, nsp.to_owned());
        let done = match pending.get_mut(&key) {
            None => return Progress::None,
            Some(Pending::Record(waiting, _)) => {
                waiting.lock().unwrap_or_else(|e| e.into_inner()).is_some()
            }
            Some(Pending::Joins {
                expected, answers, ..
            }) => {
                answers.extend_from_slice(rejoined);
                answers.len() >= *expected
            }
        };
        if !done {
            return Progress::Waiting;
        }
        match pending.remove(&key) {
            Some(Pending::Record(waiting, claim)) => {
                let record = waiting.lock().unwrap_or_else(|e| e.into_inner()).take();
                Progress::Record(record.flatten(), claim)
            }
            Some(Pending::Joins {
                answers, sid, pid, ..
            }) => Progress::Rejoined {
                recovered: answers.iter().all(|r| *r),
                sid,
                pid,
            },
            None => Progress::None,
        }
    }

    /// Socket `pid` is live with `track` in namespace `nsp` (as `sid`, of `user`): the
    /// shared store's copy of its record, so another node can recover it if this one dies.
    pub(crate) fn share(
        &self,
        pid: &str,
        nsp: &str,
        sid: &str,
        user: Option<&UserId>,
        track: &Track,
    ) {
        if let Some(shared) = &self.shared {
            shared.put(pid, shared_text(nsp, sid, user, track));
        }
    }

    /// The client disconnected socket `pid` on purpose: nothing to recover anywhere.
    pub(crate) fn forget(&self, pid: &str) {
        if let Some(shared) = &self.shared {
            shared.delete(pid);
        }
    }

    /// Connection `conn` ended: it waits for nothing any more.
    pub(crate) fn forget_pending(&self, conn: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !pending.is_empty() {
            pending.retain(|(c, _), _| *c != conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::new(name).unwrap()
    }

    #[test]
    fn a_shared_record_reads_back_as_the_record_it_was_made_from() {
        let mut track = Track::default();
        track.joined(&room("a"), 5, "e1");
        track.joined(&room("b"), 10, "e2");
        track.left(&room("b"));
        let user = UserId("u".into());
        let text = shared_text("/chat", "sid1", Some(&user), &track);
        let now = Instant::now();
        let record = Record::from_shared(&text, Duration::from_secs(60), now).unwrap();
        assert_eq!(
            (record.nsp.as_str(), record.sid.as_str()),
            ("/chat", "sid1")
        );
        assert_eq!(record.user, Some(user));
        assert_eq!(record.expires, now + Duration::from_secs(60));
        // Left rooms stay (offsets name rooms by position) but are not joined again.
        let joins = record.joins(None);
        assert_eq!(joins.len(), 1);
        assert_eq!((joins[0].0.as_str(), joins[0].1.offset), ("a", 5));
        assert_eq!(joins[0].1.epoch, "e1");
        // Whatever else is stored under a pid is no record.
        assert!(Record::from_shared("{}", Duration::from_secs(1), now).is_none());
        assert!(Record::from_shared("not json", Duration::from_secs(1), now).is_none());
        let bad_room = r#"{"nsp":"/","sid":"s","user":null,"rooms":[["","e",0,false]]}"#;
        assert!(Record::from_shared(bad_room, Duration::from_secs(1), now).is_none());
    }

    #[test]
    fn the_clients_offset_wins_where_it_covers_a_room_else_the_join_position() {
        let mut track = Track::default();
        track.joined(&room("a"), 5, "e1");
        track.joined(&room("b"), 10, "e2");
        let records = Records::default();
        let now = Instant::now();
        records.keep(
            "p",
            "/",
            "s",
            Some(UserId("u".into())),
            track,
            now,
            Duration::from_secs(60),
        );
        let record = records.take("p", now).unwrap();
        // The client got a's 7 and b's 12.
        let a7 = cursor::encode(&[
            Some(Position {
                offset: Offset(7),
                tag: epoch_tag(&Epoch::from("e1")),
            }),
            Some(Position {
                offset: Offset(12),
                tag: epoch_tag(&Epoch::from("e2")),
            }),
        ]);
        let joins = record.joins(Some(&a7));
        assert_eq!(
            joins[0].1,
            Since {
                offset: 7,
                epoch: "e1".into()
            }
        );
        assert_eq!(
            joins[1].1,
            Since {
                offset: 12,
                epoch: "e2".into()
            }
        );
        // An offset from before the second join covers the first room only.
        let only_a = cursor::encode(&[Some(Position {
            offset: Offset(6),
            tag: epoch_tag(&Epoch::from("e1")),
        })]);
        let joins = record.joins(Some(&only_a));
        assert_eq!(joins[0].1.offset, 6);
        assert_eq!(joins[1].1.offset, 10);
        // No offset (nothing received), garbage, or another epoch: from the join.
        for offset in [None, Some("hi"), Some("zz-0000")] {
            let joins = record.joins(offset);
            assert_eq!(
                (joins[0].1.offset, joins[1].1.offset),
                (5, 10),
                "{offset:?}"
            );
        }
        assert!(records.take("p", now).is_none(), "a pid recovers once");
    }

    #[test]
    fn records_expire() {
        let records = Records::default();
        let now = Instant::now();
        let window = Duration::from_secs(1);
        records.keep("p", "/", "s", None, Track::default(), now, window);
        assert!(records.take("p", now + window).is_none());
    }
}
