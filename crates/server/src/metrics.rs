//! Prometheus metrics (SPEC §8), served at `GET /metrics` in the OpenMetrics text format by
//! the `prometheus-client` crate.
//!
//! Counters touched per message (messages, bytes, delivery latency) are sharded: each
//! runtime thread adds to its own cache line, and a scrape sums the shards. A single shared
//! atomic would bounce between cores on every delivery of a fan-out (a million times a
//! second). They are also updated once per batch, not once per message, where the code
//! allows it.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use switchboard_hub::Hub;

/// Single-writer shards per counter: one for each of the first 64 threads that update
/// metrics (runtime workers, tests). Threads after those share one more shard, updated with
/// atomic adds.
const OWNED_SHARDS: usize = 64;
const SHARDS: usize = OWNED_SHARDS + 1;

/// One cache line (two on CPUs that prefetch pairs), so shards never share one.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// This thread's shard, and whether the thread is its only writer.
#[inline]
fn shard() -> (usize, bool) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: (usize, bool) = {
            // A shard is never handed out twice, even after its thread exits: its owner's
            // plain store must not race with anyone.
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            if n < OWNED_SHARDS { (n, true) } else { (OWNED_SHARDS, false) }
        };
    }
    SHARD.with(|s| *s)
}

/// Add `n` to `cell`. A shard with a single writer needs no atomic read-modify-write (a
/// locked instruction per delivery): a plain load and store suffice, and a concurrent scrape
/// reads either value. The shard shared by late threads uses `fetch_add`.
#[inline]
fn add_to(cell: &AtomicU64, n: u64, single_writer: bool) {
    if single_writer {
        cell.store(
            cell.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    } else {
        cell.fetch_add(n, Ordering::Relaxed);
    }
}

/// A counter for hot paths (see the module docs). Clones share the count.
#[derive(Clone)]
pub struct HotCounter(Arc<[Padded<AtomicU64>; SHARDS]>);

impl Default for HotCounter {
    fn default() -> Self {
        HotCounter(Arc::new(std::array::from_fn(|_| Padded::default())))
    }
}

impl HotCounter {
    /// Add `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        let (i, single) = shard();
        add_to(&self.0[i].0, n, single);
    }

    /// The total.
    pub fn get(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

impl fmt::Debug for HotCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HotCounter").field(&self.get()).finish()
    }
}

impl EncodeMetric for HotCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// Upper bounds of the latency buckets, in seconds: 50 µs to 10 s.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

#[derive(Debug, Default)]
struct HistogramShard {
    /// Per bucket (the last is +Inf), not cumulative.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

/// A latency histogram for hot paths, sharded like [`HotCounter`]. Clones share it.
#[derive(Clone)]
pub struct HotHistogram(Arc<[Padded<HistogramShard>; SHARDS]>);

impl Default for HotHistogram {
    fn default() -> Self {
        HotHistogram(Arc::new(std::array::from_fn(|_| Padded::default())))
    }
}

impl HotHistogram {
    /// Record one duration.
    #[inline]
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        let (shard, single) = shard();
        let s = &self.0[shard].0;
        add_to(&s.buckets[i], 1, single);
        add_to(&s.sum_ns, d.as_nanos().min(u64::MAX as u128) as u64, single);
        add_to(&s.count, 1, single);
    }

    /// Observations so far per bucket (upper bounds [`LATENCY_BUCKETS`], then +Inf), not
    /// cumulative.
    pub fn bucket_counts(&self) -> [u64; LATENCY_BUCKETS.len() + 1] {
        let mut per_bucket = [0u64; LATENCY_BUCKETS.len() + 1];
        for shard in self.0.iter() {
            for (total, b) in per_bucket.iter_mut().zip(&shard.0.buckets) {
                *total += b.load(Ordering::Relaxed);
            }
        }
        per_bucket
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0
            .iter()
            .map(|s| s.0.count.load(Ordering::Relaxed))
            .sum()
    }
}

impl fmt::Debug for HotHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HotHistogram").field(&self.count()).finish()
    }
}

impl EncodeMetric for HotHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let mut per_bucket = [0u64; LATENCY_BUCKETS.len() + 1];
        let mut sum_ns = 0u64;
        for shard in self.0.iter() {
            for (total, b) in per_bucket.iter_mut().zip(&shard.0.buckets) {
                *total += b.load(Ordering::Relaxed);
            }
            sum_ns += shard.0.sum_ns.load(Ordering::Relaxed);
        }
        // From the buckets, not the `count` cells: a scrape racing with updates must still
        // report a count equal to the +Inf bucket.
        let count = per_bucket.iter().sum();
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(per_bucket)
            .collect();
        encoder.encode_histogram::<NoLabelSet>(sum_ns as f64 / 1e9, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// `transport` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    /// `websocket` (later: `sse`, `polling`, `socketio`).
    pub transport: &'static str,
}

/// How a connection ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DisconnectLabels {
    /// See [`TransportLabels`].
    pub transport: &'static str,
    /// The close code of the closing handshake, or `1006` when there was none (RFC 6455
    /// §7.1.5: the connection was lost).
    pub code: u16,
    /// `closed`, `peer_gone`, `heartbeat_timeout`, `close_timeout`, `upgrade_failed` (the
    /// client went away between our 101 and the hand-over).
    pub reason: &'static str,
}

/// Why a handshake was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// `server_full` (503), `per_ip` (429), `per_user` (429).
    pub reason: &'static str,
}

/// Why an authentication failed (`switchboard_auth::AuthError::metric_label`, or
/// `timeout` (no first-message `auth` in time), `origin` (an origin not allowed),
/// `cookie_origin` (a cookie sent by a page of another origin)).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthFailureLabels {
    /// The reason.
    pub reason: &'static str,
}

/// Every metric of one server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Open connections by transport.
    pub connections: Family<TransportLabels, Gauge>,
    /// Idle WebSocket connections parked without a task (counted in `connections` too).
    pub parked: Gauge,
    /// Accepted connections by transport.
    pub connects: Family<TransportLabels, Counter>,
    /// Ended connections by transport, close code and reason.
    pub disconnects: Family<DisconnectLabels, Counter>,
    /// Handshakes refused by a connection limit.
    pub refused: Family<RefusalLabels, Counter>,
    /// Messages received from clients.
    pub messages_in: HotCounter,
    /// Messages sent to clients (deliveries and replies).
    pub messages_out: HotCounter,
    /// Bytes received from clients (WebSocket frames, after TLS).
    pub bytes_in: HotCounter,
    /// Bytes sent to clients (WebSocket frames, before TLS).
    pub bytes_out: HotCounter,
    /// Publish to hand-over to the connection's socket, per delivery of a sampled message
    /// (see [`Metrics::sample_latency`]).
    pub delivery_latency: HotHistogram,
    /// Deliveries dropped because a member's outbound buffer was full.
    pub dropped: HotCounter,
    /// Clients told they lagged (`lagged` messages sent).
    pub lagged: Counter,
    /// Connections closed with 4003 for a full outbound buffer.
    pub overflow_closes: Counter,
    /// Messages refused by the per-connection rate limit.
    pub rate_limited: Counter,
    /// Failed authentications (bad tokens, auth timeouts, refused origins), by reason.
    pub auth_failures: Family<AuthFailureLabels, Counter>,
    /// Connections dropped because the request head (or the TLS handshake) did not arrive
    /// within `handshake_timeout` (slowloris).
    pub handshake_timeouts: Counter,
    /// Requests sent to the node that holds their session (scale-out without stickiness).
    pub forwarded_requests: Counter,
    /// Forwarded requests the owner did not answer in time (or the broker was down).
    pub forward_failures: Counter,
}

impl Metrics {
    /// Count a failed authentication.
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&AuthFailureLabels { reason })
            .inc();
    }

    /// Every metric, registered under `switchboard_`, plus the channel count from `hub` and
    /// the process's memory, read at each scrape.
    pub fn new(hub: Arc<Hub>) -> Metrics {
        let mut registry = Registry::with_prefix("switchboard");
        let m = Metrics {
            connections: Family::default(),
            parked: Gauge::default(),
            connects: Family::default(),
            disconnects: Family::default(),
            refused: Family::default(),
            messages_in: HotCounter::default(),
            messages_out: HotCounter::default(),
            bytes_in: HotCounter::default(),
            bytes_out: HotCounter::default(),
            delivery_latency: HotHistogram::default(),
            dropped: HotCounter::default(),
            lagged: Counter::default(),
            overflow_closes: Counter::default(),
            rate_limited: Counter::default(),
            auth_failures: Family::default(),
            handshake_timeouts: Counter::default(),
            forwarded_requests: Counter::default(),
            forward_failures: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("connections", "Open connections", m.connections.clone());
        r.register(
            "parked_connections",
            "Idle WebSocket connections parked without a task",
            m.parked.clone(),
        );
        r.register("connects", "Accepted connections", m.connects.clone());
        r.register(
            "disconnects",
            "Ended connections by close code and reason",
            m.disconnects.clone(),
        );
        r.register(
            "handshakes_refused",
            "Handshakes refused by a connection limit",
            m.refused.clone(),
        );
        r.register(
            "messages_received",
            "Messages received from clients",
            m.messages_in.clone(),
        );
        r.register(
            "messages_sent",
            "Messages sent to clients",
            m.messages_out.clone(),
        );
        r.register(
            "received_bytes",
            "Bytes received from clients",
            m.bytes_in.clone(),
        );
        r.register("sent_bytes", "Bytes sent to clients", m.bytes_out.clone());
        r.register(
            "delivery_latency_seconds",
            "Time from publish to hand-over to the recipient's socket",
            m.delivery_latency.clone(),
        );
        r.register(
            "messages_dropped",
            "Deliveries dropped for a full outbound buffer",
            m.dropped.clone(),
        );
        r.register(
            "lagged_notices",
            "Clients told how many messages they missed",
            m.lagged.clone(),
        );
        r.register(
            "overflow_closes",
            "Connections closed with 4003 for a full outbound buffer",
            m.overflow_closes.clone(),
        );
        r.register(
            "rate_limited",
            "Messages refused by the per-connection rate limit",
            m.rate_limited.clone(),
        );
        r.register(
            "handshake_timeouts",
            "Connections dropped for a request head or TLS handshake not received in time",
            m.handshake_timeouts.clone(),
        );
        r.register(
            "forwarded_requests",
            "Polling requests sent to the node that holds their session",
            m.forwarded_requests.clone(),
        );
        r.register(
            "forward_failures",
            "Forwarded requests the node that holds their session did not answer",
            m.forward_failures.clone(),
        );
        r.register(
            "auth_failures",
            "Failed authentications, by reason",
            m.auth_failures.clone(),
        );
        r.register_collector(Box::new(ScrapeTime { hub }));
        Metrics { registry, ..m }
    }

    /// Whether the deliveries of the message with this room offset feed the latency
    /// histogram: one message in 8, to every recipient. Sampling by message keeps the
    /// distribution (which message is sampled does not depend on how it is delivered) and
    /// keeps the clock read and the histogram update off most deliveries of a fan-out.
    #[inline]
    pub fn sample_latency(offset: Option<u64>) -> bool {
        offset.is_some_and(|o| o % 8 == 0)
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String can not fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Values computed when scraped rather than maintained on every change.
#[derive(Debug)]
struct ScrapeTime {
    hub: Arc<Hub>,
}

impl prometheus_client::collector::Collector for ScrapeTime {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let channels = self.hub.channel_count() as u64;
        gauge(
            &mut encoder,
            "channels",
            "Channels with members or history",
            channels,
        )?;
        // The shared store's backend (Redis), when there is one; 0 errors with the memory one.
        let backend = self.hub.backend_stats().unwrap_or_default();
        encoder
            .encode_descriptor(
                "broker_errors",
                "Operations on the broker (Redis) that failed or got no answer in time",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, u64>(&backend.errors, None)?;
        if self.hub.backend_stats().is_some() {
            encoder
                .encode_descriptor(
                    "broker_reconnects",
                    "Broker (Redis pub/sub) connections made again after one broke",
                    None,
                    MetricType::Counter,
                )?
                .encode_counter::<NoLabelSet, _, u64>(&backend.reconnects, None)?;
            encoder
                .encode_descriptor(
                    "broker_latency_seconds",
                    "Round trips to the broker (Redis): publishes, presence changes, reads",
                    None,
                    MetricType::Histogram,
                )?
                .encode_histogram::<NoLabelSet>(
                    backend.latency_sum_seconds,
                    backend.latency_count,
                    &backend.latency_buckets,
                    None,
                )?;
        }
        if let Some(rss) = resident_memory_bytes() {
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory of the server process",
                rss,
            )?;
        }
        Ok(())
    }
}

/// One unlabelled gauge sample.
fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), fmt::Error> {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// Resident set size from `/proc/self/statm` (Linux).
fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_counters_sum_across_threads_and_encode() {
        let metrics = Metrics::new(Hub::new(Default::default()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = metrics.messages_out.clone();
                let h = metrics.delivery_latency.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.add(2);
                        h.observe(Duration::from_micros(300));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(metrics.messages_out.get(), 8000);
        let text = metrics.encode();
        assert!(
            text.contains("switchboard_messages_sent_total 8000"),
            "{text}"
        );
        assert!(
            text.contains("switchboard_delivery_latency_seconds_bucket{le=\"0.00025\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("switchboard_delivery_latency_seconds_bucket{le=\"0.0005\"} 4000"),
            "{text}"
        );
        assert!(
            text.contains("switchboard_delivery_latency_seconds_count 4000"),
            "{text}"
        );
        assert!(text.contains("switchboard_channels 0"), "{text}");
        assert!(
            text.contains("switchboard_process_resident_memory_bytes "),
            "{text}"
        );
    }
}
