//! fastwebsockets broadcast server for the fan-out scenarios: hyper 1 upgrade as in
//! the `echo_server_split` example; every connection registers a bounded mpsc
//! sender in one shared room, and a text message starting with `P` from any client
//! goes to every connection (the sender included). Each connection has a writer
//! task draining its channel. A connection whose channel is full misses that
//! message (the loadgen reports it as lost) rather than stalling everyone else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fastwebsockets::{upgrade, FragmentCollectorRead, Frame, OpCode, Payload, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Frames queued per connection before it starts missing messages.
const QUEUE: usize = 1024;

/// Every connected client's outbound queue, by connection id.
#[derive(Default)]
struct Room {
    next_id: AtomicU64,
    members: Mutex<HashMap<u64, mpsc::Sender<Frame<'static>>>>,
}

impl Room {
    fn broadcast(&self, payload: &[u8]) {
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        for tx in members.values() {
            let _ = tx.try_send(Frame::text(Payload::Owned(payload.to_vec())));
        }
    }
}

async fn handle_client(room: Arc<Room>, fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let ws = fut.await?;
    let (rx, mut tx) = ws.split(tokio::io::split);
    let mut rx = FragmentCollectorRead::new(rx);
    let (queue, mut outbox) = mpsc::channel::<Frame<'static>>(QUEUE);
    let id = room.next_id.fetch_add(1, Ordering::Relaxed);
    room.members
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, queue.clone());
    tokio::spawn(async move {
        while let Some(frame) = outbox.recv().await {
            if tx.write_frame(frame).await.is_err() {
                break;
            }
        }
    });
    let result = async {
        loop {
            // Pongs and close replies go through the same queue as broadcasts.
            let mut send = |frame: Frame<'static>| {
                let queue = queue.clone();
                async move { queue.send(frame).await }
            };
            let frame = rx.read_frame(&mut send).await?;
            match frame.opcode {
                OpCode::Close => return Ok(()),
                OpCode::Text if frame.payload.starts_with(b"P") => room.broadcast(&frame.payload),
                _ => {}
            }
        }
    }
    .await;
    room.members
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id);
    result
}

fn main() -> anyhow::Result<()> {
    let room = Arc::new(Room::default());
    switchboard_bench::peer::run("peer-fastwebsockets-broadcast", move |stream: TcpStream| {
        let room = room.clone();
        async move {
            let service = service_fn(move |mut req: Request<Incoming>| {
                let room = room.clone();
                async move {
                    let (response, fut) = upgrade::upgrade(&mut req)?;
                    tokio::spawn(async move {
                        let _ = tokio::task::unconstrained(handle_client(room, fut)).await;
                    });
                    Ok::<Response<Empty<Bytes>>, WebSocketError>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        }
    })
}
