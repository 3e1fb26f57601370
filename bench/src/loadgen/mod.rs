//! `loadgen`: a load generator that speaks WebSocket itself, at the byte level, so
//! that it costs far less per message than the servers it measures (and, for
//! switchboard's HTTP feeds, just enough HTTP/1.1: `http`, `sse`, `poll`; for the
//! Socket.IO rows, just enough Engine.IO and Socket.IO: `socketio`).
//!
//! One subcommand per scenario; each prints JSON lines (see [`crate::report`]).
//! A new scenario is a new module plus a variant of [`Command`].

pub mod fanout;
pub mod frame;
pub mod handshake;
pub mod handshakes;
pub mod http;
pub mod idle;
pub mod latency;
pub mod poll;
pub mod sio_echo;
pub mod socketio;
pub mod sse;
pub mod target;
pub mod throughput;
pub mod window;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::report::{emit, Event};
use target::Target;

/// Command line of `loadgen`.
#[derive(Debug, Parser)]
#[command(about = "WebSocket echo load generator; prints JSON lines")]
pub struct Cli {
    /// Server address, e.g. 127.0.0.1:9001.
    #[arg(long)]
    pub target: SocketAddr,
    /// Request path of the WebSocket upgrade.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Plain TCP, for the floor: no handshake, no framing; a message is --size bytes
    /// and replies are counted by bytes.
    #[arg(long)]
    pub raw: bool,
    /// Don't bind client sockets to 127.0.0.1..=250 before connecting.
    #[arg(long)]
    pub no_spread: bool,
    /// The scenario to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The scenarios.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// C connections, each with exactly one message in flight.
    Closed(LoadArgs),
    /// C connections, each keeping --depth messages in flight.
    Pipelined {
        /// Connections, sizes and durations.
        #[command(flatten)]
        load: LoadArgs,
        /// Messages in flight per connection.
        #[arg(long, default_value_t = 16)]
        depth: usize,
    },
    /// Connections opened, upgraded and dropped as fast as possible.
    Handshakes(HandshakeArgs),
    /// N connections opened, upgraded and held idle while the driver samples memory.
    Idle(IdleArgs),
    /// One publisher and N subscribers in one room: deliveries/s and latency.
    Fanout(FanoutArgs),
    /// Socket.IO round trips: C connections each keeping --depth
    /// `message-with-ack` events in flight, answered by the server's acks.
    SioEcho(SioEchoArgs),
}

/// Options of `sio-echo`.
#[derive(Debug, Args)]
pub struct SioEchoArgs {
    /// Concurrent connections.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Acknowledged events in flight per connection.
    #[arg(long, default_value_t = 16)]
    pub depth: usize,
    /// Bytes of the event's string argument.
    #[arg(long, default_value_t = 20)]
    pub size: usize,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
}

/// Options of `fanout`.
#[derive(Debug, Args)]
pub struct FanoutArgs {
    /// The server's protocol.
    #[arg(long, value_enum)]
    pub protocol: fanout::Protocol,
    /// How subscribers receive: WebSocket members (at --path), or switchboard's SSE
    /// streams or long pollers (the publisher is a WebSocket member either way).
    #[arg(long, value_enum, default_value = "ws")]
    pub transport: fanout::Transport,
    /// Subscriber connections (the publisher is one more).
    #[arg(long, default_value_t = 1_000)]
    pub subscribers: usize,
    /// Publishes per second; 0 = max rate, paced by --window.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Max-rate mode: broadcasts in flight (not yet received by every connection).
    #[arg(long, default_value_t = 8)]
    pub window: usize,
    /// Application payload bytes (at least 17).
    #[arg(long, default_value_t = 20)]
    pub size: usize,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Another node of the same cluster (repeatable, or comma-separated): the subscribers
    /// are spread evenly over --target and these; the publisher stays on --target.
    #[arg(long, value_delimiter = ',')]
    pub extra_target: Vec<SocketAddr>,
    /// Print a `mark` event after sync (nothing in flight, before the first publish) and
    /// one after the drain (every connection open), each time waiting for a line on stdin
    /// (at most 10 s): the driver samples Redis at both.
    #[arg(long)]
    pub marks: bool,
}

/// Options of `closed` and `pipelined`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Concurrent connections.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 20)]
    pub size: usize,
    /// Send text frames (default: binary).
    #[arg(long)]
    pub text: bool,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
}

/// Options of `handshakes`.
#[derive(Debug, Args)]
pub struct HandshakeArgs {
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// switchboard's `/ws`: drop the connection after the native session's first message
    /// (`welcome`) rather than right after the 101.
    #[arg(long)]
    pub session: bool,
    /// First-message authentication on switchboard's `/ws`: after the 101 send
    /// `{"type":"auth","token":TOKEN}` and wait for `auth_success` (instead of `welcome`).
    #[arg(long, value_name = "TOKEN", conflicts_with = "session")]
    pub auth_token: Option<String>,
    /// Seconds before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
}

/// Options of `idle`.
#[derive(Debug, Args)]
pub struct IdleArgs {
    /// Connections to open. The open-file limit (20 000 here) caps one process
    /// at about 19 000.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Handshakes in flight while opening.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// Seconds to wait after opening before announcing the hold.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
    /// Longest hold in seconds; the hold ends earlier when stdin reaches EOF.
    #[arg(long, default_value_t = 30.0)]
    pub hold: f64,
    /// Join the broadcast room with this protocol (as `fanout` subscribers do) and hold
    /// the connections as idle room members.
    #[arg(long, value_enum)]
    pub protocol: Option<fanout::Protocol>,
    /// Hold switchboard SSE streams on the room (`GET /events?channels=bench`) instead of
    /// WebSocket connections.
    #[arg(long, conflicts_with = "protocol")]
    pub sse: bool,
}

/// Entry point of the `loadgen` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // One thread: the driver pins loadgen to one core, like the server.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli));
    // Don't wait for the thread blocked on stdin (idle's hold) to finish.
    runtime.shutdown_background();
    match outcome {
        Ok(mut result) => {
            if let Some(cpu) = crate::procfs::cpu_seconds(std::process::id()) {
                result
                    .metrics
                    .insert(crate::report::metric::LOADGEN_CPU_SECONDS.into(), cpu);
            }
            emit(&Event::Result(result));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<crate::report::RunResult> {
    let target = Target {
        addr: cli.target,
        path: cli.path,
        raw: cli.raw,
        spread: !cli.no_spread,
    };
    match cli.command {
        Command::Closed(load) => throughput::run(&target, "closed", &load.into_load(1)).await,
        Command::Pipelined { load, depth } => {
            throughput::run(&target, "pipelined", &load.into_load(depth)).await
        }
        Command::Handshakes(h) => {
            let until = match (&h.auth_token, h.session) {
                (Some(token), _) => handshakes::Until::first_message(token),
                (None, true) => handshakes::Until::Welcome,
                (None, false) => handshakes::Until::Upgrade,
            };
            handshakes::run(&target, h.concurrency, until, h.warmup, h.duration).await
        }
        Command::Idle(i) => {
            let idle = idle::Idle {
                connections: i.connections,
                concurrency: i.concurrency,
                settle: i.settle,
                hold: i.hold,
                join: i.protocol,
                sse: i.sse,
            };
            idle::run(&target, &idle).await
        }
        Command::Fanout(a) => {
            let f = fanout::Fanout {
                protocol: a.protocol,
                transport: a.transport,
                subscribers: a.subscribers,
                rate: a.rate,
                window: a.window,
                size: a.size,
                warmup: a.warmup,
                duration: a.duration,
                extra_targets: a.extra_target,
                marks: a.marks,
            };
            fanout::run(&target, &f).await
        }
        Command::SioEcho(a) => {
            let e = sio_echo::SioEcho {
                connections: a.connections,
                depth: a.depth,
                size: a.size,
                warmup: a.warmup,
                duration: a.duration,
            };
            sio_echo::run(&target, &e).await
        }
    }
}

impl LoadArgs {
    fn into_load(self, depth: usize) -> throughput::Load {
        throughput::Load {
            connections: self.connections,
            depth: depth.max(1),
            size: self.size,
            text: self.text,
            warmup: self.warmup,
            duration: self.duration,
        }
    }
}
