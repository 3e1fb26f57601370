//! Where a feed (an SSE stream, a long poller) stands in each of its rooms: the state its
//! cursor encodes, moved by `joined` replies and by deliveries. Sans-IO.

use switchboard_hub::{Delivery, Epoch, Offset, RoomName};
use switchboard_native_proto::ServerMessage;

use super::cursor::{self, epoch_tag, Position};

/// A feed's rooms and its client's position in each.
#[derive(Debug)]
pub(crate) struct RoomPositions {
    rooms: Box<[RoomName]>,
    /// The client's position in each room (the cursor is their encoding).
    positions: Vec<Option<Position>>,
    /// The epoch each position's tag was made from (tags are computed once per epoch).
    epochs: Vec<Option<Epoch>>,
    /// Rooms whose join said the history did not cover the client's gap, not yet announced.
    resets: Vec<RoomName>,
}

impl RoomPositions {
    /// `rooms` with the client's `positions` (one per room; `None`: from now on).
    pub(crate) fn new(rooms: Vec<RoomName>, positions: Vec<Option<Position>>) -> RoomPositions {
        debug_assert_eq!(rooms.len(), positions.len());
        RoomPositions {
            epochs: vec![None; rooms.len()],
            rooms: rooms.into_boxed_slice(),
            positions,
            resets: Vec::new(),
        }
    }

    pub(crate) fn rooms(&self) -> &[RoomName] {
        &self.rooms
    }

    /// The positions as a cursor (SSE event id, poll cursor).
    pub(crate) fn cursor(&self) -> String {
        cursor::encode(&self.positions)
    }

    /// [`RoomPositions::cursor`], appended to `out`.
    pub(crate) fn write_cursor(&self, out: &mut bytes::BytesMut) {
        cursor::encode_into(&self.positions, out);
    }

    /// Whether every room has a position (every join answered, or the client gave one).
    pub(crate) fn all_known(&self) -> bool {
        self.positions.iter().all(Option::is_some)
    }

    /// A `joined` reply: a room with no position (or one the history no longer covers)
    /// starts at the joined offset; a covered one keeps the client's (its replay follows).
    /// Returns whether the positions changed.
    pub(crate) fn apply_joined(&mut self, reply: &ServerMessage) -> bool {
        let ServerMessage::Joined {
            room,
            offset,
            epoch,
            recovered,
        } = reply
        else {
            return false;
        };
        let Some(i) = self.rooms.iter().position(|r| r == room) else {
            return false;
        };
        let had_position = self.positions[i].is_some();
        if had_position && *recovered {
            return false;
        }
        if had_position {
            self.resets.push(room.clone());
        }
        let epoch = Epoch::from(epoch.as_str());
        self.positions[i] = Some(Position {
            offset: Offset(*offset),
            tag: epoch_tag(&epoch),
        });
        self.epochs[i] = Some(epoch);
        true
    }

    /// A delivery reached the client: its room's position moves to the delivery's offset.
    /// Returns whether it did (deliveries without an offset, presence changes say, do not).
    pub(crate) fn advance(&mut self, delivery: &Delivery) -> bool {
        let (Some(offset), Some(epoch)) = (delivery.offset(), delivery.epoch()) else {
            return false;
        };
        let Some(i) = self.rooms.iter().position(|r| r == delivery.room()) else {
            return false;
        };
        let tag = match &self.epochs[i] {
            Some(e) if e == epoch => self.positions[i].map_or_else(|| epoch_tag(epoch), |p| p.tag),
            _ => {
                self.epochs[i] = Some(epoch.clone());
                epoch_tag(epoch)
            }
        };
        self.positions[i] = Some(Position { offset, tag });
        true
    }

    /// The rooms to announce in a `reset` (none most of the time).
    pub(crate) fn take_resets(&mut self) -> Vec<RoomName> {
        std::mem::take(&mut self.resets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::new(name).unwrap()
    }

    fn joined(name: &str, offset: u64, epoch: &str, recovered: bool) -> ServerMessage {
        ServerMessage::Joined {
            room: room(name),
            offset,
            epoch: epoch.into(),
            recovered,
        }
    }

    #[test]
    fn joins_set_unknown_positions_and_uncovered_gaps_become_resets() {
        let given = Position {
            offset: Offset(5),
            tag: epoch_tag(&Epoch::from("e1")),
        };
        let mut feed = RoomPositions::new(
            vec![room("a"), room("b"), room("c")],
            vec![None, Some(given), Some(given)],
        );
        assert!(!feed.all_known());
        assert!(feed.apply_joined(&joined("a", 7, "e1", false)));
        assert!(
            !feed.apply_joined(&joined("b", 9, "e1", true)),
            "replay follows"
        );
        assert!(
            feed.apply_joined(&joined("c", 3, "e2", false)),
            "gap not covered"
        );
        assert!(feed.all_known());
        assert_eq!(feed.take_resets(), vec![room("c")]);
        assert!(feed.take_resets().is_empty());
        let positions = cursor::decode(&feed.cursor(), 3).unwrap();
        assert_eq!(positions[0].unwrap().offset, Offset(7));
        assert_eq!(positions[1], Some(given));
        assert_eq!(positions[2].unwrap().offset, Offset(3));
        assert_eq!(positions[2].unwrap().tag, epoch_tag(&Epoch::from("e2")));
    }
}
