//! `closed` and `pipelined`: C connections each keeping `depth` messages in flight
//! (depth 1 is the closed loop), counting echoes and their round-trip times.
//!
//! Built for speed, so the load generator is never the bottleneck: every message is
//! the same pre-encoded (pre-masked) frame, so sending k messages is one write of a
//! slice of a block of repeated frames; replies are parsed without copying; and all
//! messages written together share one timestamp.

use std::collections::VecDeque;
use std::io::{self, ErrorKind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{stream, StreamExt, TryStreamExt};
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::frame::{self, Decoder};
use super::latency::Latency;
use super::target::Target;
use super::window::Window;
use crate::report::{metric, RunResult};

/// How long setting up all connections may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Shape of the load.
#[derive(Debug, Clone)]
pub struct Load {
    /// Concurrent connections.
    pub connections: usize,
    /// Messages in flight per connection.
    pub depth: usize,
    /// Payload bytes per message.
    pub size: usize,
    /// Send text frames instead of binary ones.
    pub text: bool,
    /// Seconds before measuring starts.
    pub warmup: f64,
    /// Seconds of measurement.
    pub duration: f64,
}

/// What one connection measured.
#[derive(Default)]
struct ConnStats {
    messages: u64,
    latency: Latency,
    error: Option<io::Error>,
}

/// Runs the load and reports msgs/s and RTT percentiles.
pub async fn run(target: &Target, scenario: &str, load: &Load) -> anyhow::Result<RunResult> {
    let connections = open_all(target, load.connections).await?;

    let mut one = if target.raw {
        vec![b'x'; load.size]
    } else {
        let opcode = if load.text {
            frame::TEXT
        } else {
            frame::BINARY
        };
        // One mask key for the run: fixed per connection is allowed, and sharing the
        // block keeps it hot in cache.
        let mask = super::handshake::Rng::new().mask();
        frame::client_frame(opcode, load.size, mask)
    };
    let frame_len = one.len();
    // depth + 1 frames: a write that starts mid-frame still finds `depth` frames after it.
    one = one.repeat(load.depth + 1);
    let block: Arc<[u8]> = one.into();

    let window = Window::after(load.warmup, load.duration);
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|(stream, rest)| {
            let decoder = Decoder::new(target.raw, load.size);
            let block = block.clone();
            let depth = load.depth;
            tokio::spawn(async move {
                let mut stats = ConnStats::default();
                let conn = Conn {
                    stream,
                    decoder,
                    block,
                    frame_len,
                    depth,
                    window,
                };
                // The deadline bounds a connection whose server stopped answering.
                let run = tokio::time::timeout_at(window.end.into(), conn.drive(rest, &mut stats));
                if let Ok(Err(e)) = run.await {
                    stats.error = Some(e);
                }
                stats
            })
        })
        .collect();

    let mut result = RunResult {
        scenario: scenario.to_string(),
        mode: target.mode().to_string(),
        ..RunResult::default()
    };
    let mut latency = Latency::new();
    let mut messages = 0;
    for task in tasks {
        let stats = task.await?;
        messages += stats.messages;
        latency.merge(&stats.latency);
        if let Some(e) = stats.error {
            result.error(e);
        }
    }
    for (name, value) in [
        ("connections", load.connections as f64),
        ("depth", load.depth as f64),
        ("size", load.size as f64),
        ("warmup", load.warmup),
        ("duration", load.duration),
    ] {
        result.params.insert(name.into(), value);
    }
    for (name, value) in [
        (metric::MSGS_PER_S, messages as f64 / load.duration),
        (metric::RTT_P50_US, latency.quantile_us(0.50)),
        (metric::RTT_P99_US, latency.quantile_us(0.99)),
        (metric::RTT_MAX_US, latency.max_us()),
    ] {
        result.metrics.insert(name.into(), value);
    }
    if messages == 0 {
        anyhow::bail!(
            "no echo completed: {}",
            result.first_error.as_deref().unwrap_or("no error reported")
        );
    }
    Ok(result)
}

/// Opens (and upgrades) all connections before any load starts, so the
/// measurement never includes handshakes.
async fn open_all(target: &Target, n: usize) -> anyhow::Result<Vec<(TcpStream, Vec<u8>)>> {
    let open = stream::iter(0..n)
        .map(|_| target.open())
        .buffer_unordered(64)
        .try_collect::<Vec<_>>();
    match tokio::time::timeout(SETUP_TIMEOUT, open).await {
        Ok(Ok(connections)) => Ok(connections),
        Ok(Err(e)) => anyhow::bail!("opening {n} connections: {e}"),
        Err(_) => anyhow::bail!("opening {n} connections took over {SETUP_TIMEOUT:?}"),
    }
}

/// One connection's send/receive loop.
struct Conn {
    stream: TcpStream,
    decoder: Decoder,
    /// `depth + 1` copies of the encoded message.
    block: Arc<[u8]>,
    frame_len: usize,
    depth: usize,
    window: Window,
}

impl Conn {
    /// Keeps `depth` messages in flight until the window ends. Reads and writes are
    /// non-blocking and driven by one readiness wait, so a large unfinished write
    /// never stops us from draining echoes (which would deadlock with the server).
    async fn drive(self, rest: Vec<u8>, stats: &mut ConnStats) -> io::Result<()> {
        let Conn {
            stream,
            mut decoder,
            block,
            frame_len,
            depth,
            window,
        } = self;
        let mut buf = vec![0u8; 64 * 1024];
        // Send times of messages in flight, in order: (time, how many were sent then).
        let mut in_flight: VecDeque<(Instant, u64)> = VecDeque::with_capacity(depth + 1);
        // Bytes queued but not yet written, and where in a frame the next byte is.
        let mut owed = depth * frame_len;
        let mut offset = 0;
        in_flight.push_back((Instant::now(), depth as u64));
        // Bytes that arrived with the handshake response are replies too.
        let mut pending = decoder.feed(&rest)?;

        loop {
            if pending > 0 {
                let now = Instant::now();
                complete(&mut in_flight, pending, now, window, stats);
                if now >= window.end {
                    return Ok(());
                }
                // Replace each completed message, keeping `depth` in flight.
                owed += pending as usize * frame_len;
                in_flight.push_back((now, pending));
                pending = 0;
            }
            while owed > 0 {
                let end = (offset + owed).min(block.len());
                match stream.try_write(&block[offset..end]) {
                    Ok(n) => {
                        owed -= n;
                        offset = (offset + n) % frame_len;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            let interest = if owed > 0 {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if !stream.ready(interest).await?.is_readable() {
                continue;
            }
            match stream.try_read(&mut buf) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => pending = decoder.feed(&buf[..n])?,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Retires the `done` oldest messages in flight, recording those that completed
/// inside the measurement window.
fn complete(
    in_flight: &mut VecDeque<(Instant, u64)>,
    mut done: u64,
    now: Instant,
    window: Window,
    stats: &mut ConnStats,
) {
    let counted = window.contains(now);
    while done > 0 {
        let Some(front) = in_flight.front_mut() else {
            // More echoes than messages sent: the decoder already checks lengths,
            // so this would be a server duplicating messages. Don't count them.
            return;
        };
        let n = done.min(front.1);
        if counted {
            stats.messages += n;
            stats.latency.record(now - front.0, n);
        }
        front.1 -= n;
        done -= n;
        if front.1 == 0 {
            in_flight.pop_front();
        }
    }
}
