//! One measurement of a cross-node row (`fanout-redis-*`): a fresh `redis-server`, then
//! N fresh processes of the server sharing the room through it, all pinned to the server
//! core; one loadgen process spreading its subscribers over the nodes (publisher on the
//! first); Redis `INFO` sampled at loadgen's marks (after sync with nothing in flight,
//! and after the drain with every connection still open); everything stopped by PID.

use std::collections::BTreeMap;
use std::path::Path;

use super::measure::{cpu_metrics, Failure, Session};
use super::redis::{self, Info, InfoConn, RedisServer};
use super::runner;
use super::scenarios::Scenario;
use super::servers::{Endpoint, Running, Server};
use crate::procfs;
use crate::report::{metric, RunResult};

impl Session<'_> {
    /// One run of a cross-node row on `nodes` processes of `server`.
    pub fn measure_cluster(
        &self,
        server: &Server,
        endpoint: &Endpoint,
        bin: &Path,
        scenario: &Scenario,
        nodes: usize,
        rep: usize,
    ) -> Result<RunResult, Failure> {
        let stem = format!("{rep}-{}-{}", server.name, scenario.id);
        let redis_bin = redis::binary().map_err(Failure::Run)?;
        let redis_log = self.logs.join(format!("{stem}.redis.log"));
        let mut redis = RedisServer::start(self.placement.server(&redis_bin), &redis_log)
            .map_err(Failure::Run)?;
        let url = redis.url();

        // Each node as the single-process rows start theirs (one retry: the free port we
        // picked may have been taken in between), plus the Redis URL.
        let mut running: Vec<Running> = Vec::with_capacity(nodes);
        for node in 1..=nodes {
            let log = self.logs.join(format!("{stem}.node{node}.server.log"));
            let start = || {
                Running::start(
                    server,
                    endpoint,
                    self.switchboard_args,
                    Some(&url),
                    self.placement.server(bin),
                    &log,
                )
            };
            let started = start()
                .or_else(|_| start())
                .map_err(|reason| Failure::Run(format!("node {node}: {reason}")))?;
            running.push(started);
        }

        let mut cmd = self.placement.loadgen(self.loadgen);
        cmd.arg("--target").arg(running[0].addr.to_string());
        cmd.arg("--path").arg(endpoint.ws_path);
        cmd.args(scenario.loadgen_args(self.profile));
        cmd.args(["--protocol", endpoint.protocol]);
        if nodes > 1 {
            let others: Vec<String> = running[1..].iter().map(|r| r.addr.to_string()).collect();
            cmd.arg("--extra-target").arg(others.join(","));
        }

        let mut info_conn = InfoConn::connect(redis.addr)
            .map_err(|e| Failure::Run(format!("connecting to redis-server: {e}")))?;
        let mut window_start: Option<(Info, u64)> = None;
        let mut redis_error: Option<String> = None;
        let nodes_cpu = |running: &[Running]| -> Option<f64> {
            running
                .iter()
                .map(Running::cpu_seconds)
                .sum::<Option<f64>>()
        };
        let cpu_before = nodes_cpu(&running);
        let redis_cpu_before = procfs::cpu_seconds(redis.pid());
        let cores_before = self.placement.core_ticks();
        let loadgen_log = self.logs.join(format!("{stem}.loadgen.log"));
        let finished = runner::run(
            cmd,
            scenario.deadline(self.profile),
            &loadgen_log,
            |_| BTreeMap::new(),
            |label, published| {
                let sample = match info_conn.sample() {
                    Ok(sample) => sample,
                    Err(e) => {
                        redis_error.get_or_insert(format!("INFO at mark {label}: {e}"));
                        return BTreeMap::new();
                    }
                };
                match (label, window_start.take()) {
                    ("start", _) => {
                        window_start = Some((sample, published));
                        BTreeMap::new()
                    }
                    ("end", Some((start, at_start))) => {
                        redis::per_publish(&start, &sample, published.saturating_sub(at_start))
                    }
                    _ => {
                        redis_error.get_or_insert(format!("unexpected mark {label}"));
                        BTreeMap::new()
                    }
                }
            },
        );
        let cpu_after = nodes_cpu(&running);
        let redis_cpu_after = procfs::cpu_seconds(redis.pid());
        let cores_after = self.placement.core_ticks();
        for (i, node) in running.iter_mut().enumerate() {
            if !node.alive() {
                return Err(Failure::Run(format!(
                    "node {} exited during the run, see {}",
                    i + 1,
                    self.logs
                        .join(format!("{stem}.node{}.server.log", i + 1))
                        .display()
                )));
            }
        }
        if !redis.alive() {
            return Err(Failure::Run(format!(
                "redis-server exited during the run, see {}",
                redis_log.display()
            )));
        }
        // Stop the nodes first, then their Redis.
        drop(running);
        drop(info_conn);
        drop(redis);

        let mut finished = finished.map_err(Failure::Run)?;
        let server_cpu = cpu_before.zip(cpu_after).map(|(b, a)| a - b);
        cpu_metrics(&mut finished, server_cpu, cores_before.zip(cores_after));
        let seconds = finished.seconds;
        let result = &mut finished.result;
        result.metrics.insert(metric::NODES.into(), nodes as f64);
        if let Some((before, after)) = redis_cpu_before.zip(redis_cpu_after) {
            let pct = 100.0 * (after - before) / seconds;
            result.metrics.insert(metric::REDIS_CPU_PCT.into(), pct);
        }
        if let Some(e) = redis_error {
            result.error(format!("Redis sampling: {e}"));
        } else if !result
            .metrics
            .contains_key(metric::REDIS_COMMANDS_PER_PUBLISH)
        {
            result.error("Redis sampling: no publish between the marks");
        }
        Ok(finished.result)
    }
}
