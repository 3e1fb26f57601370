//! `cargo run -p embed-axum` — the application on 127.0.0.1:3000, Switchboard's WebSocket
//! at ws://127.0.0.1:3000/ws. Ctrl-C shuts both down gracefully.

use std::net::SocketAddr;

use switchboard_server::ServerConfig;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let shutdown = CancellationToken::new();
    let (app, switchboard) = embed_axum::app(ServerConfig::default(), shutdown.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    // Peer addresses (ConnectInfo) let Switchboard apply its per-IP connection limit.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await?;
    switchboard.drain().await;
    Ok(())
}
