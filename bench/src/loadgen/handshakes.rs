//! `handshakes`: K workers each connecting, upgrading and dropping connections as
//! fast as they can. In raw mode a "handshake" is TCP connect + accept plus a
//! one-byte echo, so the server really accepted and served the connection.
//!
//! Each connection is dropped (FIN, no close frame) right after the verified 101,
//! the same way for every server.

use std::io;
use std::time::{Duration, Instant};

use super::latency::Latency;
use super::target::Target;
use super::window::Window;
use crate::report::{metric, RunResult};

/// Longest a single handshake may take before it counts as an error.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

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
    warmup: f64,
    duration: f64,
) -> anyhow::Result<RunResult> {
    let window = Window::after(warmup, duration);
    let workers: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(worker(target.clone(), window)))
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

async fn worker(target: Target, window: Window) -> WorkerStats {
    let mut stats = WorkerStats::default();
    // Bounded by the window: every attempt is itself bounded by HANDSHAKE_TIMEOUT.
    while Instant::now() < window.end {
        let started = Instant::now();
        let attempt = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&target)).await;
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

/// One connection: open, upgrade (a one-byte echo when raw), drop.
async fn handshake(target: &Target) -> io::Result<()> {
    target.open().await.map(drop)
}
