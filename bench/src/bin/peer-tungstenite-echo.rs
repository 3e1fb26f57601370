//! tokio-tungstenite echo server, written as its own `examples/echo-server.rs`:
//! `accept_async`, split, and forward every text/binary message back.
//!
//! `forward` batches: it `feed`s each message that is already available and
//! flushes only when the stream has nothing more ready, so pipelined messages
//! are written back with one syscall per batch, and a lone message is flushed at
//! once. (A loop of `next` + `feed` + `flush` does the same but polls the stream
//! once more per batch, and tungstenite zero-fills its 128 KiB read buffer on
//! every poll: measurably slower on the closed-loop rows.)

use futures_util::{future, StreamExt, TryStreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;

async fn echo(stream: TcpStream) -> Result<(), tungstenite::Error> {
    let ws = tokio_tungstenite::accept_async(stream).await?;
    let (write, read) = ws.split();
    read.try_filter(|msg| future::ready(msg.is_text() || msg.is_binary()))
        .forward(write)
        .await
}

fn main() -> anyhow::Result<()> {
    switchboard_bench::peer::run("peer-tungstenite-echo", |stream| async {
        // Errors are the client's doing: it drops connections on purpose.
        let _ = echo(stream).await;
    })
}
