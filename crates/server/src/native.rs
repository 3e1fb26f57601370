//! The native protocol (SPEC §2) on a WebSocket connection: the transport-neutral
//! [`Session`] core, with JSON text frames as its wire format.

use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use switchboard_hub::{Delivery, EncodingKey};
use switchboard_native_proto::{ServerMessage, WireFormat};
use switchboard_session::{encode_delivery, CloseReason, Note, Session, Shared, Sink};
use switchboard_ws_proto::{CloseCode, Connection, MessageKind, PreparedMessage};

use crate::metrics::Metrics;
use crate::ws::handler::Handler;

/// A delivery's WebSocket frame in one wire format (`None`: it could not be encoded).
type WsFrame = Option<PreparedMessage>;

/// The delivery encodings of WebSocket frames, one per wire format: a broadcast is encoded and
/// framed once per format in use, never per recipient.
static WS_JSON: LazyLock<EncodingKey<WsFrame>> = LazyLock::new(EncodingKey::new);
static WS_MSGPACK: LazyLock<EncodingKey<WsFrame>> = LazyLock::new(EncodingKey::new);

fn ws_key(format: WireFormat) -> &'static EncodingKey<WsFrame> {
    match format {
        WireFormat::Json => &WS_JSON,
        WireFormat::MessagePack => &WS_MSGPACK,
    }
}

/// The WebSocket message kind a wire format travels in.
fn ws_kind(format: WireFormat) -> MessageKind {
    if format.is_binary() {
        MessageKind::Binary
    } else {
        MessageKind::Text
    }
}

/// What every native-protocol WebSocket of a server shares: the session core's state (hub,
/// settings) and the metrics, behind the one `Arc` each connection holds.
pub(crate) type NativeShared = Shared<Arc<Metrics>>;

/// One native-protocol WebSocket connection.
#[derive(Debug)]
pub(crate) struct NativeSession {
    session: Session<Arc<Metrics>>,
}

/// Entries of the per-thread drain scratch kept between drains.
const MAX_BATCH_CAPACITY: usize = 4096;

thread_local! {
    /// Scratch for draining an outbox, kept empty between uses: per worker thread rather
    /// than per connection (a drain never nests).
    static BATCH: std::cell::RefCell<Vec<Arc<Delivery>>> = const {
        std::cell::RefCell::new(Vec::new())
    };
}

impl NativeSession {
    /// A connection of `session` (anonymous, authenticated at the handshake, or awaiting
    /// its first-message `auth`). Create it only for an admitted connection: the session is
    /// registered with the hub.
    pub(crate) fn new(session: Session<Arc<Metrics>>) -> NativeSession {
        NativeSession { session }
    }

    /// The connection's id (the `connectionId` of `welcome`).
    pub(crate) fn connection_id(&self) -> u64 {
        self.session.connection_id()
    }

    fn metrics(&self) -> &Metrics {
        &self.session.shared().transport
    }
}

/// The session core's output on a WebSocket: frames in the connection's wire format, close
/// frames, and what to count (added to the metrics once the session call returned).
struct WsSink<'a> {
    conn: &'a mut Connection,
    format: WireFormat,
    counts: Counts,
}

impl<'a> WsSink<'a> {
    fn new(conn: &'a mut Connection, format: WireFormat) -> WsSink<'a> {
        WsSink {
            conn,
            format,
            counts: Counts::default(),
        }
    }
}

/// Events of one session call worth a metric.
#[derive(Debug, Default)]
struct Counts {
    rate_limited: u64,
    dropped: u64,
    lagged: u64,
    overflow_closes: u64,
    auth_failures: u64,
}

impl Counts {
    fn add_to(self, metrics: &Metrics) {
        if self.rate_limited > 0 {
            metrics.rate_limited.inc_by(self.rate_limited);
        }
        if self.dropped > 0 {
            metrics.dropped.add(self.dropped);
        }
        if self.lagged > 0 {
            metrics.lagged.inc_by(self.lagged);
        }
        if self.overflow_closes > 0 {
            metrics.overflow_closes.inc_by(self.overflow_closes);
        }
        if self.auth_failures > 0 {
            metrics
                .auth_failures
                .get_or_create(&crate::metrics::AuthFailureLabels {
                    reason: "first_message",
                })
                .inc_by(self.auth_failures);
        }
    }
}

impl Sink for WsSink<'_> {
    fn send(&mut self, message: ServerMessage) {
        self.conn
            .send(ws_kind(self.format), &self.format.encode(&message));
    }

    fn close(&mut self, reason: CloseReason) {
        if reason == CloseReason::BufferOverflow {
            self.counts.overflow_closes += 1;
        }
        if matches!(reason, CloseReason::AuthFailed { .. }) {
            self.counts.auth_failures += 1;
        }
        self.conn
            .close(CloseCode::from_u16(reason.code()), reason.text());
    }

    fn note(&mut self, note: Note) {
        match note {
            Note::RateLimited => self.counts.rate_limited += 1,
            Note::Dropped(n) => self.counts.dropped += n as u64,
            Note::Lagged => self.counts.lagged += 1,
        }
    }
}

impl Handler for NativeSession {
    fn on_open(&mut self, conn: &mut Connection) {
        // The first-message flow greets with `auth_success` instead.
        if self.session.is_authenticated() {
            let welcome = self.session.welcome();
            WsSink::new(conn, self.session.format()).send(welcome);
        }
    }

    fn on_message(&mut self, conn: &mut Connection, kind: MessageKind, payload: Bytes) {
        let format = self.session.format();
        let mut sink = WsSink::new(conn, format);
        let now = Instant::now();
        match (kind, format) {
            // JSON text is understood on every connection; binary only as MessagePack.
            (MessageKind::Text, _) => self.session.on_text(&payload, now, &mut sink),
            (MessageKind::Binary, WireFormat::MessagePack) => {
                self.session
                    .on_message(WireFormat::MessagePack, &payload, now, &mut sink)
            }
            (MessageKind::Binary, WireFormat::Json) => self.session.on_binary(now, &mut sink),
        }
        sink.counts.add_to(self.metrics());
    }

    fn on_close(&mut self) {
        self.session.end();
    }

    fn is_authenticated(&self) -> bool {
        self.session.is_authenticated()
    }

    fn expires_at(&self) -> Option<Instant> {
        self.session.expires_at().map(crate::access::instant_of)
    }

    fn on_expired(&mut self, conn: &mut Connection) {
        let mut sink = WsSink::new(conn, self.session.format());
        self.session.expire_if_due(SystemTime::now(), &mut sink);
        sink.counts.add_to(self.metrics());
    }

    fn poll_outbound(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.session.poll_outbound(cx)
    }

    fn on_outbound_blocked(&mut self, conn: &mut Connection) {
        let mut sink = WsSink::new(conn, self.session.format());
        self.session.close_if_kicked(&mut sink);
        sink.counts.add_to(self.metrics());
    }

    fn write_outbound(&mut self, conn: &mut Connection) {
        BATCH.with_borrow_mut(|batch| {
            let format = self.session.format();
            let mut sink = WsSink::new(conn, format);
            // An `auth`/`refresh` verification that finished on another task woke us.
            self.session.resume(&mut sink);
            self.session.drain(batch, &mut sink);
            let conn = sink.conn;
            sink.counts.add_to(self.metrics());
            // At most one clock read per batch: every delivery in it is handed over now.
            let mut now = None;
            for delivery in batch.drain(..) {
                if Metrics::sample_latency(delivery.offset().map(|o| o.0)) {
                    let now = *now.get_or_insert_with(Instant::now);
                    self.metrics()
                        .delivery_latency
                        .observe(now.saturating_duration_since(delivery.created()));
                }
                // Encoded and framed once per delivery and format, shared by every WebSocket
                // recipient using that format.
                let frame = delivery.encoding(ws_key(format), |d| {
                    encode_delivery(format, d)
                        .map(|bytes| PreparedMessage::new(ws_kind(format), bytes))
                });
                match frame {
                    Some(frame) => {
                        conn.send_prepared(frame);
                    }
                    // Stored messages are JSON we wrote; this is a bug, and said so.
                    _ => tracing::error!(
                        offset = ?delivery.offset(),
                        "a delivery could not be encoded for this connection's wire format"
                    ),
                }
            }
            // One per thread: it may keep a big batch's capacity, within reason.
            if batch.capacity() > MAX_BATCH_CAPACITY {
                *batch = Vec::new();
            }
        });
    }
}
