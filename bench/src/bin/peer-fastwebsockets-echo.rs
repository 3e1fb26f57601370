//! fastwebsockets echo server, as in its README and `examples/echo_server.rs`:
//! hyper 1 serves the HTTP/1.1 upgrade, then a `FragmentCollector` echoes frames.

use fastwebsockets::{upgrade, FragmentCollector, OpCode, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

async fn handle_client(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = FragmentCollector::new(fut.await?);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
    Ok(())
}

async fn server_upgrade(
    mut req: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, fut) = upgrade::upgrade(&mut req)?;
    tokio::spawn(async move {
        // `unconstrained` as in the upstream example: no tokio co-op yielding.
        let _ = tokio::task::unconstrained(handle_client(fut)).await;
    });
    Ok(response)
}

async fn serve(stream: TcpStream) {
    let conn = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service_fn(server_upgrade))
        .with_upgrades();
    let _ = conn.await;
}

fn main() -> anyhow::Result<()> {
    switchboard_bench::peer::run("peer-fastwebsockets-echo", serve)
}
