//! A [`Transport`] over any async byte stream: what an upgraded connection is when the
//! server does not own the socket (Switchboard's router mounted in an application served by
//! `axum::serve` or another hyper setup, where the upgraded IO is wrapped in types that can
//! not be taken apart to reach the `TcpStream`).
//!
//! An `AsyncRead`/`AsyncWrite` pair has no readiness to wait on without moving bytes, so
//! this transport waits by doing the I/O: waiting for readability reads into a small
//! read-ahead buffer, waiting for writability writes from a bounded write buffer. It costs a
//! copy per direction and a buffer while busy; connections on it never park. The server's
//! own listener never uses it (it takes the raw socket back).

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf as _, BytesMut};
use switchboard_ws_proto::Output;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, Interest, ReadBuf, Ready};

use super::transport::Transport;

/// Bytes read ahead per readiness wait, and the most we hold for the socket at once (the
/// rest stays in the connection's output queue, where `max_pending_output` counts it).
const CHUNK: usize = 16 * 1024;

/// A WebSocket's byte stream over an arbitrary async stream `S`.
#[derive(Debug)]
pub struct StreamTransport<S> {
    inner: Mutex<Inner<S>>,
}

#[derive(Debug)]
struct Inner<S> {
    io: S,
    /// Read by a readiness wait, not yet taken by the driver.
    read_ahead: BytesMut,
    eof: bool,
    /// Taken from the driver's output, not yet accepted by the stream.
    unwritten: BytesMut,
}

impl<S> StreamTransport<S> {
    /// A transport over `io`.
    pub fn new(io: S) -> StreamTransport<S> {
        StreamTransport {
            inner: Mutex::new(Inner {
                io,
                read_ahead: BytesMut::new(),
                eof: false,
                unwritten: BytesMut::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<S>> {
        // Only the connection's own task uses it; a panic mid-call leaves plain buffers.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Inner<S> {
    /// Read once into the read-ahead buffer. Ready when something (or the end) arrived.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.read_ahead.is_empty() || self.eof {
            return Poll::Ready(Ok(()));
        }
        let mut chunk = [0u8; CHUNK];
        let mut buf = ReadBuf::new(&mut chunk);
        match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().is_empty() {
                    self.eof = true;
                } else {
                    self.read_ahead.extend_from_slice(buf.filled());
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Write from the write buffer until it is empty (then flush). Ready when it is.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.unwritten.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.unwritten) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.unwritten.advance(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.unwritten = BytesMut::new();
        Pin::new(&mut self.io).poll_flush(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for StreamTransport<S> {
    fn poll_ready(&self, cx: &mut Context<'_>, interest: Interest) -> Poll<io::Result<Ready>> {
        super::transport::poll_directions(
            &mut *self.lock(),
            cx,
            interest,
            |inner, cx| {
                let filled = inner.poll_fill(cx);
                filled.map_ok(|()| {
                    if inner.eof {
                        Ready::READABLE | Ready::READ_CLOSED
                    } else {
                        Ready::READABLE
                    }
                })
            },
            |inner, cx| inner.poll_drain(cx).map_ok(|()| Ready::WRITABLE),
        )
    }

    fn read_available(&mut self, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
        let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        if inner.read_ahead.is_empty() {
            // Nothing read ahead: try once without waiting (a no-op waker: the driver's next
            // readiness wait polls again with its own).
            let mut cx = Context::from_waker(Waker::noop());
            if let Poll::Ready(Err(e)) = inner.poll_fill(&mut cx) {
                return Err(e);
            }
        }
        if inner.read_ahead.is_empty() {
            return if inner.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = inner.read_ahead.len().min(max);
        buf.extend_from_slice(&inner.read_ahead[..n]);
        inner.read_ahead.advance(n);
        if inner.read_ahead.is_empty() {
            inner.read_ahead = BytesMut::new();
        }
        Ok(n)
    }

    fn write_now(&mut self, out: &mut Output) -> io::Result<()> {
        let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            match inner.poll_drain(&mut cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Err(e),
                // The stream is full; the driver waits for writability (`ready`).
                Poll::Pending => return Ok(()),
            }
            if out.is_empty() {
                return Ok(());
            }
            // Take at most one chunk: the rest stays in `out`, where backpressure sees it.
            let mut slices = [std::io::IoSlice::new(&[]); 64];
            let n = out.io_slices(&mut slices);
            let mut taken = 0;
            for slice in &slices[..n] {
                let want = slice.len().min(CHUNK - taken);
                inner.unwritten.extend_from_slice(&slice[..want]);
                taken += want;
                if taken == CHUNK {
                    break;
                }
            }
            out.advance(taken);
        }
    }

    fn has_buffered_output(&self) -> bool {
        !self.lock().unwritten.is_empty()
    }

    async fn linger(self, timeout: Duration) {
        let mut inner = self.inner.into_inner().unwrap_or_else(|e| e.into_inner());
        let _ = tokio::time::timeout(timeout, async {
            let _ = poll_fn(|cx| inner.poll_drain(cx)).await;
            let _ = inner.io.shutdown().await;
            let mut scratch = [0u8; 1024];
            loop {
                match tokio::io::AsyncReadExt::read(&mut inner.io, &mut scratch).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
}
