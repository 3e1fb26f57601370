//! An SSE stream as a hyper response body: used where hyper keeps the connection (TLS,
//! HTTP/2, a request after others on a kept-alive connection, an embedding application's
//! server). Hyper polls the body only when the client can take more, so a stalled reader
//! leaves deliveries in its outbox, where the outbox budget and the room's overflow policy
//! bound them exactly as on WebSocket.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::HttpBody;
use bytes::Bytes;
use hyper::body::Frame;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::stream::SseStream;

/// The body: the stream, its heartbeat timer and the server's shutdown.
pub(crate) struct SseBody {
    stream: SseStream,
    heartbeat: Pin<Box<tokio::time::Sleep>>,
    heartbeat_every: Duration,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The credentials' expiry, when they have one.
    expiry: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl SseBody {
    pub(crate) fn new(stream: SseStream) -> SseBody {
        let state = stream.state();
        let every = state.config.heartbeat_interval;
        let shutdown = Box::pin(state.shutdown.clone().cancelled_owned());
        let expiry = stream
            .expires()
            .map(|at| Box::pin(tokio::time::sleep_until(at.into())));
        SseBody {
            stream,
            heartbeat: Box::pin(tokio::time::sleep(every)),
            heartbeat_every: every,
            shutdown,
            expiry,
        }
    }
}

impl HttpBody for SseBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(chunk) = this.stream.take_output() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if this.stream.is_ended() {
                this.stream.finish();
                return Poll::Ready(None);
            }
            if this.shutdown.as_mut().poll(cx).is_ready() {
                this.stream.shut_down();
                continue;
            }
            if let Some(expiry) = &mut this.expiry {
                if expiry.as_mut().poll(cx).is_ready() {
                    this.expiry = None;
                    this.stream.expire();
                    continue;
                }
            }
            if this.stream.poll_outbound(cx).is_ready() {
                this.stream.drain();
                continue;
            }
            if this.heartbeat.as_mut().poll(cx).is_ready() {
                this.stream.heartbeat();
                let next = tokio::time::Instant::now() + this.heartbeat_every;
                this.heartbeat.as_mut().reset(next);
                continue;
            }
            return Poll::Pending;
        }
    }
}
