//! The JSON lines `loadgen` prints on stdout, one event per line, and `bench` parses.
//!
//! Metrics are a flat name -> number map rather than a struct per scenario, so a new
//! scenario (e.g. fan-out) only adds names, not types, on both sides.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Metric names shared by `loadgen` (producer) and `bench` (consumer).
pub mod metric {
    /// Echoed messages completed per second in the measurement window.
    pub const MSGS_PER_S: &str = "msgs_per_s";
    /// Median message round-trip time, microseconds.
    pub const RTT_P50_US: &str = "rtt_p50_us";
    /// 99th percentile message round-trip time, microseconds.
    pub const RTT_P99_US: &str = "rtt_p99_us";
    /// Maximum message round-trip time, microseconds.
    pub const RTT_MAX_US: &str = "rtt_max_us";
    /// Completed connection upgrades (or raw TCP round-trips) per second.
    pub const HANDSHAKES_PER_S: &str = "handshakes_per_s";
    /// Median time from connect() to a verified 101 response (to the session's `welcome` or
    /// `auth_success` with `handshakes --session` / `--auth-token`), microseconds.
    pub const HANDSHAKE_P50_US: &str = "handshake_p50_us";
    /// 99th percentile of the same, microseconds.
    pub const HANDSHAKE_P99_US: &str = "handshake_p99_us";
    /// Fan-out: messages received by all subscribers per second in the window.
    pub const DELIVERIES_PER_S: &str = "deliveries_per_s";
    /// Fan-out: messages published per second in the window.
    pub const PUBLISHES_PER_S: &str = "publishes_per_s";
    /// Fan-out: median publish-to-receive latency, microseconds.
    pub const LATENCY_P50_US: &str = "latency_p50_us";
    /// Fan-out: 99th percentile publish-to-receive latency, microseconds.
    pub const LATENCY_P99_US: &str = "latency_p99_us";
    /// Fan-out: maximum publish-to-receive latency, microseconds.
    pub const LATENCY_MAX_US: &str = "latency_max_us";
    /// Fan-out: copies (publisher's own included) that never arrived, lagged ones included.
    pub const LOST_MSGS: &str = "lost_msgs";
    /// Fan-out with long pollers: poll answers completed per second in the window.
    pub const POLLS_PER_S: &str = "polls_per_s";
    /// Fan-out: copies the server reported dropped (`lagged`), part of `lost_msgs`.
    pub const LAGGED_MISSED: &str = "lagged_missed";
    /// Fan-out: copies expected (publishes after sync × receivers).
    pub const EXPECTED_MSGS: &str = "expected_msgs";
    /// Fan-out: copies received (publishes after sync, every receiver, duplicates included).
    pub const DELIVERED_MSGS: &str = "delivered_msgs";
    /// Fan-out: messages published after sync (warm-up, window and tail).
    pub const PUBLISHED_MSGS: &str = "published_msgs";
    /// Fan-out: copies a connection received a second time.
    pub const DUPLICATE_MSGS: &str = "duplicate_msgs";
    /// Fan-out: copies a connection received after a later message.
    pub const REORDERED_MSGS: &str = "reordered_msgs";
    /// Cross-node fan-out: server processes sharing the room.
    pub const NODES: &str = "nodes";
    /// Cross-node fan-out: messages published between the `start` and `end` marks (every
    /// publish after sync: warm-up, window and tail; the span the driver sampled Redis over;
    /// added by the driver).
    pub const REDIS_PUBLISHES: &str = "redis_publishes";
    /// Cross-node fan-out: commands Redis processed per publish (`total_commands_processed`;
    /// added by the driver).
    pub const REDIS_COMMANDS_PER_PUBLISH: &str = "redis_commands_per_publish";
    /// Cross-node fan-out: bytes Redis read from its clients per publish
    /// (`total_net_input_bytes`; added by the driver).
    pub const REDIS_IN_BYTES_PER_PUBLISH: &str = "redis_in_bytes_per_publish";
    /// Cross-node fan-out: bytes Redis wrote to its clients per publish, pub/sub messages to
    /// the nodes included (`total_net_output_bytes`; added by the driver).
    pub const REDIS_OUT_BYTES_PER_PUBLISH: &str = "redis_out_bytes_per_publish";
    /// Prefix of the per-command calls per publish (`INFO commandstats`, commands run by
    /// scripts included), e.g. `redis_calls_per_publish.publish` (added by the driver).
    pub const REDIS_CALLS_PER_PUBLISH: &str = "redis_calls_per_publish.";
    /// Cross-node fan-out: redis-server's CPU time during the loadgen run, in % of its wall
    /// time (added by the driver).
    pub const REDIS_CPU_PCT: &str = "redis_cpu_pct";
    /// Connections held open (idle scenario).
    pub const CONNECTIONS: &str = "connections";
    /// Seconds it took to open and upgrade the idle connections.
    pub const CONNECT_SECONDS: &str = "connect_seconds";
    /// Server RSS before the load generator connected (added by the driver).
    pub const RSS_BEFORE_BYTES: &str = "rss_before_bytes";
    /// Server RSS while the connections were held (added by the driver).
    pub const RSS_HELD_BYTES: &str = "rss_held_bytes";
    /// (RSS held - RSS before) / connections (added by the driver).
    pub const BYTES_PER_CONN: &str = "bytes_per_conn";
    /// CPU seconds loadgen used over its whole life (setup included).
    pub const LOADGEN_CPU_SECONDS: &str = "loadgen_cpu_seconds";
    /// loadgen's CPU seconds as a share of its wall time, in % (added by the driver).
    pub const LOADGEN_CPU_PCT: &str = "loadgen_cpu_pct";
    /// The server's CPU seconds during the loadgen run as a share of that run's
    /// wall time, in % (added by the driver).
    pub const SERVER_CPU_PCT: &str = "server_cpu_pct";
    /// How busy the server's CPU was during the run, in %, softirq and other
    /// processes included (added by the driver when pinned).
    pub const SERVER_CORE_PCT: &str = "server_core_pct";
    /// How busy loadgen's CPU was during the run, in % (added by the driver when pinned).
    pub const LOADGEN_CORE_PCT: &str = "loadgen_core_pct";
}

/// One line of `loadgen` output.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The load generator now holds its connections open and keeps them until its
    /// stdin reaches EOF (or a time limit): the driver samples the server, then
    /// closes that stdin.
    Hold {
        /// Connections currently held.
        connections: u64,
    },
    /// A point of a fan-out run with `--marks` (`start`: sync is over, nothing in flight,
    /// before the first publish; `end`: the copies in flight are drained, every connection
    /// still open). With `wait`, loadgen holds until it reads a line (or EOF) on its stdin:
    /// the driver samples, then writes one.
    Mark {
        /// `start` or `end`.
        label: String,
        /// Messages published after sync so far.
        published: u64,
        /// loadgen waits for stdin EOF before going on.
        wait: bool,
    },
    /// The final measurement of one run.
    Result(RunResult),
}

/// The outcome of one `loadgen` run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunResult {
    /// Subcommand that produced this result (`closed`, `pipelined`, ...).
    pub scenario: String,
    /// `ws` or `raw`.
    pub mode: String,
    /// The parameters the run used, for the record.
    pub params: BTreeMap<String, f64>,
    /// Measured values, keyed by the names in [`metric`].
    pub metrics: BTreeMap<String, f64>,
    /// Connections or attempts that failed during the run.
    pub errors: u64,
    /// The first such failure, to make `errors > 0` actionable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

impl RunResult {
    /// Records one error, keeping the first message.
    pub fn error(&mut self, message: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(message.to_string());
        }
    }
}

/// Prints an event as one JSON line (stdout is line-buffered, so it is flushed at once).
pub fn emit(event: &Event) {
    match serde_json::to_string(event) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("cannot serialise event: {e}"),
    }
}
