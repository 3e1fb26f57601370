//! socketioxide broadcast server for the fan-out scenarios, on hyper 1 as in
//! socketioxide's `hyper-echo` example: namespace "/", event `join` joins room
//! "bench", event `publish` emits event `msg` with the same payload to everyone in
//! that room (`within`: the sender included, like the other servers).

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use socketioxide::extract::{Data, SocketRef};
use socketioxide::SocketIo;

const ROOM: &str = "bench";

fn main() -> anyhow::Result<()> {
    let (svc, io) = SocketIo::new_svc();
    io.ns("/", async |socket: SocketRef| {
        socket.on("join", |socket: SocketRef| async move { socket.join(ROOM) });
        socket.on(
            "publish",
            |socket: SocketRef, Data::<String>(payload)| async move {
                let _ = socket.within(ROOM).emit("msg", &payload).await;
            },
        );
    });
    switchboard_bench::peer::run("peer-socketioxide-broadcast", move |stream| {
        let svc = svc.clone();
        async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        }
    })
}
