//! Parking: idle connections held without a task.
//!
//! A tokio task plus its socket registration costs about 1 KiB per connection before the
//! connection's own state (measured: the `tcp-floor` row of the idle benchmark), so a million
//! idle WebSockets would need a gigabyte for the runtime alone. Most real-time connections
//! are idle most of the time, so a driver that has had nothing to do for
//! `park_idle_after` hands its connection to a parking lot and ends: what remains is the
//! connection's state in one allocation plus a slot here, and the socket watched by the lot's
//! own `epoll` instance (`mio::Poll`, itself one source in tokio's reactor).
//!
//! The lot keeps parked connections alive without waking a task per connection:
//! - heartbeats: a tick every 100 ms finds the connections whose keepalive deadline passed
//!   (a comparison with the earliest deadline when none did);
//!   the connection writes its Ping itself, and a readable socket holding only Pongs (or
//!   Pings from the client, answered) is handled in place ([`Parked::on_readable`]);
//! - anything else resumes the connection in a new task: input that is not a Pong, a dead
//!   peer, a delivery in its outbox (the outbox wakes a per-slot waker), shutdown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Token};
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Connections parked so far, process-wide (every server's lots).
static PARKED_SO_FAR: AtomicU64 = AtomicU64::new(0);

/// How many connections have been parked so far in this process. Parking ends tasks, whose
/// memory the allocator keeps until the owning threads collect: the binary's allocator hook
/// collects when this changed (and only then: collecting on every idle moment of a busy
/// worker costs throughput, measured 5–20 % on the fan-out benchmark).
pub fn parked_so_far() -> u64 {
    PARKED_SO_FAR.load(Ordering::Relaxed)
}

/// What a parked connection wants after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Handled in place: stay parked.
    Stay,
    /// Needs its driver: resume it in a task.
    Resume,
}

/// A connection as the parking lot holds it (implemented by `ws::ParkedConnection`).
pub trait Parked: Send + 'static {
    /// The socket to watch for readability.
    fn socket(&self) -> &std::net::TcpStream;
    /// When [`Parked::on_deadline`] must run next (the heartbeat deadline).
    fn deadline(&self) -> Instant;
    /// The deadline passed: send a Ping, or resume to end a dead connection.
    fn on_deadline(&mut self, now: Instant) -> Verdict;
    /// The socket is readable (or closed).
    fn on_readable(&mut self) -> Verdict;
    /// Like `Handler::poll_outbound`: ready when the connection has something to write.
    fn poll_outbound(&self, cx: &mut Context<'_>) -> Poll<()>;
    /// Continue the connection in a task of its own.
    fn resume(self: Box<Self>);
}

/// The parking lots of one server: one per worker thread, chosen by connection id, so that
/// resuming a burst of connections (a broadcast to a room of parked members) is spread.
#[derive(Debug)]
pub struct ParkingLots {
    lots: Vec<ParkingLot>,
}

impl ParkingLots {
    /// `count` lots (at least one) counting parked connections in `gauge`.
    pub fn new(count: usize, gauge: &Gauge) -> std::io::Result<ParkingLots> {
        // (`count` is the number of worker threads: a lot per worker spreads the work of
        // resuming many connections at once, as a broadcast to a room of parked members does.)
        let lots = (0..count.max(1))
            .map(|_| ParkingLot::new(gauge.clone()))
            .collect::<std::io::Result<_>>()?;
        Ok(ParkingLots { lots })
    }

    /// No lots: `park` resumes at once (parking unavailable).
    pub fn none() -> ParkingLots {
        ParkingLots { lots: Vec::new() }
    }

    /// Start every lot's task. Until then (and after shutdown began) `park` resumes what it
    /// is given at once.
    pub fn start(&self, tracker: &TaskTracker, shutdown: &CancellationToken) {
        for lot in &self.lots {
            lot.start(tracker, shutdown);
        }
    }

    /// Park `conn` (identified by `id`, which picks the lot).
    pub fn park(&self, id: u64, conn: Box<dyn Parked>) {
        match self.lots.len() {
            0 => conn.resume(),
            n => self.lots[(id % n as u64) as usize].park(conn),
        }
    }

    /// Whether the lots take connections (started, and shutdown has not begun).
    pub fn is_running(&self) -> bool {
        self.lots
            .first()
            .is_some_and(|lot| lock(&lot.shared.slots).accepting)
    }

    /// Connections parked now.
    pub fn len(&self) -> usize {
        self.lots
            .iter()
            .map(|lot| lock(&lot.shared.slots).len)
            .sum()
    }

    /// Whether no connection is parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One lot: parked connections in slots, their sockets in one `mio::Poll`.
#[derive(Debug)]
struct ParkingLot {
    shared: Arc<Shared>,
    /// Taken by the lot's task when it starts.
    poll: Mutex<Option<mio::Poll>>,
}

struct Shared {
    registry: mio::Registry,
    slots: Mutex<Slots>,
    /// Slots whose outbox fired, for the lot's task.
    woken: Mutex<Vec<Key>>,
    notify: Notify,
    /// Origin of the slots' `due` ticks.
    epoch: Instant,
    parked: Gauge,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("parked", &lock(&self.slots).len)
            .finish_non_exhaustive()
    }
}

/// A slot and the generation of its occupant (slots are reused; an outbox waker of an
/// earlier occupant must not resume the current one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    index: u32,
    generation: u32,
}

struct Slot {
    generation: u32,
    /// The tick (of [`TICK`], counted from the lot's epoch, rounded up) at which the deadline
    /// passes: the scan compares these without touching the connections.
    due: u32,
    /// `None` while free, or while the lot's task is handling the connection.
    conn: Option<Box<dyn Parked>>,
}

#[derive(Default)]
struct Slots {
    entries: Vec<Slot>,
    free: Vec<u32>,
    /// Occupied slots.
    len: usize,
    /// The generation the next occupant gets: unique per lot (modulo 2^32), so that a waker
    /// of an earlier occupant never matches, even after the slots were freed and reallocated.
    next_generation: u32,
    /// No slot is due before this tick (a lower bound: the scan recomputes it).
    earliest_due: u32,
    /// Whether the lot's task runs and shutdown has not begun.
    accepting: bool,
}

impl Slots {
    /// Reserve a slot (occupied, but empty until `fill`).
    fn reserve(&mut self) -> Key {
        self.len += 1;
        let generation = self.next_generation;
        self.next_generation = generation.wrapping_add(1);
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.entries.push(Slot {
                    generation,
                    due: 0,
                    conn: None,
                });
                (self.entries.len() - 1) as u32
            }
        };
        self.entries[index as usize].generation = generation;
        Key { index, generation }
    }

    /// Free an occupied slot (its connection already taken out).
    fn release(&mut self, index: u32) {
        let slot = &mut self.entries[index as usize];
        debug_assert!(slot.conn.is_none());
        // No key matches a free slot.
        slot.generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        self.free.push(index);
        self.len -= 1;
        if self.len == 0 {
            // All gone (a burst resumed): give the memory back.
            self.entries = Vec::new();
            self.free = Vec::new();
        }
    }
}

impl ParkingLot {
    fn new(parked: Gauge) -> std::io::Result<ParkingLot> {
        let poll = mio::Poll::new()?;
        Ok(ParkingLot {
            shared: Arc::new(Shared {
                registry: poll.registry().try_clone()?,
                slots: Mutex::new(Slots::default()),
                woken: Mutex::new(Vec::new()),
                notify: Notify::new(),
                epoch: Instant::now(),
                parked,
            }),
            poll: Mutex::new(Some(poll)),
        })
    }

    fn start(&self, tracker: &TaskTracker, shutdown: &CancellationToken) {
        let Some(poll) = lock(&self.poll).take() else {
            return;
        };
        let poll = match watch(poll) {
            Ok(poll) => poll,
            Err(e) => {
                tracing::warn!(error = %e, "parking disabled: can not watch the lot's poll");
                return;
            }
        };
        lock(&self.shared.slots).accepting = true;
        tracker.spawn(run_lot(self.shared.clone(), poll, shutdown.clone()));
    }

    fn park(&self, conn: Box<dyn Parked>) {
        let shared = &self.shared;
        let mut slots = lock(&shared.slots);
        if !slots.accepting {
            drop(slots);
            return conn.resume();
        }
        let key = slots.reserve();
        // The outbox's waker first: a delivery that arrived after the driver last looked
        // resumes the connection right away (lock order: slots, then the outbox's).
        let waker = Waker::from(Arc::new(SlotWaker {
            shared: shared.clone(),
            key,
        }));
        let registered = match conn.poll_outbound(&mut Context::from_waker(&waker)) {
            Poll::Ready(()) => false,
            Poll::Pending => {
                let fd = std::os::fd::AsRawFd::as_raw_fd(conn.socket());
                shared
                    .registry
                    .register(
                        &mut SourceFd(&fd),
                        Token(key.index as usize),
                        Interest::READABLE,
                    )
                    .is_ok()
            }
        };
        if !registered {
            slots.release(key.index);
            drop(slots);
            return conn.resume();
        }
        let due = shared.ticks_until(conn.deadline());
        slots.earliest_due = slots.earliest_due.min(due);
        let slot = &mut slots.entries[key.index as usize];
        slot.due = due;
        slot.conn = Some(conn);
        // Counted under the lock: the lot can not resume (and uncount) it before this.
        shared.parked.inc();
        PARKED_SO_FAR.fetch_add(1, Ordering::Relaxed);
    }
}

impl Shared {
    /// The first tick (after the epoch) at or after `at` (u32 ticks of 100 ms: 13 years).
    fn ticks_until(&self, at: Instant) -> u32 {
        let since = at.saturating_duration_since(self.epoch).as_nanos();
        since.div_ceil(TICK.as_nanos()).min(u128::from(u32::MAX)) as u32
    }

    /// The last tick at or before `at`.
    fn ticks_at(&self, at: Instant) -> u32 {
        let since = at.saturating_duration_since(self.epoch).as_nanos();
        (since / TICK.as_nanos()).min(u128::from(u32::MAX)) as u32
    }

    /// Take the connection in slot `index` out to handle it (`None` if the slot is free).
    fn take(&self, index: usize) -> Option<Box<dyn Parked>> {
        lock(&self.slots).entries.get_mut(index)?.conn.take()
    }

    /// Act on a verdict about a connection taken out of slot `index`.
    fn settle(&self, index: usize, conn: Box<dyn Parked>, verdict: Verdict) {
        match verdict {
            Verdict::Stay => {
                let due = self.ticks_until(conn.deadline());
                let mut slots = lock(&self.slots);
                slots.earliest_due = slots.earliest_due.min(due);
                let slot = &mut slots.entries[index];
                slot.due = due;
                slot.conn = Some(conn);
            }
            Verdict::Resume => self.unpark(index, conn),
        }
    }

    /// Free slot `index` and hand its connection back to a task.
    fn unpark(&self, index: usize, conn: Box<dyn Parked>) {
        let fd = std::os::fd::AsRawFd::as_raw_fd(conn.socket());
        // Fails only if the descriptor is not registered; resuming is right either way.
        let _ = self.registry.deregister(&mut SourceFd(&fd));
        let mut slots = lock(&self.slots);
        slots.release(index as u32);
        self.parked.dec();
        drop(slots);
        conn.resume();
    }

    /// Resume the connections whose outbox fired.
    fn resume_woken(&self) {
        let keys = std::mem::take(&mut *lock(&self.woken));
        for key in keys {
            let conn = {
                let mut slots = lock(&self.slots);
                match slots.entries.get_mut(key.index as usize) {
                    Some(slot) if slot.generation == key.generation => slot.conn.take(),
                    _ => None,
                }
            };
            if let Some(conn) = conn {
                self.unpark(key.index as usize, conn);
            }
        }
    }

    /// Run `on_deadline` for every connection whose deadline passed.
    fn handle_deadlines(&self) {
        let now = Instant::now();
        // A slot is due when its deadline's tick has begun: handled at most one tick (plus
        // the interval's jitter) late, never early.
        let now_ticks = self.ticks_at(now);
        let due: Vec<usize> = {
            let mut slots = lock(&self.slots);
            if slots.earliest_due > now_ticks {
                return;
            }
            let mut earliest = u32::MAX;
            let mut due = Vec::new();
            for (index, slot) in slots.entries.iter().enumerate() {
                if slot.conn.is_none() {
                    continue;
                }
                if slot.due <= now_ticks {
                    due.push(index);
                } else {
                    earliest = earliest.min(slot.due);
                }
            }
            // The connections handled below lower it again when they stay.
            slots.earliest_due = earliest;
            due
        };
        for index in due {
            if let Some(mut conn) = self.take(index) {
                let verdict = conn.on_deadline(now);
                self.settle(index, conn, verdict);
            }
        }
    }

    /// Shutdown: stop accepting and resume everyone (their drivers send 1001).
    fn resume_all(&self) {
        let parked: Vec<(usize, Box<dyn Parked>)> = {
            let mut slots = lock(&self.slots);
            slots.accepting = false;
            slots
                .entries
                .iter_mut()
                .enumerate()
                .filter_map(|(index, slot)| Some((index, slot.conn.take()?)))
                .collect()
        };
        for (index, conn) in parked {
            self.unpark(index, conn);
        }
    }
}

/// The waker a parked connection's outbox holds: queues the slot for the lot's task.
struct SlotWaker {
    shared: Arc<Shared>,
    key: Key,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        lock(&self.shared.woken).push(self.key);
        self.shared.notify.notify_one();
    }
}

/// How often the lot looks for passed heartbeat deadlines: their precision.
const TICK: Duration = Duration::from_millis(100);

/// Readiness events handled per `mio::Poll::poll` call.
const EVENTS_PER_POLL: usize = 1024;

/// The lot's task: socket events, outbox wake-ups and heartbeat deadlines, until shutdown.
async fn run_lot(shared: Arc<Shared>, mut poll: AsyncFd<mio::Poll>, shutdown: CancellationToken) {
    let mut events = Events::with_capacity(EVENTS_PER_POLL);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // However the task ends (shutdown, a failed poll, a panic in a connection's callback),
    // every parked connection is resumed and later ones are no longer taken.
    let _resume_all = ResumeAllOnExit(shared.clone());
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = shared.notify.notified() => shared.resume_woken(),
            // Before the sockets: a steady stream of readiness must not delay heartbeats.
            _ = tick.tick() => shared.handle_deadlines(),
            guard = poll.readable_mut() => {
                let Ok(mut guard) = guard else {
                    tracing::error!("parking lot: poll failed; resuming its connections");
                    break;
                };
                match guard.get_inner_mut().poll(&mut events, Some(Duration::ZERO)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::error!(error = %e, "parking lot: poll failed; resuming its connections");
                        break;
                    }
                }
                let mut handled = 0;
                for event in events.iter() {
                    handled += 1;
                    let index = event.token().0;
                    if let Some(mut conn) = shared.take(index) {
                        let verdict = conn.on_readable();
                        shared.settle(index, conn, verdict);
                    }
                }
                if handled < EVENTS_PER_POLL {
                    // Drained: wait for tokio to see the poll's descriptor readable again.
                    guard.clear_ready();
                }
            }
        }
    }
}

/// Resumes every parked connection of a lot when dropped (see `run_lot`).
struct ResumeAllOnExit(Arc<Shared>);

impl Drop for ResumeAllOnExit {
    fn drop(&mut self) {
        self.0.resume_all();
    }
}

/// Register the lot's poll (an epoll descriptor) with tokio's reactor.
#[allow(unsafe_code)]
fn watch(poll: mio::Poll) -> std::io::Result<AsyncFd<mio::Poll>> {
    // SAFETY: `AsyncFd` requires the descriptor to stay open and the same for its whole life.
    // It is the epoll descriptor that `mio::Poll` owns and closes only when dropped, and the
    // `AsyncFd` owns the `Poll`: it can not be closed or replaced while registered.
    unsafe { AsyncFd::register_with_interest(poll, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent: a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
