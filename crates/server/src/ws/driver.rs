//! The per-connection driver task: socket I/O around a sans-IO [`Connection`].
//!
//! One task per connection owns all its state; no locks. Each wake-up reads what is available,
//! decodes every complete frame, lets the handler queue replies, and writes them all with one
//! syscall: pipelined clients get batched replies for free. While idle the task holds no read
//! or write buffer, and its only timer is one `Sleep` whose deadline is recomputed lazily.

use std::io::{self, Read as _};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use switchboard_ws_proto::{CloseCode, Connection, Event, IdleConnection, MessageKind};
use tokio::io::{Interest, Ready};
use tokio::net::TcpStream;
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;

use super::handler::Handler;
use super::park::Verdict;
use super::transport::{write_nonblocking, Transport};
use crate::cancel::Cancelled;
use crate::keepalive::{Heartbeat, Keepalive, KeepaliveAction};
use crate::metrics::Metrics;

/// Read size per wake-up: big enough for a batch of pipelined frames.
const READ_CHUNK: usize = 64 * 1024;

/// After handling this many messages in one batch, let other tasks run (see the loop).
const YIELD_AFTER_MESSAGES: usize = 16;

/// A handler's own timer and a token's expiry are looked at when the loop's timer fired,
/// and at least every this many turns (see the loop).
const CLOCK_EVERY_TURNS: u32 = 8;

/// Limits the driver applies (a subset of `ServerConfig`).
#[derive(Debug, Clone, Copy)]
pub struct DriverLimits {
    /// See `ServerConfig::heartbeat_interval` and `heartbeat_timeout`.
    pub heartbeat: Heartbeat,
    /// See `ServerConfig::close_timeout`.
    pub close_timeout: Duration,
    /// See `ServerConfig::max_pending_output`.
    pub max_pending_output: usize,
    /// See `ServerConfig::auth_timeout`: applies while [`Handler::is_authenticated`] is false.
    pub auth_timeout: Duration,
    /// See `ServerConfig::park_idle_after`; `None` never parks.
    pub park_idle_after: Option<Duration>,
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// Why.
    pub reason: EndReason,
    /// The close code of the closing handshake, if one started.
    pub close_code: Option<u16>,
}

/// Why a connection ended (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The close handshake completed or the connection failed with a Close frame sent.
    Closed,
    /// The peer closed the TCP connection (or reset it) without a close handshake.
    PeerGone,
    /// No Pong or other frame within the heartbeat timeout.
    HeartbeatTimeout,
    /// The peer did not complete the close handshake in time.
    CloseTimeout,
}

impl EndReason {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            EndReason::Closed => "closed",
            EndReason::PeerGone => "peer_gone",
            EndReason::HeartbeatTimeout => "heartbeat_timeout",
            EndReason::CloseTimeout => "close_timeout",
        }
    }
}

/// The state of a connection that outlives any one driver task: a parked connection keeps
/// it (as an [`Idle`]) while it has no task.
#[derive(Debug)]
pub struct Session<T, H> {
    io: T,
    /// Bytes read and not yet decoded.
    input: BytesMut,
    conn: Connection,
    handler: H,
    keepalive: Keepalive,
    /// Until when a connection that has not authenticated may stay.
    auth_deadline: Option<Instant>,
    /// `conn.messages_sent()` already added to the metrics.
    messages_reported: u64,
}

impl<T: Transport, H: Handler> Session<T, H> {
    /// A connection that just opened. `leftover` are bytes read past the HTTP request head.
    pub fn open(
        io: T,
        leftover: Bytes,
        mut conn: Connection,
        mut handler: H,
        limits: &DriverLimits,
    ) -> Session<T, H> {
        let input = BytesMut::from(&leftover[..]);
        // `leftover` may be a slice of hyper's read buffer: holding it would keep that whole
        // allocation alive for the life of the connection.
        drop(leftover);
        let now = Instant::now();
        handler.on_open(&mut conn);
        // A handler that needs credentials (first-message `auth`) must get them in time.
        let auth_deadline = (!handler.is_authenticated()).then(|| now + limits.auth_timeout);
        Session {
            io,
            input,
            conn,
            handler,
            keepalive: Keepalive::new(now),
            auth_deadline,
            messages_reported: 0,
        }
    }
}

/// How a driver task ended.
#[derive(Debug)]
// Returned once, at the end of a task, and moved straight into the parking lot's box: boxing
// the large variant would only add an allocation per park.
#[allow(clippy::large_enum_variant)]
pub enum Outcome<H> {
    /// The connection is over.
    Ended(Ended),
    /// The connection is idle: hand it to a parking lot, which resumes it when needed.
    Parked(Idle<H>),
}

/// Why the driver loop stopped.
enum Exit {
    End(EndReason),
    Park,
}

/// Run a connection until it ends or, idle for `limits.park_idle_after`, can be parked.
/// `can_park`: whether a parking lot takes idle connections now.
pub async fn run<T: Transport, H: Handler>(
    session: Session<T, H>,
    limits: &DriverLimits,
    can_park: bool,
    shutdown: &CancellationToken,
    metrics: &Metrics,
) -> Outcome<H> {
    let Session {
        mut io,
        mut input,
        mut conn,
        mut handler,
        mut keepalive,
        mut auth_deadline,
        mut messages_reported,
    } = session;
    let mut close_deadline: Option<Instant> = None;
    let heartbeat = &limits.heartbeat;
    // The timer's deadline and whether it fired, kept here: asking the `Sleep` reads its
    // timer entry, one more cache line per wake-up of every connection.
    let mut sleep_armed = keepalive.deadline(heartbeat);
    let mut sleep_fired = false;
    // The timer fired since the handler's deadlines were last compared with the clock, and
    // how many turns ago they were (see below).
    let mut timer_woke = false;
    let mut turns_since_clock: u32 = 0;
    let sleep = sleep_until(sleep_armed.into());
    tokio::pin!(sleep);
    // Created once, and polled without a lock once registered (see `cancel.rs`).
    let mut cancelled = Cancelled::new(shutdown);
    // The handler may have outbound messages we have not taken yet: it announced them while
    // the socket was full, or we were busy reading (the biased `select!` below prefers
    // input, so a client that floods us would otherwise never get its deliveries, and would
    // overflow its own outbox), or while the connection was parked. Look at once.
    let mut outbound_due = true;
    // Parking: `park_check` is when to look next. `active` records any byte read or written
    // since the last look (a flag, not a clock read per message): a connection parks at the
    // first look that finds it idle and inactive, so between one and two `park_after` after
    // its last activity.
    let park_after = limits.park_idle_after.filter(|_| T::PARKABLE && can_park);
    let mut park_check = park_after.map(|after| Instant::now() + after);
    let mut active = false;
    // Deliveries are taken from the handler only once everything written before has left
    // (output empty): a client that reads slowly gets them in big batches when its socket
    // drains, and one that does not read at all is not woken per message: its queue stays
    // non-empty, so pushes to it do not notify (measured: 1 000 stalled readers otherwise
    // cost a wake-up each per published message while their buffers filled, and delayed
    // healthy clients by up to 250 ms).
    let flushed =
        |conn: &mut Connection, io: &T| conn.output().is_empty() && !io.has_buffered_output();

    let exit = loop {
        let mut handled = 0;
        // Complete frames left undecoded because replies were piling up (see
        // `process_input`): decoded on a later turn, once the output is below the limit.
        let mut input_paused = false;
        if !input.is_empty() {
            // On a protocol error the Close frame is queued; fall through to flush it.
            (handled, input_paused) = process_input(
                &mut conn,
                &mut input,
                &mut handler,
                limits.max_pending_output,
            );
            if handled > 0 {
                metrics.messages_in.add(handled as u64);
            }
        }
        match write_counted(&mut io, &mut conn, metrics) {
            Ok(written) => active |= written > 0,
            Err(_) => break Exit::End(EndReason::PeerGone),
        }
        if outbound_due && conn.is_open() && flushed(&mut conn, &io) {
            outbound_due = false;
            handler.write_outbound(&mut conn);
            match write_counted(&mut io, &mut conn, metrics) {
                Ok(written) => active |= written > 0,
                Err(_) => break Exit::End(EndReason::PeerGone),
            }
        }
        let sent = conn.messages_sent();
        if sent != messages_reported {
            metrics.messages_out.add(sent - messages_reported);
            messages_reported = sent;
        }
        if conn.is_closed() && conn.output().is_empty() && !io.has_buffered_output() {
            break Exit::End(EndReason::Closed);
        }
        if handled >= YIELD_AFTER_MESSAGES {
            // A big batch (a publisher) has woken many tasks. The last one woken sits in this
            // worker's LIFO slot, where no other worker can steal it: it waits until we
            // return Pending, and a client that keeps sending would keep us from doing so
            // (measured: a subscriber starved until its outbox overflowed). Yield now.
            tokio::task::yield_now().await;
        }
        if conn.is_closed() || !conn.is_open() {
            close_deadline.get_or_insert_with(|| Instant::now() + limits.close_timeout);
        }
        // Idle: hold no buffers.
        if input.is_empty() {
            input = BytesMut::new();
        }
        conn.release_idle_buffers();

        if auth_deadline.is_some() && handler.is_authenticated() {
            auth_deadline = None;
        }
        // Close, auth and expiry deadlines and the handler's timer are acted on here, not in
        // the timer branch, which merely wakes the loop: a client that keeps the socket
        // readable (or a room that keeps the outbox busy) would never let that lower-priority
        // branch run. The close and auth deadlines exist only in those short states and are
        // compared with the clock on every turn. A handler's timer (Engine.IO's heartbeat)
        // and a token's expiry are set on every such connection: reading the clock for them
        // on every turn cost 0.4 % of the server under fan-out, so they are compared when the
        // timer fired, and every `CLOCK_EVERY_TURNS` turns for the busy case above (the
        // timer is armed at the earliest deadline, so a quiet connection is woken on time).
        let expiry = handler.expires_at().filter(|_| conn.is_open());
        let timer = handler.timer().filter(|_| conn.is_open());
        turns_since_clock = turns_since_clock.saturating_add(1);
        let look_at_handler = (expiry.is_some() || timer.is_some())
            && (timer_woke || turns_since_clock >= CLOCK_EVERY_TURNS);
        if close_deadline.is_some() || auth_deadline.is_some() || look_at_handler {
            (timer_woke, turns_since_clock) = (false, 0);
            let now = Instant::now();
            if timer.is_some_and(|d| now >= d) {
                handler.on_timer(&mut conn, now);
                continue;
            }
            if expiry.is_some_and(|d| now >= d) {
                handler.on_expired(&mut conn);
                let still_due = handler.expires_at().is_some_and(|d| Instant::now() >= d);
                if conn.is_open() && still_due {
                    // Neither closed nor refreshed: its credentials are over all the same.
                    conn.close(CloseCode::Application(4001), "Token expired");
                }
                continue;
            }
            if close_deadline.is_some_and(|d| now >= d) {
                break Exit::End(EndReason::CloseTimeout);
            }
            if auth_deadline.is_some_and(|d| now >= d) {
                auth_deadline = None;
                if conn.is_open() {
                    metrics.auth_failure("timeout");
                    conn.close(CloseCode::Application(4000), "Authentication timeout");
                    continue;
                }
            }
        }
        if input_paused && conn.output().len() < limits.max_pending_output && conn.is_open() {
            // The output drained while decoded-but-unhandled input waits: no readiness event
            // will come for bytes we already hold, so go round again now.
            continue;
        }
        let mut deadline = keepalive.deadline(heartbeat);
        for d in [close_deadline, auth_deadline, park_check, expiry, timer]
            .into_iter()
            .flatten()
        {
            deadline = deadline.min(d);
        }
        // Activity only moves the keepalive deadline later: leave the timer alone then (no
        // timer-wheel work per message) and let `handle_timeout` re-arm it when it fires early.
        if sleep_fired || deadline < sleep_armed {
            sleep.as_mut().reset(deadline.into());
            (sleep_armed, sleep_fired) = (deadline, false);
        }
        // Backpressure: a client that does not read our replies is not read either.
        let mut interest = None;
        if conn.output().len() < limits.max_pending_output && !conn.is_closed() {
            interest = Some(Interest::READABLE);
        }
        if !conn.output().is_empty() || io.has_buffered_output() {
            interest = Some(interest.map_or(Interest::WRITABLE, |i| i | Interest::WRITABLE));
        }

        tokio::select! {
            biased;
            () = &mut cancelled, if conn.is_open() => {
                conn.close(CloseCode::Away, "Server shutting down");
            }
            // Readiness for both directions in one branch, through tokio's per-direction waker
            // slots (see `Transport::poll_ready`): nothing is added to the socket's state.
            ready = std::future::poll_fn(|cx| poll_ready_for(&io, cx, interest)) => {
                let Ok(ready) = ready else {
                    break Exit::End(EndReason::PeerGone);
                };
                if ready.is_readable() || ready.is_read_closed() {
                    if input.capacity() - input.len() < READ_CHUNK / 4 {
                        input.reserve(READ_CHUNK);
                    }
                    match io.read_available(&mut input, READ_CHUNK) {
                        Ok(0) => break Exit::End(EndReason::PeerGone),
                        Ok(n) => {
                            metrics.bytes_in.add(n as u64);
                            keepalive.heard(Instant::now());
                            outbound_due = true;
                            active = true;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => break Exit::End(EndReason::PeerGone),
                    }
                }
            }
            () = std::future::poll_fn(|cx| handler.poll_outbound(cx)), if conn.is_open() => {
                if flushed(&mut conn, &io) {
                    handler.write_outbound(&mut conn);
                } else {
                    outbound_due = true;
                    handler.on_outbound_blocked(&mut conn);
                }
            }
            () = &mut sleep => {
                sleep_fired = true;
                timer_woke = true;
                let now = Instant::now();
                match keepalive.handle_timeout(now, heartbeat) {
                    KeepaliveAction::Wait => {}
                    KeepaliveAction::SendPing => conn.send_ping(b""),
                    KeepaliveAction::Dead => break Exit::End(EndReason::HeartbeatTimeout),
                }
                if let (Some(at), Some(after)) = (park_check, park_after) {
                    if now >= at {
                        let idle = conn.is_open()
                            && !conn.is_mid_message()
                            && input.is_empty()
                            && flushed(&mut conn, &io)
                            && !outbound_due
                            && auth_deadline.is_none()
                            && close_deadline.is_none()
                            && !shutdown.is_cancelled();
                        if !std::mem::take(&mut active) && idle {
                            break Exit::Park;
                        }
                        park_check = Some(now + after);
                    }
                }
            }
        }
    };
    let reason = match exit {
        Exit::Park => {
            handler.on_park();
            conn.release_idle_buffers();
            if let Some(socket) = io.into_parkable() {
                return Outcome::Parked(Idle {
                    socket,
                    conn: ParkedCodec::new(conn),
                    handler,
                    keepalive,
                });
            }
            // Could not leave tokio's reactor (not expected): the socket is gone with `io`.
            handler.on_close();
            EndReason::PeerGone
        }
        Exit::End(reason) => {
            handler.on_close();
            if reason == EndReason::Closed {
                // Boxed: only closing connections pay for the drain buffer and its future, not
                // the state of every idle connection.
                Box::pin(io.linger(limits.close_timeout)).await;
            }
            reason
        }
    };
    Outcome::Ended(Ended {
        reason,
        close_code: conn.close_code(),
    })
}

/// An idle connection without a task: what a parking lot holds (see `ws::park`). Its socket
/// is out of tokio's reactor; its codec holds no partial frame and no output.
#[derive(Debug)]
pub struct Idle<H> {
    socket: std::net::TcpStream,
    conn: ParkedCodec,
    handler: H,
    keepalive: Keepalive,
}

/// A parked connection's codec. Idle, it is the small form (see `IdleConnection`: 144 bytes
/// fewer in every parked connection); it is made whole only while a heartbeat is handled in
/// place, and stays whole when the socket did not take all the output (the resumed driver
/// writes the rest).
#[derive(Debug)]
enum ParkedCodec {
    Idle(IdleConnection),
    Active(Box<Connection>),
    /// Only while it moves between the two.
    Taken,
}

impl ParkedCodec {
    fn new(conn: Connection) -> ParkedCodec {
        match conn.into_idle() {
            Ok(idle) => ParkedCodec::Idle(idle),
            Err(conn) => ParkedCodec::Active(Box::new(conn)),
        }
    }

    fn into_connection(self) -> Connection {
        match self {
            ParkedCodec::Idle(idle) => idle.into_active(),
            ParkedCodec::Active(conn) => *conn,
            // `take` and `put` are always paired, within one method of `Idle`.
            ParkedCodec::Taken => unreachable!("a parked codec is put back after use"),
        }
    }

    fn take(&mut self) -> Connection {
        std::mem::replace(self, ParkedCodec::Taken).into_connection()
    }

    fn put(&mut self, conn: Connection) {
        *self = ParkedCodec::new(conn);
    }
}

/// Bytes of a readable parked socket looked at before deciding to resume: more than a few
/// heartbeat frames means traffic, and traffic is the driver's job.
const PEEK_LIMIT: usize = 256;

impl<H: Handler> Idle<H> {
    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The socket.
    pub fn socket(&self) -> &std::net::TcpStream {
        &self.socket
    }

    /// The heartbeat deadline, or the handler's timer when that is earlier.
    pub fn deadline(&self, limits: &DriverLimits) -> Instant {
        let heartbeat = self.keepalive.deadline(&limits.heartbeat);
        match self.handler.timer() {
            Some(timer) => timer.min(heartbeat),
            None => heartbeat,
        }
    }

    /// See [`Handler::poll_outbound`].
    pub fn poll_outbound(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.handler.poll_outbound(cx)
    }

    /// The socket is readable: handle it in place if it holds only heartbeat frames (Pongs
    /// answering our Pings, Pings from clients that send their own), otherwise ask to resume.
    /// Looks with `MSG_PEEK`, so that nothing is taken from the stream unless it is handled
    /// here.
    pub fn on_readable(&mut self, metrics: &Metrics) -> Verdict {
        let mut conn = self.conn.take();
        let verdict = self.on_readable_with(&mut conn, metrics);
        self.conn.put(conn);
        verdict
    }

    fn on_readable_with(&mut self, conn: &mut Connection, metrics: &Metrics) -> Verdict {
        let mut buf = [0u8; PEEK_LIMIT];
        // Until the socket is drained: the readiness is edge-triggered, and an end of stream
        // right behind the heartbeats (a peer that answers and leaves) gets no edge of its own.
        for _ in 0..4 {
            match self.socket.peek(&mut buf) {
                Ok(n)
                    if n < PEEK_LIMIT
                        && conn.is_only_heartbeats_with(&buf[..n], |payload| {
                            self.handler.is_text_heartbeat(payload)
                        }) =>
                {
                    // The bytes are in the socket's queue: this read takes exactly them.
                    if !matches!((&self.socket).read(&mut buf[..n]), Ok(read) if read == n) {
                        // Not expected; part of a frame would be gone: end the stream for
                        // the resumed driver rather than let it decode from mid-frame.
                        let _ = self.socket.shutdown(std::net::Shutdown::Both);
                        return Verdict::Resume;
                    }
                    metrics.bytes_in.add(n as u64);
                    self.keepalive.heard(Instant::now());
                    // Only Ping and Pong events (see `is_only_heartbeats`; the codec queues
                    // the Pongs that answer Pings) and the handler's text heartbeats.
                    let mut input = BytesMut::from(&buf[..n]);
                    while let Ok(Some(event)) = conn.handle_input(&mut input) {
                        if let Event::Text(payload) = event {
                            metrics.messages_in.add(1);
                            self.handler.on_message(conn, MessageKind::Text, payload);
                        }
                    }
                    if !self.flush(conn, metrics) {
                        return Verdict::Resume;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Verdict::Stay,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Data, the end of the stream or an error: the driver's job.
                _ => return Verdict::Resume,
            }
        }
        // Heartbeats keep coming: let the driver deal with this peer.
        Verdict::Resume
    }

    /// The heartbeat deadline passed: write the Ping from here when the socket takes it
    /// whole, otherwise (and for a peer that is dead) ask to resume.
    pub fn on_deadline(
        &mut self,
        now: Instant,
        limits: &DriverLimits,
        metrics: &Metrics,
    ) -> Verdict {
        let mut conn = self.conn.take();
        let verdict = self.on_deadline_with(&mut conn, now, limits, metrics);
        self.conn.put(conn);
        verdict
    }

    fn on_deadline_with(
        &mut self,
        conn: &mut Connection,
        now: Instant,
        limits: &DriverLimits,
        metrics: &Metrics,
    ) -> Verdict {
        if self.handler.timer().is_some_and(|at| now >= at) {
            self.handler.on_timer(conn, now);
            // A close (a heartbeat that went unanswered) is the driver's to finish.
            if !conn.is_open() || !self.flush(conn, metrics) {
                return Verdict::Resume;
            }
        }
        match self.keepalive.handle_timeout(now, &limits.heartbeat) {
            KeepaliveAction::Wait => Verdict::Stay,
            // The resumed driver finds the deadline passed and ends the connection.
            KeepaliveAction::Dead => Verdict::Resume,
            KeepaliveAction::SendPing => {
                conn.send_ping(b"");
                if self.flush(conn, metrics) {
                    Verdict::Stay
                } else {
                    Verdict::Resume
                }
            }
        }
    }

    /// Write the codec's output now; whether all of it went (the rest is the driver's).
    /// When it did, the connection stays parked: what handling the heartbeat in place
    /// allocated (the codec's buffers, the handler's queues) is given back, or every parked
    /// connection would keep it from its first heartbeat on (measured: +225 B per idle
    /// Socket.IO connection after Engine.IO's first ping).
    fn flush(&mut self, conn: &mut Connection, metrics: &Metrics) -> bool {
        if !conn.output().is_empty() {
            let before = conn.output().len();
            let result = write_nonblocking(&self.socket, conn.output());
            metrics.bytes_out.add((before - conn.output().len()) as u64);
            if result.is_err() || !conn.output().is_empty() {
                return false;
            }
            conn.release_idle_buffers();
        }
        self.handler.on_park();
        true
    }

    /// Back into tokio's reactor, as a session for a new driver task.
    pub fn resume(self) -> Result<Session<TcpStream, H>, (io::Error, Ended)> {
        let Idle {
            socket,
            conn,
            mut handler,
            keepalive,
        } = self;
        let conn = conn.into_connection();
        match TcpStream::from_std(socket) {
            Ok(io) => Ok(Session {
                io,
                input: BytesMut::new(),
                // Everything sent before parking was reported.
                messages_reported: conn.messages_sent(),
                conn,
                handler,
                keepalive,
                auth_deadline: None,
            }),
            Err(e) => {
                handler.on_close();
                let ended = Ended {
                    reason: EndReason::PeerGone,
                    close_code: conn.close_code(),
                };
                Err((e, ended))
            }
        }
    }
}

/// Write what the socket takes now and count the bytes; returns how many were written.
fn write_counted<T: Transport>(
    io: &mut T,
    conn: &mut Connection,
    metrics: &Metrics,
) -> io::Result<usize> {
    let before = conn.output().len();
    let result = io.write_now(conn.output());
    let written = before - conn.output().len();
    if written > 0 {
        metrics.bytes_out.add(written as u64);
    }
    result.map(|()| written)
}

/// Poll the socket for `interest`; pending forever when there is nothing to wait for.
fn poll_ready_for<T: Transport>(
    io: &T,
    cx: &mut std::task::Context<'_>,
    interest: Option<Interest>,
) -> std::task::Poll<io::Result<Ready>> {
    match interest {
        Some(interest) => io.poll_ready(cx, interest),
        None => std::task::Poll::Pending,
    }
}

/// Decode and dispatch every complete frame in `input`; returns how many messages the
/// handler got.
/// Decode and handle the complete frames in `input`, stopping early once `max_pending_output`
/// bytes of replies are waiting: one read holds up to 64 KiB of pipelined requests, and a
/// client that sends them without reading must not make us build every reply at once. The
/// rest stays in `input` and is decoded as the output drains. Returns how many messages were
/// handled and whether it stopped for that reason.
fn process_input<H: Handler>(
    conn: &mut Connection,
    input: &mut BytesMut,
    handler: &mut H,
    max_pending_output: usize,
) -> (usize, bool) {
    let mut handled = 0;
    loop {
        if conn.output().len() >= max_pending_output {
            return (handled, !input.is_empty());
        }
        match conn.handle_input(input) {
            Ok(None) => return (handled, false),
            Ok(Some(Event::Text(payload))) => {
                handled += 1;
                handler.on_message(conn, MessageKind::Text, payload)
            }
            Ok(Some(Event::Binary(payload))) => {
                handled += 1;
                handler.on_message(conn, MessageKind::Binary, payload)
            }
            // Pongs to pings are queued by the codec; any frame already counted as activity.
            Ok(Some(Event::Ping(_) | Event::Pong(_) | Event::Close(_))) => {}
            Err(e) => {
                tracing::debug!(error = %e, "protocol error");
                return (handled, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use switchboard_hub::Hub;
    use switchboard_ws_proto::Config;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// Needs the message "auth" before anything else; echoes afterwards.
    struct NeedsAuth {
        authenticated: bool,
    }

    impl Handler for NeedsAuth {
        fn on_message(&mut self, conn: &mut Connection, kind: MessageKind, payload: Bytes) {
            if &payload[..] == b"auth" {
                self.authenticated = true;
            }
            conn.send(kind, &payload);
        }

        fn is_authenticated(&self) -> bool {
            self.authenticated
        }
    }

    fn limits() -> DriverLimits {
        DriverLimits {
            heartbeat: Heartbeat {
                interval: Duration::from_secs(30),
                timeout: Duration::from_secs(30),
            },
            close_timeout: Duration::from_secs(1),
            max_pending_output: 64 * 1024,
            auth_timeout: Duration::from_millis(200),
            park_idle_after: None,
        }
    }

    /// A driver on one end of a TCP pair, our client codec on the other.
    async fn pair(
        metrics: &Arc<Metrics>,
    ) -> (TcpStream, Connection, tokio::task::JoinHandle<Ended>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let metrics = metrics.clone();
        let task = tokio::spawn(async move {
            let handler = NeedsAuth {
                authenticated: false,
            };
            let conn = Connection::server(&Config::default());
            let shutdown = CancellationToken::new();
            let limits = limits();
            let session = Session::open(server, Bytes::new(), conn, handler, &limits);
            match run(session, &limits, false, &shutdown, &metrics).await {
                Outcome::Ended(ended) => ended,
                Outcome::Parked(_) => panic!("parking is off"),
            }
        });
        (client, Connection::client(&Config::default()), task)
    }

    async fn next_event(
        stream: &mut TcpStream,
        codec: &mut Connection,
        input: &mut BytesMut,
    ) -> Event {
        loop {
            if let Some(e) = codec.handle_input(input).unwrap() {
                return e;
            }
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read_buf(input))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "EOF");
        }
    }

    #[tokio::test]
    async fn a_connection_that_does_not_authenticate_in_time_is_closed_with_4000() {
        let metrics = Arc::new(Metrics::new(Hub::new(Default::default())));
        let (mut stream, mut codec, task) = pair(&metrics).await;
        let started = Instant::now();
        let mut input = BytesMut::new();
        match next_event(&mut stream, &mut codec, &mut input).await {
            Event::Close(Some(frame)) => {
                assert_eq!(frame.code, CloseCode::Application(4000));
                assert_eq!(frame.reason, "Authentication timeout");
            }
            other => panic!("expected Close 4000, got {other:?}"),
        }
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(190), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        stream.write_all(&codec.output().split()).await.unwrap(); // our Close reply
        drop(stream);
        let ended = task.await.unwrap();
        assert_eq!(ended.close_code, Some(4000));
        assert_eq!(
            metrics
                .auth_failures
                .get_or_create(&crate::metrics::AuthFailureLabels { reason: "timeout" })
                .get(),
            1
        );
    }

    #[tokio::test]
    async fn a_connection_that_authenticates_in_time_stays_open() {
        let metrics = Arc::new(Metrics::new(Hub::new(Default::default())));
        let (mut stream, mut codec, task) = pair(&metrics).await;
        let mut input = BytesMut::new();
        codec.send(MessageKind::Text, b"auth");
        stream.write_all(&codec.output().split()).await.unwrap();
        assert_eq!(
            next_event(&mut stream, &mut codec, &mut input).await,
            Event::Text("auth".into())
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        codec.send(MessageKind::Text, b"still open");
        stream.write_all(&codec.output().split()).await.unwrap();
        assert_eq!(
            next_event(&mut stream, &mut codec, &mut input).await,
            Event::Text("still open".into())
        );
        assert_eq!(
            metrics
                .auth_failures
                .get_or_create(&crate::metrics::AuthFailureLabels { reason: "timeout" })
                .get(),
            0
        );
        drop(stream);
        assert_eq!(task.await.unwrap().reason, EndReason::PeerGone);
    }
}
