//! Waiting for the server's shutdown from a connection's loop without a lock per wake-up.
//!
//! The connection loop polls its shutdown branch every time the task wakes (for input, a
//! delivery, a timer). `CancellationToken`'s own future locks the token's mutex and the
//! notifier's waiter list on every poll, and every connection shares that token: under
//! fan-out that is two contended locks per delivery per connection (1.7 % of the server's
//! time in the Socket.IO fan-out profile, more with several workers; SSE streams the
//! same). [`Cancelled`] registers with the token once, through a waker that records being
//! woken; afterwards a poll reads one process-wide counter of fired signals and compares it
//! with the count it saw when it last looked, until the token wakes it (or the task's waker
//! changes, which re-registers). Nothing per connection outside the connection's own future is read on
//! that path: under fan-out each poll of a thousand connections otherwise missed the cache
//! on its signal's allocation (2.2 % of the server in the Socket.IO fan-out profile).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// Signals fired in this process, by any token: a poll that reads the count it read when it
/// last looked knows that its own signal has not fired, without loading it. One counter for
/// every token (tests run many servers in one process): another server's shutdown only costs
/// each waiting future one look at its own signal.
static FIRED: AtomicU64 = AtomicU64::new(0);

/// Resolves when the token is cancelled (see the module docs).
pub(crate) struct Cancelled<'a> {
    inner: Pin<Box<WaitForCancellationFuture<'a>>>,
    registered: Option<Registered>,
}

/// What a registered future keeps inline, so that its fast path reads only itself and
/// [`FIRED`].
struct Registered {
    /// The waker the token holds.
    signal: Arc<Signal>,
    /// The task waker the signal forwards to (a second handle, compared in place).
    task: Waker,
    /// [`FIRED`] when the signal was last seen not fired.
    seen: u64,
}

/// Wakes the task and remembers that it did.
struct Signal {
    fired: AtomicBool,
    task: Waker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // `fired` before the count: a poll that reads the new count then sees `fired`.
        self.fired.store(true, Ordering::Release);
        FIRED.fetch_add(1, Ordering::AcqRel);
        self.task.wake_by_ref();
    }
}

impl<'a> Cancelled<'a> {
    pub(crate) fn new(token: &'a CancellationToken) -> Cancelled<'a> {
        Cancelled {
            inner: Box::pin(token.cancelled()),
            registered: None,
        }
    }
}

impl Future for Cancelled<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(registered) = &mut self.registered {
            if registered.task.will_wake(cx.waker()) {
                // The count first: a signal that fires after this load bumps it, and the next
                // poll looks again.
                let fired_count = FIRED.load(Ordering::Acquire);
                if fired_count == registered.seen {
                    return Poll::Pending;
                }
                if !registered.signal.fired.load(Ordering::Acquire) {
                    registered.seen = fired_count;
                    return Poll::Pending;
                }
            }
        }
        // First poll, woken by the token, or polled from another task: ask the token (and
        // leave our signal with it).
        let seen = FIRED.load(Ordering::Acquire);
        let signal = Arc::new(Signal {
            fired: AtomicBool::new(false),
            task: cx.waker().clone(),
        });
        let waker = Waker::from(signal.clone());
        let answer = self.inner.as_mut().poll(&mut Context::from_waker(&waker));
        self.registered = Some(Registered {
            signal,
            task: cx.waker().clone(),
            seen,
        });
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_when_the_token_is_cancelled_and_not_before() {
        let token = CancellationToken::new();
        let mut cancelled = std::pin::pin!(Cancelled::new(&token));
        for _ in 0..3 {
            let polled = std::future::poll_fn(|cx| Poll::Ready(cancelled.as_mut().poll(cx))).await;
            assert!(polled.is_pending());
        }
        let canceller = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            canceller.cancel();
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), cancelled)
            .await
            .expect("woken by the cancellation");
    }

    #[tokio::test]
    async fn a_token_cancelled_before_the_first_poll_resolves_at_once() {
        let token = CancellationToken::new();
        token.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(1), Cancelled::new(&token))
            .await
            .expect("ready at once");
    }

    #[tokio::test]
    async fn another_tokens_cancellation_does_not_resolve_it() {
        let (ours, theirs) = (CancellationToken::new(), CancellationToken::new());
        let mut cancelled = std::pin::pin!(Cancelled::new(&ours));
        let poll = |c: &mut Pin<&mut Cancelled<'_>>| {
            let waker = Waker::noop();
            c.as_mut().poll(&mut Context::from_waker(waker))
        };
        assert!(poll(&mut cancelled).is_pending());
        let mut other = std::pin::pin!(Cancelled::new(&theirs));
        assert!(poll(&mut other).is_pending());
        theirs.cancel();
        assert!(poll(&mut other).is_ready());
        // The process-wide count moved: ours looks at its own signal, which did not fire.
        assert!(poll(&mut cancelled).is_pending());
        assert!(poll(&mut cancelled).is_pending());
        ours.cancel();
        assert!(poll(&mut cancelled).is_ready());
    }
}
