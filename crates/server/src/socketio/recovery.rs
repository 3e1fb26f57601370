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
//! Records live in this node's memory (issue 13 moves them to the store, so that a socket
//! recovers on another node after the one holding it died).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use switchboard_hub::{Delivery, Epoch, Offset, RoomName, UserId};
use switchboard_native_proto::Since;

use crate::feed::cursor::{self, epoch_tag, Position};

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
    rooms: Vec<TrackedRoom>,
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
            None => self.rooms.push(TrackedRoom {
                room: room.clone(),
                epoch,
                base: Offset(offset),
                sent: Offset(offset),
                left: false,
            }),
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

    pub(crate) fn release_idle_memory(&mut self) {
        self.rooms.shrink_to_fit();
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

/// The records of one server's lost sockets.
#[derive(Debug, Default)]
pub(crate) struct Records {
    records: Mutex<HashMap<String, Record>>,
}

impl Records {
    /// Keep `track` of socket `sid` (`pid`) for `window`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn keep(
        &self,
        pid: &str,
        nsp: &str,
        sid: &str,
        user: Option<UserId>,
        mut track: Track,
        now: Instant,
        window: Duration,
    ) {
        track.release_idle_memory();
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
                rooms: track.rooms,
                expires: now + window,
            },
        );
    }

    /// The record of `pid`, if it is still within its window (taken: a pid recovers once).
    pub(crate) fn take(&self, pid: &str, now: Instant) -> Option<Record> {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let record = records.remove(pid)?;
        (record.expires > now).then_some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::new(name).unwrap()
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
