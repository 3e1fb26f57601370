//! `handshakes`: K workers each connecting, upgrading and dropping connections as
//! fast as they can. In raw mode a "handshake" is TCP connect + accept plus a
//! one-byte echo, so the server really accepted and served the connection.
//!
//! Each connection is dropped (FIN, no close frame) right after the verified 101,
//! the same way for every server. With `--session` (switchboard's `/ws`) it is
//! dropped after the native session's first message, `welcome`, instead: the session
//! exists and the handshake's credentials (a `?token=` in the path) were accepted.
//! With `--auth-token` it goes through the first-message flow: no credentials at the
//! upgrade, then `{"type":"auth","token":…}` and the wait for `auth_success`.

use std::io::{self, ErrorKind};
use std::time::{Duration, Instant};

use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::fanout::{client_frame, parse_frame};
use super::handshake::Rng;
use super::latency::Latency;
use super::target::Target;
use super::window::Window;
use crate::report::{metric, RunResult};

/// Longest a single handshake may take before it counts as an error.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where one handshake ends.
#[derive(Debug, Clone)]
pub enum Until {
    /// The verified `101` (or the raw one-byte echo).
    Upgrade,
    /// The native session's `welcome`, the first frame after the `101`.
    Welcome,
    /// First-message authentication: this `auth` frame's payload is sent after the
    /// `101`, and the first frame back must be `auth_success`.
    AuthSuccess(String),
}

impl Until {
    /// The first-message flow's `auth` message for `token`.
    pub fn first_message(token: &str) -> Self {
        Until::AuthSuccess(format!(r#"{{"type":"auth","token":"{token}"}}"#))
    }
}

/// What one worker measured.
#[derive(Default)]
struct WorkerStats {
    handshakes: u64,
    latency: Latency,
    result: RunResult,
}

/// Runs `concurrency` workers for `warmup + duration` seconds.
pub async fn run(
    target: &Target,
    concurrency: usize,
    until: Until,
    warmup: f64,
    duration: f64,
) -> anyhow::Result<RunResult> {
    anyhow::ensure!(
        !target.raw || matches!(until, Until::Upgrade),
        "--session and --auth-token need WebSocket (no --raw)"
    );
    let window = Window::after(warmup, duration);
    let workers: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(worker(target.clone(), until.clone(), window)))
        .collect();

    let mut result = RunResult {
        scenario: "handshakes".into(),
        mode: target.mode().into(),
        ..RunResult::default()
    };
    let mut latency = Latency::new();
    let mut handshakes = 0;
    for worker in workers {
        let stats = worker.await?;
        handshakes += stats.handshakes;
        latency.merge(&stats.latency);
        result.errors += stats.result.errors;
        if result.first_error.is_none() {
            result.first_error = stats.result.first_error;
        }
    }
    result
        .params
        .insert("concurrency".into(), concurrency as f64);
    result.params.insert("warmup".into(), warmup);
    result.params.insert("duration".into(), duration);
    let (session, first_message) = match until {
        Until::Upgrade => (0.0, 0.0),
        Until::Welcome => (1.0, 0.0),
        Until::AuthSuccess(_) => (1.0, 1.0),
    };
    result.params.insert("session".into(), session);
    result.params.insert("first_message".into(), first_message);
    for (name, value) in [
        (metric::HANDSHAKES_PER_S, handshakes as f64 / duration),
        (metric::HANDSHAKE_P50_US, latency.quantile_us(0.50)),
        (metric::HANDSHAKE_P99_US, latency.quantile_us(0.99)),
    ] {
        result.metrics.insert(name.into(), value);
    }
    if handshakes == 0 {
        anyhow::bail!(
            "no handshake completed: {}",
            result.first_error.as_deref().unwrap_or("no error reported")
        );
    }
    Ok(result)
}

async fn worker(target: Target, until: Until, window: Window) -> WorkerStats {
    let mut stats = WorkerStats::default();
    // Bounded by the window: every attempt is itself bounded by HANDSHAKE_TIMEOUT.
    while Instant::now() < window.end {
        let started = Instant::now();
        let attempt = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&target, &until)).await;
        let now = Instant::now();
        match attempt {
            Ok(Ok(())) => {
                if window.contains(now) {
                    stats.handshakes += 1;
                    stats.latency.record(now - started, 1);
                }
            }
            Ok(Err(e)) => {
                stats.result.error(e);
                // Don't spin on an error that repeats (e.g. a dead server).
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(_) => stats.result.error("handshake timed out"),
        }
    }
    stats
}

/// One connection: open, upgrade (a one-byte echo when raw), maybe wait for the
/// session's first message, drop.
async fn handshake(target: &Target, until: &Until) -> io::Result<()> {
    let (mut stream, mut buf) = target.open().await?;
    match until {
        Until::Upgrade => Ok(()),
        Until::Welcome => first_text(&mut stream, &mut buf, br#""type":"welcome""#).await,
        Until::AuthSuccess(auth) => {
            let frame = client_frame(auth.as_bytes(), Rng::new().mask());
            stream.write_all(&frame).await?;
            first_text(&mut stream, &mut buf, br#""type":"auth_success""#).await
        }
    }
}

/// Reads the first text frame (skipping pings) and checks that it contains `expected`.
/// A close frame is an error carrying its code and reason (e.g. 4001 "Invalid token").
async fn first_text(stream: &mut TcpStream, buf: &mut Vec<u8>, expected: &[u8]) -> io::Result<()> {
    loop {
        let mut at = 0;
        while let Some((opcode, payload, next)) = parse_frame(&buf[at..])? {
            at += next;
            if opcode == 0x1 {
                return if memmem::find(payload, expected).is_some() {
                    Ok(())
                } else {
                    Err(io::Error::new(
                        ErrorKind::InvalidData,
                        format!(
                            "expected {}, got {}",
                            String::from_utf8_lossy(expected),
                            String::from_utf8_lossy(payload)
                        ),
                    ))
                };
            }
        }
        buf.drain(..at);
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "closed before the session's first message",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
