//! The markdown report written to docs/benchmarks.md.

use std::fmt::Write;

use super::args::Profile;
use super::cpu_shares;
use super::scenarios::Scenario;
use super::servers::Server;
use super::table::{self, Outcome, Results};
use crate::report::metric;

/// Everything the report says besides the results.
pub struct Header {
    /// When the run started.
    pub date: String,
    /// CPUs, model, kernel, memory.
    pub machine: String,
    /// The toolchain.
    pub rustc: String,
    /// The exact command line.
    pub command: String,
    /// How servers and loadgen were pinned and prioritised.
    pub placement: String,
    /// Library versions of the peers.
    pub peers: String,
}

/// Renders the whole document.
pub fn render(
    header: &Header,
    profile: &Profile,
    servers: &[Server],
    scenarios: &[Scenario],
    results: &Results,
    notes: &[String],
) -> String {
    let mut doc = String::new();
    let _ = writeln!(doc, "# Benchmarks\n");
    let _ = writeln!(
        doc,
        "_Written by the `bench` command (see `bench/README.md`); rerun it rather than editing this file._\n"
    );
    let _ = writeln!(doc, "- **Date:** {}", header.date);
    let _ = writeln!(doc, "- **Machine:** {}; {}", header.machine, header.rustc);
    let _ = writeln!(doc, "- **Command:** `{}`", header.command);
    let _ = writeln!(doc, "- **Placement:** {}", header.placement);
    let _ = writeln!(
        doc,
        "- **Runs:** median of {} run(s) per cell, each on a freshly started server",
        profile.repeats
    );
    let _ = writeln!(doc, "- **Peers:** {}\n", header.peers);

    let _ = writeln!(doc, "## How to read\n");
    let _ = writeln!(
        doc,
        "- Rates (msgs/s, handshakes/s): higher is better. Memory per idle connection: lower is better.\n\
         - `tcp-floor` is a plain TCP echo with no HTTP and no framing: what the kernel and loopback \
         allow on this machine and how much room is left. No WebSocket server can really beat it: \
         a ratio above 1 against it means the runs were disturbed.\n\
         - Ratio columns are ours ÷ peer: above 1 means switchboard is faster (rates) or uses more \
         memory (bytes per connection).\n\
         - This is a shared, noisy 2-core machine with server and load generator each pinned to one \
         core: trust the ratios within one run more than absolute numbers across runs. \
         The per-run CPU shares under *All runs* show when a run was starved.\n\
         - Fan-out rows count messages received by all subscribers per second; they run against \
         each server's broadcast endpoint (`socketioxide` has only that one; `tungstenite` and \
         `tcp-floor` have none). Lost copies (dropped, lagged or refused) are listed under *Notes*.\n\
         - Socket.IO rows (`Socket.IO …`) run against each server's Socket.IO endpoint \
         (`/socket.io/`, websocket transport): switchboard's built-in rooms (`--echo` for the \
         echo row), socketioxide and the Node `socket.io` server (`node-socketio`) with the same \
         events (`join_room` with an ack, `publish` → `message` to the room, \
         `message-with-ack`), as bench/README.md describes.\n\
         - Cross-node rows (`fan-out over Redis …`) run a fresh `redis-server` and N processes \
         of each server sharing the room through it (switchboard `--broker`, socketioxide with \
         `socketioxide-redis`), all on the server core, the subscribers spread over the nodes; \
         *Redis cost per publish* shows what Redis did per message.\n\
         - SSE and long-poll rows use switchboard's HTTP feeds (`/events`, `/poll`), which no \
         peer has (`n/a`); the same WebSocket publisher as the fan-out rows feeds them.\n\
         - `/ws session` rows are switchboard's native sessions (`n/a` for the peers), with and \
         without authentication; each auth row's server is started with the matching key.\n\
         - `failed`: the server did not start or no run completed (see *Notes*); \
         `n/a`: not applicable; `—`: not run.\n"
    );

    let _ = writeln!(doc, "## Results\n");
    doc.push_str(&table::results_table(servers, scenarios, results));
    let transports = table::transport_table(scenarios, results);
    if transports.lines().count() > 2 {
        let _ = writeln!(doc, "\n## HTTP feeds against WebSocket\n");
        let _ = writeln!(
            doc,
            "switchboard only: each HTTP feed row against the WebSocket row it stands in for, \
             same publisher and payloads, medians of the same runs; ratio above 1: the feed \
             is faster.\n"
        );
        doc.push_str(&transports);
    }
    let auths = table::auth_table(scenarios, results);
    if auths.lines().count() > 2 {
        let _ = writeln!(doc, "\n## Authentication against none\n");
        let _ = writeln!(
            doc,
            "switchboard only: each `/ws` session row with authentication (a JWT in `?token=`, \
             or the first-message `auth`) against the same flow on a server without \
             authentication, medians of the same runs; ratio below 1: authentication costs \
             that share of the handshake rate. Latencies: connect to `welcome` (or \
             `auth_success`).\n"
        );
        doc.push_str(&auths);
    }
    let latency = table::latency_table(servers, scenarios, results);
    if latency.lines().count() > 2 {
        let _ = writeln!(doc, "\n## Latency\n");
        let _ = writeln!(
            doc,
            "Median over runs of each run's p50 / p99: message round trip for the message rows, \
             connect to verified `101` for handshakes (to `welcome` or `auth_success` for the `/ws` \
             session rows), publish to receive (on every subscriber) \
             for fan-out.\n"
        );
        doc.push_str(&latency);
    }

    let redis = table::redis_table(servers, scenarios, results);
    if redis.lines().count() > 2 {
        let _ = writeln!(doc, "\n## Redis cost per publish\n");
        let _ = writeln!(
            doc,
            "Cross-node rows (`fanout-redis-*`): one fresh `redis-server` per run, shared by \
             the server's nodes. Redis `INFO` is read once sync is over (every subscriber \
             joined, nothing in flight) and again once the copies in flight after the last \
             publish are drained (every connection still open), and divided by the messages \
             published in between: warm-up, window and tail (medians over runs; the two \
             `INFO` calls themselves are left out). Commands are `total_commands_processed`, which \
             counts the commands a Lua script runs as well as the script call; the calls column \
             is `INFO commandstats` (the same counting). Bytes are `total_net_input_bytes` / \
             `total_net_output_bytes`: output includes every pub/sub message Redis sends to \
             a node, so it grows with the nodes that have members in the room. Background \
             work in that span (a switchboard node heartbeat) is included. The last column \
             checks that every copy arrived once: copies received ÷ publishes × (subscribers \
             + publisher), copies lost, received twice by one connection, received after a \
             later message.\n"
        );
        doc.push_str(&redis);
    }

    let _ = writeln!(doc, "\n## Scenarios\n");
    for sc in scenarios {
        let _ = writeln!(doc, "- `{}`: {}", sc.id, sc.describe(profile));
    }

    if !notes.is_empty() {
        let _ = writeln!(doc, "\n## Notes\n");
        for note in notes {
            let _ = writeln!(doc, "- {note}");
        }
    }

    let _ = writeln!(doc, "\n## All runs\n");
    let _ = writeln!(
        doc,
        "<details><summary>Every run. CPU columns: the process's own CPU time, then how busy its \
         core was (softirq, where loopback TCP does much of its work, and other processes \
         included), as shares of the loadgen run's wall time, setup and warm-up included. \
         A core well below 100% on a rate row was waiting on the other side.</summary>\n"
    );
    doc.push_str(&runs_table(servers, scenarios, results));
    let _ = writeln!(doc, "\n</details>");
    doc
}

/// One line per run: value, CPU shares, errors.
pub fn runs_table(servers: &[Server], scenarios: &[Scenario], results: &Results) -> String {
    let header = [
        "scenario",
        "server",
        "run",
        "value",
        "server CPU (process / core)",
        "loadgen CPU (process / core)",
        "errors",
    ]
    .map(String::from)
    .to_vec();
    let mut rows = Vec::new();
    for sc in scenarios {
        for server in servers {
            for (i, outcome) in results.outcomes(server.name, sc.id).iter().enumerate() {
                let mut row = vec![
                    sc.id.to_string(),
                    server.name.to_string(),
                    (i + 1).to_string(),
                ];
                match outcome {
                    Outcome::Done(r) => {
                        let value = r.metrics.get(sc.metric).copied();
                        row.push(value.map_or("—".into(), |v| {
                            table::format_cell(&table::Cell::Value(v), sc.unit)
                        }));
                        row.push(cpu_shares(
                            r,
                            metric::SERVER_CPU_PCT,
                            metric::SERVER_CORE_PCT,
                        ));
                        row.push(cpu_shares(
                            r,
                            metric::LOADGEN_CPU_PCT,
                            metric::LOADGEN_CORE_PCT,
                        ));
                        row.push(r.errors.to_string());
                    }
                    Outcome::Failed(_) => row.extend(["failed", "", "", ""].map(String::from)),
                    Outcome::NotApplicable => continue,
                }
                rows.push(row);
            }
        }
    }
    table::markdown(header, rows)
}
