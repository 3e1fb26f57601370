//! `bench echo`: closed-loop round trips.

use std::sync::Arc;
use std::time::Instant;

use switchboard_client::websocket::Options;
use switchboard_client::WebSocket;
use tokio::task::{JoinHandle, JoinSet};

use super::{Common, Run};

/// `switchboard bench echo` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct EchoArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Connections, each with one message in flight.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Message size in bytes (text).
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Offer permessage-deflate.
    #[arg(long)]
    deflate: bool,
}

/// Connect every connection, then start the loops; the handle runs until aborted.
pub(crate) async fn start(
    url: &str,
    args: &EchoArgs,
    run: Arc<Run>,
) -> Result<JoinHandle<()>, String> {
    let options = Options {
        deflate: args.deflate,
        ..Options::default()
    };
    let mut connecting = JoinSet::new();
    for _ in 0..args.connections {
        let (url, options) = (url.to_owned(), options.clone());
        connecting.spawn(async move { WebSocket::connect(&url, &options).await });
    }
    let mut sockets = Vec::new();
    while let Some(done) = connecting.join_next().await {
        match done {
            Ok(Ok(ws)) => sockets.push(ws),
            Ok(Err(e)) => return Err(format!("{url}: {e}")),
            Err(e) => return Err(e.to_string()),
        }
    }
    let payload: String = "x".repeat(args.size);
    Ok(tokio::spawn(async move {
        let mut loops = JoinSet::new();
        for mut ws in sockets {
            let (run, payload) = (run.clone(), payload.clone());
            loops.spawn(async move {
                while !run.stopped() {
                    let sent = Instant::now();
                    if ws.send_text(&payload).await.is_err() {
                        run.recorder.error();
                        return;
                    }
                    match ws.recv().await {
                        Ok(Some(_)) => run.record(sent.elapsed()),
                        _ => {
                            run.recorder.error();
                            return;
                        }
                    }
                }
            });
        }
        while loops.join_next().await.is_some() {}
    }))
}
