//! Command line of `bench`, and the run profile it implies.

use std::path::PathBuf;

use clap::Parser;

/// `cargo run --release --manifest-path bench/Cargo.toml --bin bench -- [OPTIONS]`
#[derive(Debug, Parser)]
#[command(about = "Runs every scenario against every server and writes docs/benchmarks.md")]
pub struct Args {
    /// Smoke test: 1 repeat, short runs, fewer idle connections (about 2 minutes).
    #[arg(long)]
    pub quick: bool,
    /// Runs per (server, scenario); the table shows medians. Default 3 (1 with --quick).
    #[arg(long)]
    pub repeats: Option<usize>,
    /// Comma-separated server and/or scenario names to run (default: all), e.g.
    /// `--only tungstenite,tcp-floor` or `--only closed-20b,idle`.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Don't run cargo; use binaries already built in release mode.
    #[arg(long)]
    pub no_build: bool,
    /// Use this switchboard binary instead of building the root workspace.
    #[arg(long)]
    pub switchboard_bin: Option<PathBuf>,
    /// Extra argument for `switchboard serve` (repeatable), e.g.
    /// `--switchboard-arg=--threads=1`.
    #[arg(long = "switchboard-arg", allow_hyphen_values = true)]
    pub switchboard_args: Vec<String>,
    /// Root of the Switchboard repository (default: the parent of bench/).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Where to write the markdown report (default: <root>/docs/benchmarks.md).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the table only; don't write the markdown report.
    #[arg(long)]
    pub no_write: bool,
    /// Run servers and loadgen at normal priority instead of `nice -n -10`.
    #[arg(long)]
    pub no_renice: bool,
    /// CPU the servers are pinned to.
    #[arg(long, default_value_t = 0)]
    pub server_cpu: usize,
    /// CPU loadgen is pinned to.
    #[arg(long, default_value_t = 1)]
    pub loadgen_cpu: usize,
}

/// Durations and sizes of one invocation.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Runs per (server, scenario).
    pub repeats: usize,
    /// Seconds of load before each measurement.
    pub warmup: f64,
    /// Seconds of measurement per throughput or handshake run.
    pub duration: f64,
    /// Connections held in the idle scenario.
    pub idle_connections: usize,
    /// Seconds between opening the idle connections and sampling memory.
    pub settle: f64,
}

/// Seconds from the last upgrade to the memory sample of the idle scenario. Switchboard parks
/// a connection idle for `park_idle_after` (default 5 s; the park happens between one and two
/// times that after its last byte): the sample is taken once every connection had the chance,
/// so the row shows what a connection costs while idle, not during its first seconds. The
/// other servers' memory does not change with time.
const IDLE_SETTLE: f64 = 12.0;

impl Args {
    /// The profile: defaults (or `--quick`), then explicit overrides.
    pub fn profile(&self) -> Profile {
        let mut profile = if self.quick {
            Profile {
                repeats: 1,
                warmup: 0.5,
                duration: 1.5,
                idle_connections: 2_000,
                settle: IDLE_SETTLE,
            }
        } else {
            Profile {
                repeats: 3,
                warmup: 1.0,
                duration: 5.0,
                idle_connections: 10_000,
                settle: IDLE_SETTLE,
            }
        };
        if let Some(repeats) = self.repeats {
            profile.repeats = repeats.max(1);
        }
        profile
    }
}
