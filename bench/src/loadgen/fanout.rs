//! `fanout`: one publisher and N subscribers in one room. The publisher sends
//! small messages carrying a send timestamp (nanoseconds on a monotonic clock
//! shared by every connection of this process); subscribers count what arrives
//! and record publish-to-receive latency.
//!
//! Two publisher modes: `--rate 0` keeps at most `--window` broadcasts in flight
//! (a broadcast is in flight until all N + 1 copies, the publisher's own included,
//! arrived or were reported lost), which is the highest rate the server sustains
//! without growing queues; `--rate R` publishes R messages/s on a fixed schedule
//! (open loop; timestamps are the scheduled times, so a publisher that falls
//! behind does not hide the delay).
//!
//! Receiving is built to stay far cheaper than any server: one shared read buffer
//! for all subscribers, frames parsed in place, a delivery recognised by a fixed
//! prefix (plain) or one SIMD substring search (native, Socket.IO), and the
//! timestamp read as 16 hex digits. Every delivery's latency is recorded (no
//! sampling): that costs a few nanoseconds per message.
//!
//! Before measuring, the publisher sends `PSYNC` messages until every connection
//! received one: then all subscribers are known to be in the room.
//!
//! Several nodes of one cluster (`--extra-target`, the cross-node rows): the subscribers are
//! spread evenly over `--target` and the extra targets (subscriber i on node i mod n), the
//! publisher is on `--target`. With `--marks`, loadgen prints a `mark` event once sync is
//! over and nothing is in flight (before the warm-up's first publish) and another once the
//! copies in flight after the last publish are drained (every connection still open), and
//! after each waits for a line (or EOF) on stdin: the driver samples a shared backend
//! (Redis) at both, so that the span covers exactly the publishes after sync.
//!
//! Each publish carries a timestamp greater than the last one (a nanosecond later when the
//! clock did not move), so a connection sees strictly increasing timestamps: a repeated one
//! is a duplicate copy, a smaller one a copy out of order; both are counted.
//!
//! Subscribers may also be switchboard's HTTP feeds (`--transport sse|poll`): Server-Sent
//! Events streams or long pollers on the same room. The publisher stays the native
//! WebSocket member above and the feeds carry the same JSON, so those rows measure the
//! same messages with the same clock as the WebSocket rows, and compare directly.

use std::cell::RefCell;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use futures_util::{stream, StreamExt};
use memchr::memmem;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::handshake::Rng;
use super::latency::Latency;
use super::target::Target;
use super::window::Window;
use super::{poll, socketio, sse};
use crate::report::{emit, metric, Event, RunResult};

/// How long opening and joining all connections may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the sync phase (every connection in the room) may take.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait after the last publish for the copies still in flight.
const DRAIN: Duration = Duration::from_secs(3);
/// With no delivery at all for this long, the max-rate publisher gives up on the
/// copies it waits for (counted as lost) instead of stalling forever.
const STALL: Duration = Duration::from_secs(1);
/// Handshakes in flight while connecting subscribers.
const CONNECT_CONCURRENCY: usize = 64;
/// The shared read buffer.
const READ_BUF: usize = 256 * 1024;
/// Room name.
pub const ROOM: &str = "bench";
/// With `--marks`, how long loadgen waits after a mark for the driver's line on stdin.
const MARK_HOLD: Duration = Duration::from_secs(10);
/// With `--marks`, how long the publisher waits after sync before its `start` mark, so that
/// the last sync broadcasts are through the servers (and their backend) before it.
const MARK_QUIET: Duration = Duration::from_millis(300);

/// The wire protocol of the server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// switchboard's JSON protocol: `join`, `publish`, deliveries of type `publish`.
    Native,
    /// Socket.IO v5 over Engine.IO v4, websocket transport only: `join_room` with an ack,
    /// `publish` events, deliveries as `message` events (see [`socketio`]).
    Socketio,
    /// Text frames: a frame starting with `P` is broadcast to every connection.
    Plain,
}

/// How the subscribers receive (the publisher is always a WebSocket member).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// WebSocket members of the room, speaking the server's protocol.
    Ws,
    /// Server-Sent Events streams, `GET /events?channels=bench` (switchboard).
    Sse,
    /// Long pollers, `GET /poll?channels=bench&cursor=…` on keep-alive connections, each
    /// polling again as soon as an answer is complete (switchboard).
    Poll,
}

/// Shape of the fan-out run.
#[derive(Debug, Clone)]
pub struct Fanout {
    /// The server's protocol.
    pub protocol: Protocol,
    /// How the subscribers receive.
    pub transport: Transport,
    /// Subscriber connections (the publisher is one more).
    pub subscribers: usize,
    /// Publishes per second; 0 = as fast as the window allows.
    pub rate: f64,
    /// Broadcasts in flight in max-rate mode.
    pub window: usize,
    /// Application payload bytes (at least 17: `P` + 16 hex digits).
    pub size: usize,
    /// Seconds of load before measuring.
    pub warmup: f64,
    /// Seconds of measurement.
    pub duration: f64,
    /// More nodes of the same cluster: the subscribers are spread over the target and these.
    pub extra_targets: Vec<SocketAddr>,
    /// Print `mark` events (window start; end after the drain, then wait for stdin EOF).
    pub marks: bool,
}

/// What a received message is.
#[derive(Debug, PartialEq, Eq)]
enum Msg {
    /// A broadcast, with its send timestamp (ns since `base`).
    Delivery(u64),
    /// A sync broadcast.
    Sync,
    /// The server dropped this many messages for this connection.
    Lagged(u64),
    /// Engine.IO ping: answer `3`.
    EioPing,
    /// Anything else (welcome, joined, presence events, ...).
    Other,
}

/// State shared by the publisher and every receiving connection. The runtime has
/// one thread, so the lock is never contended.
struct State {
    /// Copies received (subscribers and publisher), after sync.
    delivered: u64,
    /// Copies the server said it dropped (`lagged`).
    missed: u64,
    /// Subscriber deliveries inside the measurement window.
    in_window: u64,
    /// Latency of those.
    latency: Latency,
    /// Poll answers subscribers completed inside the measurement window.
    polls: u64,
    /// Connections that received a sync message.
    ready: u64,
    /// Copies a connection received twice (the same timestamp as its last one).
    duplicates: u64,
    /// Copies a connection received after a later one (a smaller timestamp than its last).
    reordered: u64,
    /// The publisher wants a wake-up once `delivered + missed` reaches this.
    wake_at: u64,
    /// Measurement window, once sync is over.
    window: Option<Window>,
    /// Control frames (pongs) the publisher connection owes.
    publisher_control: Vec<u8>,
    /// Errors of individual connections.
    errors: RunResult,
}

struct Shared {
    state: Mutex<State>,
    notify: Notify,
    base: Instant,
    protocol: Protocol,
    /// Receivers: subscribers + publisher.
    receivers: u64,
    /// The server's address (the `Host` of a poller's requests).
    host: SocketAddr,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_nanos() as u64
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_BUF]);
}

/// Runs the scenario and reports deliveries/s, latency and losses.
pub async fn run(target: &Target, f: &Fanout) -> anyhow::Result<RunResult> {
    anyhow::ensure!(!target.raw, "fanout needs WebSocket (no --raw)");
    anyhow::ensure!(
        f.size >= 17,
        "--size must be at least 17 (P + 16 hex digits)"
    );
    anyhow::ensure!(
        f.transport == Transport::Ws || f.protocol == Protocol::Native,
        "--transport sse and poll are switchboard's: they need --protocol native"
    );
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            delivered: 0,
            missed: 0,
            in_window: 0,
            latency: Latency::new(),
            polls: 0,
            ready: 0,
            duplicates: 0,
            reordered: 0,
            wake_at: u64::MAX,
            window: None,
            publisher_control: Vec::new(),
            errors: RunResult::default(),
        }),
        notify: Notify::new(),
        base: Instant::now(),
        protocol: f.protocol,
        receivers: f.subscribers as u64 + 1,
        host: target.addr,
    });

    // The nodes: subscriber i connects to node i mod n, the publisher to the first.
    let nodes: Vec<Target> = std::iter::once(target.clone())
        .chain(f.extra_targets.iter().map(|&addr| Target {
            addr,
            ..target.clone()
        }))
        .collect();
    let setup_started = Instant::now();
    let (publisher, rest) = tokio::time::timeout(SETUP_TIMEOUT, member(target, f.protocol))
        .await
        .map_err(|_| anyhow::anyhow!("publisher setup timed out"))??;
    let subscribers = tokio::time::timeout(SETUP_TIMEOUT, async {
        stream::iter(0..f.subscribers)
            .map(|i| subscriber(&nodes[i % nodes.len()], f))
            .buffer_unordered(CONNECT_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
    })
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "opening {} subscribers took over {SETUP_TIMEOUT:?}",
            f.subscribers
        )
    })?;
    let mut tasks = Vec::with_capacity(subscribers.len() + 2);
    let mut opened = 0;
    let mut first_error = None;
    for s in subscribers {
        match s {
            Ok((stream, rest)) => {
                opened += 1;
                let shared = shared.clone();
                let mut conn = Conn::new(true, f.transport, rest);
                tasks.push(tokio::spawn(async move {
                    let mut stream = stream;
                    if let Err(e) = receive(&shared, &mut stream, &mut conn).await {
                        shared.lock().errors.error(format!("subscriber: {e}"));
                    }
                }));
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        for t in &tasks {
            t.abort();
        }
        anyhow::bail!(
            "{} of {} subscribers failed to join: {e}",
            f.subscribers - opened,
            f.subscribers
        );
    }
    let connect_seconds = setup_started.elapsed().as_secs_f64();

    let publisher = Arc::new(publisher);
    {
        let shared = shared.clone();
        let stream = publisher.clone();
        let mut conn = Conn::new(false, Transport::Ws, rest);
        tasks.push(tokio::spawn(async move {
            if let Err(e) = receive_shared(&shared, &stream, &mut conn).await {
                shared
                    .lock()
                    .errors
                    .error(format!("publisher (receiving): {e}"));
            }
        }));
    }
    let outcome = publish(&shared, &publisher, f).await;
    let published = match outcome {
        Ok(p) => p,
        Err(e) => {
            for t in &tasks {
                t.abort();
            }
            // The receiving side usually knows why (e.g. the close frame's code).
            tokio::time::sleep(Duration::from_millis(50)).await;
            let why = shared.lock().errors.first_error.clone();
            return Err(match why {
                Some(why) => e.context(why),
                None => e,
            });
        }
    };

    // Drain: wait for the copies still in flight.
    let expected = published.total * shared.receivers;
    let drain_end = Instant::now() + DRAIN;
    while Instant::now() < drain_end {
        let accounted = {
            let s = shared.lock();
            s.delivered + s.missed
        };
        if accounted >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if f.marks {
        // Every connection is still open while the driver samples.
        mark("end", published.total).await;
    }
    for t in &tasks {
        t.abort();
    }

    let s = shared.lock();
    let mut result = s.errors.clone();
    result.scenario = "fanout".into();
    result.mode = match f.transport {
        Transport::Ws => target.mode(),
        Transport::Sse => "sse",
        Transport::Poll => "poll",
    }
    .into();
    for (name, value) in [
        ("subscribers", f.subscribers as f64),
        ("rate", f.rate),
        ("window", f.window as f64),
        ("size", f.size as f64),
        ("warmup", f.warmup),
        ("duration", f.duration),
        ("nodes", nodes.len() as f64),
    ] {
        result.params.insert(name.into(), value);
    }
    let lost = expected.saturating_sub(s.delivered + s.missed) + s.missed;
    for (name, value) in [
        (metric::DELIVERIES_PER_S, s.in_window as f64 / f.duration),
        (
            metric::PUBLISHES_PER_S,
            published.in_window as f64 / f.duration,
        ),
        (metric::LATENCY_P50_US, s.latency.quantile_us(0.50)),
        (metric::LATENCY_P99_US, s.latency.quantile_us(0.99)),
        (metric::LATENCY_MAX_US, s.latency.max_us()),
        (metric::LOST_MSGS, lost as f64),
        (metric::LAGGED_MISSED, s.missed as f64),
        (metric::EXPECTED_MSGS, expected as f64),
        (metric::DELIVERED_MSGS, s.delivered as f64),
        (metric::PUBLISHED_MSGS, published.total as f64),
        (metric::DUPLICATE_MSGS, s.duplicates as f64),
        (metric::REORDERED_MSGS, s.reordered as f64),
        (metric::CONNECT_SECONDS, connect_seconds),
    ] {
        result.metrics.insert(name.into(), value);
    }
    if f.transport == Transport::Poll {
        let polls = s.polls as f64 / f.duration;
        result.metrics.insert(metric::POLLS_PER_S.into(), polls);
    }
    if published.stalls > 0 {
        result.error(format!(
            "publisher stalled {} time(s): no delivery for {STALL:?}",
            published.stalls
        ));
    }
    if s.in_window == 0 {
        anyhow::bail!(
            "no delivery in the measurement window: {}",
            result.first_error.as_deref().unwrap_or("no error reported")
        );
    }
    Ok(result)
}

/// Opens one subscriber with its transport. Returns the stream and the bytes received
/// after it joined the room.
async fn subscriber(target: &Target, f: &Fanout) -> io::Result<(TcpStream, Vec<u8>)> {
    match f.transport {
        Transport::Ws => member(target, f.protocol).await,
        Transport::Sse => sse::open(target, ROOM).await,
        Transport::Poll => poll::open(target, ROOM).await,
    }
}

/// Opens a connection, upgrades it and joins the room. Returns the stream and the
/// bytes received after the join was confirmed.
pub async fn member(target: &Target, protocol: Protocol) -> io::Result<(TcpStream, Vec<u8>)> {
    let (mut stream, mut buf) = target.open().await?;
    let mask = Rng::new().mask();
    match protocol {
        Protocol::Plain => {}
        Protocol::Native => {
            wait_for(&mut stream, &mut buf, |p| {
                memmem::find(p, br#""type":"welcome""#).is_some()
            })
            .await?;
            let join = format!(r#"{{"type":"join","room":"{ROOM}"}}"#);
            stream
                .write_all(&client_frame(join.as_bytes(), mask))
                .await?;
            wait_for(&mut stream, &mut buf, |p| {
                memmem::find(p, br#""type":"joined""#).is_some()
            })
            .await?;
        }
        Protocol::Socketio => {
            // Engine.IO open, Socket.IO CONNECT to "/", then `join_room` with an ack: the
            // member counts as joined once the ack arrived.
            socketio::connect(&mut stream, &mut buf, mask).await?;
            socketio::join(&mut stream, &mut buf, mask, ROOM).await?;
        }
    }
    Ok((stream, buf))
}

/// Reads until a text frame whose payload satisfies `found`; frames before it are
/// dropped, bytes after it stay in `buf`.
async fn wait_for(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    found: impl Fn(&[u8]) -> bool,
) -> io::Result<()> {
    use tokio::io::AsyncReadExt;
    loop {
        let mut at = 0;
        let mut hit = false;
        while let Some((opcode, payload, next)) = parse_frame(&buf[at..])? {
            at += next;
            if opcode == 0x1 && found(payload) {
                hit = true;
                break;
            }
        }
        buf.drain(..at);
        if hit {
            return Ok(());
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "closed during setup",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One complete unmasked server frame at the start of `data`: opcode, payload and
/// the frame's total length; `None` if incomplete.
pub(super) fn parse_frame(data: &[u8]) -> io::Result<Option<(u8, &[u8], usize)>> {
    if data.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (data[0], data[1]);
    if b1 & 0x80 != 0 {
        return Err(invalid("server frame is masked"));
    }
    let (len, head) = match b1 & 0x7f {
        126 if data.len() >= 4 => (usize::from(u16::from_be_bytes([data[2], data[3]])), 4),
        127 if data.len() >= 10 => {
            let len = u64::from_be_bytes(data[2..10].try_into().unwrap_or_default());
            (
                usize::try_from(len).map_err(|_| invalid("frame too large"))?,
                10,
            )
        }
        126 | 127 => return Ok(None),
        n => (usize::from(n), 2),
    };
    if data.len() < head + len {
        return Ok(None);
    }
    if b0 & 0x80 == 0 || b0 & 0x0f == 0 {
        return Err(invalid(
            "fragmented message (not expected for small messages)",
        ));
    }
    if b0 & 0x0f == 0x8 {
        let payload = &data[head..head + len];
        let code = payload
            .get(..2)
            .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
        let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("server sent close {code} {reason:?}"),
        ));
    }
    Ok(Some((b0 & 0x0f, &data[head..head + len], head + len)))
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, message.to_string())
}

/// A masked client text frame (payloads up to 64 KiB).
pub(super) fn client_frame(payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    push_frame(&mut out, 0x1, payload, mask);
    out
}

/// Appends a masked client frame.
pub(super) fn push_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    if payload.len() < 126 {
        out.push(0x80 | payload.len() as u8);
    } else {
        out.push(0x80 | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// A native delivery's payload field, with our payloads' first byte: the message JSON
/// field order is not fixed, so it is searched for (one SIMD substring search).
static DATA: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(br#""data":"P"#));
/// Where the payload starts after a `DATA` match (at its `P`).
const DATA_KEY: usize = br#""data":""#.len();

/// Classifies one received text frame (or the JSON of an SSE event or a poll answer).
fn classify(protocol: Protocol, payload: &[u8]) -> Msg {
    match protocol {
        Protocol::Plain => app_payload(payload),
        Protocol::Socketio => {
            // `42["message",{…}]`: the object's key order is not fixed (and more arguments
            // may follow it), so the payload is searched for, as in the native protocol.
            if socketio::is_event(payload, "message") {
                DATA.find(payload)
                    .map_or(Msg::Other, |i| app_payload(&payload[i + DATA_KEY..]))
            } else if payload == socketio::PING {
                Msg::EioPing
            } else {
                Msg::Other
            }
        }
        Protocol::Native => {
            if let Some(i) = DATA.find(payload) {
                app_payload(&payload[i + DATA_KEY..])
            } else if memmem::find(payload, br#""type":"lagged""#).is_some() {
                let missed = serde_json::from_slice::<serde_json::Value>(payload)
                    .ok()
                    .and_then(|v| v["missed"].as_u64())
                    .unwrap_or(0);
                Msg::Lagged(missed)
            } else {
                Msg::Other
            }
        }
    }
}

/// `P` + 16 hex digits (a timestamp) or `PS...` (sync).
fn app_payload(p: &[u8]) -> Msg {
    if p.len() < 17 || p[0] != b'P' {
        return Msg::Other;
    }
    if p[1] == b'S' {
        return Msg::Sync;
    }
    let mut ts = 0u64;
    for &c in &p[1..17] {
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return Msg::Other,
        };
        ts = ts << 4 | u64::from(digit);
    }
    Msg::Delivery(ts)
}

/// The application payload: `P`, 16 hex digits of `ts`, `x` padding to `size`.
fn payload(ts: u64, size: usize) -> Vec<u8> {
    let mut p = format!("P{ts:016x}").into_bytes();
    p.resize(size, b'x');
    p
}

/// The sync payload.
fn sync_payload(size: usize) -> Vec<u8> {
    let mut p = b"PSYNC".to_vec();
    p.resize(size, b'x');
    p
}

/// The publish message carrying `payload`, in the protocol's framing (text, unmasked).
fn publish_text(protocol: Protocol, payload: &[u8]) -> Vec<u8> {
    let p = std::str::from_utf8(payload).unwrap_or_default();
    match protocol {
        Protocol::Plain => payload.to_vec(),
        Protocol::Native => {
            format!(r#"{{"type":"publish","room":"{ROOM}","data":"{p}"}}"#).into_bytes()
        }
        Protocol::Socketio => socketio::publish(ROOM, p),
    }
}

/// One connection's receiving side.
struct Conn {
    /// A subscriber (its deliveries count), not the publisher.
    subscriber: bool,
    /// How it receives.
    transport: Transport,
    /// It received a sync broadcast.
    synced: bool,
    /// Mask of the control frames it sends.
    mask: [u8; 4],
    /// The incomplete frame, event or answer left over from the last read.
    left: Vec<u8>,
    /// Timestamp of the last delivery (publishes carry increasing ones).
    last_ts: Option<u64>,
    /// What it owes the server: pongs, or a poller's next poll.
    reply: Vec<u8>,
}

impl Conn {
    /// `rest`: what arrived after the connection joined.
    fn new(subscriber: bool, transport: Transport, rest: Vec<u8>) -> Conn {
        Conn {
            subscriber,
            transport,
            synced: false,
            mask: Rng::new().mask(),
            left: rest,
            last_ts: None,
            reply: Vec::new(),
        }
    }
}

/// Received messages applied to the shared state, which is locked once per read.
struct Tally<'a> {
    shared: &'a Shared,
    s: MutexGuard<'a, State>,
    /// Deliveries count: a subscriber's, inside the measurement window.
    counted: bool,
    /// Receive time of this read.
    now_ns: u64,
    /// Deliveries in this read.
    progress: u64,
}

impl Tally<'_> {
    fn message(&mut self, msg: Msg, conn: &mut Conn) {
        match msg {
            Msg::Delivery(ts) => {
                self.progress += 1;
                match conn.last_ts {
                    Some(last) if ts == last => self.s.duplicates += 1,
                    Some(last) if ts < last => self.s.reordered += 1,
                    _ => conn.last_ts = Some(ts),
                }
                if self.counted {
                    self.s.in_window += 1;
                    let ns = self.now_ns.saturating_sub(ts);
                    self.s.latency.record(Duration::from_nanos(ns), 1);
                }
            }
            Msg::Sync => {
                if !conn.synced {
                    conn.synced = true;
                    self.s.ready += 1;
                    if self.s.ready == self.shared.receivers {
                        self.shared.notify.notify_one();
                    }
                }
            }
            Msg::Lagged(n) => {
                self.s.missed += n;
                if self.s.delivered + self.s.missed >= self.s.wake_at {
                    self.shared.notify.notify_one();
                }
            }
            Msg::EioPing => push_frame(&mut conn.reply, 0x1, b"3", conn.mask),
            Msg::Other => {}
        }
    }

    /// Adds this read's deliveries, waking the publisher if it waits for them.
    fn finish(mut self) {
        if self.progress > 0 {
            self.s.delivered += self.progress;
            if self.s.delivered + self.s.missed >= self.s.wake_at {
                self.shared.notify.notify_one();
            }
        }
    }
}

/// Consumes the complete messages at the front of `data` (frames, events or poll answers,
/// by the connection's transport), updates the shared state and queues what the
/// connection owes the server in `conn.reply`. Returns how many bytes were consumed.
fn consume(shared: &Shared, data: &[u8], conn: &mut Conn) -> io::Result<usize> {
    let now = Instant::now();
    let s = shared.lock();
    let counted = conn.subscriber && s.window.is_some_and(|w| w.contains(now));
    let mut tally = Tally {
        shared,
        s,
        counted,
        now_ns: shared.nanos(now),
        progress: 0,
    };
    let used = match conn.transport {
        Transport::Ws => consume_frames(shared.protocol, data, conn, &mut tally)?,
        Transport::Sse => consume_events(data, conn, &mut tally)?,
        Transport::Poll => consume_answers(shared.host, data, conn, &mut tally)?,
    };
    tally.finish();
    Ok(used)
}

/// WebSocket: each text frame is a message; pings are answered.
fn consume_frames(
    protocol: Protocol,
    data: &[u8],
    conn: &mut Conn,
    tally: &mut Tally,
) -> io::Result<usize> {
    let mut at = 0;
    while let Some((opcode, payload, next)) = parse_frame(&data[at..])? {
        at += next;
        match opcode {
            0x1 => {
                let msg = classify(protocol, payload);
                if msg == Msg::Other && protocol == Protocol::Socketio {
                    if let Some(why) = socketio::ended(payload) {
                        return Err(invalid(&why));
                    }
                }
                tally.message(msg, conn);
            }
            0x9 => push_frame(&mut conn.reply, 0xA, payload, conn.mask),
            _ => {}
        }
    }
    Ok(at)
}

/// Server-Sent Events: an event's `data:` line is the JSON a native WebSocket frame
/// carries, so it is classified the same way.
fn consume_events(data: &[u8], conn: &mut Conn, tally: &mut Tally) -> io::Result<usize> {
    let mut at = 0;
    while let Some(len) = sse::event_len(&data[at..]) {
        let event = &data[at..at + len];
        at += len;
        let msg =
            sse::field(event, b"data").map_or(Msg::Other, |json| classify(Protocol::Native, json));
        if msg == Msg::Other && sse::field(event, b"event") == Some(b"disconnect") {
            return Err(invalid(&format!(
                "server ended the stream: {}",
                String::from_utf8_lossy(event).trim()
            )));
        }
        tally.message(msg, conn);
    }
    Ok(at)
}

/// Long polling: every delivery in an answer's body counts (usually one: see `poll-rtt`),
/// and the next poll, with the answer's cursor, goes out at once.
fn consume_answers(
    host: SocketAddr,
    data: &[u8],
    conn: &mut Conn,
    tally: &mut Tally,
) -> io::Result<usize> {
    let mut at = 0;
    while let Some((body, len)) = poll::answer(&data[at..])? {
        let body = &data[at + body.start..at + body.end];
        at += len;
        if poll::ended(body) {
            return Err(invalid(&format!(
                "server ended the session: {}",
                String::from_utf8_lossy(body)
            )));
        }
        for i in DATA.find_iter(body) {
            tally.message(app_payload(&body[i + DATA_KEY..]), conn);
        }
        if memmem::find(body, br#""type":"lagged""#).is_some() {
            tally.message(Msg::Lagged(poll::missed(body)), conn);
        }
        if tally.counted {
            tally.s.polls += 1;
        }
        let next = poll::request(host, ROOM, Some(poll::cursor(body)?));
        conn.reply.extend_from_slice(&next);
    }
    Ok(at)
}

/// A subscriber's receive loop.
async fn receive(shared: &Shared, stream: &mut TcpStream, conn: &mut Conn) -> io::Result<()> {
    loop {
        let eof = read_and_consume(shared, stream, conn)?;
        if eof {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        if !conn.reply.is_empty() {
            stream.write_all(&conn.reply).await?;
            conn.reply.clear();
        }
        stream.readable().await?;
    }
}

/// The publisher's receive loop: the publisher task writes its control replies.
async fn receive_shared(shared: &Shared, stream: &TcpStream, conn: &mut Conn) -> io::Result<()> {
    loop {
        let eof = read_and_consume(shared, stream, conn)?;
        if eof {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        if !conn.reply.is_empty() {
            shared.lock().publisher_control.append(&mut conn.reply);
            shared.notify.notify_one();
        }
        stream.readable().await?;
    }
}

/// Reads once (if anything is there) into the shared buffer, after the partial
/// message left over from the last read, and consumes the complete ones.
/// Returns true at EOF.
fn read_and_consume(shared: &Shared, stream: &TcpStream, conn: &mut Conn) -> io::Result<bool> {
    SCRATCH.with_borrow_mut(|buf| {
        if conn.left.len() > buf.len() / 2 {
            return Err(invalid("message too large for the read buffer"));
        }
        let carried = conn.left.len();
        buf[..carried].copy_from_slice(&conn.left);
        let n = match stream.try_read(&mut buf[carried..]) {
            Ok(0) => return Ok(true),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        let data = &buf[..carried + n];
        let used = consume(shared, data, conn)?;
        conn.left.clear();
        conn.left.extend_from_slice(&data[used..]);
        Ok(false)
    })
}

/// What the publisher did.
struct Published {
    /// Messages published after sync.
    total: u64,
    /// Of those, published inside the measurement window.
    in_window: u64,
    /// Times the max-rate publisher gave up waiting.
    stalls: u64,
}

/// The publisher: sync, then publish until the window ends.
async fn publish(shared: &Shared, stream: &TcpStream, f: &Fanout) -> anyhow::Result<Published> {
    let mask = Rng::new().mask();
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut off = 0;
    // Sync: a PSYNC message every 100 ms until every connection got one.
    let sync = client_frame(&publish_text(f.protocol, &sync_payload(f.size)), mask);
    let sync_end = Instant::now() + SYNC_TIMEOUT;
    loop {
        let ready = shared.lock().ready;
        if ready == shared.receivers {
            break;
        }
        if Instant::now() >= sync_end {
            anyhow::bail!(
                "only {ready} of {} connections received a broadcast within {SYNC_TIMEOUT:?}",
                shared.receivers
            );
        }
        let control = std::mem::take(&mut shared.lock().publisher_control);
        out.extend_from_slice(&control);
        out.extend_from_slice(&sync);
        flush(stream, &mut out, &mut off)?;
        let _ = tokio::time::timeout(Duration::from_millis(100), shared.notify.notified()).await;
    }

    if f.marks {
        tokio::time::sleep(MARK_QUIET).await;
        mark("start", 0).await;
    }
    let window = Window::after(f.warmup, f.duration);
    shared.lock().window = Some(window);
    let start = Instant::now();
    let mut published = Published {
        total: 0,
        in_window: 0,
        stalls: 0,
    };
    let mut last_progress = (start, 0u64);
    // The last publish's timestamp: each one gets a later one.
    let mut last_ts = 0u64;
    // Copies given up on by the max-rate publisher after a stall.
    let mut forgiven = 0u64;
    let r = shared.receivers;
    let mut text = Vec::with_capacity(128);
    loop {
        let now = Instant::now();
        if now >= window.end {
            break;
        }

        {
            let mut s = shared.lock();
            let control = std::mem::take(&mut s.publisher_control);
            out.extend_from_slice(&control);
            let accounted = s.delivered + s.missed;
            if accounted != last_progress.1 {
                last_progress = (now, accounted);
            }
            s.wake_at = u64::MAX;
        }
        // Don't queue more while the server isn't reading what we sent.
        let backlog_ok = |out: &Vec<u8>, off: usize| out.len() - off < 64 * 1024;
        let mut next_wake = window.end;
        if f.rate > 0.0 {
            loop {
                let due = start + Duration::from_secs_f64(published.total as f64 / f.rate);
                if due > now {
                    next_wake = next_wake.min(due);
                    break;
                }
                if !backlog_ok(&out, off) {
                    break;
                }
                push_publish(shared, f, &mut text, &mut out, due, &mut last_ts, mask);
                published.total += 1;
                if window.contains(due) {
                    published.in_window += 1;
                }
            }
        } else {
            let limit = (f.window.max(1) as u64 - 1) * r;
            loop {
                let accounted = last_progress.1 + forgiven;
                let in_flight = (published.total * r).saturating_sub(accounted);
                if in_flight > limit {
                    // Wait for deliveries; after a long silence, give up on them.
                    if now - last_progress.0 >= STALL {
                        published.stalls += 1;
                        forgiven += in_flight - limit;
                        last_progress.0 = now;
                        continue;
                    }
                    shared.lock().wake_at = published.total * r - limit - forgiven;
                    next_wake = next_wake.min(last_progress.0 + STALL);
                    break;
                }
                if !backlog_ok(&out, off) {
                    break;
                }
                push_publish(shared, f, &mut text, &mut out, now, &mut last_ts, mask);
                published.total += 1;
                if window.contains(now) {
                    published.in_window += 1;
                }
            }
        }
        flush(stream, &mut out, &mut off)?;
        let pending = off < out.len();
        tokio::select! {
            r = stream.writable(), if pending => r?,
            _ = shared.notify.notified() => {}
            _ = tokio::time::sleep_until(next_wake.into()) => {}
        }
    }
    shared.lock().wake_at = u64::MAX;
    // The tail of what was queued still goes out, so the drain can count it.
    let flush_end = Instant::now() + Duration::from_secs(1);
    while off < out.len() && Instant::now() < flush_end {
        flush(stream, &mut out, &mut off)?;
        let _ = tokio::time::timeout(Duration::from_millis(10), stream.writable()).await;
    }
    Ok(published)
}

/// Prints a `mark` event, then waits (at most [`MARK_HOLD`]) for the driver's line on stdin.
async fn mark(label: &str, published: u64) {
    use tokio::io::AsyncReadExt;
    emit(&Event::Mark {
        label: label.into(),
        published,
        wait: true,
    });
    let _ = tokio::time::timeout(MARK_HOLD, async {
        let mut stdin = tokio::io::stdin();
        let mut byte = [0u8; 1];
        while let Ok(1) = stdin.read(&mut byte).await {
            if byte[0] == b'\n' {
                break;
            }
        }
    })
    .await;
}

fn push_publish(
    shared: &Shared,
    f: &Fanout,
    text: &mut Vec<u8>,
    out: &mut Vec<u8>,
    at: Instant,
    last_ts: &mut u64,
    mask: [u8; 4],
) {
    *last_ts = shared.nanos(at).max(*last_ts + 1);
    text.clear();
    text.extend_from_slice(&publish_text(f.protocol, &payload(*last_ts, f.size)));
    push_frame(out, 0x1, text, mask);
}

/// Writes what it can of `out[off..]` without blocking.
fn flush(stream: &TcpStream, out: &mut Vec<u8>, off: &mut usize) -> io::Result<()> {
    while *off < out.len() {
        match stream.try_write(&out[*off..]) {
            Ok(n) => *off += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    if *off == out.len() {
        out.clear();
        *off = 0;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_text(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x81];
        if payload.len() < 126 {
            f.push(payload.len() as u8);
        } else {
            f.push(126);
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn classifies_each_protocol() {
        let p = payload(0x1234, 20);
        assert_eq!(p.len(), 20);
        assert_eq!(classify(Protocol::Plain, &p), Msg::Delivery(0x1234));
        let native = format!(
            r#"{{"type":"publish","room":"bench","data":"{}","userId":"u","timestamp":1,"offset":3,"id":"x"}}"#,
            std::str::from_utf8(&p).unwrap()
        );
        assert_eq!(
            classify(Protocol::Native, native.as_bytes()),
            Msg::Delivery(0x1234)
        );
        assert_eq!(
            classify(Protocol::Native, br#"{"type":"lagged","missed":42}"#),
            Msg::Lagged(42)
        );
        assert_eq!(
            classify(Protocol::Native, br#"{"type":"joined","room":"bench"}"#),
            Msg::Other
        );
        let p = std::str::from_utf8(&p).unwrap();
        for sio in [
            format!(
                r#"42["message",{{"type":"message","room":"bench","data":"{p}","userId":"u","timestamp":1,"offset":3,"id":"x"}}]"#
            ),
            format!(r#"42["message",{{"id":"x","data":"{p}","room":"bench"}},"3"]"#),
        ] {
            assert_eq!(
                classify(Protocol::Socketio, sio.as_bytes()),
                Msg::Delivery(0x1234)
            );
        }
        let sync = br#"42["message",{"data":"PSYNCxxxxxxxxxxxxxxx"}]"#;
        assert_eq!(classify(Protocol::Socketio, sync), Msg::Sync);
        for other in [
            format!(r#"42["message-back","{p}"]"#),
            r#"431[{"status":"ok","room":"bench"}]"#.to_string(),
            r#"40{"sid":"x"}"#.to_string(),
        ] {
            assert_eq!(classify(Protocol::Socketio, other.as_bytes()), Msg::Other);
        }
        assert_eq!(classify(Protocol::Socketio, b"2"), Msg::EioPing);
        assert_eq!(classify(Protocol::Plain, &sync_payload(20)), Msg::Sync);
    }

    #[test]
    fn parses_frames_split_anywhere() {
        let mut stream = server_text(b"hello");
        stream.extend(server_text(&[b'x'; 300]));
        for cut in 0..stream.len() {
            let head = &stream[..cut];
            let mut at = 0;
            let mut n = 0;
            while let Some((_, _, next)) = parse_frame(&head[at..]).unwrap() {
                at += next;
                n += 1;
            }
            assert!(n <= 2);
            if cut >= 7 {
                assert!(n >= 1);
            }
        }
    }

    /// Rough check that classifying is far below a microsecond per message.
    #[test]
    fn classifying_is_cheap() {
        let p = payload(0x1234, 20);
        let native = format!(
            r#"{{"type":"publish","room":"bench","data":"{}","userId":"anon-1234","timestamp":1712345678901,"offset":345,"id":"abcdef"}}"#,
            std::str::from_utf8(&p).unwrap()
        );
        let mut data = Vec::new();
        for _ in 0..10_000 {
            data.extend(server_text(native.as_bytes()));
        }
        let started = Instant::now();
        let mut n = 0;
        for _ in 0..10 {
            let mut at = 0;
            while let Some((_, payload, next)) = parse_frame(&data[at..]).unwrap() {
                at += next;
                if matches!(classify(Protocol::Native, payload), Msg::Delivery(_)) {
                    n += 1;
                }
            }
        }
        assert_eq!(n, 100_000);
        eprintln!("{:?} per message", started.elapsed() / n);
    }
}
