//! Parking (`ws::park`): an idle connection gives up its task, and everything a connection
//! does keeps working across parking: messages resume it, heartbeats are answered while it
//! stays parked, a dead peer is still dropped, deliveries reach it, shutdown closes it.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use support::{raw_frame, Ending, TestClient, TestServer};
use switchboard_server::state::AppState;
use switchboard_server::ServerConfig;
use switchboard_ws_proto::Event;

const PARK_AFTER: Duration = Duration::from_millis(100);

/// A server with `/echo`, no rate limit, and parking after [`PARK_AFTER`].
async fn start(config: ServerConfig) -> TestServer {
    support::start(ServerConfig {
        echo: true,
        session: switchboard_server::SessionConfig {
            rate_limit: None,
            ..Default::default()
        },
        park_idle_after: Some(PARK_AFTER),
        ..config
    })
    .await
}

fn parked(state: &AppState) -> i64 {
    state.metrics.parked.get()
}

/// Wait (at most 3 s) until `n` connections are parked.
async fn until_parked(state: &AppState, n: i64) {
    let started = Instant::now();
    while parked(state) != n {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "expected {n} parked, have {}",
            parked(state)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Send `text` and expect it back (answering heartbeat Pings meanwhile).
/// Wait (at most 2 s) until the server has no WebSocket connection left; `why` says what it
/// would mean if one stayed.
async fn until_no_connections(state: &AppState, why: &str) {
    let started = Instant::now();
    while state.connection_count() != 0 {
        assert!(started.elapsed() < Duration::from_secs(2), "{why}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn echo(client: &mut TestClient, text: &str) {
    client.send_text(text).await;
    loop {
        match client.next_event().await {
            Some(Event::Ping(_)) => client.flush().await,
            other => {
                assert_eq!(other, Some(Event::Text(text.to_owned().into())));
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_parks_and_resumes_at_its_next_message() {
    let server = start(ServerConfig::default()).await;
    let mut client = TestClient::connect(server.addr, "/echo", false).await;
    echo(&mut client, "before").await;
    until_parked(&server.state, 1).await;
    assert_eq!(server.state.parking.len(), 1);
    echo(&mut client, "after").await;
    // Resumed, then parked again once idle.
    until_parked(&server.state, 1).await;
    // A message split across two writes, with the connection parked in between.
    let frame = raw_frame(0x81, b"split message");
    client.send_raw(&frame[..5]).await;
    tokio::time::sleep(PARK_AFTER * 3).await;
    client.send_raw(&frame[5..]).await;
    assert_eq!(
        client.next_event().await,
        Some(Event::Text("split message".into()))
    );
    // A client's Ping is answered in place: the connection stays parked.
    until_parked(&server.state, 1).await;
    for _ in 0..3 {
        client.send_raw(&raw_frame(0x89, b"are you there")).await;
        assert_eq!(
            client.next_event().await,
            Some(Event::Pong("are you there".into()))
        );
        assert_eq!(parked(&server.state), 1);
    }
    // A Ping and a message in one write: resumed, both handled in order.
    let both = [raw_frame(0x89, b"p"), raw_frame(0x81, b"m")].concat();
    client.send_raw(&both).await;
    assert_eq!(client.next_event().await, Some(Event::Pong("p".into())));
    assert_eq!(client.next_event().await, Some(Event::Text("m".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_state_survives_parking() {
    let server = start(ServerConfig::default()).await;
    let mut client = TestClient::connect(server.addr, "/echo", true).await;
    let text = "compressible ".repeat(100);
    echo(&mut client, &text).await;
    until_parked(&server.state, 1).await;
    echo(&mut client, &text).await;
    until_parked(&server.state, 1).await;
    echo(&mut client, &text).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_is_pinged_and_answering_keeps_it_parked() {
    let server = start(ServerConfig {
        heartbeat_interval: Duration::from_millis(300),
        heartbeat_timeout: Duration::from_millis(1500),
        ..ServerConfig::default()
    })
    .await;
    let mut client = TestClient::connect(server.addr, "/echo", false).await;
    until_parked(&server.state, 1).await;
    // The lot checks deadlines once a second: expect a Ping about every second, each
    // answered; the connection must stay parked throughout (a resume would show as 0 parked
    // for at least PARK_AFTER).
    let state = server.state.clone();
    let watcher = tokio::spawn(async move {
        let started = Instant::now();
        let mut lowest = i64::MAX;
        while started.elapsed() < Duration::from_millis(3500) {
            lowest = lowest.min(parked(&state));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        lowest
    });
    let mut pings = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(3500) {
        let event = tokio::time::timeout(Duration::from_millis(200), client.next_event()).await;
        match event {
            Ok(Some(Event::Ping(_))) => {
                pings += 1;
                client.flush().await; // the codec queued the Pong
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => {}
        }
    }
    assert!(pings >= 2, "{pings} pings");
    assert_eq!(watcher.await.unwrap(), 1, "stayed parked while answering");
    echo(&mut client, "still here").await;
    assert!(server
        .state
        .metrics
        .encode()
        .contains("switchboard_parked_connections"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_peer_that_stops_answering_is_dropped() {
    let server = start(ServerConfig {
        heartbeat_interval: Duration::from_millis(300),
        heartbeat_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    let mut client = TestClient::connect(server.addr, "/echo", false).await;
    until_parked(&server.state, 1).await;
    let started = Instant::now();
    // Read without answering pings until the server drops us.
    let ending = loop {
        match client.next_event().await {
            Some(Event::Ping(_)) => client.conn.output().split().clear(), // no Pong
            Some(other) => panic!("unexpected {other:?}"),
            None => break Ending::Eof,
        }
    };
    assert_eq!(ending, Ending::Eof);
    // interval + timeout, each up to a second late (the lot's tick), plus slack.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    until_parked(&server.state, 0).await;
    until_no_connections(&server.state, "the dropped connection is still counted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_member_receives_what_its_room_publishes() {
    let server = start(ServerConfig::default()).await;
    let mut subscriber = TestClient::connect(server.addr, "/ws", false).await;
    subscriber.expect_type("welcome").await;
    subscriber
        .send_text(r#"{"type":"join","room":"lobby"}"#)
        .await;
    subscriber.expect_type("joined").await;
    let mut publisher = TestClient::connect(server.addr, "/ws", false).await;
    publisher.expect_type("welcome").await;
    publisher
        .send_text(r#"{"type":"join","room":"lobby"}"#)
        .await;
    publisher.expect_type("joined").await;
    until_parked(&server.state, 2).await;
    for i in 0..3 {
        publisher
            .send_text(&format!(r#"{{"type":"chat","room":"lobby","n":{i}}}"#))
            .await;
        let m = subscriber.expect_type("chat").await;
        assert_eq!(m["n"], i);
        until_parked(&server.state, 2).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_parked_connections_with_1001() {
    let server = start(ServerConfig::default()).await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(TestClient::connect(server.addr, "/echo", false).await);
    }
    until_parked(&server.state, 20).await;
    server.shutdown.cancel();
    for client in &mut clients {
        assert_eq!(client.close_code().await, Some(1001));
    }
    assert!(
        server.task.await.unwrap(),
        "every connection finished in time"
    );
    assert_eq!(parked(&server.state), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_that_the_peer_closes_is_cleaned_up() {
    let server = start(ServerConfig::default()).await;
    let mut client = TestClient::connect(server.addr, "/echo", false).await;
    until_parked(&server.state, 1).await;
    client
        .conn
        .close(switchboard_ws_proto::CloseCode::Normal, "bye");
    client.flush().await;
    assert!(matches!(client.ending().await, Ending::Close(Some(_))));
    drop(client);
    until_no_connections(&server.state, "the closed connection is still counted").await;
    until_parked(&server.state, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_sends_a_pong_and_leaves_is_noticed_at_once() {
    use tokio::io::AsyncWriteExt;
    let server = start(ServerConfig::default()).await;
    let mut client = TestClient::connect(server.addr, "/echo", false).await;
    until_parked(&server.state, 1).await;
    // A Pong and the end of the stream in one segment: one readiness edge for both.
    client.send_raw(&raw_frame(0x8a, b"")).await;
    client.stream.shutdown().await.unwrap();
    until_no_connections(
        &server.state,
        "still open: the end of the stream behind the Pong was missed",
    )
    .await;
}
