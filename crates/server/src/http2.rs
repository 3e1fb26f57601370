//! HTTP/2 over TLS, for clients that negotiate ALPN `h2`: many requests on one connection.
//! A browser opens about six HTTP/1.1 connections per site, and every open SSE stream holds
//! one; over HTTP/2 one page can hold many streams on a single connection.
//!
//! Not served: HTTP/2 over plain TCP (h2c), and WebSocket over HTTP/2 (RFC 8441 extended
//! CONNECT; `/ws` answers 505 over HTTP/2, see [`crate::ws::upgrade`]). WebSockets negotiate
//! `http/1.1` on the same port.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http2;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;

/// Streams a connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS). RFC 9113
/// §6.5.2 recommends no less than 100 so as not to limit parallelism needlessly; a page
/// needs a few SSE streams. Each stream is admitted like a connection (per-IP and total
/// limits), but this bounds what one connection can pin before admission: a task per stream
/// and up to [`MAX_SEND_BUF`] of unsent output each (100 × 64 KiB).
const MAX_CONCURRENT_STREAMS: u32 = 100;

/// Unsent response bytes hyper keeps per stream (its default: 400 KiB). hyper polls a
/// response body only while the stream has room, so for a stalled reader at most this much
/// leaves an SSE stream's outbox, where the outbox budget and overflow policy apply.
const MAX_SEND_BUF: usize = 64 * 1024;

/// Largest request header list (decoded, SETTINGS_MAX_HEADER_LIST_SIZE): hyper's current
/// default, set here so that an upgrade can not change it silently. Requests here carry a
/// path, a few headers and perhaps cookies.
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;

/// Timeouts of one HTTP/2 connection (from [`crate::ServerConfig`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// GOAWAY after this long without an open stream (`handshake_timeout`: like a request
    /// head over HTTP/1.1, the next request must come within it; a client that never sends
    /// one is counted as a handshake timeout).
    pub(crate) idle: Duration,
    /// PING after this long without hearing from the client (`heartbeat_interval`) ...
    pub(crate) ping_interval: Duration,
    /// ... and close when its ACK does not come within this (`heartbeat_timeout`).
    pub(crate) ping_timeout: Duration,
    /// After GOAWAY (idle or shutdown): how long the client gets to finish the exchange
    /// before the connection is dropped (`close_timeout`).
    pub(crate) close: Duration,
}

/// Serve HTTP/2 on one (TLS) connection until it ends, it stays idle, or shutdown begins
/// (GOAWAY; SSE streams end by themselves at shutdown). Stream tasks are spawned on
/// `tracker`, so that shutdown waits for them too.
pub(crate) async fn serve_h2<I, S, B>(
    io: I,
    service: S,
    timeouts: Timeouts,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Arc::new(Activity::default());
    let service = Counted {
        inner: service,
        activity: activity.clone(),
    };
    // Left at hyper's defaults: 1 MiB receive windows (what a client can make us buffer of
    // request bodies per connection) and the rapid-reset bounds (GOAWAY when more than 20
    // streams reset by the client wait to be accepted, or after 1024 streams we reset).
    let conn = http2::Builder::new(Tracked(tracker))
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_send_buf_size(MAX_SEND_BUF)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        // Dead-peer detection: a PING only after `ping_interval` of silence from the client
        // (one small frame per idle interval and connection).
        .keep_alive_interval(timeouts.ping_interval)
        .keep_alive_timeout(timeouts.ping_timeout)
        .serve_connection(TokioIo::new(Linger::new(io, timeouts.close)), service);
    tokio::pin!(conn);
    loop {
        let idle = activity.open.load(Ordering::Acquire) == 0;
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "HTTP/2 connection ended with an error");
                }
                return;
            }
            _ = shutdown.cancelled() => break,
            // A stream opened or the last one ended: look again (and restart the idle timer).
            _ = activity.changed.notified() => {}
            _ = tokio::time::sleep(timeouts.idle), if idle => {
                if !activity.served.load(Ordering::Relaxed) {
                    // Not one request since the TLS handshake (slowloris).
                    metrics.handshake_timeouts.inc();
                }
                break;
            }
        }
    }
    conn.as_mut().graceful_shutdown();
    // A graceful GOAWAY waits for the client's PING ACK: bound it for clients that are gone.
    let _ = tokio::time::timeout(timeouts.close, conn).await;
}

/// Spawns hyper's per-stream tasks on the server's tracker.
#[derive(Clone)]
struct Tracked(TaskTracker);

impl<F> hyper::rt::Executor<F> for Tracked
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn(fut);
    }
}

/// How many of a connection's requests are in progress (from the call of the service until
/// the response body is dropped), for the idle timeout.
#[derive(Default)]
struct Activity {
    open: AtomicUsize,
    /// Whether a request ever arrived.
    served: AtomicBool,
    /// Notified when a request starts and when the last one ends.
    changed: Notify,
}

/// A request in progress; dropped with its response body (or with the service's future, when
/// the stream is reset before the response).
struct InProgress(Arc<Activity>);

impl InProgress {
    fn start(activity: &Arc<Activity>) -> InProgress {
        activity.served.store(true, Ordering::Relaxed);
        activity.open.fetch_add(1, Ordering::AcqRel);
        activity.changed.notify_one();
        InProgress(activity.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.changed.notify_one();
        }
    }
}

/// The service, counting its requests in [`Activity`].
struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> hyper::service::Service<Request<Incoming>> for Counted<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<CountedBody<B>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let in_progress = InProgress::start(&self.activity);
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| CountedBody {
                inner: body,
                _in_progress: in_progress,
            }))
        })
    }
}

/// A response body that holds its request's [`InProgress`] until dropped.
struct CountedBody<B> {
    inner: B,
    _in_progress: InProgress,
}

impl<B: Body + Unpin> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's stream, closed gracefully: once h2 has sent its last frames and shut
/// down our side (TLS close_notify, then FIN), read and discard until the client closes too,
/// for at most `timeout`. Closing a socket with received bytes unread (the client's last
/// PING ACK or WINDOW_UPDATE, in flight) makes the kernel reset the connection, and a reset
/// can discard what the client has not read yet: the ends of its streams (seen with curl:
/// "Send failure: Broken pipe", exit 55, after a shutdown).
struct Linger<I> {
    io: I,
    timeout: Duration,
    /// Set once our side is shut down.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> Linger<I> {
    fn new(io: I, timeout: Duration) -> Linger<I> {
        Linger {
            io,
            timeout,
            deadline: None,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Linger<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Linger<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let deadline = match &mut this.deadline {
            Some(deadline) => deadline,
            None => {
                std::task::ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
                this.deadline
                    .insert(Box::pin(tokio::time::sleep(this.timeout)))
            }
        };
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        let mut scratch = [0u8; 1024];
        // A few reads per poll, then yield: the deadline is checked between polls.
        for _ in 0..16 {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.io).poll_read(cx, &mut buf) {
                // The client's bytes after our last frames: nothing to act on.
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {}
                // EOF (the client closed) or an error: nothing more to wait for.
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn shutdown_reads_until_the_client_closes_or_the_timeout() {
        // The client closes: shutdown waits for it, having read its late bytes.
        let (ours, mut client) = tokio::io::duplex(64);
        let mut linger = Linger::new(ours, Duration::from_secs(5));
        client.write_all(b"late PING ACK").await.unwrap();
        let shutdown = tokio::spawn(async move { linger.shutdown().await });
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap(); // our side is shut down: EOF
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!shutdown.is_finished(), "did not wait for the client");
        drop(client);
        shutdown.await.unwrap().unwrap();

        // A client that never closes: shutdown ends after the timeout.
        let (ours, _client) = tokio::io::duplex(64);
        let mut linger = Linger::new(ours, Duration::from_secs(5));
        let started = tokio::time::Instant::now();
        linger.shutdown().await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
