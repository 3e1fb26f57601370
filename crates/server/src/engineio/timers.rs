//! One timer task per endpoint for the deadlines of every polling session: a heap of
//! (deadline, sid), each session armed at most once at its earliest deadline (entries
//! pushed before an earlier one are recognised as stale when they come up).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;

use super::app::App;
use super::Endpoint;
use crate::state::AppState;

/// Sessions by deadline, earliest first.
type Heap = BinaryHeap<Reverse<(Instant, Arc<str>)>>;

#[derive(Default)]
pub(crate) struct Timers {
    heap: Mutex<Heap>,
    notify: Notify,
}

impl Timers {
    fn heap(&self) -> MutexGuard<'_, Heap> {
        self.heap.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Call the session `sid` at `at`.
    pub(crate) fn arm(&self, at: Instant, sid: Arc<str>) {
        let mut heap = self.heap();
        let earliest = heap.peek().is_none_or(|Reverse((first, _))| at < *first);
        heap.push(Reverse((at, sid)));
        drop(heap);
        if earliest {
            self.notify.notify_one();
        }
    }

    /// The sessions due at `now`, removed from the heap.
    fn due(&self, now: Instant) -> Vec<(Instant, Arc<str>)> {
        let mut heap = self.heap();
        let mut due = Vec::new();
        while heap.peek().is_some_and(|Reverse((at, _))| *at <= now) {
            let Some(Reverse(entry)) = heap.pop() else {
                break;
            };
            due.push(entry);
        }
        due
    }

    fn next(&self) -> Option<Instant> {
        self.heap().peek().map(|Reverse((at, _))| *at)
    }
}

/// Run `endpoint`'s timer until shutdown; then close every polling session (held GETs are
/// answered with the close packet).
pub(crate) fn spawn<A: App>(state: &Arc<AppState>, endpoint: &Arc<Endpoint<A>>) {
    let shutdown = state.shutdown.clone();
    let ep = endpoint.clone();
    state.tracker.spawn(async move {
        loop {
            let next = ep.timers.next();
            let notified = ep.timers.notify.notified();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = notified => continue,
                () = sleep => {}
            }
            let now = Instant::now();
            for (at, sid) in ep.timers.due(now) {
                let Some(slot) = ep.get(&sid) else { continue };
                let closed = {
                    let mut shared = slot.lock();
                    if shared.armed != Some(at) {
                        // Stale: the session was armed again, earlier.
                        continue;
                    }
                    shared.armed = None;
                    shared.engine.on_timer(now);
                    ep.settle(&sid, &mut shared)
                };
                if closed {
                    ep.remove(&sid);
                }
            }
        }
        let all: Vec<_> = ep.sessions().drain().collect();
        let now = Instant::now();
        for (_, slot) in all {
            let mut shared = slot.lock();
            shared.engine.session.close(now);
            shared.engine.pump(now);
            shared.route();
        }
    });
}
