//! `sio-echo`: Socket.IO round trips. C connections (websocket transport, connected to
//! namespace `/`), each keeping `depth` acknowledged events in flight:
//! `42<id>["message-with-ack","P…"]`, answered by the server's echo mode with
//! `43<id>["P…"]`. A round trip completes when the ack with its id arrives carrying the
//! same arguments; its time is measured from the send of that id.
//!
//! As in `pipelined`, completed round trips are replaced at once (one write for all the
//! requests a read freed), reads and writes are non-blocking and driven by one readiness
//! wait, and requests written together share one timestamp. Engine.IO pings are answered.

use std::io::{self, ErrorKind};
use std::time::{Duration, Instant};

use futures_util::{stream, StreamExt, TryStreamExt};
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::fanout::{parse_frame, push_frame};
use super::handshake::Rng;
use super::latency::Latency;
use super::socketio;
use super::target::Target;
use super::window::Window;
use crate::report::{metric, RunResult};

/// How long opening all connections (upgrade + Socket.IO CONNECT) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Read buffer of one connection.
const READ_BUF: usize = 64 * 1024;

/// Shape of the load.
#[derive(Debug, Clone)]
pub struct SioEcho {
    /// Concurrent connections.
    pub connections: usize,
    /// Acknowledged events in flight per connection.
    pub depth: usize,
    /// Bytes of the string argument.
    pub size: usize,
    /// Seconds before measuring starts.
    pub warmup: f64,
    /// Seconds of measurement.
    pub duration: f64,
}

/// What one connection measured.
#[derive(Default)]
struct ConnStats {
    round_trips: u64,
    latency: Latency,
    /// Acks with an unknown id or other arguments than sent.
    mismatches: u64,
    error: Option<io::Error>,
}

/// Runs the load and reports round trips/s and their RTT percentiles.
pub async fn run(target: &Target, e: &SioEcho) -> anyhow::Result<RunResult> {
    anyhow::ensure!(!target.raw, "sio-echo needs WebSocket (no --raw)");
    anyhow::ensure!(e.size >= 1, "--size must be at least 1");
    anyhow::ensure!(e.depth >= 1, "--depth must be at least 1");
    // A JSON-safe string: `P` and `x` padding.
    let mut data = String::from("P");
    data.extend(std::iter::repeat_n('x', e.size - 1));
    let expected = format!(r#"["{data}"]"#);

    let open = stream::iter(0..e.connections)
        .map(|_| open(target))
        .buffer_unordered(64)
        .try_collect::<Vec<_>>();
    let connections = match tokio::time::timeout(SETUP_TIMEOUT, open).await {
        Ok(Ok(connections)) => connections,
        Ok(Err(err)) => anyhow::bail!("opening {} Socket.IO connections: {err}", e.connections),
        Err(_) => anyhow::bail!(
            "opening {} Socket.IO connections took over {SETUP_TIMEOUT:?}",
            e.connections
        ),
    };

    let window = Window::after(e.warmup, e.duration);
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|(stream, rest)| {
            let conn = Conn {
                stream,
                depth: e.depth,
                data: data.clone(),
                expected: expected.clone(),
                window,
            };
            tokio::spawn(async move {
                let mut stats = ConnStats::default();
                // The deadline bounds a connection whose server stopped answering.
                let run = tokio::time::timeout_at(window.end.into(), conn.drive(rest, &mut stats));
                if let Ok(Err(err)) = run.await {
                    stats.error = Some(err);
                }
                stats
            })
        })
        .collect();

    let mut result = RunResult {
        scenario: "sio-echo".into(),
        mode: target.mode().into(),
        ..RunResult::default()
    };
    let mut latency = Latency::new();
    let mut round_trips = 0;
    let mut mismatches = 0;
    for task in tasks {
        let stats = task.await?;
        round_trips += stats.round_trips;
        mismatches += stats.mismatches;
        latency.merge(&stats.latency);
        if let Some(err) = stats.error {
            result.error(err);
        }
    }
    if mismatches > 0 {
        result.error(format!(
            "{mismatches} acks with an unknown id or other arguments than sent"
        ));
    }
    for (name, value) in [
        ("connections", e.connections as f64),
        ("depth", e.depth as f64),
        ("size", e.size as f64),
        ("warmup", e.warmup),
        ("duration", e.duration),
    ] {
        result.params.insert(name.into(), value);
    }
    for (name, value) in [
        (metric::MSGS_PER_S, round_trips as f64 / e.duration),
        (metric::RTT_P50_US, latency.quantile_us(0.50)),
        (metric::RTT_P99_US, latency.quantile_us(0.99)),
        (metric::RTT_MAX_US, latency.max_us()),
    ] {
        result.metrics.insert(name.into(), value);
    }
    if round_trips == 0 {
        anyhow::bail!(
            "no round trip completed: {}",
            result.first_error.as_deref().unwrap_or("no error reported")
        );
    }
    Ok(result)
}

/// Connects, upgrades and opens the Socket.IO session on `/`.
async fn open(target: &Target) -> io::Result<(TcpStream, Vec<u8>)> {
    let (mut stream, mut buf) = target.open().await?;
    socketio::connect(&mut stream, &mut buf, Rng::new().mask()).await?;
    Ok((stream, buf))
}

/// One connection's send/receive loop.
struct Conn {
    stream: TcpStream,
    depth: usize,
    /// The string argument of every request.
    data: String,
    /// The arguments every ack must carry: `["<data>"]`.
    expected: String,
    window: Window,
}

impl Conn {
    /// Keeps `depth` requests in flight until the window ends.
    async fn drive(self, rest: Vec<u8>, stats: &mut ConnStats) -> io::Result<()> {
        let Conn {
            stream,
            depth,
            data,
            expected,
            window,
        } = self;
        let mask = Rng::new().mask();
        // Send times by ack id (modulo the table's size): at most `depth` are in flight,
        // so a slot is reused only long after its ack was due.
        let slots = (depth * 4).next_power_of_two().max(64);
        let mut sent_at: Vec<Option<Instant>> = vec![None; slots];
        let mut next_id = 0u64;
        let mut in_flight = 0usize;
        let mut out: Vec<u8> = Vec::with_capacity(depth * 64);
        let mut written = 0;
        let mut buf = vec![0u8; READ_BUF];
        if rest.len() > buf.len() {
            return Err(invalid("too much data before the first request"));
        }
        buf[..rest.len()].copy_from_slice(&rest);
        let mut filled = rest.len();
        let mut fresh = true;

        loop {
            let now = Instant::now();
            if fresh {
                // Consume what was read.
                let mut at = 0;
                while let Some((opcode, payload, next)) = parse_frame(&buf[at..filled])? {
                    at += next;
                    match opcode {
                        0x1 if payload == socketio::PING => {
                            push_frame(&mut out, 0x1, socketio::PONG, mask);
                        }
                        0x1 => match socketio::parse_ack(payload) {
                            Some((id, args)) => {
                                let slot = &mut sent_at[(id % slots as u64) as usize];
                                match slot.take() {
                                    Some(sent) if args == expected.as_bytes() => {
                                        in_flight -= 1;
                                        if window.contains(now) {
                                            stats.round_trips += 1;
                                            stats.latency.record(now - sent, 1);
                                        }
                                    }
                                    Some(_) => {
                                        in_flight -= 1;
                                        stats.mismatches += 1;
                                    }
                                    None => stats.mismatches += 1,
                                }
                            }
                            None => {
                                if let Some(why) = socketio::ended(payload) {
                                    return Err(invalid(&why));
                                }
                            }
                        },
                        0x9 => push_frame(&mut out, 0xA, payload, mask),
                        _ => {}
                    }
                }
                buf.copy_within(at..filled, 0);
                filled -= at;
                if filled == buf.len() {
                    return Err(invalid("message too large for the read buffer"));
                }
                fresh = false;
            }
            if now >= window.end {
                return Ok(());
            }
            // Top up to `depth` in flight.
            while in_flight < depth {
                let slot = &mut sent_at[(next_id % slots as u64) as usize];
                if slot.is_some() {
                    // An ack `slots` requests old never came: count it lost.
                    stats.mismatches += 1;
                    in_flight -= 1;
                }
                *slot = Some(now);
                socketio::push_echo_request(&mut out, next_id, &data, mask);
                next_id += 1;
                in_flight += 1;
            }
            while written < out.len() {
                match stream.try_write(&out[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if written == out.len() {
                out.clear();
                written = 0;
            }
            let interest = if !out.is_empty() {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if !stream.ready(interest).await?.is_readable() {
                continue;
            }
            match stream.try_read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        ErrorKind::UnexpectedEof,
                        "server closed the connection",
                    ))
                }
                Ok(n) => {
                    filled += n;
                    fresh = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, message.to_string())
}
