//! `idle`: open and upgrade N connections (optionally joining the broadcast room, as
//! idle room members, or as switchboard SSE streams on it), let the server settle, then hold them
//! while the driver samples the server's memory. Socket.IO members are read while held, to
//! answer the server's Engine.IO pings; the others are never read. The hold ends when stdin reaches
//! EOF (the driver closes it after sampling) or after `hold` seconds.

use std::time::{Duration, Instant};

use futures_util::{stream, StreamExt};
use tokio::io::AsyncReadExt;

use super::fanout::Protocol;
use super::target::Target;
use crate::report::{emit, metric, Event, RunResult};
use tokio::net::TcpStream;

/// How long opening all connections may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one connection's open and upgrade may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Shape of the idle scenario.
#[derive(Debug, Clone)]
pub struct Idle {
    /// Connections to open.
    pub connections: usize,
    /// Handshakes in flight while opening.
    pub concurrency: usize,
    /// Seconds to wait after the last upgrade before announcing the hold.
    pub settle: f64,
    /// Longest hold, in seconds, if stdin never closes.
    pub hold: f64,
    /// Join the broadcast room with this protocol after the upgrade (idle room members).
    pub join: Option<Protocol>,
    /// Open SSE streams on the room instead (`GET /events?channels=bench`); nothing is
    /// read after their `connected` event.
    pub sse: bool,
}

/// One connection, upgraded (and joined to the room if `join`), or an SSE stream.
async fn open(target: &Target, idle: &Idle) -> std::io::Result<(TcpStream, Vec<u8>)> {
    match idle.join {
        _ if idle.sse => super::sse::open(target, super::fanout::ROOM).await,
        Some(protocol) => super::fanout::member(target, protocol).await,
        None => target.open().await,
    }
}

/// Opens, settles, holds, and reports how many connections were held.
pub async fn run(target: &Target, idle: &Idle) -> anyhow::Result<RunResult> {
    let mut result = RunResult {
        scenario: "idle".into(),
        mode: if idle.sse { "sse" } else { target.mode() }.into(),
        ..RunResult::default()
    };
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
    let mut opening = stream::iter(0..idle.connections)
        .map(|_| tokio::time::timeout(OPEN_TIMEOUT, open(target, idle)))
        .buffer_unordered(idle.concurrency.max(1));
    let mut held = Vec::with_capacity(idle.connections);
    // Socket.IO members answer the server's Engine.IO pings (every 25 s by default), or it
    // would drop them after its ping timeout: each is held by a task that reads.
    let mut answering = Vec::new();
    let socketio = idle.join == Some(Protocol::Socketio) && !idle.sse;
    loop {
        match tokio::time::timeout_at(deadline, opening.next()).await {
            Ok(Some(Ok(Ok((stream, rest))))) if socketio => {
                let mask = super::handshake::Rng::new().mask();
                answering.push(tokio::spawn(super::socketio::hold(stream, rest, mask)));
            }
            Ok(Some(Ok(Ok((stream, _))))) => held.push(stream),
            Ok(Some(Ok(Err(e)))) => result.error(e),
            Ok(Some(Err(_))) => result.error("open timed out"),
            Ok(None) => break,
            Err(_) => {
                result.error(format!("opening took over {SETUP_TIMEOUT:?}"));
                break;
            }
        }
    }
    drop(opening);
    let connect_seconds = started.elapsed().as_secs_f64();
    let opened = held.len() + answering.len();
    if opened == 0 {
        anyhow::bail!(
            "no connection opened: {}",
            result.first_error.as_deref().unwrap_or("no error reported")
        );
    }

    tokio::time::sleep(Duration::from_secs_f64(idle.settle)).await;
    emit(&Event::Hold {
        connections: opened as u64,
    });
    let _ = tokio::time::timeout(Duration::from_secs_f64(idle.hold), async {
        let mut stdin = tokio::io::stdin();
        let mut sink = [0u8; 256];
        while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;

    // A Socket.IO member whose task ended lost its connection during the hold.
    for task in answering {
        if task.is_finished() {
            match task.await {
                Ok(Err(e)) => result.error(format!("held Socket.IO connection: {e}")),
                Ok(Ok(())) => result.error("held Socket.IO connection ended"),
                Err(e) => result.error(e),
            }
        } else {
            task.abort();
        }
    }
    result
        .params
        .insert("connections".into(), idle.connections as f64);
    result
        .params
        .insert("concurrency".into(), idle.concurrency as f64);
    result.params.insert("settle".into(), idle.settle);
    result
        .metrics
        .insert(metric::CONNECTIONS.into(), opened as f64);
    result
        .metrics
        .insert(metric::CONNECT_SECONDS.into(), connect_seconds);
    Ok(result)
}
