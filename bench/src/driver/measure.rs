//! One measurement: start a fresh server, run one loadgen process against it,
//! sample the server around (and, for `idle`, during) the run, stop the server.

use std::collections::BTreeMap;
use std::path::Path;

use super::args::Profile;
use super::auth::Credentials;
use super::placement::Placement;
use super::runner;
use super::scenarios::{Auth, Scenario};
use super::servers::{Endpoint, Running, Server};
use crate::procfs;
use crate::report::{metric, RunResult};

/// Why a measurement has no result.
pub enum Failure {
    /// The server did not start: don't try it again.
    Start(String),
    /// This run failed.
    Run(String),
}

/// What every measurement needs besides the server and scenario.
pub struct Session<'a> {
    /// Durations and sizes.
    pub profile: &'a Profile,
    /// The loadgen binary.
    pub loadgen: &'a Path,
    /// CPUs and priority.
    pub placement: &'a Placement,
    /// Where logs go.
    pub logs: &'a Path,
    /// Extra `switchboard serve` arguments.
    pub switchboard_args: &'a [String],
    /// Tokens and keys of the `/ws` session rows with authentication, or why there are none.
    pub credentials: &'a Result<Credentials, String>,
}

impl Session<'_> {
    /// One run: fresh server, one loadgen process, server stopped. A cross-node row runs
    /// on a fresh cluster instead ([`Session::measure_cluster`]).
    pub fn measure(
        &self,
        server: &Server,
        endpoint: &Endpoint,
        bin: &Path,
        scenario: &Scenario,
        rep: usize,
    ) -> Result<RunResult, Failure> {
        if let Some(nodes) = scenario.nodes() {
            return self.measure_cluster(server, endpoint, bin, scenario, nodes, rep);
        }
        let stem = format!("{rep}-{}-{}", server.name, scenario.id);
        let server_log = self.logs.join(format!("{stem}.server.log"));
        // The `/ws` session rows with authentication: the server gets the key, loadgen the
        // token (in the path or as its first message).
        let auth = scenario.auth().unwrap_or(Auth::None);
        let mut server_args = self.switchboard_args.to_vec();
        let (ws_path, auth_args) = if auth == Auth::None {
            (endpoint.ws_path.to_string(), Vec::new())
        } else {
            let creds = self
                .credentials
                .as_ref()
                .map_err(|e| Failure::Run(e.clone()))?;
            server_args.extend(creds.server_args(auth));
            creds.loadgen(auth, endpoint.ws_path)
        };
        // One retry: the free port we picked may have been taken in between.
        let start = || {
            Running::start(
                server,
                endpoint,
                &server_args,
                None,
                self.placement.server(bin),
                &server_log,
            )
        };
        let mut running = start().or_else(|_| start()).map_err(|reason| {
            if auth == Auth::None {
                Failure::Start(reason)
            } else {
                // The binary may be fine: only this row's flags are in doubt.
                Failure::Run(reason)
            }
        })?;

        let mut cmd = self.placement.loadgen(self.loadgen);
        cmd.arg("--target").arg(running.addr.to_string());
        if endpoint.raw {
            cmd.arg("--raw");
        } else {
            cmd.arg("--path").arg(&ws_path);
        }
        cmd.args(scenario.loadgen_args(self.profile));
        cmd.args(&auth_args);
        if scenario.uses_broadcast_endpoint() {
            cmd.args(["--protocol", endpoint.protocol]);
        }

        let rss_before = running.rss_bytes();
        let cpu_before = running.cpu_seconds();
        let cores_before = self.placement.core_ticks();
        let loadgen_log = self.logs.join(format!("{stem}.loadgen.log"));
        let finished = runner::run(
            cmd,
            scenario.deadline(self.profile),
            &loadgen_log,
            |_| {
                let mut sampled = BTreeMap::new();
                if let Some(rss) = running.rss_bytes() {
                    sampled.insert(metric::RSS_HELD_BYTES.to_string(), rss as f64);
                }
                sampled
            },
            |_, _| BTreeMap::new(),
        );
        let cpu_after = running.cpu_seconds();
        let cores_after = self.placement.core_ticks();
        if !running.alive() {
            return Err(Failure::Run(format!(
                "server exited during the run, see {}",
                server_log.display()
            )));
        }
        drop(running);
        let mut finished = finished.map_err(Failure::Run)?;
        let server_cpu = cpu_before.zip(cpu_after).map(|(b, a)| a - b);
        cpu_metrics(&mut finished, server_cpu, cores_before.zip(cores_after));
        let metrics = &mut finished.result.metrics;
        if scenario.samples_memory() {
            let held = metrics.get(metric::RSS_HELD_BYTES).copied();
            let conns = metrics.get(metric::CONNECTIONS).copied().unwrap_or(0.0);
            match (rss_before, held) {
                (Some(before), Some(held)) if conns > 0.0 => {
                    metrics.insert(metric::RSS_BEFORE_BYTES.into(), before as f64);
                    let per_conn = (held - before as f64) / conns;
                    metrics.insert(metric::BYTES_PER_CONN.into(), per_conn);
                }
                _ => return Err(Failure::Run("could not sample the server's RSS".into())),
            }
        }
        Ok(finished.result)
    }
}

/// Busy and total ticks of the server's and loadgen's cores.
pub type CoreTicks = ((u64, u64), (u64, u64));

/// Adds the CPU shares of a finished run: the server's (`server_cpu`: CPU seconds its
/// processes used during the run), each pinned core's (ticks before and after), and
/// loadgen's, all over the loadgen run's wall time.
pub fn cpu_metrics(
    finished: &mut runner::Finished,
    server_cpu: Option<f64>,
    cores: Option<(CoreTicks, CoreTicks)>,
) {
    let seconds = finished.seconds;
    let metrics = &mut finished.result.metrics;
    if let Some(cpu) = server_cpu {
        metrics.insert(metric::SERVER_CPU_PCT.into(), 100.0 * cpu / seconds);
    }
    if let Some(((s0, l0), (s1, l1))) = cores {
        for (name, before, after) in [
            (metric::SERVER_CORE_PCT, s0, s1),
            (metric::LOADGEN_CORE_PCT, l0, l1),
        ] {
            if let Some(pct) = procfs::busy_pct(before, after) {
                metrics.insert(name.into(), pct);
            }
        }
    }
    if let Some(cpu) = metrics.get(metric::LOADGEN_CPU_SECONDS).copied() {
        metrics.insert(metric::LOADGEN_CPU_PCT.into(), 100.0 * cpu / seconds);
    }
}
