//! Plain TCP echo: the floor, i.e. what the kernel and loopback allow with no
//! HTTP and no WebSocket work at all.

use std::io::ErrorKind;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

async fn echo(mut stream: TcpStream) {
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        // Hold a buffer only while data flows, so an idle connection costs just its
        // task and socket: the floor for the idle-memory row too. `try_read_buf`
        // fills spare capacity, so the buffer is never zeroed.
        let mut buf = Vec::with_capacity(64 * 1024);
        loop {
            buf.clear();
            match stream.try_read_buf(&mut buf) {
                Ok(0) => return,
                Ok(_) => {
                    if stream.write_all(&buf).await.is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => return,
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    switchboard_bench::peer::run("peer-tcp-echo", echo)
}
