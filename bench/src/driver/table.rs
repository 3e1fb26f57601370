//! Collects run outcomes and renders the tables: medians per (server, scenario),
//! and ratios of our server against each peer.

use std::collections::BTreeMap;

use super::scenarios::{Scenario, Unit, AUTH_COMPARISONS, COMPARISONS};
use super::servers::{Server, OURS};
use crate::report::{metric, RunResult};

/// What one run of one scenario against one server produced.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// It ran; these are its metrics.
    Done(RunResult),
    /// It could not run or did not finish, for this reason.
    Failed(String),
    /// The scenario does not apply to the server.
    NotApplicable,
}

/// All outcomes, by server and scenario, in run order.
#[derive(Debug, Default)]
pub struct Results {
    runs: BTreeMap<(&'static str, &'static str), Vec<Outcome>>,
}

/// One table cell before formatting.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Median over the successful runs.
    Value(f64),
    /// No run succeeded.
    Failed,
    /// Not applicable.
    NotApplicable,
    /// Not run (filtered out).
    Missing,
}

impl Results {
    /// Records one run.
    pub fn push(&mut self, server: &'static str, scenario: &'static str, outcome: Outcome) {
        self.runs
            .entry((server, scenario))
            .or_default()
            .push(outcome);
    }

    /// The outcomes of one (server, scenario).
    pub fn outcomes(&self, server: &str, scenario: &str) -> &[Outcome] {
        self.runs
            .iter()
            .find(|((s, c), _)| *s == server && *c == scenario)
            .map_or(&[], |(_, v)| v.as_slice())
    }

    /// The median of `metric` over the successful runs of (server, scenario).
    pub fn cell(&self, server: &str, scenario: &str, metric: &str) -> Cell {
        let outcomes = self.outcomes(server, scenario);
        let values: Vec<f64> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Done(r) => r.metrics.get(metric).copied(),
                _ => None,
            })
            .collect();
        if let Some(m) = median(values) {
            Cell::Value(m)
        } else if outcomes.iter().any(|o| matches!(o, Outcome::Failed(_))) {
            Cell::Failed
        } else if outcomes.iter().any(|o| matches!(o, Outcome::NotApplicable)) {
            Cell::NotApplicable
        } else {
            Cell::Missing
        }
    }
}

/// The median; for an even count, the mean of the two middle values.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// The peers our server is divided by, in ratio-column order.
const RATIO_PEERS: [&str; 5] = [
    "tcp-floor",
    "fastwebsockets",
    "tungstenite",
    "socketioxide",
    "node-socketio",
];

/// The main table: one row per scenario, each server's median, then ratios.
pub fn results_table(servers: &[Server], scenarios: &[Scenario], results: &Results) -> String {
    let has = |name: &str| servers.iter().any(|s| s.name == name);
    let peers: Vec<&str> = if has(OURS) {
        RATIO_PEERS.into_iter().filter(|p| has(p)).collect()
    } else {
        Vec::new()
    };
    let mut header = vec!["scenario".to_string()];
    header.extend(servers.iter().map(|s| s.name.to_string()));
    header.extend(peers.iter().map(|p| format!("ours ÷ {p}")));
    let rows = scenarios.iter().map(|sc| {
        let mut row = vec![sc.label.to_string()];
        row.extend(
            servers
                .iter()
                .map(|s| format_cell(&results.cell(s.name, sc.id, sc.metric), sc.unit)),
        );
        let ours = results.cell(OURS, sc.id, sc.metric);
        row.extend(
            peers
                .iter()
                .map(|p| match (&ours, results.cell(p, sc.id, sc.metric)) {
                    (Cell::Value(a), Cell::Value(b)) if b > 0.0 => format!("{:.2}×", a / b),
                    _ => "—".to_string(),
                }),
        );
        row
    });
    markdown(header, rows.collect())
}

/// Our HTTP feeds against the WebSocket rows they stand in for ([`COMPARISONS`]): each
/// pair run, with ours ÷ ours. Empty (header only) when no pair ran.
pub fn transport_table(scenarios: &[Scenario], results: &Results) -> String {
    let header = [
        "HTTP feed row",
        "switchboard",
        "WebSocket row",
        "switchboard",
        "feed ÷ WebSocket",
    ]
    .map(String::from)
    .to_vec();
    let find = |id: &str| scenarios.iter().find(|s| s.id == id);
    let rows = COMPARISONS.iter().filter_map(|(id, base)| {
        let (sc, base) = (find(id)?, find(base)?);
        let row = results.cell(OURS, sc.id, sc.metric);
        let baseline = results.cell(OURS, base.id, base.metric);
        let ratio = match (&row, &baseline) {
            (Cell::Value(a), Cell::Value(b)) if *b > 0.0 => format!("{:.2}×", a / b),
            _ => "—".to_string(),
        };
        Some(vec![
            sc.label.to_string(),
            format_cell(&row, sc.unit),
            base.id.to_string(),
            format_cell(&baseline, base.unit),
            ratio,
        ])
    });
    markdown(header, rows.collect())
}

/// Our `/ws` session rows with authentication against the same rows without it
/// ([`AUTH_COMPARISONS`]): rates, row ÷ baseline, p50 / p99 of each and the p50 and p99
/// the authentication adds. Empty (header only) when no pair ran.
pub fn auth_table(scenarios: &[Scenario], results: &Results) -> String {
    let header = [
        "with authentication",
        "switchboard",
        "without (row)",
        "switchboard",
        "auth ÷ no auth",
        "p50 / p99 with",
        "p50 / p99 without",
        "added p50 / p99",
    ]
    .map(String::from)
    .to_vec();
    let find = |id: &str| scenarios.iter().find(|s| s.id == id);
    let rows = AUTH_COMPARISONS.iter().filter_map(|(id, base)| {
        let (sc, base) = (find(id)?, find(base)?);
        let row = results.cell(OURS, sc.id, sc.metric);
        let baseline = results.cell(OURS, base.id, base.metric);
        let ratio = match (&row, &baseline) {
            (Cell::Value(a), Cell::Value(b)) if *b > 0.0 => format!("{:.2}×", a / b),
            _ => "—".to_string(),
        };
        let latencies = |sc: &Scenario| {
            let (p50, p99) = sc.latency?;
            match (
                results.cell(OURS, sc.id, p50),
                results.cell(OURS, sc.id, p99),
            ) {
                (Cell::Value(a), Cell::Value(b)) => Some((a, b)),
                _ => None,
            }
        };
        let (with, without) = (latencies(sc), latencies(base));
        let pair = |l: Option<(f64, f64)>| {
            l.map_or("—".to_string(), |(a, b)| {
                format!("{} / {}", micros(a), micros(b))
            })
        };
        let added = match (with, without) {
            (Some((a50, a99)), Some((b50, b99))) => {
                format!(
                    "{} / {}",
                    signed_micros(a50 - b50),
                    signed_micros(a99 - b99)
                )
            }
            _ => "—".to_string(),
        };
        Some(vec![
            sc.label.to_string(),
            format_cell(&row, sc.unit),
            base.id.to_string(),
            format_cell(&baseline, base.unit),
            ratio,
            pair(with),
            pair(without),
            added,
        ])
    });
    markdown(header, rows.collect())
}

/// What Redis did per publish on the cross-node rows, for each server that ran them:
/// medians of commands (`total_commands_processed`, commands run by scripts included), the
/// busiest commands (`INFO commandstats`), and bytes Redis read and wrote, per message
/// published between loadgen's marks; then whether every copy arrived exactly once. Empty
/// (header only) when no cross-node row ran.
pub fn redis_table(servers: &[Server], scenarios: &[Scenario], results: &Results) -> String {
    let header = [
        "cross-node row",
        "server",
        "nodes",
        "publishes sampled",
        "commands / publish",
        "calls / publish (commandstats)",
        "bytes in / publish",
        "bytes out / publish",
        "redis CPU",
        "copies: delivered ÷ expected, lost, duplicated, reordered",
    ]
    .map(String::from)
    .to_vec();
    let mut rows = Vec::new();
    for sc in scenarios.iter().filter(|s| s.uses_cluster_endpoint()) {
        for server in servers {
            let outcomes = results.outcomes(server.name, sc.id);
            if !outcomes.iter().any(|o| matches!(o, Outcome::Done(_))) {
                continue;
            }
            let cell = |m: &str| match results.cell(server.name, sc.id, m) {
                Cell::Value(v) => Some(v),
                _ => None,
            };
            let num = |m: &str, digits: usize| {
                cell(m).map_or("—".to_string(), |v| format!("{v:.digits$}"))
            };
            // Every command seen in any run, by median calls per publish, busiest first.
            let mut commands: Vec<String> = outcomes
                .iter()
                .filter_map(|o| match o {
                    Outcome::Done(r) => Some(r.metrics.keys()),
                    _ => None,
                })
                .flatten()
                .filter_map(|k| k.strip_prefix(metric::REDIS_CALLS_PER_PUBLISH))
                .map(str::to_string)
                .collect();
            commands.sort();
            commands.dedup();
            let mut calls: Vec<(String, f64)> = commands
                .into_iter()
                .filter_map(|c| {
                    let v = cell(&format!("{}{c}", metric::REDIS_CALLS_PER_PUBLISH))?;
                    Some((c, v))
                })
                .filter(|(_, v)| *v >= 0.005)
                .collect();
            calls.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let calls = if calls.is_empty() {
                "—".to_string()
            } else {
                calls
                    .iter()
                    .map(|(c, v)| format!("{} {v:.2}", c.to_lowercase()))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let copies = match (cell(metric::DELIVERED_MSGS), cell(metric::EXPECTED_MSGS)) {
                (Some(d), Some(e)) if e > 0.0 => format!(
                    "{:.4}, {:.0}, {:.0}, {:.0}",
                    d / e,
                    cell(metric::LOST_MSGS).unwrap_or(0.0),
                    cell(metric::DUPLICATE_MSGS).unwrap_or(0.0),
                    cell(metric::REORDERED_MSGS).unwrap_or(0.0),
                ),
                _ => "—".to_string(),
            };
            rows.push(vec![
                sc.id.to_string(),
                server.name.to_string(),
                num(metric::NODES, 0),
                num(metric::REDIS_PUBLISHES, 0),
                num(metric::REDIS_COMMANDS_PER_PUBLISH, 2),
                calls,
                num(metric::REDIS_IN_BYTES_PER_PUBLISH, 0),
                num(metric::REDIS_OUT_BYTES_PER_PUBLISH, 0),
                cell(metric::REDIS_CPU_PCT).map_or("—".to_string(), |v| format!("{v:.0}%")),
                copies,
            ]);
        }
    }
    markdown(header, rows)
}

/// [`micros`] with a sign: `+35 µs`, `-4 µs`.
fn signed_micros(us: f64) -> String {
    if us < 0.0 {
        format!("-{}", micros(-us))
    } else {
        format!("+{}", micros(us))
    }
}

/// Median p50 / p99 latency of the scenarios that measure it.
pub fn latency_table(servers: &[Server], scenarios: &[Scenario], results: &Results) -> String {
    let mut header = vec!["scenario (p50 / p99)".to_string()];
    header.extend(servers.iter().map(|s| s.name.to_string()));
    let rows = scenarios.iter().filter_map(|sc| {
        let (p50, p99) = sc.latency?;
        let mut row = vec![sc.label.split(" (").next().unwrap_or(sc.label).to_string()];
        row.extend(servers.iter().map(|s| {
            match (
                results.cell(s.name, sc.id, p50),
                results.cell(s.name, sc.id, p99),
            ) {
                (Cell::Value(a), Cell::Value(b)) => format!("{} / {}", micros(a), micros(b)),
                (cell, _) => format_cell(&cell, sc.unit),
            }
        }));
        Some(row)
    });
    markdown(header, rows.collect())
}

/// Formats a cell in its unit.
pub fn format_cell(cell: &Cell, unit: Unit) -> String {
    match cell {
        Cell::Value(v) => match unit {
            Unit::PerSecond => si(*v),
            Unit::Bytes => bytes(*v),
        },
        Cell::Failed => "failed".into(),
        Cell::NotApplicable => "n/a".into(),
        Cell::Missing => "—".into(),
    }
}

/// 3 significant digits with k/M suffixes: 950, 15.2 k, 2.21 M.
pub fn si(v: f64) -> String {
    let (scaled, suffix) = if v >= 1e6 {
        (v / 1e6, " M")
    } else if v >= 1e3 {
        (v / 1e3, " k")
    } else {
        (v, "")
    };
    format!("{}{suffix}", three_digits(scaled))
}

/// Bytes with binary suffixes: 812 B, 6.50 KiB, 1.20 MiB.
pub fn bytes(v: f64) -> String {
    if v >= 1024.0 * 1024.0 {
        format!("{} MiB", three_digits(v / (1024.0 * 1024.0)))
    } else if v >= 1024.0 {
        format!("{} KiB", three_digits(v / 1024.0))
    } else {
        format!("{v:.0} B")
    }
}

/// Microseconds, switching to milliseconds above 10 ms.
pub fn micros(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{} ms", three_digits(us / 1000.0))
    } else {
        format!("{us:.0} µs")
    }
}

fn three_digits(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A markdown table, padded so it also reads well in a terminal.
pub fn markdown(header: Vec<String>, rows: Vec<Vec<String>>) -> String {
    let width = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                let pad = " ".repeat(w - width(c));
                // Labels left-aligned, numbers right-aligned.
                if i == 0 {
                    format!("{c}{pad}")
                } else {
                    format!("{pad}{c}")
                }
            })
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(&header);
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if i == 0 {
                "-".repeat(*w)
            } else {
                format!("{}:", "-".repeat(w - 1))
            }
        })
        .collect();
    out.push_str(&format!("| {} |\n", rule.join(" | ")));
    for row in &rows {
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn formats() {
        assert_eq!(si(2_210_000.0), "2.21 M");
        assert_eq!(si(152_345.0), "152 k");
        assert_eq!(si(950.0), "950");
        assert_eq!(bytes(6_656.0), "6.50 KiB");
        assert_eq!(micros(612.4), "612 µs");
        assert_eq!(micros(23_456.0), "23.5 ms");
    }

    #[test]
    fn ratio_of_ours_to_each_peer() {
        let mut results = Results::default();
        let done = |v: f64| {
            let mut r = RunResult::default();
            r.metrics.insert("msgs_per_s".into(), v);
            Outcome::Done(r)
        };
        let sc = &super::super::scenarios::SCENARIOS[..1];
        let id = sc[0].id;
        results.push(OURS, id, done(50.0));
        results.push("tcp-floor", id, done(100.0));
        results.push("tungstenite", id, Outcome::Failed("boom".into()));
        let table = results_table(&super::super::servers::SERVERS, sc, &results);
        assert!(table.contains("0.50×"), "{table}");
        assert!(table.contains("failed"), "{table}");
    }

    #[test]
    fn ratio_of_an_authenticated_row_to_its_baseline() {
        let mut results = Results::default();
        let done = |rate: f64, p50: f64, p99: f64| {
            let mut r = RunResult::default();
            r.metrics.insert("handshakes_per_s".into(), rate);
            r.metrics.insert("handshake_p50_us".into(), p50);
            r.metrics.insert("handshake_p99_us".into(), p99);
            Outcome::Done(r)
        };
        results.push(OURS, "handshakes-ws", done(20_000.0, 2_000.0, 4_000.0));
        results.push(
            OURS,
            "handshakes-jwt-es256",
            done(10_000.0, 4_000.0, 8_000.0),
        );
        results.push(OURS, "latency-ws", done(5_000.0, 150.0, 300.0));
        results.push(OURS, "latency-first-message", done(4_000.0, 190.0, 290.0));
        let all = &super::super::scenarios::SCENARIOS;
        let table = auth_table(all, &results);
        assert!(table.contains("0.50×"), "{table}");
        assert!(table.contains("+2000 µs / +4000 µs"), "{table}");
        assert!(table.contains("+40 µs / -10 µs"), "{table}");
        assert_eq!(table.lines().count(), 6, "all four pairs: {table}");
        let none: Vec<_> = all
            .iter()
            .filter(|s| s.id == "handshakes")
            .copied()
            .collect();
        assert_eq!(auth_table(&none, &results).lines().count(), 2);
    }

    #[test]
    fn redis_cost_per_publish() {
        let mut results = Results::default();
        let done = |cmds: f64, publish: f64| {
            let mut r = RunResult::default();
            for (k, v) in [
                ("deliveries_per_s", 1e6),
                ("nodes", 3.0),
                ("redis_publishes", 1_000.0),
                ("redis_commands_per_publish", cmds),
                ("redis_calls_per_publish.publish", publish),
                ("redis_calls_per_publish.evalsha", 1.0),
                ("redis_in_bytes_per_publish", 300.0),
                ("redis_out_bytes_per_publish", 900.0),
                ("delivered_msgs", 10_000.0),
                ("expected_msgs", 10_000.0),
                ("lost_msgs", 0.0),
            ] {
                r.metrics.insert(k.into(), v);
            }
            Outcome::Done(r)
        };
        results.push(OURS, "fanout-redis-10k", done(2.0, 1.0));
        results.push(OURS, "fanout-redis-10k", done(4.0, 1.0));
        let all = &super::super::scenarios::SCENARIOS;
        let table = redis_table(&super::super::servers::SERVERS, all, &results);
        assert_eq!(table.lines().count(), 3, "one row ran: {table}");
        assert!(table.contains(" 3.00 |"), "median commands: {table}");
        assert!(table.contains("evalsha 1.00, publish 1.00"), "{table}");
        assert!(table.contains("1.0000, 0, 0, 0"), "{table}");
    }

    #[test]
    fn ratio_of_an_http_feed_to_its_websocket_row() {
        let mut results = Results::default();
        let done = |v: f64| {
            let mut r = RunResult::default();
            r.metrics.insert("deliveries_per_s".into(), v);
            Outcome::Done(r)
        };
        results.push(OURS, "fanout-1k", done(1_000_000.0));
        results.push(OURS, "sse-fanout-1k", done(850_000.0));
        let all = &super::super::scenarios::SCENARIOS;
        let table = transport_table(all, &results);
        assert!(table.contains("0.85×"), "{table}");
        assert_eq!(table.lines().count(), 4, "both pairs, one not run: {table}");
        let only_ws: Vec<_> = all
            .iter()
            .filter(|s| s.id == "fanout-1k")
            .copied()
            .collect();
        assert_eq!(transport_table(&only_ws, &results).lines().count(), 2);
    }
}
