//! The client's own figures (issue 14): messages per second one client sends (acknowledged)
//! and receives, memory per connected client, and the time to resume after a server
//! restart. Each against a floor measured in the same run: the bare
//! [`switchboard_client::WebSocket`] doing the same work without reconnection, ids, acks
//! bookkeeping or events.
//!
//! ```sh
//! cargo build --release -p switchboard -p switchboard-client --example measure
//! target/release/examples/measure target/release/switchboard
//! ```
//! It starts the server itself (`serve --rate-limit off` on a free port) and restarts it for
//! the resume figure.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchboard_client::websocket::Options;
use switchboard_client::{Client, Config, Event, State, WebSocket, WsMessage};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(bin: &str, port: u16) -> Result<Server> {
    let child = Command::new(bin)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--rate-limit", "off", "--max-connections-per-ip", "100000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("the server did not start".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Server(child))
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let bin = std::env::args()
        .nth(1)
        .ok_or("usage: measure PATH/TO/switchboard")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut server = start(&bin, port)?;
    let url = format!("ws://127.0.0.1:{port}/ws");
    let n_arg: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50_000);
    #[allow(non_snake_case)]
    let N = n_arg;

    // Sending: N publishes, 256 in flight, each acknowledged.
    // The events are not read here: dropped, so they are discarded (see `Events`).
    let (client, _) = Client::connect(unpaced(&url))?;
    client.join("send").await?;
    let started = Instant::now();
    let mut inflight = tokio::task::JoinSet::new();
    for n in 0..N {
        if inflight.len() >= 256 {
            inflight.join_next().await.ok_or("lost")???;
        }
        let client = client.clone();
        inflight.spawn(async move { client.publish("send", json!({ "n": n })).await });
    }
    while let Some(done) = inflight.join_next().await {
        done??;
    }
    let client_send = N as f64 / started.elapsed().as_secs_f64();
    // The floor: the same publishes over a bare WebSocket, acks counted, 256 in flight.
    let mut ws = joined_socket(&url, "send-floor").await?;
    let started = Instant::now();
    let (mut sent, mut acked) = (0usize, 0usize);
    while acked < N {
        while sent < N && sent - acked < 256 {
            let msg =
                json!({"type": "publish", "room": "send-floor", "data": {"n": sent}, "id": sent});
            ws.send_text(&msg.to_string()).await?;
            sent += 1;
        }
        if let Some(WsMessage::Text(t)) = ws.recv().await? {
            if t.starts_with(br#"{"type":"ack""#)
                || serde_json::from_slice::<Value>(&t)?["type"] == "ack"
            {
                acked += 1;
            }
        }
    }
    let floor_send = N as f64 / started.elapsed().as_secs_f64();
    println!(
        "send (acknowledged publishes/s): client {:.0}, bare WebSocket {:.0}, ratio {:.2}",
        client_send,
        floor_send,
        client_send / floor_send
    );

    // Receiving: a publisher on a bare WebSocket pushes N messages; one client reads them.
    let (reader, mut events) = Client::connect(unpaced(&url))?;
    reader.join("recv").await?;
    let mut floor_reader = joined_socket(&url, "recv").await?;
    let mut publisher = joined_socket(&url, "recv").await?;
    // The publisher keeps at most 1000 messages ahead of the slower reader: a reader that
    // falls further behind would be cut off by the server's outbound budget (`lagged`),
    // which measures the budget, not the reader.
    let (client_got, floor_got) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let behind = {
        let (c, f) = (client_got.clone(), floor_got.clone());
        move || c.load(Ordering::Relaxed).min(f.load(Ordering::Relaxed))
    };
    let publishing = tokio::spawn(async move {
        for n in 0..N {
            while n >= behind() + 1000 {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            let msg = json!({"type": "publish", "room": "recv", "data": {"n": n}});
            publisher.send_text(&msg.to_string()).await?;
        }
        Ok::<_, switchboard_client::Error>(publisher)
    });
    let floor_counter = floor_got.clone();
    let floor = tokio::spawn(async move {
        let started = Instant::now();
        let mut got = 0;
        while got < N {
            if let Some(WsMessage::Text(t)) = floor_reader.recv().await? {
                if serde_json::from_slice::<Value>(&t)?["room"] == "recv" {
                    got += 1;
                    floor_counter.store(got, Ordering::Relaxed);
                }
            }
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(started.elapsed())
    });
    let started = Instant::now();
    let mut got = 0;
    while got < N {
        match events.next().await.ok_or("events ended")? {
            Event::Message(_) => {
                got += 1;
                client_got.store(got, Ordering::Relaxed);
            }
            Event::Lagged { missed } => return Err(format!("lagged {missed}").into()),
            _ => {}
        }
    }
    let client_recv = N as f64 / started.elapsed().as_secs_f64();
    let floor_recv = N as f64 / floor.await?.map_err(|e| e.to_string())?.as_secs_f64();
    let _publisher = publishing.await??;
    println!(
        "receive (messages/s, one client): client {:.0}, bare WebSocket {:.0}, ratio {:.2}",
        client_recv,
        floor_recv,
        client_recv / floor_recv
    );

    // Memory per connected client (joined to one room), and per bare WebSocket.
    const M: usize = 2000;
    let mut clients = Vec::new();
    let mut client_mem = Vec::new();
    for deflate in [true, false] {
        let before = rss_kib();
        for _ in 0..M {
            let mut config = Config::new(&url);
            config.deflate = deflate;
            let (c, events) = Client::connect(config)?;
            c.join("idle").await?;
            clients.push((c, events));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        client_mem.push(rss_kib().saturating_sub(before) * 1024 / M as u64);
    }
    let before = rss_kib();
    let mut sockets = Vec::new();
    for _ in 0..M {
        sockets.push(joined_socket(&url, "idle").await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let socket_mem = (rss_kib().saturating_sub(before)) * 1024 / M as u64;
    println!(
        "memory per connection (RSS of this process): client {} B (deflate offered), {} B (without), bare WebSocket {socket_mem} B",
        client_mem[0], client_mem[1]
    );
    for (c, _) in &clients {
        c.close().await;
    }
    drop(clients);
    drop(sockets);

    // Time to resume: the server restarts; from the moment it accepts again until the
    // client is connected and its room rejoined. Default backoff (1 s base, full jitter):
    // the first retry waits 0–1 s, so the mean is ~0.5 s plus the reconnect itself.
    let mut resumes = Vec::new();
    let (client, mut events) = Client::connect(Config::new(&url))?;
    client.join("resume").await?;
    for _ in 0..5 {
        // Up long enough to count as settled (the backoff starts over, as after any
        // connection that lasted: docs/client.md).
        tokio::time::sleep(Duration::from_secs(6)).await;
        drop(server);
        loop {
            if let Event::State(State::Reconnecting { .. }) = events.next().await.ok_or("ended")? {
                break;
            }
        }
        server = start(&bin, port)?;
        let up = Instant::now();
        loop {
            if let Event::State(State::Connected { .. }) = events.next().await.ok_or("ended")? {
                break;
            }
        }
        // Rejoined (and resumed) once a history read answers after the rejoin.
        client.history("resume", None, Some(1)).await?;
        resumes.push(up.elapsed());
    }
    resumes.sort();
    println!(
        "time to resume after a restart (5 restarts, default backoff): median {:?}, max {:?}",
        resumes[2], resumes[4]
    );
    Ok(())
}

/// The server runs with `--rate-limit off`: no client-side pacing either.
fn unpaced(url: &str) -> Config {
    let mut config = Config::new(url);
    config.send_rate = None;
    config
}

async fn joined_socket(url: &str, room: &str) -> Result<WebSocket> {
    let mut ws = WebSocket::connect(url, &Options::default()).await?;
    ws.send_text(&json!({"type": "join", "room": room}).to_string())
        .await?;
    loop {
        if let Some(WsMessage::Text(t)) = ws.recv().await? {
            if serde_json::from_slice::<Value>(&t)?["type"] == "joined" {
                return Ok(ws);
            }
        }
    }
}
