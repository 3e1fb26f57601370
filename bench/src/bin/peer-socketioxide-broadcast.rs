//! socketioxide server for the Socket.IO rows (and the socketioxide column of the fan-out
//! rows), on hyper 1 as in socketioxide's `hyper-echo` example, with its default
//! (in-memory, one process) adapter. The events are the bench's
//! ([`switchboard_bench::sio_peer`]).

use std::sync::{Arc, Mutex};

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use socketioxide::extract::SocketRef;
use socketioxide::SocketIo;
use switchboard_bench::sio_peer::{self, Rooms};

fn main() -> anyhow::Result<()> {
    let (svc, io) = SocketIo::new_svc();
    let rooms = Arc::new(Mutex::new(Rooms::default()));
    io.ns("/", async move |socket: SocketRef| {
        sio_peer::register(&socket, rooms.clone());
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
