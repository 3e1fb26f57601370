//! socketioxide with its Redis adapter (`socketioxide-redis`, the `redis` crate driver), for
//! the cross-node fan-out rows (`fanout-redis-*`): the same server and events as
//! `peer-socketioxide-broadcast` ([`switchboard_bench::sio_peer`]), but several processes
//! started with the same `--redis URL` share rooms, the way socketioxide applications scale
//! out: a broadcast is published once to the namespace's Redis request channel, to which
//! every node subscribes, and each node emits it to its local members of the room.
//!
//! `--redis URL` (or `REDIS_URL` in the environment): `redis://host:port/`. The adapter's
//! drivers speak RESP3 (Redis 7 or later): `protocol=resp3` is added to the URL unless it
//! names a protocol.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Parser;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use socketioxide::extract::SocketRef;
use socketioxide::SocketIo;
use socketioxide_redis::drivers::redis::redis_client as redis;
use socketioxide_redis::{RedisAdapter, RedisAdapterCtr};
use switchboard_bench::peer::{self, PeerArgs};
use switchboard_bench::sio_peer::{self, Rooms};

const NAME: &str = "peer-socketioxide-redis-broadcast";

/// Command line: the peers' own, plus the Redis URL.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    peer: PeerArgs,
    /// Redis URL the nodes share, e.g. redis://127.0.0.1:6379/ (default: $REDIS_URL).
    #[arg(long)]
    redis: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let url = match cli.redis {
        Some(url) => url,
        None => std::env::var("REDIS_URL").context("no --redis URL and no REDIS_URL")?,
    };
    let url = resp3(&url);
    peer::serve(NAME, &cli.peer, async move {
        let client =
            redis::Client::open(url.as_str()).with_context(|| format!("redis URL {url}"))?;
        let adapter = RedisAdapterCtr::new_with_redis(&client)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let (svc, io) = SocketIo::builder()
            .with_adapter::<RedisAdapter<_>>(adapter)
            .build_svc();
        let rooms = Arc::new(Mutex::new(Rooms::default()));
        // The namespace's adapter subscribes to its Redis channels before it serves.
        io.ns("/", async move |socket: SocketRef<RedisAdapter<_>>| {
            sio_peer::register(&socket, rooms.clone());
        })
        .await
        .map_err(|e| anyhow::anyhow!("namespace / on Redis: {e}"))?;
        eprintln!("{NAME}: adapter on {url}");
        Ok(move |stream| {
            let svc = svc.clone();
            async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            }
        })
    })
}

/// `url` with `protocol=resp3` in its query unless it names a protocol.
fn resp3(url: &str) -> String {
    if url.contains("protocol=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else {
        format!("{url}?protocol=resp3")
    }
}
