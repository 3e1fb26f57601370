//! The dashboard's feed: once a second, while anyone on this node is in
//! [`STATS_ROOM`], the server publishes a snapshot of itself there — connections by
//! transport, messages and bytes per second, publish-to-delivery latency percentiles over
//! the second, rooms, drops, lagged clients, memory. Over Switchboard's own rooms, so the
//! dashboard page is an ordinary client (and the room's history fills its charts when it
//! opens); nothing is computed while nobody watches. Clients can not publish there
//! (`RoomName::is_system`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use switchboard_hub::{RoomName, UserId};
use switchboard_session::{publish, PublishRequest};

use crate::metrics::{Metrics, TransportLabels, LATENCY_BUCKETS};
use crate::state::AppState;

/// Where the snapshots go.
pub const STATS_ROOM: &str = "switchboard:stats";

/// The sender of the snapshots (`userId` of each).
const STATS_USER: &str = "switchboard";

const TRANSPORTS: [&str; 4] = ["websocket", "sse", "poll", "socketio"];

/// Publish a snapshot every `interval` while this node has members in [`STATS_ROOM`],
/// until shutdown.
pub(crate) fn spawn(state: &Arc<AppState>, interval: Duration) {
    let state = state.clone();
    tokio::spawn(async move {
        let room = RoomName::new(STATS_ROOM).expect("a valid room name");
        let sender = UserId(Arc::from(STATS_USER));
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = Counters::take(&state.metrics);
        loop {
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = Counters::take(&state.metrics);
            if state.hub.local_member_count(&room) > 0 {
                let body = snapshot(&state, &last, &now);
                publish(
                    &state.hub,
                    PublishRequest {
                        room: &room,
                        sender: &sender,
                        sender_name: None,
                        body,
                        id: None,
                    },
                    |_| {},
                );
            }
            last = now;
        }
    });
}

/// The cumulative counters a snapshot differentiates.
struct Counters {
    at: Instant,
    messages_in: u64,
    messages_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    dropped: u64,
    lagged: u64,
    latency: [u64; LATENCY_BUCKETS.len() + 1],
}

impl Counters {
    fn take(m: &Metrics) -> Counters {
        Counters {
            at: Instant::now(),
            messages_in: m.messages_in.get(),
            messages_out: m.messages_out.get(),
            bytes_in: m.bytes_in.get(),
            bytes_out: m.bytes_out.get(),
            dropped: m.dropped.get(),
            lagged: m.lagged.get(),
            latency: m.delivery_latency.bucket_counts(),
        }
    }
}

fn snapshot(state: &AppState, last: &Counters, now: &Counters) -> Map<String, Value> {
    let m = &state.metrics;
    let secs = now.at.duration_since(last.at).as_secs_f64().max(1e-3);
    let rate = |a: u64, b: u64| ((b.saturating_sub(a)) as f64 / secs).round();
    let mut connections = Map::new();
    for transport in TRANSPORTS {
        let open = m
            .connections
            .get_or_create(&TransportLabels { transport })
            .get();
        connections.insert(transport.into(), Value::from(open.max(0)));
    }
    let mut window = [0u64; LATENCY_BUCKETS.len() + 1];
    for (w, (a, b)) in window.iter_mut().zip(last.latency.iter().zip(&now.latency)) {
        *w = b.saturating_sub(*a);
    }
    let body = json!({
        "type": "stats",
        "uptime": state.started.elapsed().as_secs(),
        "connections": connections,
        "parked": m.parked.get().max(0),
        "rooms": state.hub.local_room_count(),
        "messagesIn": rate(last.messages_in, now.messages_in),
        "messagesOut": rate(last.messages_out, now.messages_out),
        "bytesIn": rate(last.bytes_in, now.bytes_in),
        "bytesOut": rate(last.bytes_out, now.bytes_out),
        "latencyMs": {
            "p50": percentile(&window, 0.50).map(|s| s * 1000.0),
            "p99": percentile(&window, 0.99).map(|s| s * 1000.0),
            "samples": window.iter().sum::<u64>(),
        },
        "dropped": now.dropped.saturating_sub(last.dropped),
        "droppedTotal": now.dropped,
        "lagged": now.lagged.saturating_sub(last.lagged),
        "laggedTotal": now.lagged,
        "memoryBytes": resident_bytes(),
    });
    match body {
        Value::Object(map) => map,
        _ => unreachable!("json! of an object"),
    }
}

/// The `q` quantile (seconds) of a histogram's per-bucket counts, interpolated linearly
/// inside its bucket; `None` without observations. The +Inf bucket reads as its lower bound.
pub(crate) fn percentile(per_bucket: &[u64], q: f64) -> Option<f64> {
    let total: u64 = per_bucket.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, count) in per_bucket.iter().enumerate() {
        if *count == 0 {
            continue;
        }
        if (below + count) as f64 >= rank {
            let lower = if i == 0 { 0.0 } else { LATENCY_BUCKETS[i - 1] };
            let Some(upper) = LATENCY_BUCKETS.get(i) else {
                return Some(lower);
            };
            let within = ((rank - below as f64) / *count as f64).clamp(0.0, 1.0);
            return Some(lower + (upper - lower) * within);
        }
        below += count;
    }
    LATENCY_BUCKETS.last().copied()
}

/// This process's resident memory (Linux `/proc/self/status`), bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_inside_the_bucket() {
        let mut buckets = [0u64; LATENCY_BUCKETS.len() + 1];
        assert_eq!(percentile(&buckets, 0.5), None);
        // 100 observations in (0.5 ms, 1 ms]: the median is halfway.
        buckets[4] = 100;
        let p50 = percentile(&buckets, 0.5).unwrap();
        assert!((p50 - 0.000_75).abs() < 1e-9, "{p50}");
        // One slow outlier past 10 s: p99 stays in the 1 ms bucket, p100 is the +Inf bound.
        buckets[LATENCY_BUCKETS.len()] = 1;
        assert!(percentile(&buckets, 0.99).unwrap() <= 0.001);
        assert_eq!(percentile(&buckets, 1.0), Some(10.0));
    }
}
