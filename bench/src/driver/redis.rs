//! The `redis-server` of the cross-node rows: started fresh for each run on a free
//! loopback port, without persistence, stopped by PID; and its `INFO` counters, read over
//! one connection of the driver's own, from which the per-publish cost is computed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::report::metric;

/// The server binary, looked up on PATH (Debian's `redis-server` package installs it in
/// /usr/bin).
const BINARY: &str = "redis-server";
/// How long redis-server may take to answer its first PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for one `INFO` reply.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A redis-server we started. Dropping it kills it (by PID: only ever our own child).
pub struct RedisServer {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl RedisServer {
    /// Starts `redis-server` with `cmd` (the binary as placed, see [`binary`]) on a free
    /// loopback port, without persistence, logging to `log`, and waits for its PONG.
    pub fn start(mut cmd: Command, log: &Path) -> Result<RedisServer, String> {
        let addr = super::servers::free_port().map_err(|e| format!("no free port: {e}"))?;
        let log_file = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let log_err = log_file.try_clone().map_err(|e| e.to_string())?;
        let child = cmd
            .args(["--bind", "127.0.0.1", "--port", &addr.port().to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot start {BINARY}: {e}"))?;
        let mut server = RedisServer { child, addr };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "{BINARY} exited at start ({status}), see {}",
                    log.display()
                ));
            }
            if ping(addr).is_ok() {
                return Ok(server);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{BINARY} not answering on {addr} after {START_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The URL the nodes connect to.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// The server's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The redis-server binary on PATH, or why there is none.
pub fn binary() -> Result<PathBuf, String> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(BINARY))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("no {BINARY} on PATH (Debian: apt-get install redis-server)"))
}

/// One PING on a fresh connection.
fn ping(addr: SocketAddr) -> io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(b"*1\r\n$4\r\nPING\r\n")?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    if line.starts_with("+PONG") {
        Ok(())
    } else {
        Err(io::Error::other(format!("PING answered {line:?}")))
    }
}

/// The request of every sample: `INFO all` (every section, `commandstats` and `stats`
/// included), as a RESP array.
const INFO_REQUEST: &[u8] = b"*2\r\n$4\r\nINFO\r\n$3\r\nall\r\n";

/// A connection of the driver's own to read `INFO`.
pub struct InfoConn {
    reader: BufReader<TcpStream>,
}

impl InfoConn {
    /// Connects to the server.
    pub fn connect(addr: SocketAddr) -> io::Result<InfoConn> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(InfoConn {
            reader: BufReader::new(stream),
        })
    }

    /// One `INFO all` sample.
    pub fn sample(&mut self) -> io::Result<Info> {
        self.reader.get_mut().write_all(INFO_REQUEST)?;
        let mut head = String::new();
        self.reader.read_line(&mut head)?;
        let len: usize = head
            .strip_prefix('$')
            .and_then(|n| n.trim_end().parse().ok())
            .ok_or_else(|| io::Error::other(format!("INFO answered {head:?}")))?;
        let mut body = vec![0; len + 2];
        self.reader.read_exact(&mut body)?;
        body.truncate(len);
        let text = String::from_utf8_lossy(&body);
        let mut info = Info::parse(&text);
        info.reply_len = (head.len() + len + 2) as u64;
        Ok(info)
    }
}

/// The counters of one `INFO` sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Info {
    /// `total_commands_processed` (commands that scripts run included).
    pub commands: u64,
    /// `total_net_input_bytes`.
    pub input_bytes: u64,
    /// `total_net_output_bytes`.
    pub output_bytes: u64,
    /// `calls` of each `cmdstat_<command>` line.
    pub calls: BTreeMap<String, u64>,
    /// Bytes of this sample's own reply on the wire (counted in the next sample's output).
    pub reply_len: u64,
}

impl Info {
    /// Parses the text of an `INFO` reply.
    pub fn parse(text: &str) -> Info {
        let mut info = Info::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let number = || value.trim().parse().unwrap_or(0);
            match key {
                "total_commands_processed" => info.commands = number(),
                "total_net_input_bytes" => info.input_bytes = number(),
                "total_net_output_bytes" => info.output_bytes = number(),
                _ => {
                    if let Some(command) = key.strip_prefix("cmdstat_") {
                        let calls = value
                            .split(',')
                            .find_map(|f| f.strip_prefix("calls="))
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0);
                        info.calls.insert(command.to_string(), calls);
                    }
                }
            }
        }
        info
    }
}

/// What Redis did per publish between two samples over `publishes` publishes, without the
/// samples themselves (the first `INFO` counts as a command and its reply as output in the
/// second sample, which counts its own request as input): the metrics of the cross-node
/// rows.
pub fn per_publish(start: &Info, end: &Info, publishes: u64) -> BTreeMap<String, f64> {
    let mut metrics = BTreeMap::new();
    metrics.insert(metric::REDIS_PUBLISHES.to_string(), publishes as f64);
    if publishes == 0 {
        return metrics;
    }
    let n = publishes as f64;
    let delta = |a: u64, b: u64, own: u64| b.saturating_sub(a).saturating_sub(own) as f64 / n;
    metrics.insert(
        metric::REDIS_COMMANDS_PER_PUBLISH.to_string(),
        delta(start.commands, end.commands, 1),
    );
    metrics.insert(
        metric::REDIS_IN_BYTES_PER_PUBLISH.to_string(),
        delta(
            start.input_bytes,
            end.input_bytes,
            INFO_REQUEST.len() as u64,
        ),
    );
    metrics.insert(
        metric::REDIS_OUT_BYTES_PER_PUBLISH.to_string(),
        delta(start.output_bytes, end.output_bytes, start.reply_len),
    );
    for (command, &calls) in &end.calls {
        let before = start.calls.get(command).copied().unwrap_or(0);
        let own = u64::from(command == "info");
        let per = delta(before, calls, own);
        if per > 0.0 {
            metrics.insert(format!("{}{command}", metric::REDIS_CALLS_PER_PUBLISH), per);
        }
    }
    metrics
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_info() {
        let text = "# Stats\r\ntotal_connections_received:4\r\ntotal_commands_processed:120\r\n\
                    total_net_input_bytes:5000\r\ntotal_net_output_bytes:9000\r\n\r\n\
                    # Commandstats\r\n\
                    cmdstat_publish:calls=100,usec=200,usec_per_call=2.00,rejected_calls=0\r\n\
                    cmdstat_script|load:calls=2,usec=60,usec_per_call=30.00\r\n";
        let info = Info::parse(text);
        assert_eq!(info.commands, 120);
        assert_eq!(info.input_bytes, 5000);
        assert_eq!(info.output_bytes, 9000);
        assert_eq!(info.calls["publish"], 100);
        assert_eq!(info.calls["script|load"], 2);
    }

    #[test]
    fn per_publish_leaves_out_the_samples() {
        let start = Info {
            commands: 10,
            input_bytes: 1_000,
            output_bytes: 2_000,
            calls: [("publish".to_string(), 5), ("info".to_string(), 1)].into(),
            reply_len: 4_000,
        };
        let end = Info {
            commands: 10 + 1 + 200,
            input_bytes: 1_000 + INFO_REQUEST.len() as u64 + 30_000,
            output_bytes: 2_000 + 4_000 + 90_000,
            calls: [("publish".to_string(), 205), ("info".to_string(), 2)].into(),
            reply_len: 4_100,
        };
        let m = per_publish(&start, &end, 100);
        assert_eq!(m[metric::REDIS_COMMANDS_PER_PUBLISH], 2.0);
        assert_eq!(m[metric::REDIS_IN_BYTES_PER_PUBLISH], 300.0);
        assert_eq!(m[metric::REDIS_OUT_BYTES_PER_PUBLISH], 900.0);
        assert_eq!(m["redis_calls_per_publish.publish"], 2.0);
        assert!(!m.contains_key("redis_calls_per_publish.info"));
    }
}
