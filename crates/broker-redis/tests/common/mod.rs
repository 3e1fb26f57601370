//! A real `redis-server` for the tests (started on a free loopback port; a test fails, not
//! skips, when the binary is missing — scripts/test.sh installs it).
#![allow(dead_code)]

pub(crate) mod hub;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct Redis {
    pub(crate) child: Child,
    pub(crate) url: String,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn redis_server() -> Redis {
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect(
            "redis-server is required (apt-get install redis-server; scripts/test.sh installs it)",
        );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Redis {
        child,
        url: format!("redis://127.0.0.1:{port}/"),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Redis Cluster of three masters (no replicas) on loopback, each `redis-server` in its
/// own scratch directory (cluster nodes write their `nodes.conf` there).
pub(crate) struct RedisCluster {
    pub(crate) nodes: Vec<Child>,
    pub(crate) ports: Vec<u16>,
    /// `redis+cluster://127.0.0.1:<p1>,…` (every node as a seed).
    pub(crate) url: String,
    dir: std::path::PathBuf,
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn redis_cli(args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(args)
        .output()
        .expect("redis-cli is required (installed with redis-server)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Three cluster-enabled `redis-server`s, joined with `redis-cli --cluster create` (slots
/// spread evenly), ready once every node reports `cluster_state:ok`.
pub(crate) fn redis_cluster() -> RedisCluster {
    let dir =
        std::env::temp_dir().join(format!("sb-cluster-{}-{}", std::process::id(), free_port()));
    let mut ports = Vec::new();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let port = free_port();
        let node_dir = dir.join(port.to_string());
        std::fs::create_dir_all(&node_dir).unwrap();
        let child = Command::new("redis-server")
            .current_dir(&node_dir)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is required (scripts/test.sh installs it)");
        ports.push(port);
        nodes.push(child);
    }
    let cluster = RedisCluster {
        url: format!(
            "redis+cluster://{}",
            ports
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect::<Vec<_>>()
                .join(",")
        ),
        nodes,
        ports,
        dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    for port in &cluster.ports {
        while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let addresses: Vec<String> = cluster
        .ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let mut create = vec!["--cluster", "create"];
    create.extend(addresses.iter().map(String::as_str));
    create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    let out = redis_cli(&create);
    assert!(out.contains("All 16384 slots covered"), "{out}");
    for port in &cluster.ports {
        let port = port.to_string();
        while !redis_cli(&["-p", &port, "CLUSTER", "INFO"]).contains("cluster_state:ok") {
            assert!(Instant::now() < deadline, "the cluster did not form");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    cluster
}

impl RedisCluster {
    /// `redis-cli -p <port of node i> <args>`, its output.
    pub(crate) fn cli(&self, node: usize, args: &[&str]) -> String {
        let port = self.ports[node].to_string();
        let mut all = vec!["-p", port.as_str()];
        all.extend(args);
        redis_cli(&all)
    }

    /// The index of the node that owns `key`'s slot, and the slot.
    pub(crate) fn owner_of(&self, key: &str) -> (usize, u16) {
        let slot: u16 = self
            .cli(0, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .unwrap();
        let id = self.slot_owner_id(slot);
        let owner = (0..3)
            .find(|i| self.cli(*i, &["CLUSTER", "MYID"]).trim() == id)
            .unwrap();
        (owner, slot)
    }

    fn slot_owner_id(&self, slot: u16) -> String {
        // Node 0's view, from `CLUSTER NODES` lines (`<id> <addr> <flags> <master> <ping>
        // <pong> <epoch> <link> <slot ranges…>`).
        for line in self.cli(0, &["CLUSTER", "NODES"]).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            for range in fields.iter().skip(8) {
                let (lo, hi) = match range.split_once('-') {
                    Some((lo, hi)) => (lo.parse().unwrap_or(u16::MAX), hi.parse().unwrap_or(0)),
                    None => {
                        let s = range.parse().unwrap_or(u16::MAX);
                        (s, s)
                    }
                };
                if lo <= slot && slot <= hi {
                    return fields[0].to_owned();
                }
            }
        }
        panic!("nobody owns slot {slot}");
    }

    /// Move `slot` with its keys from node `from` to node `to` (as `redis-cli --cluster
    /// reshard` does: IMPORTING/MIGRATING, MIGRATE the keys, then SETSLOT NODE everywhere).
    pub(crate) fn move_slot(&self, slot: u16, from: usize, to: usize) {
        let slot = slot.to_string();
        let from_id = self.cli(from, &["CLUSTER", "MYID"]).trim().to_owned();
        let to_id = self.cli(to, &["CLUSTER", "MYID"]).trim().to_owned();
        let ok = |out: String| assert!(out.trim() == "OK" || out.trim() == "NOKEY", "{out}");
        ok(self.cli(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]));
        ok(self.cli(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]));
        let keys = self.cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot, "1000"]);
        let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
        if !keys.is_empty() {
            let port = self.ports[to].to_string();
            let mut migrate = vec![
                "MIGRATE",
                "127.0.0.1",
                port.as_str(),
                "",
                "0",
                "5000",
                "KEYS",
            ];
            migrate.extend(keys.iter().copied());
            ok(self.cli(from, &migrate));
        }
        for node in [to, from, 3 - from - to] {
            ok(self.cli(node, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]));
        }
    }
}

/// Logs of the code under test on stderr, with `TEST_TRACE=1` (`RUST_LOG` filters them).
pub(crate) fn trace() {
    if std::env::var_os("TEST_TRACE").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
