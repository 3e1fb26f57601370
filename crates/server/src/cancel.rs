//! Waiting for the server's shutdown from a connection's loop without a lock per wake-up.
//!
//! The connection loop polls its shutdown branch every time the task wakes (for input, a
//! delivery, a timer). `CancellationToken`'s own future locks the token's mutex and the
//! notifier's waiter list on every poll, and every connection shares that token: under
//! fan-out that is two contended locks per delivery per connection (1.7 % of the server's
//! time in the Socket.IO fan-out profile, more with several workers; SSE streams the
//! same). [`Cancelled`]
//! registers with the token once, through a waker that records being woken; afterwards a
//! poll is one atomic load until the token wakes it (or the task's waker changes, which
//! re-registers).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// Resolves when the token is cancelled (see the module docs).
pub(crate) struct Cancelled<'a> {
    inner: Pin<Box<WaitForCancellationFuture<'a>>>,
    /// The waker the token holds, and the task waker it forwards to.
    registered: Option<Arc<Signal>>,
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
        self.fired.store(true, Ordering::Release);
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
        if let Some(signal) = &self.registered {
            if !signal.fired.load(Ordering::Acquire) && signal.task.will_wake(cx.waker()) {
                return Poll::Pending;
            }
        }
        // First poll, woken by the token, or polled from another task: ask the token (and
        // leave our signal with it).
        let signal = Arc::new(Signal {
            fired: AtomicBool::new(false),
            task: cx.waker().clone(),
        });
        let waker = Waker::from(signal.clone());
        let answer = self.inner.as_mut().poll(&mut Context::from_waker(&waker));
        self.registered = Some(signal);
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
}
