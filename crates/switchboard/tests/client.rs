//! `switchboard-client` against the real `switchboard` binary: round trips, a server killed
//! and restarted mid-stream (history in a real `redis-server`), a proxy that cuts and stalls
//! connections, the close-code policy, token refresh, and the offline queue's bound.

#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_client::{
    Backoff, Client, Config, Error, Event, Events, Format, State, TokenProvider, TokenVia,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "client-test-secret";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `switchboard serve` process on `port` (killed on drop).
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(port: u16, args: &[&str]) -> Server {
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["serve", "--listen", &listen, "--heartbeat-interval", "5"])
            .args(args)
            .env_clear()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, port }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: a graceful shutdown (1001 to every connection).
    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Redis {
    child: Child,
    url: String,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_server() -> Redis {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is required (scripts/test.sh installs it)");
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

fn mint(sub: &str, ttl: &str, secret: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["token", "--sub", sub, "--ttl", ttl, "--secret", secret])
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Fast settings for tests: short backoff and heartbeats.
fn config(url: &str) -> Config {
    let mut c = Config::new(url);
    c.backoff = Backoff {
        base: Duration::from_millis(100),
        cap: Duration::from_millis(500),
    };
    c.ping_interval = Duration::from_millis(500);
    c.pong_timeout = Duration::from_millis(700);
    c.request_timeout = Duration::from_secs(30);
    // Most servers here run with `--rate-limit off`; the pacing has its own test.
    c.send_rate = None;
    c
}

/// A plain HTTP/1.1 POST with a bearer key; the whole answer as text.
async fn http_post(port: u16, path: &str, key: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// [`config`] for `user` (a JWT from the test secret, by header).
fn as_user(url: &str, user: &str) -> Config {
    let token = mint(user, "1h", SECRET);
    config(url).token(TokenVia::Header, TokenProvider::fixed(token))
}

/// The next event that `pick` accepts, within `ms`.
async fn next_matching<T>(
    events: &mut Events,
    ms: u64,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    loop {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("timed out waiting for an event")
            .expect("events ended");
        if std::env::var_os("CLIENT_TEST_TRACE").is_some() {
            eprintln!("{event:?}");
        }
        if let Some(found) = pick(&event) {
            return found;
        }
    }
}

/// Read messages of `room` until `n` were received (each `data.n`), within `ms`.
async fn collect(events: &mut Events, room: &str, n: usize, ms: u64) -> Vec<u64> {
    let mut got = Vec::new();
    let mut other = Vec::new();
    while got.len() < n {
        let event = match tokio::time::timeout(Duration::from_millis(ms), events.next()).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("events ended after {} messages", got.len()),
            Err(_) => panic!(
                "no message for {ms} ms after {} of {n} (last {:?}); other events: {other:?}",
                got.len(),
                got.last()
            ),
        };
        match event {
            Event::Message(m) if m.room == room => {
                if let Some(v) = m.data().get("n").and_then(|v| v.as_u64()) {
                    got.push(v);
                }
            }
            event => other.push(event),
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_publish_history_and_presence_round_trip_in_both_formats() {
    let server = Server::start(free_port(), &["--rate-limit", "off"]);
    for format in [Format::Json, Format::MsgPack] {
        let room = format!("room-{format:?}");
        let (a, mut a_events) = Client::connect(config(&server.url()).format(format)).unwrap();
        let (b, _b_events) = Client::connect(config(&server.url()).format(format)).unwrap();
        let joined = a.join(&room).await.unwrap();
        assert!(joined.recovered);
        b.join(&room).await.unwrap();
        let mut offsets = Vec::new();
        for n in 0..20u64 {
            offsets.push(b.publish(&room, json!({"n": n})).await.unwrap());
        }
        assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "{offsets:?}");
        assert_eq!(
            collect(&mut a_events, &room, 20, 5000).await,
            (0..20).collect::<Vec<_>>()
        );
        // A relayed message whose type is one of the server's replies is still a message.
        b.send(&room, "joined", json!({"n": 20, "epoch": "x"}))
            .await
            .unwrap();
        let kind = next_matching(&mut a_events, 5000, |e| match e {
            Event::Message(m) if m.room == room => Some(m.kind.clone()),
            _ => None,
        })
        .await;
        assert_eq!(kind, "joined");
        let page = a.history(&room, Some(offsets[9]), None).await.unwrap();
        // The ten after offsets[9], and the relayed `joined`.
        assert_eq!(page.messages.len(), 11);
        assert_eq!(page.offset, offsets[19] + 1);
        let members = a.presence(&room).await.unwrap();
        assert_eq!(members.len(), 2, "{members:?}");
        // A refused request is answered by its error, and the connection goes on.
        let refused = a.publish("not-joined", json!(1)).await.unwrap_err();
        assert!(
            matches!(&refused, Error::Server { code, .. } if code == "not_in_room"),
            "{refused:?}"
        );
        // A bad room name is refused before anything is sent.
        let invalid = a.send("", "chat", json!({})).await.unwrap_err();
        assert!(matches!(invalid, Error::Invalid(_)), "{invalid:?}");
        a.leave(&room).await.unwrap();
        assert_eq!(b.presence(&room).await.unwrap().len(), 1);
        a.close().await;
        assert!(matches!(a.state(), State::Closed { .. }));
        assert!(matches!(
            a.publish(&room, json!(1)).await,
            Err(Error::Closed(_))
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_an_extra_root() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = std::env::temp_dir().join(format!("switchboard-client-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let server = Server::start(
        free_port(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let url = format!("wss://localhost:{}/ws", server.port);
    // Not trusted by the OS store: refused (and retried), never connected.
    let mut untrusted = config(&url);
    untrusted.max_attempts = Some(1);
    let (c, _e) = Client::connect(untrusted).unwrap();
    assert!(c.connected().await.is_err());
    let mut trusted = config(&url);
    trusted.extra_roots = vec![certified.cert.pem().into_bytes()];
    let (c, mut events) = Client::connect(trusted).unwrap();
    c.join("tls").await.unwrap();
    c.publish("tls", json!({"n": 1})).await.unwrap();
    assert_eq!(collect(&mut events, "tls", 1, 5000).await, [1]);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_and_restarted_mid_stream_is_resumed_without_loss_or_duplicates() {
    let redis = redis_server();
    let port = free_port();
    // History holds the whole stream: each client's first retry waits a random 0-1 s, so
    // the publisher may be back (and publishing) well before the subscriber, more than the
    // default 100 messages ahead. Past history, `recovered: false` is the right answer, and
    // this test is about resuming, not about history's size.
    let args = [
        "--broker",
        redis.url.as_str(),
        "--rate-limit",
        "off",
        "--history-max-messages",
        "1000",
    ];
    let args = [&args[..], &["--jwt-secret", SECRET]].concat();
    let mut server = Server::start(port, &args);
    let url = server.url();
    // Authenticated: deduplication is per user, and an anonymous connection is a new user
    // on every connect (its retried publishes could be stored twice).
    let (subscriber, mut events) = Client::connect(as_user(&url, "sub")).unwrap();
    let (publisher, _p) = Client::connect(as_user(&url, "pub")).unwrap();
    subscriber.join("feed").await.unwrap();
    publisher.join("feed").await.unwrap();
    const N: u64 = 300;
    let publishing = tokio::spawn(async move {
        for n in 0..N {
            publisher.publish("feed", json!({"n": n})).await.unwrap();
            if n % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    // Kill the server (no close frame, no goodbye) twice while messages flow.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        server = Server::start(port, &args);
    }
    let got = collect(&mut events, "feed", N as usize, 30_000).await;
    publishing.await.unwrap();
    assert_eq!(
        got,
        (0..N).collect::<Vec<_>>(),
        "every message once, in order"
    );
    // Nothing more arrives (no late duplicate).
    let extra = tokio::time::timeout(Duration::from_millis(500), async {
        next_matching(&mut events, 60_000, |e| match e {
            Event::Message(m) => Some(m.clone()),
            _ => None,
        })
        .await
    })
    .await;
    assert!(extra.is_err(), "unexpected message {extra:?}");
}

/// Redis loses a room while a client is in it (a restart without persistence; here
/// FLUSHALL): the room's next messages come in a new epoch with offsets from 1 again. The
/// server resets the client's position (`joined {recovered: false}`), so it says `Resync`
/// and delivers them instead of skipping them as already seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_redis_lost_under_a_live_client_resyncs_and_skips_nothing_new() {
    let redis = redis_server();
    let port = free_port();
    let server = Server::start(
        port,
        &["--broker", redis.url.as_str(), "--rate-limit", "off"],
    );
    let (subscriber, mut events) = Client::connect(config(&server.url())).unwrap();
    let (publisher, _p) = Client::connect(config(&server.url())).unwrap();
    subscriber.join("feed").await.unwrap();
    publisher.join("feed").await.unwrap();
    for n in 0..3 {
        publisher.publish("feed", json!({"n": n})).await.unwrap();
    }
    assert_eq!(collect(&mut events, "feed", 3, 5_000).await, [0, 1, 2]);
    let port_of_redis = redis
        .url
        .trim_start_matches("redis://127.0.0.1:")
        .trim_end_matches('/');
    let flushed = Command::new("redis-cli")
        .args(["-p", port_of_redis, "FLUSHALL"])
        .output()
        .expect("redis-cli (installed with redis-server)");
    assert!(flushed.status.success(), "{flushed:?}");
    for n in 3..6 {
        publisher.publish("feed", json!({"n": n})).await.unwrap();
    }
    let mut resynced = false;
    let mut got = Vec::new();
    while got.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(5), events.next()).await {
            Ok(Some(Event::Resync { room, .. })) if room == "feed" => resynced = true,
            Ok(Some(Event::Message(m))) if m.room == "feed" => {
                got.push(m.data().get("n").and_then(|v| v.as_u64()).unwrap());
            }
            Ok(Some(_)) => {}
            other => panic!("after {got:?} (resync: {resynced}): {other:?}"),
        }
    }
    assert!(resynced, "the client was told its position was reset");
    assert_eq!(got, [3, 4, 5], "the new epoch's messages, none skipped");
}

/// A loopback proxy that forwards to `target` and, from a seeded sequence, cuts
/// connections (both sides dropped) or stalls them (forwarding stops, the sockets stay
/// open: only the client's heartbeat can tell).
async fn chaos_proxy(target: u16, seed: u64) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut rng = seed;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                continue;
            };
            let life = Duration::from_millis(200 + next() % 600);
            let stall = next() % 3 == 0;
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                let down = tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    (sr, cw)
                });
                tokio::time::sleep(life).await;
                up.abort();
                down.abort();
                if stall {
                    // Hold the (now silent) sockets: the client must notice by itself.
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_cuts_and_stalls_connections_loses_and_duplicates_nothing() {
    let server = Server::start(
        free_port(),
        &["--rate-limit", "off", "--jwt-secret", SECRET],
    );
    let proxy = chaos_proxy(server.port, 0x5eed_1234_abcd).await;
    let url = format!("ws://127.0.0.1:{proxy}/ws");
    let fast = |mut c: Config| {
        c.ping_interval = Duration::from_millis(300);
        c.pong_timeout = Duration::from_millis(300);
        c
    };
    let (subscriber, mut events) = Client::connect(fast(as_user(&url, "sub"))).unwrap();
    let (publisher, _p) = Client::connect(fast(as_user(&url, "pub"))).unwrap();
    subscriber.join("chaos").await.unwrap();
    publisher.join("chaos").await.unwrap();
    const N: u64 = 200;
    let publishing = tokio::spawn(async move {
        for n in 0..N {
            publisher.publish("chaos", json!({"n": n})).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let mut reconnects = 0;
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while got.len() < N as usize {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("timed out")
            .unwrap();
        match event {
            Event::Message(m) => got.push(m.data()["n"].as_u64().unwrap()),
            Event::State(State::Reconnecting { .. }) => reconnects += 1,
            Event::Resync { .. } => panic!("history covers every cut here"),
            _ => {}
        }
    }
    publishing.await.unwrap();
    assert_eq!(
        got,
        (0..N).collect::<Vec<_>>(),
        "every message once, in order"
    );
    assert!(reconnects >= 3, "the proxy cut only {reconnects} times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_codes_1008_stays_closed_and_1001_reconnects_at_once() {
    let port = free_port();
    let mut server = Server::start(port, &["--api-key", "k"]);
    let (client, mut events) = Client::connect(config(&server.url())).unwrap();
    let user = client.connected().await.unwrap();
    client.join("r").await.unwrap();
    // 1001: a graceful shutdown; the client comes back at once (delay 0) when it can.
    server.terminate();
    let delay = next_matching(&mut events, 5000, |e| match e {
        Event::State(State::Reconnecting { attempt: 1, delay }) => Some(*delay),
        _ => None,
    })
    .await;
    assert_eq!(delay, Duration::ZERO);
    server = Server::start(port, &["--api-key", "k"]);
    let user = {
        let _ = user;
        next_matching(&mut events, 10_000, |e| match e {
            Event::State(State::Connected { user_id }) => Some(user_id.clone()),
            _ => None,
        })
        .await
    };
    // 1008: the backend disconnects the user; the client stays closed.
    let body = json!({ "userId": user }).to_string();
    let answer = http_post(server.port, "/api/disconnect", "k", &body).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let code = next_matching(&mut events, 5000, |e| match e {
        Event::State(State::Closed { code, .. }) => Some(*code),
        Event::State(State::Reconnecting { .. }) => panic!("1008 must not reconnect"),
        _ => None,
    })
    .await;
    assert_eq!(code, 1008);
    assert!(matches!(client.join("r").await, Err(Error::Closed(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_4001_asks_for_a_fresh_token_and_4002_waits_before_retrying() {
    let server = Server::start(
        free_port(),
        &["--jwt-secret", SECRET, "--rate-limit", "5/10"],
    );
    // The first token is signed with the wrong secret: 4001, then a fresh one works.
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let provider = TokenProvider::new(move || {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            let secret = if n == 0 { "wrong-secret" } else { SECRET };
            Ok(mint("alice", "1h", secret))
        }
    });
    for via in [TokenVia::Header, TokenVia::Query, TokenVia::FirstMessage] {
        calls.store(0, Ordering::SeqCst);
        let mut c = config(&server.url()).token(via, provider.clone());
        c.rate_limit_pause = Duration::from_millis(1500);
        let (client, mut events) = Client::connect(c).unwrap();
        let code = next_matching(&mut events, 5000, |e| match e {
            Event::State(State::Disconnected { code, .. }) => Some(*code),
            _ => None,
        })
        .await;
        assert_eq!(code, 4001, "{via:?}");
        assert_eq!(client.connected().await.unwrap(), "alice", "{via:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "{via:?}");
        if via != TokenVia::Header {
            client.close().await;
            continue;
        }
        // 4002: flood past the rate limit; the next attempt waits the pause.
        client.join("r").await.unwrap();
        // Concurrently: a refused message is never acknowledged.
        for n in 0..60 {
            let flooding = client.clone();
            tokio::spawn(async move { flooding.publish("r", json!({ "n": n })).await });
        }
        let (code, delay) = {
            let code = next_matching(&mut events, 10_000, |e| match e {
                Event::State(State::Disconnected { code, .. }) => Some(*code),
                _ => None,
            })
            .await;
            let delay = next_matching(&mut events, 5000, |e| match e {
                Event::State(State::Reconnecting { delay, .. }) => Some(*delay),
                _ => None,
            })
            .await;
            (code, delay)
        };
        assert_eq!(code, 4002);
        assert!(delay >= Duration::from_millis(1500), "{delay:?}");
        client.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_refreshed_before_it_expires() {
    let server = Server::start(free_port(), &["--jwt-secret", SECRET]);
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let provider = TokenProvider::new(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { Ok(mint("bob", "4s", SECRET)) }
    });
    let (client, mut events) =
        Client::connect(config(&server.url()).token(TokenVia::Header, provider)).unwrap();
    client.join("r").await.unwrap();
    // Past the first token's expiry: still the first connection (a refresh, not a 4001).
    let ended = tokio::time::timeout(Duration::from_secs(6), async {
        next_matching(&mut events, 60_000, |e| match e {
            Event::State(State::Disconnected { code, reason }) => Some((*code, reason.clone())),
            _ => None,
        })
        .await
    })
    .await;
    assert!(ended.is_err(), "the connection ended: {ended:?}");
    assert!(calls.load(Ordering::SeqCst) >= 2, "no refresh");
    assert!(matches!(client.state(), State::Connected { .. }));
    client.publish("r", json!("still here")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_resume_is_paced_under_the_servers_rate_limit() {
    // The server's default limit: 100 messages / 10 s, bursts of 20, 4002 after 20 more.
    let port = free_port();
    let mut c = config(&format!("ws://127.0.0.1:{port}/ws"));
    c.send_rate = Some(switchboard_client::SendRate::default());
    let (client, mut events) = Client::connect(c).unwrap();
    // 30 joins and 30 publishes wait for the server: 60 messages at the first connect.
    let mut tasks = Vec::new();
    for n in 0..30u64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let room = format!("paced-{n}");
            client.join(&room).await?;
            client.publish(&room, json!({ "n": n })).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _server = Server::start(port, &[]);
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    // No 4002 (nor any other end) on the way: only refused connects before the start.
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(10), events.next()).await
    {
        if let Event::State(State::Disconnected { code, reason }) = &event {
            assert_eq!(*code, 1006, "{reason}");
        }
    }
    assert!(matches!(client.state(), State::Connected { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offline_queue_is_bounded_and_flushed_on_connect() {
    let port = free_port();
    let mut c = config(&format!("ws://127.0.0.1:{port}/ws"));
    c.offline_queue = 5;
    let (client, mut events) = Client::connect(c).unwrap();
    let (reader, _r) = Client::connect(config(&format!("ws://127.0.0.1:{port}/ws"))).unwrap();
    // No server yet: the join and four publishes wait in the queue.
    let joining = tokio::spawn({
        let client = client.clone();
        async move { client.join("q").await }
    });
    let mut publishing = Vec::new();
    for n in 0..4u64 {
        let client = client.clone();
        publishing.push(tokio::spawn(async move {
            client.publish("q", json!({ "n": n })).await
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.queued() < 5 {
        assert!(Instant::now() < deadline, "queued {}", client.queued());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The sixth request is refused at once, and nothing of it is sent later.
    assert_eq!(
        client.publish("q", json!({"n": 99})).await,
        Err(Error::QueueFull(5))
    );
    assert!(matches!(
        client.state(),
        State::Reconnecting { .. } | State::Connecting
    ));
    let _server = Server::start(port, &[]);
    joining.await.unwrap().unwrap();
    let mut offsets = Vec::new();
    for p in publishing {
        offsets.push(p.await.unwrap().unwrap());
    }
    offsets.sort_unstable();
    assert_eq!(offsets.len(), 4);
    assert_eq!(client.queued(), 0);
    // Each queued publish was stored once; the refused one never.
    reader.connected().await.unwrap();
    let page = reader.history("q", Some(0), None).await.unwrap();
    let mut stored: Vec<u64> = page
        .messages
        .iter()
        .map(|m| m["data"]["n"].as_u64().unwrap())
        .collect();
    stored.sort_unstable();
    assert_eq!(stored, [0, 1, 2, 3]);
    let _ = events.next().await;
}
