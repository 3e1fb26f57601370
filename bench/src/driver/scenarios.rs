//! The scenarios: each is one table row, one `loadgen` subcommand line, and the
//! metric that row shows. A new scenario (e.g. fan-out) is a new `Load` variant,
//! its `loadgen` arguments, and an entry in [`SCENARIOS`].

use std::time::Duration;

use super::args::Profile;
use crate::report::metric;

/// How a row's value is formatted, and which direction is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Events per second; higher is better.
    PerSecond,
    /// Bytes; lower is better.
    Bytes,
}

/// What `loadgen` runs.
#[derive(Debug, Clone, Copy)]
pub enum Load {
    /// `closed`: one message in flight per connection.
    Closed {
        /// Payload bytes.
        size: usize,
    },
    /// `pipelined`: `depth` messages in flight per connection.
    Pipelined {
        /// Payload bytes.
        size: usize,
        /// Messages in flight per connection.
        depth: usize,
    },
    /// `handshakes` with this many in flight.
    Handshakes {
        /// Concurrent handshakes.
        concurrency: usize,
    },
    /// `idle`: hold connections while the driver samples server memory.
    Idle {
        /// Join the broadcast room first (on the server's fan-out endpoint, with its
        /// protocol): idle room members rather than bare connections.
        members: bool,
    },
    /// `idle --sse`: hold SSE streams on one room while the driver samples server memory.
    IdleSse,
    /// `idle --protocol socketio` on the server's Socket.IO endpoint: hold Socket.IO
    /// connections (namespace `/`, room `bench` joined) while the driver samples memory.
    IdleSio,
    /// `fanout`: one publisher, `subscribers` subscribers in one room.
    Fanout {
        /// Subscriber connections.
        subscribers: usize,
        /// Publishes per second; 0 = max rate (window-paced).
        rate: u32,
        /// Where publisher and subscribers connect.
        feed: Feed,
    },
    /// `sio-echo` on the server's Socket.IO endpoint in echo mode: `connections` ×
    /// `depth` acknowledged `message-with-ack` events in flight.
    SioEcho {
        /// Connections.
        connections: usize,
        /// Acknowledged events in flight per connection.
        depth: usize,
        /// Bytes of the event's string argument.
        size: usize,
    },
    /// `fanout --transport poll --window 1`: long pollers, each answer carrying one message.
    PollRtt {
        /// Poller connections.
        pollers: usize,
    },
    /// `handshakes --session` on switchboard's `/ws`: connect, upgrade, native session up to
    /// its first message, drop; authenticated as `auth` says (the server is started to match).
    Sessions {
        /// Concurrent handshakes.
        concurrency: usize,
        /// How the connection authenticates.
        auth: Auth,
    },
}

/// Where a fan-out row's publisher and subscribers connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// Everyone on the server's broadcast endpoint, in its protocol (`fanout-*`).
    Broadcast,
    /// The publisher on the broadcast endpoint, the subscribers on switchboard's SSE streams
    /// (`sse-fanout-*`).
    Sse,
    /// Everyone on the server's Socket.IO endpoint (`sio-fanout-*`).
    SocketIo,
    /// A cluster (`fanout-redis-*`): one fresh `redis-server` and `nodes` processes of the
    /// server sharing the room through it, on their broadcast endpoints (`cluster`); the
    /// subscribers spread evenly over the nodes, the publisher on the first. The driver
    /// samples Redis over the measured span (loadgen's `--marks`).
    Redis {
        /// Server processes.
        nodes: usize,
    },
}

/// How a `/ws` session row authenticates, and so how its server is started
/// ([`crate::driver::auth`] mints the tokens and builds the flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// No authentication configured (the server as for the fan-out rows): `welcome`.
    None,
    /// `--jwt-secret`, an HS256 token in `?token=`: `welcome`.
    QueryHs256,
    /// `--jwt-public-key` (P-256), an ES256 token in `?token=`: `welcome`.
    QueryEs256,
    /// `--jwt-secret`, no credentials at the upgrade, then `auth {token}` (HS256) as the
    /// first message: `auth_success`.
    FirstMessageHs256,
}

/// One row of the results table.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Short name, accepted by `--only`.
    pub id: &'static str,
    /// Row label.
    pub label: &'static str,
    /// What loadgen does.
    pub load: Load,
    /// The metric the row shows.
    pub metric: &'static str,
    /// Its unit.
    pub unit: Unit,
    /// Whether it also runs against the plain-TCP floor.
    pub raw: bool,
    /// Metrics of the latency table (p50, p99), if the scenario has one.
    pub latency: Option<(&'static str, &'static str)>,
}

/// Connections of the throughput scenarios.
const CONNECTIONS: usize = 100;
/// Messages in flight per connection when pipelined.
const DEPTH: usize = 16;
/// Handshakes in flight.
const HANDSHAKE_CONCURRENCY: usize = 50;
/// The two message sizes.
const SMALL: usize = 20;
const LARGE: usize = 16 * 1024;

const RTT: Option<(&str, &str)> = Some((metric::RTT_P50_US, metric::RTT_P99_US));
const PUBLISH_TO_RECEIVE: Option<(&str, &str)> =
    Some((metric::LATENCY_P50_US, metric::LATENCY_P99_US));
/// Broadcasts in flight in the max-rate fan-out rows.
const FANOUT_WINDOW: usize = 8;
/// Publishes per second of the paced fan-out rows.
const FANOUT_RATE: u32 = 1_000;
/// Long pollers of `poll-rtt`.
const POLLERS: usize = 100;

/// A `/ws` session row at `concurrency` handshakes in flight.
const fn sessions(
    id: &'static str,
    label: &'static str,
    concurrency: usize,
    auth: Auth,
) -> Scenario {
    Scenario {
        id,
        label,
        load: Load::Sessions { concurrency, auth },
        metric: metric::HANDSHAKES_PER_S,
        unit: Unit::PerSecond,
        raw: false,
        latency: Some((metric::HANDSHAKE_P50_US, metric::HANDSHAKE_P99_US)),
    }
}

const fn fanout(id: &'static str, label: &'static str, subscribers: usize, rate: u32) -> Scenario {
    Scenario {
        id,
        label,
        load: Load::Fanout {
            subscribers,
            rate,
            feed: Feed::Broadcast,
        },
        metric: metric::DELIVERIES_PER_S,
        unit: Unit::PerSecond,
        raw: false,
        latency: PUBLISH_TO_RECEIVE,
    }
}

/// A max-rate fan-out row whose subscribers are SSE streams.
const fn sse_fanout(id: &'static str, label: &'static str, streams: usize) -> Scenario {
    Scenario {
        load: Load::Fanout {
            subscribers: streams,
            rate: 0,
            feed: Feed::Sse,
        },
        ..fanout(id, label, streams, 0)
    }
}

/// A max-rate fan-out row on the Socket.IO endpoints.
const fn sio_fanout(id: &'static str, label: &'static str, subscribers: usize) -> Scenario {
    Scenario {
        load: Load::Fanout {
            subscribers,
            rate: 0,
            feed: Feed::SocketIo,
        },
        ..fanout(id, label, subscribers, 0)
    }
}

/// A fan-out row on a cluster of `nodes` processes sharing the room through Redis.
const fn redis_fanout(
    id: &'static str,
    label: &'static str,
    nodes: usize,
    subscribers: usize,
    rate: u32,
) -> Scenario {
    Scenario {
        load: Load::Fanout {
            subscribers,
            rate,
            feed: Feed::Redis { nodes },
        },
        ..fanout(id, label, subscribers, rate)
    }
}

/// Server processes of the cross-node rows.
const CLUSTER_NODES: usize = 3;

/// Rows of ours compared with another row of ours, the WebSocket transport an HTTP feed
/// stands in for: (row, baseline). The report shows row ÷ baseline.
pub const COMPARISONS: [(&str, &str); 2] = [
    ("sse-fanout-1k", "fanout-1k"),
    ("sse-fanout-10k", "fanout-10k"),
];

/// Rows of ours with authentication compared with the same flow without it: (row,
/// baseline). The report shows row ÷ baseline for the rate and the latency difference.
pub const AUTH_COMPARISONS: [(&str, &str); 4] = [
    ("handshakes-jwt-hs256", "handshakes-ws"),
    ("handshakes-jwt-es256", "handshakes-ws"),
    ("handshakes-first-message", "handshakes-ws"),
    ("latency-first-message", "latency-ws"),
];

/// All scenarios, in row order.
pub const SCENARIOS: [Scenario; 28] = [
    Scenario {
        id: "closed-20b",
        label: "closed loop, 20 B (msgs/s)",
        load: Load::Closed { size: SMALL },
        metric: metric::MSGS_PER_S,
        unit: Unit::PerSecond,
        raw: true,
        latency: RTT,
    },
    Scenario {
        id: "closed-16k",
        label: "closed loop, 16 KiB (msgs/s)",
        load: Load::Closed { size: LARGE },
        metric: metric::MSGS_PER_S,
        unit: Unit::PerSecond,
        raw: true,
        latency: RTT,
    },
    Scenario {
        id: "pipelined-20b",
        label: "pipelined ×16, 20 B (msgs/s)",
        load: Load::Pipelined {
            size: SMALL,
            depth: DEPTH,
        },
        metric: metric::MSGS_PER_S,
        unit: Unit::PerSecond,
        raw: true,
        latency: RTT,
    },
    Scenario {
        id: "pipelined-16k",
        label: "pipelined ×16, 16 KiB (msgs/s)",
        load: Load::Pipelined {
            size: LARGE,
            depth: DEPTH,
        },
        metric: metric::MSGS_PER_S,
        unit: Unit::PerSecond,
        raw: true,
        latency: RTT,
    },
    Scenario {
        id: "handshakes",
        label: "handshakes/s",
        load: Load::Handshakes {
            concurrency: HANDSHAKE_CONCURRENCY,
        },
        metric: metric::HANDSHAKES_PER_S,
        unit: Unit::PerSecond,
        raw: true,
        latency: Some((metric::HANDSHAKE_P50_US, metric::HANDSHAKE_P99_US)),
    },
    Scenario {
        id: "idle",
        label: "memory per idle connection",
        load: Load::Idle { members: false },
        metric: metric::BYTES_PER_CONN,
        unit: Unit::Bytes,
        raw: true,
        latency: None,
    },
    Scenario {
        id: "idle-members",
        label: "memory per idle room member",
        load: Load::Idle { members: true },
        metric: metric::BYTES_PER_CONN,
        unit: Unit::Bytes,
        raw: false,
        latency: None,
    },
    Scenario {
        id: "idle-sse",
        label: "memory per idle SSE stream",
        load: Load::IdleSse,
        metric: metric::BYTES_PER_CONN,
        unit: Unit::Bytes,
        raw: false,
        latency: None,
    },
    fanout(
        "fanout-1k",
        "fan-out 1k subs, max rate (deliveries/s)",
        1_000,
        0,
    ),
    fanout(
        "fanout-10k",
        "fan-out 10k subs, max rate (deliveries/s)",
        10_000,
        0,
    ),
    fanout(
        "fanout-1k-paced",
        "fan-out 1k subs @1000/s (deliveries/s)",
        1_000,
        FANOUT_RATE,
    ),
    fanout(
        "fanout-10k-paced",
        "fan-out 10k subs @1000/s (deliveries/s)",
        10_000,
        FANOUT_RATE,
    ),
    sse_fanout(
        "sse-fanout-1k",
        "SSE fan-out 1k streams, max rate (deliveries/s)",
        1_000,
    ),
    sse_fanout(
        "sse-fanout-10k",
        "SSE fan-out 10k streams, max rate (deliveries/s)",
        10_000,
    ),
    Scenario {
        id: "poll-rtt",
        label: "long-poll round trips, 100 pollers (polls/s)",
        load: Load::PollRtt { pollers: POLLERS },
        metric: metric::POLLS_PER_S,
        unit: Unit::PerSecond,
        raw: false,
        latency: PUBLISH_TO_RECEIVE,
    },
    sessions(
        "handshakes-ws",
        "/ws session, no auth (handshakes/s)",
        HANDSHAKE_CONCURRENCY,
        Auth::None,
    ),
    sessions(
        "handshakes-jwt-hs256",
        "/ws session, JWT HS256 in ?token= (handshakes/s)",
        HANDSHAKE_CONCURRENCY,
        Auth::QueryHs256,
    ),
    sessions(
        "handshakes-jwt-es256",
        "/ws session, JWT ES256 in ?token= (handshakes/s)",
        HANDSHAKE_CONCURRENCY,
        Auth::QueryEs256,
    ),
    sessions(
        "handshakes-first-message",
        "/ws session, first-message auth HS256 (handshakes/s)",
        HANDSHAKE_CONCURRENCY,
        Auth::FirstMessageHs256,
    ),
    sessions(
        "latency-ws",
        "/ws session one at a time, no auth (handshakes/s)",
        1,
        Auth::None,
    ),
    sessions(
        "latency-first-message",
        "/ws session one at a time, first-message auth HS256 (handshakes/s)",
        1,
        Auth::FirstMessageHs256,
    ),
    sio_fanout(
        "sio-fanout-1k",
        "Socket.IO fan-out 1k subs, max rate (deliveries/s)",
        1_000,
    ),
    sio_fanout(
        "sio-fanout-10k",
        "Socket.IO fan-out 10k subs, max rate (deliveries/s)",
        10_000,
    ),
    Scenario {
        id: "sio-echo",
        label: "Socket.IO echo, acks ×16 in flight, 20 B (round trips/s)",
        load: Load::SioEcho {
            connections: CONNECTIONS,
            depth: DEPTH,
            size: SMALL,
        },
        metric: metric::MSGS_PER_S,
        unit: Unit::PerSecond,
        raw: false,
        latency: RTT,
    },
    redis_fanout(
        "fanout-redis-10k",
        "fan-out over Redis, 3 nodes, 10k subs, max rate (deliveries/s)",
        CLUSTER_NODES,
        10_000,
        0,
    ),
    redis_fanout(
        "fanout-redis-10k-paced",
        "fan-out over Redis, 3 nodes, 10k subs @1000/s (deliveries/s)",
        CLUSTER_NODES,
        10_000,
        FANOUT_RATE,
    ),
    redis_fanout(
        "fanout-redis-1node-10k",
        "fan-out over Redis, 1 node, 10k subs, max rate (deliveries/s)",
        1,
        10_000,
        0,
    ),
    Scenario {
        id: "idle-sio",
        label: "memory per idle Socket.IO room member",
        load: Load::IdleSio,
        metric: metric::BYTES_PER_CONN,
        unit: Unit::Bytes,
        raw: false,
        latency: None,
    },
];

impl Scenario {
    /// loadgen's subcommand and options for this scenario.
    pub fn loadgen_args(&self, p: &Profile) -> Vec<String> {
        let timing = |args: &mut Vec<String>| {
            args.extend(["--warmup".into(), p.warmup.to_string()]);
            args.extend(["--duration".into(), p.duration.to_string()]);
        };
        let mut args: Vec<String> = Vec::new();
        match self.load {
            Load::Closed { size } => {
                args.extend(["closed".into(), "--size".into(), size.to_string()]);
                args.extend(["--connections".into(), CONNECTIONS.to_string()]);
                timing(&mut args);
            }
            Load::Pipelined { size, depth } => {
                args.extend(["pipelined".into(), "--size".into(), size.to_string()]);
                args.extend(["--connections".into(), CONNECTIONS.to_string()]);
                args.extend(["--depth".into(), depth.to_string()]);
                timing(&mut args);
            }
            Load::Handshakes { concurrency } => {
                args.extend([
                    "handshakes".into(),
                    "--concurrency".into(),
                    concurrency.to_string(),
                ]);
                timing(&mut args);
            }
            Load::Idle { .. } | Load::IdleSse | Load::IdleSio => {
                args.extend([
                    "idle".into(),
                    "--connections".into(),
                    p.idle_connections.to_string(),
                ]);
                args.extend(["--settle".into(), p.settle.to_string()]);
                args.extend(["--hold".into(), IDLE_HOLD.as_secs().to_string()]);
                match self.load {
                    Load::IdleSse => args.push("--sse".into()),
                    Load::IdleSio => args.extend(["--protocol".into(), "socketio".into()]),
                    _ => {}
                }
            }
            Load::Fanout {
                subscribers,
                rate,
                feed,
            } => {
                args.extend([
                    "fanout".into(),
                    "--subscribers".into(),
                    subscribers.to_string(),
                ]);
                match feed {
                    Feed::Broadcast => {}
                    Feed::Sse => args.extend(["--transport".into(), "sse".into()]),
                    Feed::SocketIo => args.extend(["--protocol".into(), "socketio".into()]),
                    // The driver adds the other nodes (`--extra-target`) and the protocol.
                    Feed::Redis { .. } => args.push("--marks".into()),
                }
                args.extend(["--rate".into(), rate.to_string()]);
                args.extend(["--window".into(), FANOUT_WINDOW.to_string()]);
                args.extend(["--size".into(), SMALL.to_string()]);
                timing(&mut args);
            }
            Load::PollRtt { pollers } => {
                args.extend(["fanout".into(), "--transport".into(), "poll".into()]);
                args.extend(["--subscribers".into(), pollers.to_string()]);
                // One broadcast in flight: the next is published once every poller (and
                // the publisher) got the last, so each answer carries exactly one message.
                args.extend(["--rate".into(), "0".into(), "--window".into(), "1".into()]);
                args.extend(["--size".into(), SMALL.to_string()]);
                timing(&mut args);
            }
            Load::SioEcho {
                connections,
                depth,
                size,
            } => {
                args.extend(["sio-echo".into(), "--size".into(), size.to_string()]);
                args.extend(["--connections".into(), connections.to_string()]);
                args.extend(["--depth".into(), depth.to_string()]);
                timing(&mut args);
            }
            Load::Sessions { concurrency, auth } => {
                args.extend([
                    "handshakes".into(),
                    "--concurrency".into(),
                    concurrency.to_string(),
                ]);
                // The first-message flow's `--auth-token` (added by the driver, which has
                // the token) waits for `auth_success` instead.
                if auth != Auth::FirstMessageHs256 {
                    args.push("--session".into());
                }
                timing(&mut args);
            }
        }
        args
    }

    /// Whether the row runs against switchboard's `/ws` session endpoint (ours only).
    pub fn uses_session_endpoint(&self) -> bool {
        matches!(self.load, Load::Sessions { .. })
    }

    /// How the row authenticates (`None` for every row but the `/ws` session ones).
    pub fn auth(&self) -> Option<Auth> {
        match self.load {
            Load::Sessions { auth, .. } => Some(auth),
            _ => None,
        }
    }

    /// Whether this is a fan-out row.
    pub fn is_fanout(&self) -> bool {
        matches!(self.load, Load::Fanout { .. })
    }

    /// Whether loadgen speaks the server's broadcast protocol (`--protocol`, the
    /// endpoint's): fan-out publishers and room members. Unless the row [uses the HTTP
    /// feeds](Self::uses_http_feeds), it runs against the broadcast endpoint.
    pub fn uses_broadcast_endpoint(&self) -> bool {
        matches!(
            self.load,
            Load::Fanout {
                feed: Feed::Broadcast | Feed::Sse,
                ..
            } | Load::Idle { members: true }
                | Load::PollRtt { .. }
        )
    }

    /// Whether the row runs against a server's Socket.IO endpoint (`sio`): Socket.IO
    /// fan-out and idle members, with `--protocol socketio` in its own arguments.
    pub fn uses_sio_endpoint(&self) -> bool {
        matches!(
            self.load,
            Load::Fanout {
                feed: Feed::SocketIo,
                ..
            } | Load::IdleSio
        )
    }

    /// Whether the row runs on a cluster of the server's `cluster` endpoints sharing one
    /// `redis-server` (see [`Feed::Redis`]).
    pub fn uses_cluster_endpoint(&self) -> bool {
        self.nodes().is_some()
    }

    /// The cluster's server processes, for a cross-node row.
    pub fn nodes(&self) -> Option<usize> {
        match self.load {
            Load::Fanout {
                feed: Feed::Redis { nodes },
                ..
            } => Some(nodes),
            _ => None,
        }
    }

    /// Whether the row runs against a server's Socket.IO endpoint in echo mode (`sio_echo`).
    pub fn uses_sio_echo_endpoint(&self) -> bool {
        matches!(self.load, Load::SioEcho { .. })
    }

    /// Whether the row needs switchboard's HTTP feeds (SSE, long polling): it runs against
    /// a server's `http` endpoint, and is `n/a` for servers without one.
    pub fn uses_http_feeds(&self) -> bool {
        matches!(
            self.load,
            Load::Fanout {
                feed: Feed::Sse,
                ..
            } | Load::IdleSse
                | Load::PollRtt { .. }
        )
    }

    /// Whether the driver samples server memory before the run and at the hold.
    pub fn samples_memory(&self) -> bool {
        matches!(self.load, Load::Idle { .. } | Load::IdleSse | Load::IdleSio)
    }

    /// The longest a loadgen run of this scenario may take before it is killed.
    pub fn deadline(&self, p: &Profile) -> Duration {
        let run = match self.load {
            // Connection setup (bounded at 30 s by loadgen) plus the run.
            Load::Closed { .. } | Load::Pipelined { .. } | Load::SioEcho { .. } => {
                30.0 + p.warmup + p.duration
            }
            Load::Handshakes { .. } | Load::Sessions { .. } => p.warmup + p.duration,
            // Opening (bounded at 120 s by loadgen), settling, and the longest hold.
            Load::Idle { .. } | Load::IdleSse | Load::IdleSio => {
                120.0 + p.settle + IDLE_HOLD.as_secs_f64()
            }
            // Setup (90 s at most) + sync (30 s) + the run + drain and flush (4 s).
            Load::Fanout { .. } | Load::PollRtt { .. } => 90.0 + 30.0 + p.warmup + p.duration + 4.0,
        };
        // A cross-node row waits up to 10 s at each of its two marks while Redis is sampled.
        let run = if self.uses_cluster_endpoint() {
            run + 20.0
        } else {
            run
        };
        Duration::from_secs_f64(run + 15.0)
    }

    /// A one-line description of the load, for the report.
    pub fn describe(&self, p: &Profile) -> String {
        match self.load {
            Load::Closed { size } => format!(
                "{CONNECTIONS} connections × 1 message of {size} B in flight, {} s warm-up + {} s",
                p.warmup, p.duration
            ),
            Load::Pipelined { size, depth } => format!(
                "{CONNECTIONS} connections × {depth} messages of {size} B in flight, {} s warm-up + {} s",
                p.warmup, p.duration
            ),
            Load::Handshakes { concurrency } => format!(
                "{concurrency} concurrent connect + upgrade + drop, {} s warm-up + {} s",
                p.warmup, p.duration
            ),
            Load::Sessions { concurrency, auth } => {
                let flow = match auth {
                    Auth::None => "no authentication configured, up to `welcome`",
                    Auth::QueryHs256 => {
                        "server with `--jwt-secret`, an HS256 JWT in `/ws?token=`, up to `welcome`"
                    }
                    Auth::QueryEs256 => {
                        "server with `--jwt-public-key` (P-256), an ES256 JWT in `/ws?token=`, \
                         up to `welcome`"
                    }
                    Auth::FirstMessageHs256 => {
                        "server with `--jwt-secret`, no credentials at the upgrade, then \
                         `{\"type\":\"auth\",\"token\":…}` (HS256) up to `auth_success`"
                    }
                };
                let tokens = if auth == Auth::None {
                    ""
                } else {
                    " (one token, exp in 1 h, reused by every connection: verification is \
                     measured, not minting)"
                };
                format!(
                    "{concurrency} concurrent connect + upgrade + native session on `/ws`, {flow}, \
                     then drop{tokens}, {} s warm-up + {} s",
                    p.warmup, p.duration
                )
            }
            Load::Fanout {
                subscribers,
                rate: 0,
                feed: Feed::Sse,
            } => format!(
                "1 WebSocket publisher (native `publish`, as in `fanout-*`) + {subscribers} SSE \
                 streams (`GET /events?channels=bench`) on the room, {SMALL} B payloads, at most \
                 {FANOUT_WINDOW} broadcasts in flight (until every copy arrived), {} s warm-up + \
                 {} s: messages received by all streams per second, publish-to-receive latency",
                p.warmup, p.duration
            ),
            Load::Fanout {
                subscribers,
                rate: 0,
                feed: Feed::SocketIo,
            } => format!(
                "1 publisher + {subscribers} subscribers, all Socket.IO clients (websocket \
                 transport, namespace `/`) in room `bench` (`join_room` with its ack), {SMALL} B \
                 payloads published as `publish` {{room, data}} events and delivered to every \
                 member, the publisher included, as `message` events carrying an object; at \
                 most {FANOUT_WINDOW} broadcasts in flight (until every copy arrived), {} s \
                 warm-up + {} s: messages received by all subscribers per second, \
                 publish-to-receive latency",
                p.warmup, p.duration
            ),
            Load::Fanout {
                subscribers,
                rate,
                feed: Feed::Redis { nodes },
            } => {
                let publisher = if rate == 0 {
                    format!(
                        "at most {FANOUT_WINDOW} broadcasts in flight (until every copy arrived)"
                    )
                } else {
                    format!("the publisher at a fixed {rate} msgs/s (open loop)")
                };
                let spread = if nodes == 1 {
                    "all on that node".to_string()
                } else {
                    format!("spread evenly over the {nodes} nodes, the publisher on the first")
                };
                format!(
                    "a fresh `redis-server` (`--save \"\" --appendonly no`) and {nodes} server \
                     process(es) sharing the room through it (switchboard `--broker \
                     redis://…`, socketioxide with `socketioxide-redis`), all on the server \
                     core; 1 publisher + {subscribers} subscribers on the fan-out endpoints, \
                     {spread}, {SMALL} B payloads, {publisher}, {} s warm-up + {} s: messages \
                     received by all subscribers per second, publish-to-receive latency; Redis \
                     `INFO` sampled after sync (nothing in flight) and after the drain: \
                     commands and bytes per publish",
                    p.warmup, p.duration
                )
            }
            Load::Fanout { subscribers, rate: 0, .. } => format!(
                "1 publisher + {subscribers} subscribers in one room, {SMALL} B payloads, at most \
                 {FANOUT_WINDOW} broadcasts in flight (until every copy arrived), {} s warm-up + {} s: \
                 messages received by all subscribers per second, publish-to-receive latency",
                p.warmup, p.duration
            ),
            Load::Fanout {
                subscribers, rate, ..
            } => format!(
                "1 publisher at a fixed {rate} msgs/s (open loop) + {subscribers} subscribers in one \
                 room, {SMALL} B payloads, {} s warm-up + {} s: messages received by all subscribers \
                 per second, publish-to-receive latency",
                p.warmup, p.duration
            ),
            Load::Idle { members: false } => format!(
                "(RSS with {} upgraded idle connections − RSS before) ÷ connections, sampled {} s after the last upgrade",
                p.idle_connections, p.settle
            ),
            Load::Idle { members: true } => format!(
                "(RSS with {} idle connections that joined the broadcast room (as fan-out \
                 subscribers do) − RSS before) ÷ connections, sampled {} s after the last join",
                p.idle_connections, p.settle
            ),
            Load::IdleSio => format!(
                "(RSS with {} idle Socket.IO clients (websocket transport, connected to namespace \
                 `/`, room `bench` joined with its ack; Engine.IO pings answered) − RSS before) \
                 ÷ connections, sampled {} s after the last join",
                p.idle_connections, p.settle
            ),
            Load::SioEcho {
                connections,
                depth,
                size,
            } => format!(
                "{connections} Socket.IO clients (websocket transport, namespace `/`) × {depth} \
                 `message-with-ack` events with a {size} B string in flight, each acknowledged \
                 by the server with the same arguments (switchboard with `--echo`), {} s \
                 warm-up + {} s: round trips per second",
                p.warmup, p.duration
            ),
            Load::IdleSse => format!(
                "(RSS with {} idle SSE streams, all on one room (`GET /events?channels=bench`, \
                 nothing read after `connected`) − RSS before) ÷ streams, sampled {} s after the \
                 last one opened",
                p.idle_connections, p.settle
            ),
            Load::PollRtt { pollers } => format!(
                "{pollers} long pollers on one room (`GET /poll?channels=bench&cursor=…`, \
                 keep-alive HTTP/1.1, each polling again with the new cursor as soon as an answer \
                 is complete) + 1 WebSocket publisher keeping 1 broadcast in flight (the next \
                 once every poller and the publisher got it, so each answer carries one message), \
                 {SMALL} B payloads, {} s warm-up + {} s: poll answers per second (= messages \
                 delivered per second), publish-to-receive latency",
                p.warmup, p.duration
            ),
        }
    }
}

/// The longest loadgen holds idle connections if the driver never releases it.
const IDLE_HOLD: Duration = Duration::from_secs(30);
