//! `bench`: the one benchmark command. It builds the servers and `loadgen`, then
//! for every repeat, server and scenario starts a fresh server pinned to one core,
//! runs `loadgen` pinned to the other, and finally prints the median table and
//! writes it to docs/benchmarks.md.
//!
//! Repeats are the outer loop, so slow drift on a shared machine spreads over all
//! servers instead of landing on one.

pub mod args;
pub mod auth;
pub mod binaries;
pub mod cargo;
pub mod cluster;
pub mod doc;
pub mod machine;
pub mod measure;
pub mod node;
pub mod placement;
pub mod redis;
pub mod runner;
pub mod scenarios;
pub mod servers;
pub mod table;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;

use crate::report::{metric, RunResult};
use args::Args;
use binaries::Binaries;
use measure::{Failure, Session};
use placement::Placement;
use scenarios::{Scenario, SCENARIOS};
use servers::{Server, SERVERS};
use table::{Outcome, Results};

/// Entry point of the `bench` binary.
pub fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let bench_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = match &args.root {
        Some(root) => root.clone(),
        None => bench_dir
            .parent()
            .context("bench/ has no parent")?
            .to_path_buf(),
    };
    let logs = bench_dir.join("target").join("bench-logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let profile = args.profile();
    let (servers, scenarios) = select(&args.only)?;
    let mut notes = Vec::new();
    let placement = Placement::check(
        args.server_cpu,
        args.loadgen_cpu,
        !args.no_renice,
        &mut notes,
    );
    let date = machine::utc_now();
    let bins = Binaries::get(&args, &bench_dir, &root, &logs, &servers)?;
    // Only the `/ws` session rows with authentication use them; if minting fails, they fail.
    let credentials =
        auth::Credentials::mint(&root).map_err(|e| format!("cannot mint the tokens: {e:#}"));

    let session = Session {
        profile: &profile,
        loadgen: &bins.loadgen,
        placement: &placement,
        logs: &logs,
        switchboard_args: &args.switchboard_args,
        credentials: &credentials,
    };
    let mut results = Results::default();
    // Every outcome as a JSON line, for analysis beyond the medians.
    let runs_log = logs.join("runs.jsonl");
    let _ = std::fs::remove_file(&runs_log);
    // Servers that could not be built or started: later runs fail fast.
    let mut broken: HashMap<&str, String> = bins.broken.clone();
    for rep in 1..=profile.repeats {
        // Rotate the server order each repeat, so that no server always runs first (right
        // after the previous repeat's heaviest scenarios).
        let order: Vec<_> = servers
            .iter()
            .cycle()
            .skip((rep - 1) % servers.len().max(1))
            .take(servers.len())
            .collect();
        for server in order {
            for scenario in &scenarios {
                // Let the kernel finish the previous run's connection teardown first.
                crate::procfs::wait_until_quiet(
                    &placement.cpus(),
                    std::time::Duration::from_secs(20),
                );
                let outcome = if let Some(endpoint) = server.endpoint(scenario) {
                    let name = endpoint.kind.bin();
                    if let Some(reason) = broken.get(name) {
                        Outcome::Failed(reason.clone())
                    } else {
                        let bin = &bins.servers[name];
                        match session.measure(server, endpoint, bin, scenario, rep) {
                            Ok(result) => Outcome::Done(result),
                            Err(Failure::Start(reason)) => {
                                broken.insert(name, reason.clone());
                                Outcome::Failed(reason)
                            }
                            Err(Failure::Run(reason)) => Outcome::Failed(reason),
                        }
                    }
                } else {
                    Outcome::NotApplicable
                };
                eprintln!(
                    "[{rep}/{}] {:<14} {:<14} {}",
                    profile.repeats,
                    server.name,
                    scenario.id,
                    progress(scenario, &outcome)
                );
                notes.extend(note(server, scenario, rep, &outcome));
                record(&runs_log, server, scenario, rep, &outcome);
                results.push(server.name, scenario.id, outcome);
            }
        }
    }
    let mut seen = HashSet::new();
    notes.retain(|n| seen.insert(n.clone()));

    let header = doc::Header {
        date,
        machine: machine::describe(),
        rustc: machine::rustc_version(),
        command: command_line(),
        placement: placement.describe(),
        peers: peer_versions(&bench_dir),
    };
    println!("\n{}", table::results_table(&servers, &scenarios, &results));
    let transports = table::transport_table(&scenarios, &results);
    if transports.lines().count() > 2 {
        println!("{transports}");
    }
    let auths = table::auth_table(&scenarios, &results);
    if auths.lines().count() > 2 {
        println!("{auths}");
    }
    println!("{}", table::latency_table(&servers, &scenarios, &results));
    let redis = table::redis_table(&servers, &scenarios, &results);
    if redis.lines().count() > 2 {
        println!("{redis}");
    }
    for n in &notes {
        println!("note: {n}");
    }
    if !args.no_write {
        let out = args
            .out
            .clone()
            .unwrap_or_else(|| root.join("docs").join("benchmarks.md"));
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = doc::render(&header, &profile, &servers, &scenarios, &results, &notes);
        std::fs::write(&out, text).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

/// Applies `--only`: names of servers and/or scenarios. Naming none of a kind
/// keeps all of that kind.
fn select(only: &[String]) -> anyhow::Result<(Vec<Server>, Vec<Scenario>)> {
    for name in only {
        let known =
            SERVERS.iter().any(|s| s.name == name) || SCENARIOS.iter().any(|s| s.id == name);
        if !known {
            let servers: Vec<_> = SERVERS.iter().map(|s| s.name).collect();
            let scenarios: Vec<_> = SCENARIOS.iter().map(|s| s.id).collect();
            bail!(
                "--only {name}: not a server ({}) or scenario ({})",
                servers.join(", "),
                scenarios.join(", ")
            );
        }
    }
    let named = |name: &str| only.iter().any(|o| o == name);
    let mut servers: Vec<Server> = SERVERS.into_iter().filter(|s| named(s.name)).collect();
    if servers.is_empty() {
        servers = SERVERS.to_vec();
    }
    let mut scenarios: Vec<Scenario> = SCENARIOS.into_iter().filter(|s| named(s.id)).collect();
    if scenarios.is_empty() {
        scenarios = SCENARIOS.to_vec();
    }
    Ok((servers, scenarios))
}

/// The progress line's result part.
fn progress(scenario: &Scenario, outcome: &Outcome) -> String {
    match outcome {
        Outcome::Done(r) => {
            let value = r.metrics.get(scenario.metric).copied().unwrap_or(f64::NAN);
            let mut errors = if r.errors > 0 {
                format!(", {} errors", r.errors)
            } else {
                String::new()
            };
            if let Some(lost) = r.metrics.get(metric::LOST_MSGS).filter(|&&n| n > 0.0) {
                errors.push_str(&format!(", {lost} lost"));
            }
            for (name, what) in [
                (metric::DUPLICATE_MSGS, "duplicated"),
                (metric::REORDERED_MSGS, "reordered"),
            ] {
                if let Some(n) = r.metrics.get(name).filter(|&&n| n > 0.0) {
                    errors.push_str(&format!(", {n} {what}"));
                }
            }
            if let Some(cmds) = r.metrics.get(metric::REDIS_COMMANDS_PER_PUBLISH) {
                let get = |m: &str| r.metrics.get(m).copied().unwrap_or(f64::NAN);
                errors.push_str(&format!(
                    ", Redis per publish: {cmds:.2} commands, {:.0} B in, {:.0} B out",
                    get(metric::REDIS_IN_BYTES_PER_PUBLISH),
                    get(metric::REDIS_OUT_BYTES_PER_PUBLISH),
                ));
            }
            format!(
                "{:>10}  (CPU process/core: server {}, loadgen {}{errors})",
                table::format_cell(&table::Cell::Value(value), scenario.unit),
                cpu_shares(r, metric::SERVER_CPU_PCT, metric::SERVER_CORE_PCT),
                cpu_shares(r, metric::LOADGEN_CPU_PCT, metric::LOADGEN_CORE_PCT),
            )
        }
        Outcome::Failed(reason) => format!("failed: {reason}"),
        Outcome::NotApplicable => "n/a".into(),
    }
}

/// Appends one outcome to the runs log (best effort: it is only a log).
fn record(log: &Path, server: &Server, scenario: &Scenario, rep: usize, outcome: &Outcome) {
    let (result, failure) = match outcome {
        Outcome::Done(r) => (Some(r), None),
        Outcome::Failed(reason) => (None, Some(reason.as_str())),
        Outcome::NotApplicable => return,
    };
    let line = serde_json::json!({
        "server": server.name,
        "scenario": scenario.id,
        "run": rep,
        "result": result,
        "failure": failure,
    });
    let append = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log);
    if let Ok(mut file) = append {
        let _ = writeln!(file, "{line}");
    }
}

/// "process% / core%" for one side of a run.
pub fn cpu_shares(r: &RunResult, process: &str, core: &str) -> String {
    let pct = |name| {
        r.metrics
            .get(name)
            .map_or("?".to_string(), |v: &f64| format!("{v:.0}%"))
    };
    format!("{} / {}", pct(process), pct(core))
}

/// A note for the report about a failed run or one with errors.
fn note(server: &Server, scenario: &Scenario, rep: usize, outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::Failed(reason) => Some(format!("{}: failed: {reason}", server.name)),
        Outcome::Done(r) if r.metrics.get(metric::LOST_MSGS).is_some_and(|&n| n > 0.0) => {
            let get = |m: &str| r.metrics.get(m).copied().unwrap_or(0.0);
            let mut note = format!(
                "{} {} run {rep}: {} of {} copies lost ({} reported by the server as lagged)",
                server.name,
                scenario.id,
                get(metric::LOST_MSGS),
                get(metric::EXPECTED_MSGS),
                get(metric::LAGGED_MISSED),
            );
            if r.errors > 0 {
                note.push_str(&format!(
                    "; {} errors (first: {})",
                    r.errors,
                    r.first_error.as_deref().unwrap_or("?")
                ));
            }
            Some(note)
        }
        Outcome::Done(r)
            if [metric::DUPLICATE_MSGS, metric::REORDERED_MSGS]
                .iter()
                .any(|m| r.metrics.get(*m).is_some_and(|&n| n > 0.0)) =>
        {
            let get = |m: &str| r.metrics.get(m).copied().unwrap_or(0.0);
            Some(format!(
                "{} {} run {rep}: {} of {} copies received, {} duplicated, {} out of order",
                server.name,
                scenario.id,
                get(metric::DELIVERED_MSGS),
                get(metric::EXPECTED_MSGS),
                get(metric::DUPLICATE_MSGS),
                get(metric::REORDERED_MSGS),
            ))
        }
        Outcome::Done(r) if r.errors > 0 => Some(format!(
            "{} {} run {rep}: {} errors (first: {})",
            server.name,
            scenario.id,
            r.errors,
            r.first_error.as_deref().unwrap_or("?")
        )),
        _ => None,
    }
}

/// The command as a user would type it from the repository root.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut line = "cargo run --release --manifest-path bench/Cargo.toml --bin bench".to_string();
    if !args.is_empty() {
        line.push_str(" -- ");
        line.push_str(&args.join(" "));
    }
    line
}

/// Versions of the peer libraries, from bench/Cargo.lock.
fn peer_versions(bench_dir: &Path) -> String {
    let lock = std::fs::read_to_string(bench_dir.join("Cargo.lock")).unwrap_or_default();
    [
        "tokio-tungstenite",
        "fastwebsockets",
        "socketioxide",
        "socketioxide-redis",
        "redis",
        "hyper",
        "tokio",
    ]
    .iter()
    .map(|p| {
        let v = machine::locked_version(&lock, p).unwrap_or_else(|| "?".into());
        format!("{p} {v}")
    })
    .collect::<Vec<_>>()
    .join(", ")
        + "; each Rust peer on a current_thread tokio runtime, TCP_NODELAY on"
        + &node::versions()
            .map(|v| format!("; node-socketio: {v} (single-threaded event loop)"))
            .unwrap_or_default()
}
