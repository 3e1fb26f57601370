//! Test support (feature `testing`): a store that answers late, the way a networked store
//! does, to prove that the hub and the session core do not depend on answers coming at once.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::broker::Broker;
use crate::hub::PresenceEntry;
use crate::ids::{Epoch, NodeId, UserId};
use crate::store::{
    Append, Appended, Done, MemoryStore, Page, PresenceChanged, Range, Store, Unavailable,
};
use switchboard_native_proto::RoomName;

type Step = Box<dyn FnOnce() + Send>;

/// A [`MemoryStore`] whose answers come only when the test calls [`LateStore::release`]:
/// appends (and their hand-over to the broker) happen at once but are acknowledged later;
/// reads and presence queries run only when released, as if the request were still on the
/// wire meanwhile.
pub struct LateStore {
    inner: Arc<MemoryStore>,
    queue: Arc<Mutex<VecDeque<Step>>>,
    /// Appends answer [`Appended::Unavailable`] (and append nothing) and reads
    /// [`Unavailable`], as a store that is down does.
    unavailable: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for LateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LateStore").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LateStore {
    /// Late answers from `inner`.
    pub fn new(inner: Arc<MemoryStore>) -> Arc<LateStore> {
        Arc::new(LateStore {
            inner,
            queue: Arc::default(),
            unavailable: Default::default(),
        })
    }

    /// From now on appends and reads fail (`true`, answered later) or work again.
    pub fn set_unavailable(&self, down: bool) {
        self.unavailable
            .store(down, std::sync::atomic::Ordering::Relaxed);
    }

    /// Give every held answer (and those that giving them queues), oldest first; returns how
    /// many steps ran.
    pub fn release(&self) -> usize {
        let mut ran = 0;
        loop {
            let Some(step) = lock(&self.queue).pop_front() else {
                return ran;
            };
            step();
            ran += 1;
        }
    }

    /// Answers held.
    pub fn pending(&self) -> usize {
        lock(&self.queue).len()
    }

    fn later(&self, step: impl FnOnce() + Send + 'static) {
        lock(&self.queue).push_back(Box::new(step));
    }

    fn late<T: Send + 'static>(&self, done: Done<T>) -> Done<T> {
        let queue = self.queue.clone();
        Box::new(move |value| lock(&queue).push_back(Box::new(move || done(value))))
    }
}

impl Store for LateStore {
    fn register_node(&self) -> NodeId {
        self.inner.register_node()
    }

    fn heartbeat(&self, node: NodeId) {
        self.inner.heartbeat(node)
    }

    fn append(&self, append: Append, broker: &Arc<dyn Broker>, done: Done<Appended>) {
        if self.unavailable.load(std::sync::atomic::Ordering::Relaxed) {
            return self.late(done)(Appended::Unavailable);
        }
        self.inner.append(append, broker, self.late(done))
    }

    fn read(&self, room: &RoomName, range: Range, done: Done<Result<Option<Page>, Unavailable>>) {
        if self.unavailable.load(std::sync::atomic::Ordering::Relaxed) {
            return self.later(move || done(Err(Unavailable)));
        }
        let (inner, room) = (self.inner.clone(), room.clone());
        self.later(move || inner.read(&room, range, done));
    }

    fn hold(&self, room: &RoomName, node: NodeId) {
        self.inner.hold(room, node)
    }

    fn release(&self, room: &RoomName, node: NodeId) {
        self.inner.release(room, node)
    }

    fn presence_join(
        &self,
        room: &RoomName,
        node: NodeId,
        user: &UserId,
        name: Option<&Arc<str>>,
        seq: u64,
        done: Done<PresenceChanged>,
    ) {
        self.inner
            .presence_join(room, node, user, name, seq, self.late(done))
    }

    fn presence_leave(
        &self,
        room: &RoomName,
        node: NodeId,
        user: &UserId,
        seq: u64,
        done: Done<PresenceChanged>,
    ) {
        self.inner
            .presence_leave(room, node, user, seq, self.late(done))
    }

    fn presence(&self, room: &RoomName, done: Done<Result<Vec<PresenceEntry>, Unavailable>>) {
        if self.unavailable.load(std::sync::atomic::Ordering::Relaxed) {
            return self.later(move || done(Err(Unavailable)));
        }
        let (inner, room) = (self.inner.clone(), room.clone());
        self.later(move || inner.presence(&room, done));
    }

    fn void_epoch(&self) -> Epoch {
        self.inner.void_epoch()
    }

    fn rooms(&self) -> Vec<RoomName> {
        self.inner.rooms()
    }

    fn sweep(&self) -> usize {
        self.inner.sweep()
    }
}
