//! Requests forwarded between two nodes over a real `redis-server`: answered, refused at
//! once for a node that does not exist or at its limit, and cancelled at the owner when the
//! asker stops waiting.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::redis_server;
use switchboard_broker_redis::{connect, ForwardError, Redis, RedisConfig};
use switchboard_hub::HubConfig;

async fn node(url: &str) -> Redis {
    connect(RedisConfig::new(url, HubConfig::default().memory_store()))
        .await
        .unwrap()
}

/// Sets its flag when dropped (the handler's work was dropped: finished or aborted).
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Until `check` holds (5 s at most).
async fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait until `target` answers `from`'s requests (its subscription is confirmed).
async fn reachable(from: &Redis, target: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = from
            .forwarder
            .request(target, Bytes::from_static(b"ping"), Duration::from_secs(1))
            .await;
        if answer.is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{target} never answered: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_run_by_its_node_and_answered() {
    let redis = redis_server();
    let (a, b) = (node(&redis.url).await, node(&redis.url).await);
    b.forwarder.serve(Arc::new(|request: Bytes| {
        Box::pin(async move {
            let mut answer = b"ran: ".to_vec();
            answer.extend_from_slice(&request);
            Bytes::from(answer)
        })
    }));
    let target = b.forwarder.node();
    reachable(&a, target).await;
    let answer = a
        .forwarder
        .request(
            target,
            Bytes::from_static(b"\x00binary\xff"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(&answer[..], b"ran: \x00binary\xff");
    // Many at once, each matched to its own answer.
    let requests: Vec<_> = (0..50)
        .map(|i| {
            a.forwarder
                .request(target, Bytes::from(format!("#{i}")), Duration::from_secs(5))
        })
        .collect();
    for (i, request) in requests.into_iter().enumerate() {
        assert_eq!(request.await.unwrap(), Bytes::from(format!("ran: #{i}")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_exist_is_reported_gone_at_once() {
    let redis = redis_server();
    let a = node(&redis.url).await;
    let nobody = a.forwarder.node().wrapping_add(1);
    let started = Instant::now();
    let answer = a
        .forwarder
        .request(nobody, Bytes::from_static(b"x"), Duration::from_secs(30))
        .await;
    assert_eq!(answer, Err(ForwardError::Gone));
    assert!(started.elapsed() < Duration::from_secs(5), "not a timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asker_that_stops_waiting_cancels_the_work_at_the_owner() {
    let redis = redis_server();
    let (a, b) = (node(&redis.url).await, node(&redis.url).await);
    let started = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicBool::new(false));
    {
        let (started, dropped) = (started.clone(), dropped.clone());
        b.forwarder.serve(Arc::new(move |request: Bytes| {
            let (started, dropped) = (started.clone(), dropped.clone());
            Box::pin(async move {
                if &request[..] == b"ping" {
                    return Bytes::new();
                }
                let _flag = DropFlag(dropped);
                started.store(true, Ordering::SeqCst);
                // A held poll that nothing answers.
                std::future::pending::<()>().await;
                Bytes::new()
            })
        }));
    }
    let target = b.forwarder.node();
    reachable(&a, target).await;
    let waiting = tokio::spawn(a.forwarder.request(
        target,
        Bytes::from_static(b"hold"),
        Duration::from_secs(60),
    ));
    until("the owner runs the request", || {
        started.load(Ordering::SeqCst)
    })
    .await;
    assert!(!dropped.load(Ordering::SeqCst));
    waiting.abort();
    until("the owner dropped the request's work", || {
        dropped.load(Ordering::SeqCst)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_that_never_answers_times_out() {
    let redis = redis_server();
    let (a, b) = (node(&redis.url).await, node(&redis.url).await);
    b.forwarder.serve(Arc::new(move |request: Bytes| {
        Box::pin(async move {
            if &request[..] != b"ping" {
                std::future::pending::<()>().await;
            }
            Bytes::new()
        })
    }));
    let target = b.forwarder.node();
    reachable(&a, target).await;
    let started = Instant::now();
    let answer = a
        .forwarder
        .request(target, Bytes::from_static(b"x"), Duration::from_millis(300))
        .await;
    assert_eq!(answer, Err(ForwardError::Unavailable));
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_owner_that_does_not_listen_for_a_moment_is_unavailable_not_gone() {
    let redis = redis_server();
    let (a, b) = (node(&redis.url).await, node(&redis.url).await);
    b.forwarder
        .serve(Arc::new(|_request: Bytes| Box::pin(async { Bytes::new() })));
    let target = b.forwarder.node();
    reachable(&a, target).await;
    // Redis drops every pub/sub connection and refuses new subscriptions for now: b is
    // alive (its heartbeat key stays) but nobody listens on its channel.
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("-subscribe")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap();
    let answer = a
        .forwarder
        .request(target, Bytes::from_static(b"x"), Duration::from_secs(5))
        .await;
    assert_eq!(
        answer,
        Err(ForwardError::Unavailable),
        "its sessions are not given up"
    );
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("+subscribe")
        .query_async(&mut conn)
        .await
        .unwrap();
    reachable(&a, target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_at_its_limit_refuses_more_at_once_and_takes_them_again_once_below() {
    let redis = redis_server();
    let a = node(&redis.url).await;
    let mut config = RedisConfig::new(&redis.url, HubConfig::default().memory_store());
    config.forward_limits.requests = 3;
    config.forward_limits.bytes = 1000;
    let b = connect(config).await.unwrap();
    // Requests starting with `hold` wait until released; the others answer at once.
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let held = release.clone();
    b.forwarder.serve(Arc::new(move |request: Bytes| {
        let held = held.clone();
        Box::pin(async move {
            if request.starts_with(b"hold") {
                held.acquire().await.unwrap().forget();
            }
            request
        })
    }));
    let target = b.forwarder.node();
    reachable(&a, target).await;
    let ask = |body: &'static [u8]| {
        a.forwarder
            .request(target, Bytes::from_static(body), Duration::from_secs(5))
    };
    let holding: Vec<_> = (0..3).map(|_| tokio::spawn(ask(b"hold"))).collect();
    // The three are running at the owner once a fourth is refused (they may arrive in any
    // order with it: ask until the refusal comes).
    let started = Instant::now();
    loop {
        match ask(b"more").await {
            Err(ForwardError::Busy) => break,
            Ok(answer) => assert_eq!(&answer[..], b"more"),
            Err(e) => panic!("{e:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused_in = Instant::now();
    assert_eq!(ask(b"more").await, Err(ForwardError::Busy));
    assert!(
        refused_in.elapsed() < Duration::from_secs(1),
        "refused at once, not timed out"
    );
    // Held requests finish (their entries go before their answers): the owner takes
    // requests again.
    release.add_permits(3);
    for h in holding {
        assert_eq!(&h.await.unwrap().unwrap()[..], b"hold");
    }
    assert_eq!(&ask(b"again").await.unwrap()[..], b"again");
    // Bytes count too: one request over the byte budget is refused alone.
    let big = Bytes::from(vec![b'x'; 1001]);
    let refused = a
        .forwarder
        .request(target, big, Duration::from_secs(5))
        .await;
    assert_eq!(refused, Err(ForwardError::Busy));
}
