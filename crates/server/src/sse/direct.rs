//! Our own driver of an SSE stream on a plain TCP socket taken from hyper ([`crate::front`]):
//! it writes the stream's bytes as the socket takes them, drains the outbox only once the
//! previous output left (a stalled reader leaves deliveries in its outbox, where the budget
//! and the room's overflow policy bound them, as on WebSocket), writes heartbeats, ends the
//! stream at shutdown, and parks it without a task when idle ([`ParkedStream`]).

use std::future::poll_fn;
use std::io::{self, Write as _};
use std::pin::pin;
use std::time::{Duration, Instant};

use bytes::{Buf as _, BytesMut};
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::stream::SseStream;
use crate::ws::park::{Parked, Verdict};

/// Input read per wake-up and discarded: a stream's client has nothing to say.
const DISCARD_CHUNK: usize = 512;

/// The heartbeat comment (`frame::write_comment(.., "heartbeat")`), written in place by a
/// parked stream.
const HEARTBEAT: &[u8] = b":heartbeat\n\n";

/// Start the stream: `head` (the response's status line and headers) goes out first.
pub(crate) async fn start(tcp: TcpStream, mut stream: SseStream, mut head: BytesMut) {
    crate::ws::tune_socket(&tcp, stream.state().config.socket_send_buffer);
    head.extend_from_slice(stream.output());
    *stream.output() = head;
    let every = stream.state().config.heartbeat_interval;
    drive(tcp, stream, Instant::now() + every).await;
}

/// How a turn of the driver ended.
enum Exit {
    /// The stream is over (its end is counted when `stream` is dropped or finished).
    End,
    /// Idle: hand the stream to a parking lot.
    Park,
}

/// Run the stream until it ends or parks.
async fn drive(tcp: TcpStream, mut stream: SseStream, mut next_heartbeat: Instant) {
    let state = stream.state().clone();
    let every = state.config.heartbeat_interval;
    let park_after = state
        .driver_limits
        .park_idle_after
        .filter(|_| state.parking.is_running());
    let close_timeout = state.config.close_timeout;
    let mut park_check = park_after.map(|after| Instant::now() + after);
    let mut end_deadline: Option<Instant> = None;
    let mut active = false;
    let mut cancelled = pin!(crate::cancel::Cancelled::new(&state.shutdown));
    let mut sleep = pin!(tokio::time::sleep_until(next_heartbeat.into()));

    let exit = loop {
        match write_pending(&tcp, &mut stream) {
            Ok(0) => {}
            Ok(_) => active = true,
            Err(_) => break Exit::End,
        }
        let pending = !stream.output().is_empty();
        if !pending {
            if stream.is_ended() {
                stream.finish();
                break Exit::End;
            }
            // Idle: hold no buffer.
            if stream.output().capacity() > 0 {
                *stream.output() = BytesMut::new();
            }
        }
        if stream.is_ended() {
            // What is queued gets `close_timeout` to leave (a client that stopped reading).
            let at = *end_deadline.get_or_insert_with(|| Instant::now() + close_timeout);
            if Instant::now() >= at {
                stream.finish();
                break Exit::End;
            }
        }
        let mut deadline = next_heartbeat;
        for d in [park_check, end_deadline, stream.expires()]
            .into_iter()
            .flatten()
        {
            deadline = deadline.min(d);
        }
        if sleep.is_elapsed() || deadline < sleep.deadline().into_std() {
            sleep.as_mut().reset(deadline.into());
        }
        let interest = if pending {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        tokio::select! {
            biased;
            () = &mut cancelled, if !stream.is_ended() => stream.shut_down(),
            ready = tcp.ready(interest) => {
                let Ok(ready) = ready else { break Exit::End };
                if (ready.is_readable() || ready.is_read_closed()) && !discard_input(&tcp) {
                    break Exit::End;
                }
            }
            // Backpressure: nothing new is taken while earlier output waits for the client.
            () = poll_fn(|cx| stream.poll_outbound(cx)), if !pending && !stream.is_ended() => {
                stream.drain();
            }
            () = &mut sleep => {
                let now = Instant::now();
                if stream.expires().is_some_and(|at| now >= at) {
                    stream.expire();
                    continue;
                }
                if now >= next_heartbeat {
                    stream.heartbeat();
                    next_heartbeat = now + every;
                }
                if let (Some(at), Some(after)) = (park_check, park_after) {
                    if now >= at {
                        let idle = !pending && !stream.is_ended() && !state.shutdown.is_cancelled();
                        if !std::mem::take(&mut active) && idle {
                            break Exit::Park;
                        }
                        park_check = Some(now + after);
                    }
                }
            }
        }
    };
    if let Exit::Park = exit {
        match tcp.into_std() {
            Ok(socket) => {
                let id = stream.connection_id();
                state.parking.park(
                    id,
                    Box::new(ParkedStream {
                        socket,
                        stream,
                        next_heartbeat,
                    }),
                );
            }
            // Not expected: the stream is dropped (counted as lost).
            Err(e) => tracing::debug!(error = %e, "could not park an SSE stream"),
        }
    }
}

/// Write what the stream has ready, as far as the socket takes it; returns how much went.
fn write_pending(tcp: &TcpStream, stream: &mut SseStream) -> io::Result<usize> {
    let mut written = 0;
    while !stream.output().is_empty() {
        match tcp.try_write(stream.output()) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                stream.output().advance(n);
                written += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if written > 0 {
        stream.count_sent(written);
    }
    Ok(written)
}

/// Read and drop what the client sent (a request body, anything). Returns `false` once the
/// client closed its side or the connection failed: an EventSource that goes away.
fn discard_input(tcp: &TcpStream) -> bool {
    let mut sink = [0u8; DISCARD_CHUNK];
    // Bounded per wake-up: a client that keeps sending can not hold the worker.
    for _ in 0..8 {
        match tcp.try_read(&mut sink) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// An idle stream in a parking lot: its state, its socket out of tokio's reactor, and when
/// its next heartbeat is due. Heartbeats are written from the lot; a delivery, input from
/// the client, its leaving or shutdown resume it in a task.
struct ParkedStream {
    socket: std::net::TcpStream,
    stream: SseStream,
    next_heartbeat: Instant,
}

impl Parked for ParkedStream {
    fn socket(&self) -> &std::net::TcpStream {
        &self.socket
    }

    fn deadline(&self) -> Instant {
        self.stream
            .expires()
            .map_or(self.next_heartbeat, |at| at.min(self.next_heartbeat))
    }

    fn on_deadline(&mut self, now: Instant) -> Verdict {
        if self.stream.expires().is_some_and(|at| now >= at) {
            // The driver ends it (4001 "Token expired").
            return Verdict::Resume;
        }
        if now < self.next_heartbeat {
            return Verdict::Stay;
        }
        self.next_heartbeat = now + heartbeat_every(&self.stream);
        match (&self.socket).write(HEARTBEAT) {
            Ok(n) if n == HEARTBEAT.len() => {
                self.stream.count_sent(n);
                Verdict::Stay
            }
            // The rest (or all of it) is the driver's to write, once the socket takes it.
            Ok(n) => {
                self.stream.count_sent(n);
                self.stream.output().extend_from_slice(&HEARTBEAT[n..]);
                Verdict::Resume
            }
            Err(_) => {
                self.stream.heartbeat();
                Verdict::Resume
            }
        }
    }

    fn on_readable(&mut self) -> Verdict {
        // Input or the end of the stream: the driver reads it (and ends when the client left).
        Verdict::Resume
    }

    fn poll_outbound(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.stream.poll_outbound(cx)
    }

    fn resume(self: Box<Self>) {
        let ParkedStream {
            socket,
            stream,
            next_heartbeat,
        } = *self;
        match TcpStream::from_std(socket) {
            Ok(tcp) => {
                let tracker = stream.state().tracker.clone();
                tracker.spawn(drive(tcp, stream, next_heartbeat));
            }
            // Not expected: the stream is dropped (counted as lost).
            Err(e) => tracing::warn!(error = %e, "could not resume a parked SSE stream"),
        }
    }
}

fn heartbeat_every(stream: &SseStream) -> Duration {
    stream.state().config.heartbeat_interval
}
