//! The byte streams a WebSocket driver runs on: plain TCP, or TLS over TCP.
//!
//! Both are readiness-based (no buffers or futures held while idle): the driver waits on the
//! socket's readiness and then reads or writes without blocking. For TLS, rustls is used
//! sans-IO ([`rustls::ServerConnection`]) over the same socket, after the handshake that
//! tokio-rustls did for the HTTP request.

use std::future::Future;
use std::io::{self, IoSlice, Read, Write};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut as _, BytesMut};
use switchboard_ws_proto::Output;
use tokio::io::{AsyncWriteExt, Interest, Ready};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

/// A connection's byte stream as the driver uses it.
pub trait Transport: Send + 'static {
    /// Ready when the socket is ready for `interest` (some of it); otherwise `cx`'s waker is
    /// woken when it is. Only the latest waker is kept: the driver is the one reader.
    fn poll_ready(&self, cx: &mut Context<'_>, interest: Interest) -> Poll<io::Result<Ready>>;

    /// Read what is available (at most `max` bytes) into `buf`. `Ok(0)` is the end of the
    /// stream; `WouldBlock` means nothing (of the application's) arrived.
    fn read_available(&mut self, buf: &mut BytesMut, max: usize) -> io::Result<usize>;

    /// Write as much of `out` as the socket takes without waiting.
    fn write_now(&mut self, out: &mut Output) -> io::Result<()>;

    /// Whether the transport itself holds bytes for the socket (TLS records): the driver
    /// then waits for writability even when `out` is empty.
    fn has_buffered_output(&self) -> bool;

    /// After the close handshake: end the stream (TLS close_notify, FIN), then read and
    /// discard until the peer closes too or `timeout` passes, so that unread input does not
    /// turn our close into a reset that could destroy the Close frame in flight (RFC 6455
    /// §7.1.1: the server closes the TCP connection first).
    fn linger(self, timeout: Duration) -> impl Future<Output = ()> + Send;

    /// Whether an idle connection on this transport can be parked (held without a task; see
    /// `ws::park`): the parking lot reads and writes the bare socket, so only plain TCP can.
    const PARKABLE: bool = false;

    /// The bare socket, taken out of tokio's reactor, for parking (`None` when the transport
    /// can not be parked or the socket can not be deregistered).
    fn into_parkable(self) -> Option<std::net::TcpStream>
    where
        Self: Sized,
    {
        None
    }
}

impl Transport for TcpStream {
    /// Through tokio's per-direction waker slots rather than a `ready()` future: that future
    /// joins the socket's waiter list when it waits and leaves it when dropped, which the
    /// driver's `select!` does on every turn another branch wins (every delivery under
    /// fan-out): two locks of the socket's state and a waker clone per turn, where polling
    /// the slots takes one lock and keeps the waker while it is the same.
    fn poll_ready(&self, cx: &mut Context<'_>, interest: Interest) -> Poll<io::Result<Ready>> {
        // (Ready also when closed: the read or write that follows reports how.)
        poll_directions(
            &mut &*self,
            cx,
            interest,
            |tcp, cx| tcp.poll_read_ready(cx).map_ok(|()| Ready::READABLE),
            |tcp, cx| tcp.poll_write_ready(cx).map_ok(|()| Ready::WRITABLE),
        )
    }

    /// A short read means the socket is drained: readiness is cleared right away (as tokio's
    /// own `poll_read` does) so the next loop turn waits for epoll instead of paying for a
    /// `recv` that returns EAGAIN. That saves one syscall per message in request/response
    /// traffic.
    fn read_available(&mut self, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
        let mut read = None;
        let result = self.try_io(Interest::READABLE, || {
            // (`BytesMut::remaining_mut` is unbounded, hence the capacity arithmetic.)
            let spare = (buf.capacity() - buf.len()).min(max);
            let n = self.try_read_buf(&mut (&mut *buf).limit(spare))?;
            read = Some(n);
            if n > 0 && n < spare {
                // Not an error: this only tells tokio to clear the readiness flag.
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(n)
            }
        });
        match read {
            Some(n) => Ok(n),
            None => result,
        }
    }

    /// Every queued segment in one vectored write (small frames were coalesced, large
    /// payloads are written in place).
    fn write_now(&mut self, out: &mut Output) -> io::Result<()> {
        write_segments(out, |slices| {
            // One segment (the common case for small messages): plain send is cheaper than
            // writev.
            if let [one] = slices {
                self.try_io(Interest::WRITABLE, || send(self, one))
            } else {
                self.try_write_vectored(slices)
            }
        })
    }

    fn has_buffered_output(&self) -> bool {
        false
    }

    async fn linger(mut self, timeout: Duration) {
        let _ = self.shutdown().await;
        let _ = tokio::time::timeout(timeout, discard_until_eof(&self)).await;
    }

    const PARKABLE: bool = true;

    fn into_parkable(self) -> Option<std::net::TcpStream> {
        // Deregisters from tokio (freeing its per-socket state); stays non-blocking.
        self.into_std().ok()
    }
}

/// `send(2)` on a non-blocking socket, issued as a raw system call.
///
/// glibc's `send` is a thread cancellation point: in a multi-threaded process it flips the
/// thread's cancellation state around the call with two atomic read-modify-writes. Under
/// fan-out that is two locked instructions per recipient per wave (measured: 0.6 % of the
/// server in the Socket.IO fan-out profile, as much as the wrapper's own work). Nothing here
/// cancels threads, so the plain system call does the same thing without them.
#[allow(unsafe_code)]
fn send(socket: &impl std::os::fd::AsRawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the whole call; the kernel
    // only reads it. The descriptor is owned by `socket`, borrowed for the call; no address
    // is passed (a connected socket), so the address arguments are null and zero.
    let n = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            socket.as_raw_fd(),
            buf.as_ptr(),
            buf.len(),
            libc::MSG_NOSIGNAL,
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::socklen_t,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        // (At most `buf.len()`: never negative here.)
        Ok(n as usize)
    }
}

/// [`Transport::poll_ready`] from a poll per direction of `io` (each asked only if
/// `interest` has it, and each registering the waker when pending): ready with what either
/// gave.
pub(super) fn poll_directions<S>(
    io: &mut S,
    cx: &mut Context<'_>,
    interest: Interest,
    read: impl FnOnce(&mut S, &mut Context<'_>) -> Poll<io::Result<Ready>>,
    write: impl FnOnce(&mut S, &mut Context<'_>) -> Poll<io::Result<Ready>>,
) -> Poll<io::Result<Ready>> {
    let mut ready = Ready::EMPTY;
    if interest.is_readable() {
        match read(io, cx) {
            Poll::Ready(Ok(r)) => ready |= r,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
    }
    if interest.is_writable() {
        match write(io, cx) {
            Poll::Ready(Ok(r)) => ready |= r,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
    }
    if ready.is_empty() {
        Poll::Pending
    } else {
        Poll::Ready(Ok(ready))
    }
}

/// Write as much of `out` as a non-blocking std socket takes now (a parked connection's).
pub fn write_nonblocking(socket: &std::net::TcpStream, out: &mut Output) -> io::Result<()> {
    write_segments(out, |slices| (&*socket).write_vectored(slices))
}

/// Write `out`'s segments (up to 64 per call) with `write`, which returns how many bytes the
/// socket took, until everything went or the socket is full (`WouldBlock`: not an error).
fn write_segments(
    out: &mut Output,
    mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
) -> io::Result<()> {
    while !out.is_empty() {
        let mut slices = [IoSlice::new(&[]); 64];
        let n = out.io_slices(&mut slices);
        match write(&slices[..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => out.advance(written),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn discard_until_eof(stream: &TcpStream) {
    let mut scratch = [0u8; 1024];
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut scratch) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Most plaintext rustls buffers as records waiting for the socket. Our own output queue
/// (and its `max_pending_output` backpressure) stays the measure of a slow reader.
const TLS_BUFFER_LIMIT: usize = 64 * 1024;

/// TLS over TCP, driven sans-IO.
#[derive(Debug)]
pub struct TlsTransport {
    tcp: TcpStream,
    /// Boxed: a `ServerConnection` is several KiB, and the task of every connection (plain
    /// ones included: the spawn site handles both) is as large as its largest variant.
    /// Inline, it made every idle plain connection ~10 KiB bigger (measured).
    tls: Box<rustls::ServerConnection>,
}

impl TlsTransport {
    /// A transport continuing the TLS session `tls` (handshake done) on `tcp`, and the
    /// plaintext rustls had already decrypted but nobody read yet (bytes a client sent right
    /// behind its upgrade request, in the same TLS flight): it belongs in front of the input.
    pub fn new(tcp: TcpStream, mut tls: rustls::ServerConnection) -> (TlsTransport, BytesMut) {
        tls.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        let mut transport = TlsTransport {
            tcp,
            tls: Box::new(tls),
        };
        let mut pending = BytesMut::new();
        let mut eof = false;
        let _ = transport.take_plaintext(&mut pending, usize::MAX, &mut eof);
        (transport, pending)
    }

    /// Move up to `max` bytes of decrypted plaintext into `buf`; sets `eof` at the peer's
    /// close_notify.
    fn take_plaintext(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
        eof: &mut bool,
    ) -> io::Result<usize> {
        let mut taken = 0;
        let mut reader = self.tls.reader();
        let mut chunk = [0u8; 16 * 1024];
        while taken < max {
            let want = chunk.len().min(max - taken);
            match reader.read(&mut chunk[..want]) {
                Ok(0) => {
                    *eof = true;
                    break;
                }
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    taken += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(taken)
    }

    /// Write queued TLS records until done or the socket is full.
    fn flush_records(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut SocketWriter(&self.tcp)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// `io::Read` over a non-blocking tokio socket (clears readiness on `WouldBlock`).
struct SocketReader<'a>(&'a TcpStream);

impl Read for SocketReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

/// `io::Write` over a non-blocking tokio socket (clears readiness on `WouldBlock`).
struct SocketWriter<'a>(&'a TcpStream);

impl Write for SocketWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for TlsTransport {
    fn poll_ready(&self, cx: &mut Context<'_>, interest: Interest) -> Poll<io::Result<Ready>> {
        self.tcp.poll_ready(cx, interest)
    }

    fn read_available(&mut self, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
        let mut plaintext = 0;
        let mut eof = false;
        loop {
            // First what rustls already decrypted: it refuses more records (`read_tls` fails)
            // while its plaintext buffer is full.
            plaintext += self.take_plaintext(buf, max - plaintext, &mut eof)?;
            if plaintext >= max || eof || !self.tls.wants_read() {
                break;
            }
            let received = match self.tls.read_tls(&mut SocketReader(&self.tcp)) {
                Ok(0) => {
                    eof = true;
                    0
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            if let Err(e) = self.tls.process_new_packets() {
                // rustls queued an alert for the peer: send it if the socket takes it.
                let _ = self.flush_records();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if received == 0 {
                // Drained (the read cleared the socket's readiness) or at EOF: collect what
                // the last records held, then stop.
                plaintext += self.take_plaintext(buf, max - plaintext, &mut eof)?;
                break;
            }
        }
        match (plaintext, eof) {
            (0, true) => Ok(0),
            (0, false) => Err(io::ErrorKind::WouldBlock.into()),
            (n, _) => Ok(n),
        }
    }

    fn write_now(&mut self, out: &mut Output) -> io::Result<()> {
        loop {
            self.flush_records()?;
            if self.tls.wants_write() || out.is_empty() {
                return Ok(());
            }
            let mut slices = [IoSlice::new(&[]); 64];
            let n = out.io_slices(&mut slices);
            let taken = self.tls.writer().write_vectored(&slices[..n])?;
            if taken == 0 {
                return Ok(());
            }
            out.advance(taken);
        }
    }

    fn has_buffered_output(&self) -> bool {
        self.tls.wants_write()
    }

    async fn linger(mut self, timeout: Duration) {
        self.tls.send_close_notify();
        let flush = async {
            while self.tls.wants_write() {
                if self.tcp.writable().await.is_err() || self.flush_records().is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(timeout, flush).await;
        let mut tcp = self.tcp;
        let _ = tcp.shutdown().await;
        let _ = tokio::time::timeout(timeout, discard_until_eof(&tcp)).await;
    }
}
