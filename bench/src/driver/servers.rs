//! The servers under test: how to launch each one, wait until it accepts,
//! sample its memory and CPU time, and stop it (by PID, only ever our own child).

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::scenarios::Scenario;

/// The name of our server, whose column the ratios are computed from.
pub const OURS: &str = "switchboard";

/// How long a server may take to accept its first connection.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// One server under test: what it runs for the echo scenarios and for fan-out.
#[derive(Debug, Clone, Copy)]
pub struct Server {
    /// Column name in the table, also accepted by `--only`.
    pub name: &'static str,
    /// The echo endpoint (`closed`, `pipelined`, `handshakes`, `idle`), if any.
    pub echo: Option<Endpoint>,
    /// The broadcast endpoint (fan-out scenarios), if any.
    pub fanout: Option<Endpoint>,
    /// HTTP feeds (SSE and long-poll scenarios; switchboard only), with the broadcast
    /// endpoint their fan-out publisher uses.
    pub http: Option<Endpoint>,
    /// Native sessions (the `/ws` session rows, with and without authentication;
    /// switchboard only).
    pub session: Option<Endpoint>,
    /// Socket.IO with the bench's room events (`sio-fanout-*`, `idle-sio`).
    pub sio: Option<Endpoint>,
    /// Socket.IO in echo mode (`sio-echo`): `message-with-ack` acknowledged.
    pub sio_echo: Option<Endpoint>,
    /// The broadcast endpoint of a cluster node (`fanout-redis-*`): the same as `fanout`, on
    /// a process that shares rooms with the others through Redis (started with the Redis
    /// URL: `--broker` for ours, `--redis` for the peer).
    pub cluster: Option<Endpoint>,
    /// Run only the idle (memory) scenario.
    pub idle_only: bool,
}

/// One way to run a server: binary, arguments and what loadgen speaks to it.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    /// How the binary is obtained and invoked.
    pub kind: Kind,
    /// Request path of the WebSocket upgrade.
    pub ws_path: &'static str,
    /// Speaks plain TCP: loadgen runs with `--raw`.
    pub raw: bool,
    /// loadgen's `fanout --protocol` value (fan-out endpoints only).
    pub protocol: &'static str,
}

/// Where a server's binary comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Ours, built from the root workspace: `switchboard serve --listen ADDR`, plus
    /// `--echo` for the echo endpoint.
    Switchboard {
        /// Pass `--echo`.
        echo: bool,
        /// Park idle connections (the default); `false` passes `--park-idle-after 0`.
        park: bool,
        /// Keep the per-connection message rate limit (the default); `false` passes
        /// `--rate-limit off`.
        limited: bool,
    },
    /// A peer binary of this package: `NAME --listen ADDR` (`--redis URL` on a cluster).
    Peer(&'static str),
    /// A Node.js peer: `node bench/node/SCRIPT --listen ADDR`, its npm dependencies
    /// installed by `npm ci` in bench/node (see [`super::node`]).
    Node {
        /// The column's name, also the key of its binary (`node`).
        name: &'static str,
        /// The script, in bench/node.
        script: &'static str,
    },
}

impl Kind {
    /// The binary's name: `switchboard` or the peer's.
    pub fn bin(&self) -> &'static str {
        match self {
            Kind::Switchboard { .. } => OURS,
            Kind::Peer(name) | Kind::Node { name, .. } => name,
        }
    }
}

const fn ws(kind: Kind, ws_path: &'static str) -> Option<Endpoint> {
    Some(Endpoint {
        kind,
        ws_path,
        raw: false,
        protocol: "",
    })
}

const fn broadcast(kind: Kind, ws_path: &'static str, protocol: &'static str) -> Option<Endpoint> {
    Some(Endpoint {
        kind,
        ws_path,
        raw: false,
        protocol,
    })
}

/// The upgrade path of every Socket.IO endpoint: Engine.IO v4, websocket transport.
pub const SIO_PATH: &str = "/socket.io/?EIO=4&transport=websocket";

/// A Socket.IO endpoint (loadgen speaks `--protocol socketio` to it).
const fn sio(kind: Kind) -> Option<Endpoint> {
    broadcast(kind, SIO_PATH, "socketio")
}

/// The socketioxide peer serves the fan-out rows (its broadcast endpoint) and the Socket.IO
/// rows with the same binary and events.
const SOCKETIOXIDE: Kind = Kind::Peer("peer-socketioxide-broadcast");

/// The same socketioxide server with its Redis adapter (`socketioxide-redis`): the cluster
/// nodes of the cross-node fan-out rows.
const SOCKETIOXIDE_REDIS: Kind = Kind::Peer("peer-socketioxide-redis-broadcast");

/// The Node.js socket.io peer.
const NODE_SOCKETIO: Kind = Kind::Node {
    name: "node-socketio",
    script: "sio-server.js",
};

/// All servers, in column order.
pub const SERVERS: [Server; 7] = [
    Server {
        name: OURS,
        echo: ws(
            Kind::Switchboard {
                echo: true,
                park: true,
                limited: true,
            },
            "/echo",
        ),
        fanout: broadcast(
            Kind::Switchboard {
                echo: false,
                park: true,
                limited: false,
            },
            "/ws",
            "native",
        ),
        http: broadcast(
            Kind::Switchboard {
                echo: false,
                park: true,
                limited: false,
            },
            "/ws",
            "native",
        ),
        session: broadcast(
            Kind::Switchboard {
                echo: false,
                park: true,
                limited: false,
            },
            "/ws",
            "native",
        ),
        // Built-in rooms: `join_room`, `publish` (no application code).
        sio: sio(Kind::Switchboard {
            echo: false,
            park: true,
            limited: false,
        }),
        // Echo (conformance) mode: `message-with-ack` acknowledged. No rate limit either: the
        // row's clients send far more than 100 messages / 10 s each.
        sio_echo: sio(Kind::Switchboard {
            echo: true,
            park: true,
            limited: false,
        }),
        // The fan-out endpoint, each node with `--broker redis://…`.
        cluster: broadcast(
            Kind::Switchboard {
                echo: false,
                park: true,
                limited: false,
            },
            "/ws",
            "native",
        ),
        idle_only: false,
    },
    // Ours with parking off: what an idle connection costs before it is parked (its first
    // `park_idle_after`), or always with `park_idle_after = 0`.
    Server {
        name: "switchboard-unparked",
        echo: ws(
            Kind::Switchboard {
                echo: true,
                park: false,
                limited: true,
            },
            "/echo",
        ),
        fanout: broadcast(
            Kind::Switchboard {
                echo: false,
                park: false,
                limited: false,
            },
            "/ws",
            "native",
        ),
        // Parking is a WebSocket matter: the SSE rows are the same as ours.
        http: None,
        session: None,
        sio: sio(Kind::Switchboard {
            echo: false,
            park: false,
            limited: false,
        }),
        sio_echo: None,
        cluster: None,
        idle_only: true,
    },
    Server {
        name: "socketioxide",
        echo: None,
        fanout: sio(SOCKETIOXIDE),
        http: None,
        session: None,
        sio: sio(SOCKETIOXIDE),
        sio_echo: sio(SOCKETIOXIDE),
        cluster: sio(SOCKETIOXIDE_REDIS),
        idle_only: false,
    },
    Server {
        name: "node-socketio",
        echo: None,
        // Only the Socket.IO rows: not the paced fan-out rows, whose offered load node's
        // unbounded per-socket buffers would hold in memory.
        fanout: None,
        http: None,
        session: None,
        sio: sio(NODE_SOCKETIO),
        sio_echo: sio(NODE_SOCKETIO),
        cluster: None,
        idle_only: false,
    },
    Server {
        name: "tungstenite",
        echo: ws(Kind::Peer("peer-tungstenite-echo"), "/"),
        fanout: None,
        http: None,
        session: None,
        sio: None,
        sio_echo: None,
        cluster: None,
        idle_only: false,
    },
    Server {
        name: "fastwebsockets",
        echo: ws(Kind::Peer("peer-fastwebsockets-echo"), "/"),
        fanout: broadcast(Kind::Peer("peer-fastwebsockets-broadcast"), "/", "plain"),
        http: None,
        session: None,
        sio: None,
        sio_echo: None,
        cluster: None,
        idle_only: false,
    },
    Server {
        name: "tcp-floor",
        echo: Some(Endpoint {
            kind: Kind::Peer("peer-tcp-echo"),
            ws_path: "/",
            raw: true,
            protocol: "",
        }),
        fanout: None,
        http: None,
        session: None,
        sio: None,
        sio_echo: None,
        cluster: None,
        idle_only: false,
    },
];

impl Server {
    /// The endpoint a scenario runs against, or `None` if it does not apply.
    pub fn endpoint(&self, scenario: &Scenario) -> Option<&Endpoint> {
        if self.idle_only && !scenario.samples_memory() {
            return None;
        }
        if scenario.uses_cluster_endpoint() {
            self.cluster.as_ref()
        } else if scenario.uses_session_endpoint() {
            self.session.as_ref()
        } else if scenario.uses_sio_echo_endpoint() {
            self.sio_echo.as_ref()
        } else if scenario.uses_sio_endpoint() {
            self.sio.as_ref()
        } else if scenario.uses_http_feeds() {
            self.http.as_ref()
        } else if scenario.uses_broadcast_endpoint() {
            self.fanout.as_ref()
        } else {
            self.echo.as_ref().filter(|e| !e.raw || scenario.raw)
        }
    }

    /// Every endpoint the server has.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.echo
            .iter()
            .chain(self.fanout.iter())
            .chain(self.http.iter())
            .chain(self.session.iter())
            .chain(self.sio.iter())
            .chain(self.sio_echo.iter())
            .chain(self.cluster.iter())
    }
}

impl Endpoint {
    /// Arguments that make the binary listen on `addr` (plus `extra` for ours), as a node of
    /// the cluster on the Redis at `broker` if any.
    fn args(&self, addr: SocketAddr, extra: &[String], broker: Option<&str>) -> Vec<String> {
        let addr = addr.to_string();
        match self.kind {
            Kind::Switchboard {
                echo,
                park,
                limited,
            } => {
                let mut args = vec!["serve".into(), "--listen".into(), addr];
                if !park {
                    args.extend(["--park-idle-after".into(), "0".into()]);
                }
                if echo {
                    args.push("--echo".into());
                }
                if !limited {
                    // The fan-out publisher is one WebSocket client sending at full speed; the
                    // default per-client rate limit (100 msgs / 10 s) would cut it off. The
                    // peers have no such limit either.
                    args.extend(["--rate-limit".into(), "off".into()]);
                }
                if let Some(url) = broker {
                    args.extend(["--broker".into(), url.into()]);
                }
                args.extend(extra.iter().cloned());
                args
            }
            Kind::Peer(_) => {
                let mut args = vec!["--listen".into(), addr];
                if let Some(url) = broker {
                    args.extend(["--redis".into(), url.into()]);
                }
                args
            }
            Kind::Node { script, .. } => vec![
                super::node::dir().join(script).display().to_string(),
                "--listen".into(),
                addr,
            ],
        }
    }
}

/// A server we started. Dropping it kills it.
pub struct Running {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Running {
    /// Starts `server` with `cmd` (its binary, as placed) on a free port, logging
    /// to `log`, and waits until it accepts connections. With `broker` (a Redis URL), as a
    /// node of the cluster on that Redis.
    pub fn start(
        server: &Server,
        endpoint: &Endpoint,
        extra: &[String],
        broker: Option<&str>,
        mut cmd: Command,
        log: &Path,
    ) -> Result<Running, String> {
        let addr = free_port().map_err(|e| format!("no free port: {e}"))?;
        let log_file = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let log_err = log_file.try_clone().map_err(|e| e.to_string())?;
        let child = cmd
            .args(endpoint.args(addr, extra, broker))
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", server.name))?;
        let mut running = Running { child, addr };
        running.wait_until_accepting(log)?;
        Ok(running)
    }

    /// The server's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn wait_until_accepting(&mut self, log: &Path) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited at start ({status}), see {}", log.display()));
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "not accepting on {} after {START_TIMEOUT:?}",
            self.addr
        ))
    }

    /// Resident set size in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        crate::procfs::rss_bytes(self.pid())
    }

    /// User + system CPU seconds used so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        crate::procfs::cpu_seconds(self.pid())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}
