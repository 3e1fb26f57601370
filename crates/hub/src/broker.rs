//! How published messages reach the nodes that have members in their room: the [`Broker`]
//! trait and [`MemoryBroker`], the default (every node in this process).
//!
//! A node subscribes to a room only while it has local members there. The store hands each
//! message to the broker in offset order (`Store::append`), and the broker hands it to every
//! subscribed node in that order, so each node's local fan-out is in offset order whether the
//! message was published on it or on another node.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock, Weak};

use switchboard_native_proto::RoomName;

use crate::delivery::Delivery;

/// What receives a room's messages on a node (the node's side of the room): it queues them
/// for the room's local members.
pub trait Node: Send + Sync + 'static {
    /// Deliver `delivery` to this node's members of its room; how many were queued and how
    /// many outboxes were full.
    fn deliver(&self, delivery: &Arc<Delivery>) -> Fanout;

    /// The broker lost `count` of the room's messages on their way to this node (a networked
    /// broker whose connection broke, when the history no longer held them): every local
    /// member is told it lagged, as if its outbox had dropped them.
    fn missed(&self, count: u64) {
        let _ = count;
    }

    /// The room's history moved to `epoch` while this node was subscribed (a networked
    /// store that lost the room, or its last writes): the offsets its members hold mean
    /// nothing any more and the new epoch's messages follow from after `offset`. Every local
    /// member is sent `joined {room, offset, epoch, recovered: false}` before them, so its
    /// client resets its position (and resyncs) instead of skipping the new epoch's
    /// messages as already seen.
    fn epoch_changed(&self, room: &RoomName, epoch: &crate::Epoch, offset: u64) {
        let _ = (room, epoch, offset);
    }
}

/// What delivering a message did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fanout {
    /// Outboxes it was queued in.
    pub delivered: usize,
    /// Outboxes that were full.
    pub dropped: usize,
}

impl std::ops::AddAssign for Fanout {
    fn add_assign(&mut self, other: Fanout) {
        self.delivered += other.delivered;
        self.dropped += other.dropped;
    }
}

/// The broker. Implementations: [`MemoryBroker`] (default); Redis pub/sub later.
pub trait Broker: Send + Sync + fmt::Debug + 'static {
    /// `node` (one node's side of `room`) has local members: send it the room's messages.
    fn subscribe(&self, room: &RoomName, node: Weak<dyn Node>);
    /// `node` has no local members any more (identity: the same allocation).
    fn unsubscribe(&self, room: &RoomName, node: &Weak<dyn Node>);
    /// Hand `delivery` to every node subscribed to its room (in the order of calls).
    fn publish(&self, delivery: &Arc<Delivery>) -> Fanout;

    /// The hub on this node, for what other nodes ask of it ([`Broker::disconnect_user`]).
    /// Called once, when the hub is made.
    fn attach(&self, hub: Weak<crate::Hub>) {
        let _ = hub;
    }

    /// Ask the other nodes to disconnect every connection of `user` (this node's are
    /// already asked). Nothing to do when every node is in this process.
    fn disconnect_user(&self, user: &crate::UserId) {
        let _ = user;
    }
}

/// Subscribers of one room.
type Subscribers = Vec<Weak<dyn Node>>;

/// Every node in this process: a room → subscribers map, read-locked per publish.
#[derive(Default)]
pub struct MemoryBroker {
    rooms: RwLock<HashMap<RoomName, Subscribers>>,
}

impl fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBroker").finish_non_exhaustive()
    }
}

impl MemoryBroker {
    /// An empty broker.
    pub fn new() -> Arc<MemoryBroker> {
        Arc::new(MemoryBroker::default())
    }
}

impl Broker for MemoryBroker {
    fn subscribe(&self, room: &RoomName, node: Weak<dyn Node>) {
        let mut rooms = self.rooms.write().unwrap_or_else(|e| e.into_inner());
        let subs = rooms.entry(room.clone()).or_default();
        if !subs.iter().any(|n| Weak::ptr_eq(n, &node)) {
            subs.push(node);
        }
    }

    fn unsubscribe(&self, room: &RoomName, node: &Weak<dyn Node>) {
        let mut rooms = self.rooms.write().unwrap_or_else(|e| e.into_inner());
        if let Some(subs) = rooms.get_mut(room) {
            subs.retain(|n| !Weak::ptr_eq(n, node));
            if subs.is_empty() {
                rooms.remove(room);
            }
        }
    }

    fn publish(&self, delivery: &Arc<Delivery>) -> Fanout {
        let rooms = self.rooms.read().unwrap_or_else(|e| e.into_inner());
        let mut fanout = Fanout::default();
        if let Some(subs) = rooms.get(delivery.room()) {
            for node in subs {
                if let Some(node) = node.upgrade() {
                    fanout += node.deliver(delivery);
                }
            }
        }
        fanout
    }
}
