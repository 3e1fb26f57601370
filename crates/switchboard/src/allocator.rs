//! The memory allocator and how it gives memory back: what an idle connection costs is
//! mostly what the allocator keeps, not what the connection holds.
//!
//! Measured with 5 000 idle connections (parked, 424 B of state each; `bench --only
//! switchboard,idle` for the reproducible figure):
//! - transparent huge pages on: the kernel's khugepaged fills sparse 2 MiB regions of the heap
//!   into huge pages, so RSS grows in 2 MiB steps while the server does nothing (baseline
//!   14.8 MB instead of 7.3 MB; 5 000 parked connections 20–26 MB, drifting up);
//! - without returning freed memory: after a burst of connections parks, the memory of their
//!   tasks stays with the allocator until the worker threads allocate again (22.0 MB);
//! - both handled: 9.9 MB, i.e. about 520 B per parked connection above the baseline.

use std::cell::Cell;
use std::time::{Duration, Instant};

// mimalloc: size-segregated pages keep the per-connection allocations that outlive the HTTP
// handshake from being scattered among freed handshake buffers (measured: see
// docs/benchmarks.md, memory per idle connection).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often an idle worker thread may return freed memory to the OS.
const COLLECT_INTERVAL: Duration = Duration::from_secs(1);

/// Collections that follow one which saw new parked connections, even with no new ones: a
/// collection frees the pages it empties, but mimalloc returns them to the OS (purges) only
/// on a later one. Without these, a burst of connections that park together kept its
/// freed task memory until something else parked (measured with 10 000 idle Socket.IO
/// members: 4.6 KiB each until Engine.IO's first ping round 25 s after the burst; with
/// them, 2.1 KiB from 2 s after the first collection).
const FOLLOW_UP_COLLECTS: u8 = 3;

/// Process-wide settings, first thing in `main`: transparent huge pages off.
///
/// mimalloc is built without its `madvise(MADV_HUGEPAGE)` calls (the `no_thp` feature), which
/// is enough where the kernel's THP mode is `madvise` (Debian's default). Where it is
/// `always`, this turns THP off for the process; what was mapped before `main` keeps its
/// pages.
pub(crate) fn configure() {
    // SAFETY: `prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)` takes no pointers; it only sets a flag
    // on this process's address space. A failure (an old kernel) leaves THP as it was.
    #[allow(unsafe_code)]
    // (The arguments are `unsigned long` to the kernel, which refuses non-zero unused ones.)
    let _ = unsafe {
        libc::prctl(
            libc::PR_SET_THP_DISABLE,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
}

/// Called by each runtime worker thread before it sleeps for lack of work (tokio's
/// `on_thread_park`): when connections were parked since this thread last looked (their
/// tasks' memory is free but kept by the allocator), at most once per [`COLLECT_INTERVAL`],
/// let mimalloc collect this thread's heap. That frees pages emptied by frees from other
/// threads and returns empty pages to the OS; [`FOLLOW_UP_COLLECTS`] more follow, a
/// [`COLLECT_INTERVAL`] apart.
///
/// Only then: collecting on every idle moment cost the fan-out benchmark 5–20 % of its
/// throughput and raised its p99 (7 interleaved A/B runs; a busy worker sleeps briefly very
/// often).
pub(crate) fn on_worker_idle() {
    thread_local! {
        static LAST_COLLECT: Cell<Option<Instant>> = const { Cell::new(None) };
        static PARKED_SEEN: Cell<u64> = const { Cell::new(0) };
        static FOLLOW_UPS: Cell<u8> = const { Cell::new(0) };
    }
    let parked = switchboard_server::ws::park::parked_so_far();
    let changed = PARKED_SEEN.get() != parked;
    if !changed && FOLLOW_UPS.get() == 0 {
        return;
    }
    let now = Instant::now();
    if LAST_COLLECT
        .get()
        .is_some_and(|at| now.duration_since(at) < COLLECT_INTERVAL)
    {
        return;
    }
    LAST_COLLECT.set(Some(now));
    PARKED_SEEN.set(parked);
    FOLLOW_UPS.set(if changed {
        FOLLOW_UP_COLLECTS
    } else {
        FOLLOW_UPS.get() - 1
    });
    // SAFETY: `mi_collect` takes no pointers and may be called from any thread at any
    // time; `false` limits it to this thread's heap (no forced abandoned-segment work).
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(false)
    };
}
