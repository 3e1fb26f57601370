//! Per-connection outbound queues, bounded in bytes.
//!
//! The hub pushes shared [`Delivery`]s; the connection's driver task drains them in batches.
//! A full outbox drops (and counts) instead of growing: a client that does not read can not
//! raise the server's memory beyond its budget, and never slows the publisher down.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::delivery::Delivery;
use crate::hub::OverflowPolicy;

/// What happened to a pushed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// The budget was exceeded: dropped and counted.
    Dropped,
    /// The budget was exceeded under [`OverflowPolicy::Close`]: the queue was discarded and
    /// the connection asked to close with 4003.
    Overflowed,
    /// The connection is gone.
    Closed,
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Arc<Delivery>>,
    bytes: usize,
    /// Deliveries dropped since the last drain (32 bits, saturating: the outbox is paid by
    /// every idle connection, and 4 billion drops between two drains say the same as more).
    dropped: u32,
    closed: bool,
    /// Why the connection must be closed, if it must.
    kick: Option<Kick>,
    /// Who to wake when that happens: the connection's task, or the parking lot watching it
    /// while it has none. A plain waker, not a `Notify`: a parked connection has no future to
    /// keep a `Notify` registration alive in.
    waker: Option<Waker>,
}

/// Why the hub wants a connection closed (its transport picks the close code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// A backend disconnected the user (HTTP API): 1008.
    ByServer,
    /// The outbound budget overflowed in a room with [`OverflowPolicy::Close`]: 4003.
    Overflow,
}

/// The outbound queue of one connection.
///
/// Its lock is held only to push or to swap the queue out: pushes come from whichever task
/// publishes, the drain from the connection's own task, and neither awaits under it.
#[derive(Debug)]
pub struct Outbox {
    queue: Mutex<Queue>,
    /// Something happened (a push to an empty queue, a kick) since the consumer last looked.
    /// Set under the queue's lock; read without it by [`Outbox::poll_ready`], whose ready
    /// case (every wake-up of a connection that receives) then takes no lock: under fan-out
    /// that lock was most of the poll's cost.
    signalled: AtomicBool,
    /// In bytes. 32 bits (a budget beyond 4 GiB is taken as 4 GiB): with the flag above it
    /// fits where one `usize` was, and every connection, idle ones included, has an outbox.
    budget: u32,
}

impl Outbox {
    /// An outbox holding at most `budget` bytes of queued deliveries.
    pub fn new(budget: usize) -> Arc<Outbox> {
        Arc::new(Outbox {
            queue: Mutex::new(Queue::default()),
            signalled: AtomicBool::new(false),
            budget: u32::try_from(budget).unwrap_or(u32::MAX),
        })
    }

    fn budget(&self) -> usize {
        self.budget as usize
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock leaves the queue consistent (every method updates
        // it in one step), so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether something happened since the consumer last looked; forgets it.
    fn take_signal(&self) -> bool {
        // Load first: the common "nothing" case writes nothing.
        let signalled = self.signalled.load(Ordering::Acquire);
        if signalled {
            self.signalled.store(false, Ordering::Relaxed);
        }
        signalled
    }

    /// Record that something happened and take the waker, to wake once `q`'s lock (this
    /// outbox's) is released.
    fn signal(&self, q: &mut Queue) -> Option<Waker> {
        self.signalled.store(true, Ordering::Release);
        q.waker.take()
    }

    /// Queue a delivery, or drop it if the budget is exhausted.
    pub fn push(&self, delivery: &Arc<Delivery>) -> Pushed {
        self.push_or(delivery, OverflowPolicy::Drop)
    }

    /// Queue a delivery; when the budget is exhausted apply `policy`.
    pub fn push_or(&self, delivery: &Arc<Delivery>, policy: OverflowPolicy) -> Pushed {
        let mut q = self.lock();
        if q.closed || q.kick == Some(Kick::Overflow) {
            return Pushed::Closed;
        }
        let cost = delivery.cost();
        // An empty queue takes any one message (at most the message-size limit): a message
        // bigger than the budget must not count as the client falling behind.
        if !q.items.is_empty() && q.bytes + cost > self.budget() {
            return match policy {
                OverflowPolicy::Drop => {
                    q.dropped = q.dropped.saturating_add(1);
                    Pushed::Dropped
                }
                OverflowPolicy::Close => {
                    // Free the backlog now: the connection is going away and must not hold
                    // its budget while its Close frame waits behind unread output.
                    q.items = VecDeque::new();
                    q.bytes = 0;
                    q.kick = Some(Kick::Overflow);
                    let waker = self.signal(&mut q);
                    drop(q);
                    wake(waker);
                    Pushed::Overflowed
                }
            };
        }
        let was_empty = q.items.is_empty();
        q.items.push_back(delivery.clone());
        q.bytes += cost;
        // Only the first push into an empty queue wakes: the consumer drains everything.
        let waker = if was_empty { self.signal(&mut q) } else { None };
        drop(q);
        wake(waker);
        Pushed::Queued
    }

    /// Whether `batch` fits the budget now (an empty queue takes a batch of one message of
    /// any size). For replays, where a gap would be worse than no replay (the client is told
    /// to resync instead): check, answer the join, then [`Outbox::push_reserved`].
    pub fn fits(&self, batch: &[Arc<Delivery>]) -> bool {
        if batch.is_empty() {
            return true;
        }
        let q = self.lock();
        if q.closed || q.kick == Some(Kick::Overflow) {
            return false;
        }
        let cost: usize = batch.iter().map(|d| d.cost()).sum();
        let fits_alone = q.items.is_empty() && batch.len() == 1;
        fits_alone || q.bytes + cost <= self.budget()
    }

    /// Queue `batch` whole, whatever the budget: after [`Outbox::fits`] said it fits (what
    /// was pushed in between may take it past the budget by that much), or for a reply the
    /// client asked for, which must not be dropped (bounded by the client's rate limit).
    pub fn push_reserved(&self, batch: &[Arc<Delivery>]) {
        let mut q = self.lock();
        if q.closed || q.kick == Some(Kick::Overflow) || batch.is_empty() {
            return;
        }
        let was_empty = q.items.is_empty();
        for d in batch {
            q.bytes += d.cost();
            q.items.push_back(d.clone());
        }
        let waker = if was_empty { self.signal(&mut q) } else { None };
        drop(q);
        wake(waker);
    }

    /// Count `n` deliveries dropped for this connection elsewhere (while its join waited for
    /// the store): the client is told it lagged at the next drain.
    pub fn count_dropped(&self, n: u64) {
        let mut q = self.lock();
        q.dropped = q
            .dropped
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        let waker = self.signal(&mut q);
        drop(q);
        wake(waker);
    }

    /// Wake the consumer without queuing anything: something for the connection happened
    /// elsewhere (an authentication its session started finished on another task) and the
    /// consumer should look. Its next [`Outbox::poll_ready`] is ready.
    pub fn notify(&self) {
        let waker = {
            let mut q = self.lock();
            self.signal(&mut q)
        };
        wake(waker);
    }

    /// Move every queued delivery into `into`; returns how many were dropped since the last
    /// drain (so the client can be told it lagged).
    pub fn drain(&self, into: &mut Vec<Arc<Delivery>>) -> u64 {
        let mut q = self.lock();
        into.extend(q.items.drain(..));
        q.bytes = 0;
        u64::from(std::mem::take(&mut q.dropped))
    }

    /// Whether anything is queued.
    pub fn is_empty(&self) -> bool {
        self.lock().items.is_empty()
    }

    /// Ready if something was pushed (or a disconnect requested) since the last time this
    /// returned ready; otherwise `cx`'s waker is woken when that happens. Only the latest
    /// waker is kept: the outbox has one consumer.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        // Without the lock: a push that signals between this load and the store below queued
        // its item before signalling (under the lock), and the caller, told ready, drains
        // after the store, so it takes that item too. A signal can only be lost to a drain
        // that follows.
        if self.take_signal() {
            return Poll::Ready(());
        }
        let mut q = self.lock();
        // Again under the lock: a push between the look above and the lock has signalled.
        if self.take_signal() {
            return Poll::Ready(());
        }
        match &q.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => q.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Wait until something is pushed (returns at once if a push happened since the last
    /// wait). Cancel safe.
    pub async fn ready(&self) {
        poll_fn(|cx| self.poll_ready(cx)).await;
    }

    /// Ask the connection's task to disconnect it (it sees this at its next wake-up).
    pub fn request_disconnect(&self) {
        let mut q = self.lock();
        q.kick.get_or_insert(Kick::ByServer);
        let waker = self.signal(&mut q);
        drop(q);
        wake(waker);
    }

    /// Whether, and why, the connection must be closed (see [`Kick`]).
    pub fn disconnect_requested(&self) -> Option<Kick> {
        self.lock().kick
    }

    /// The connection ended: refuse further pushes and free what is queued.
    pub fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        q.items = VecDeque::new();
        q.bytes = 0;
        q.waker = None;
    }
}

fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outbox_stays_within_80_bytes() {
        // Every connection has one, idle ones included (the idle-memory budget).
        assert!(std::mem::size_of::<Outbox>() <= 80);
    }

    #[test]
    fn budget_drops_and_counts_then_recovers_after_drain() {
        let outbox = Outbox::new(400);
        let d = crate::delivery::test_message(&[b'x'; 100], 1);
        assert_eq!(outbox.push(&d), Pushed::Queued);
        assert_eq!(outbox.push(&d), Pushed::Queued);
        assert_eq!(outbox.push(&d), Pushed::Dropped);
        let mut v = Vec::new();
        assert_eq!(outbox.drain(&mut v), 1);
        assert_eq!(v.len(), 2);
        assert_eq!(outbox.push(&d), Pushed::Queued);
        outbox.close();
        assert_eq!(outbox.push(&d), Pushed::Closed);
        assert!(outbox.is_empty());
    }

    #[test]
    fn a_batch_fits_whole_or_not_at_all() {
        let outbox = Outbox::new(400);
        let d = crate::delivery::test_message(&[b'x'; 100], 1);
        let two = [d.clone(), d.clone()];
        assert!(outbox.fits(&two));
        outbox.push_reserved(&two);
        assert!(!outbox.fits(&two), "4 × 164 B > 400 B");
        let mut v = Vec::new();
        assert_eq!(
            outbox.drain(&mut v),
            0,
            "a batch that did not fit is not counted as dropped"
        );
        assert_eq!(v.len(), 2);
        let big = crate::delivery::test_message(&[b'x'; 500], 1);
        assert!(outbox.fits(std::slice::from_ref(&big)), "one message alone");
        outbox.count_dropped(3);
        assert_eq!(outbox.drain(&mut v), 3);
    }

    #[test]
    fn an_empty_queue_takes_one_message_bigger_than_the_budget() {
        let outbox = Outbox::new(100);
        let big = crate::delivery::test_message(&[b'x'; 500], 1);
        assert_eq!(outbox.push_or(&big, OverflowPolicy::Close), Pushed::Queued);
        assert_eq!(outbox.disconnect_requested(), None);
        // Behind it, the budget applies again.
        assert_eq!(outbox.push_or(&big, OverflowPolicy::Drop), Pushed::Dropped);
    }

    #[test]
    fn close_policy_discards_the_backlog_and_asks_for_a_disconnect() {
        let outbox = Outbox::new(250);
        let d = crate::delivery::test_message(&[b'x'; 100], 1);
        assert_eq!(outbox.push_or(&d, OverflowPolicy::Close), Pushed::Queued);
        assert_eq!(outbox.disconnect_requested(), None);
        assert_eq!(
            outbox.push_or(&d, OverflowPolicy::Close),
            Pushed::Overflowed
        );
        assert!(outbox.is_empty(), "backlog freed at once");
        assert_eq!(outbox.disconnect_requested(), Some(Kick::Overflow));
        // Nothing more is queued for a connection that is being closed.
        assert_eq!(outbox.push(&d), Pushed::Closed);
        // A later API disconnect does not hide the overflow reason.
        outbox.request_disconnect();
        assert_eq!(outbox.disconnect_requested(), Some(Kick::Overflow));
    }

    /// Counts its wake-ups.
    struct CountingWaker(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_registered_waker_is_woken_once_per_batch_and_by_a_disconnect_request() {
        let outbox = Outbox::new(1000);
        let counter = Arc::new(CountingWaker(Default::default()));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let woken = || counter.0.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(outbox.poll_ready(&mut cx), Poll::Pending);
        let d = crate::delivery::test_message(b"{}", 1);
        outbox.push(&d);
        outbox.push(&d);
        assert_eq!(woken(), 1, "only the push into the empty queue wakes");
        assert_eq!(outbox.poll_ready(&mut cx), Poll::Ready(()));
        assert_eq!(outbox.poll_ready(&mut cx), Poll::Pending);
        outbox.request_disconnect();
        assert_eq!(woken(), 2);
        assert_eq!(outbox.poll_ready(&mut cx), Poll::Ready(()));
        assert_eq!(outbox.poll_ready(&mut cx), Poll::Pending);
        outbox.drain(&mut Vec::new());
        outbox.notify();
        assert_eq!(woken(), 3, "notify wakes");
        assert_eq!(outbox.poll_ready(&mut cx), Poll::Ready(()));
        assert!(outbox.is_empty(), "and queues nothing");
    }

    #[tokio::test]
    async fn ready_fires_for_a_push_that_happened_before_waiting() {
        let outbox = Outbox::new(1000);
        outbox.push(&crate::delivery::test_message(b"{}", 1));
        tokio::time::timeout(std::time::Duration::from_secs(1), outbox.ready())
            .await
            .unwrap();
    }
}
